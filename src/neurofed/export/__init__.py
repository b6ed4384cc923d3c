"""neurofed.export."""
