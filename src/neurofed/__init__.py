"""neurofed: federated deep learning on brain MRI, with every scan staying inside its hospital."""

__all__ = ["__version__"]

__version__ = "0.1.0"
