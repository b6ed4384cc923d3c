"""neurofed.config."""
