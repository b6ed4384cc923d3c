"""Evaluation: a saved model on a site's cases, and every model on every site.

- :func:`~neurofed.evaluate.site.evaluate_model` — one model on one site's split (full volumes,
  preprocessed as the model was trained, cached at the site);
- :func:`~neurofed.evaluate.cross_site.cross_site_table` — every model on every training site's
  validation split, their merge, and every case of the held-out site.

The sliding-window inference itself is :mod:`neurofed.training.inference`: the training loop
validates with it, and ``training`` sits below ``evaluate``.
"""

from neurofed.evaluate.cross_site import ALL_TRAINING, cross_site_table
from neurofed.evaluate.site import evaluate_model

__all__ = ["ALL_TRAINING", "cross_site_table", "evaluate_model"]
