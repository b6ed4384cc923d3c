"""Coordinate-wise trimmed mean (Yin et al. 2018): drop the extremes, average the rest.

Per coordinate, the ``floor(trim_fraction · n_sites)`` smallest and largest site values are
dropped; unweighted.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.update import SiteUpdate
>>> g = {"w": np.zeros(1)}
>>> ups = [SiteUpdate(s, {"w": np.array([v])}, 1) for s, v in zip("abcd", (-50, 1, 3, 1e6))]
>>> TrimmedMean({"trim_fraction": 0.25}).aggregate(g, ups)[0]["w"].tolist()
[2.0]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

from neurofed.federated.aggregation import trimmed_mean
from neurofed.federated.strategies.base import (
    Strategy,
    StrategyName,
    StrategyParams,
    check_number,
)
from neurofed.federated.update import Array

__all__ = ["TrimmedMean", "TrimmedMeanParams"]


@dataclass(frozen=True)
class TrimmedMeanParams(StrategyParams):
    """Trimmed mean's options.

    Parameters
    ----------
    trim_fraction
        Fraction of the sites cut at each end per coordinate, in ``[0, 0.5)``.
    """

    trim_fraction: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(
            self,
            "trim_fraction",
            0.0,
            math.nextafter(0.5, 0.0),
            "use a fraction in [0, 0.5), e.g. 0.1",
        )


class TrimmedMean(Strategy):
    """Mean of each coordinate after cutting the extreme site values (weights ignored)."""

    name: ClassVar[StrategyName] = StrategyName.TRIMMED_MEAN
    description: ClassVar[str] = (
        "coordinate-wise mean without the extreme sites, unweighted (robust)"
    )
    params_type: ClassVar[type[StrategyParams]] = TrimmedMeanParams
    weighted_mean: ClassVar[bool] = False
    params: TrimmedMeanParams

    def combine(self, stack: Array, weights: Array) -> Array:
        return trimmed_mean(stack, self.params.trim_fraction)
