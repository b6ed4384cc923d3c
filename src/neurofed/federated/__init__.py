"""neurofed.federated."""
