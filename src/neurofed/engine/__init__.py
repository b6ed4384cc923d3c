"""neurofed.engine."""
