"""neurofed.models."""
