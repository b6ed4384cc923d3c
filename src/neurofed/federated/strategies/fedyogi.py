"""FedYogi (Reddi et al. 2021): Yogi on the server; ``v`` grows or shrinks additively.

See :mod:`neurofed.federated.strategies.fedopt` for the update.

Examples
--------
>>> import numpy as np
>>> FedYogi({"beta2": 0.5}).second_moment(np.array([1.0, 0.0]), np.array([2.0, 0.0])).tolist()
[3.0, 0.0]
"""

from __future__ import annotations

from typing import ClassVar

import numpy as np

from neurofed.federated.strategies.base import StrategyName
from neurofed.federated.strategies.fedopt import FedOpt
from neurofed.federated.update import Array

__all__ = ["FedYogi"]


class FedYogi(FedOpt):
    """Server Yogi: ``v ← v - (1 - β2)·Δ²·sign(v - Δ²)``."""

    name: ClassVar[StrategyName] = StrategyName.FEDYOGI
    description: ClassVar[str] = "Yogi on the server over the averaged update (Reddi et al. 2021)"

    def second_moment(self, v: Array, delta: Array) -> Array:
        squared = delta**2
        result: Array = v - (1.0 - self.params.beta2) * squared * np.sign(v - squared)
        return result
