"""neurofed.cli."""
