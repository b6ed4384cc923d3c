"""Coordinate-wise median (Yin et al. 2018): robust to a minority of outlying sites.

Unweighted: every site counts once, however many examples it has.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.update import SiteUpdate
>>> g = {"w": np.zeros(1)}
>>> ups = [SiteUpdate(s, {"w": np.array([v])}, 1) for s, v in zip("abc", (1.0, 2.0, 1e6))]
>>> Median().aggregate(g, ups)[0]["w"].tolist()
[2.0]
"""

from __future__ import annotations

from typing import ClassVar

from neurofed.federated.aggregation import coordinate_median
from neurofed.federated.strategies.base import Strategy, StrategyName
from neurofed.federated.update import Array

__all__ = ["Median"]


class Median(Strategy):
    """The median of each coordinate over the sites (weights ignored)."""

    name: ClassVar[StrategyName] = StrategyName.MEDIAN
    description: ClassVar[str] = "coordinate-wise median of the site models, unweighted (robust)"
    weighted_mean: ClassVar[bool] = False

    def combine(self, stack: Array, weights: Array) -> Array:
        return coordinate_median(stack)
