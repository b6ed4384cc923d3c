"""neurofed.phantom."""
