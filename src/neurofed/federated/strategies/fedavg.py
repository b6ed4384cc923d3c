"""FedAvg (McMahan et al. 2017): the example-weighted mean of the site models.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.update import SiteUpdate
>>> g = {"w": np.zeros(2, np.float32)}
>>> updates = [SiteUpdate("a", {"w": np.array([1.0, 2.0], np.float32)}, num_examples=1),
...            SiteUpdate("b", {"w": np.array([4.0, 8.0], np.float32)}, num_examples=2)]
>>> new, _ = FedAvg().aggregate(g, updates)
>>> new["w"].tolist(), new["w"].dtype
([3.0, 6.0], dtype('float32'))
"""

from __future__ import annotations

from typing import ClassVar

from neurofed.federated.aggregation import weighted_average
from neurofed.federated.strategies.base import Strategy, StrategyName
from neurofed.federated.update import Array

__all__ = ["FedAvg"]


class FedAvg(Strategy):
    """Weighted mean of the site parameters, weights = ``num_examples`` (or label counts of a
    masked head)."""

    name: ClassVar[StrategyName] = StrategyName.FEDAVG
    description: ClassVar[str] = "example-weighted mean of the site models (McMahan et al. 2017)"

    def combine(self, stack: Array, weights: Array) -> Array:
        return weighted_average(stack, weights)
