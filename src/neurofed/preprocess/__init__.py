"""neurofed.preprocess."""
