"""Site data: NIfTI I/O, subjects, layouts, manifests and splits."""
