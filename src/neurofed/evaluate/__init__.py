"""neurofed.evaluate."""
