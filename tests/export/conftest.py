"""The tiny lesion site of the training tests."""

from tests.training.conftest import lesion_site, one_torch_thread

__all__ = ["lesion_site", "one_torch_thread"]
