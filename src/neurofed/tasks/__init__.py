"""neurofed.tasks."""
