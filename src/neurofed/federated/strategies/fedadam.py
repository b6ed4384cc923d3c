"""FedAdam (Reddi et al. 2021): Adam on the server over the averaged pseudo-gradient.

See :mod:`neurofed.federated.strategies.fedopt` for the update.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.update import SiteUpdate
>>> strategy = FedAdam({"eta": 0.1, "beta1": 0.0, "beta2": 0.0, "tau": 1e-3})
>>> new, state = strategy.aggregate({"w": np.zeros(1)}, [SiteUpdate("a", {"w": np.ones(1)}, 3)])
>>> round(float(new["w"][0]), 6), state.scalars["step"]  # 0.1 · 1 / (1 + 1e-3)
(0.0999, 1)
"""

from __future__ import annotations

from typing import ClassVar

from neurofed.federated.strategies.base import StrategyName
from neurofed.federated.strategies.fedopt import FedOpt
from neurofed.federated.update import Array

__all__ = ["FedAdam"]


class FedAdam(FedOpt):
    """Server Adam: ``v ← β2·v + (1 - β2)·Δ²``."""

    name: ClassVar[StrategyName] = StrategyName.FEDADAM
    description: ClassVar[str] = "Adam on the server over the averaged update (Reddi et al. 2021)"

    def second_moment(self, v: Array, delta: Array) -> Array:
        beta2 = self.params.beta2
        return beta2 * v + (1.0 - beta2) * delta**2
