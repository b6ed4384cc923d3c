"""``neurofed predict``: a trained model run on the next patient's scans (see case.py)."""
