"""Model selection over rounds: a metric and an explicit direction.

A study names the metric of the federated validation that picks the best round (``"WT/dice"``,
``"mae"``, ``"idh/auc"``) and whether higher or lower is better. The direction is required — a
default would silently treat a loss as higher-is-better (NVFlare's default does). For metrics
whose direction is known, the other one is refused.

Examples
--------
>>> history = {1: {"mae": 7.5}, 2: {"mae": 6.1}, 3: {"mae": float("nan")}, 4: {"mae": 6.1}}
>>> best_round(history, "mae", "min")
(2, 6.1)
>>> best_round(history, "mae", "max")
(1, 7.5)
>>> Selection("mae", "max")
Traceback (most recent call last):
...
ValueError: selection.direction = 'max' for 'mae', which is better when lower: use direction = "min"
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

from neurofed.config import look_up
from neurofed.keys import MetricName

__all__ = ["Direction", "Selection", "best_round", "metric_direction"]


class Direction(StrEnum):
    """Whether a larger or a smaller metric value is better."""

    MAX = "max"
    MIN = "min"


_LOWER_IS_BETTER = frozenset({MetricName.MAE, MetricName.LOSS, MetricName.HD95})
_NOT_A_SCORE = frozenset({MetricName.NUM_EXAMPLES, MetricName.NUM_POSITIVE})


def metric_direction(metric: str) -> Direction:
    """The direction in which ``metric`` (``[<prefix>/]<MetricName>``) improves.

    >>> metric_direction("WT/dice"), metric_direction("hd95")
    (<Direction.MAX: 'max'>, <Direction.MIN: 'min'>)

    Raises
    ------
    ValueError
        If the last part of ``metric`` is not a :class:`~neurofed.keys.MetricName` ("did you
        mean"), or is a count rather than a score.
    """
    last = str(metric).rsplit("/", 1)[-1]
    name = MetricName(look_up("metric", last, [m.value for m in MetricName]))
    if name in _NOT_A_SCORE:
        raise ValueError(f"metric {metric!r} is a count, not a score; select by a score")
    return Direction.MIN if name in _LOWER_IS_BETTER else Direction.MAX


@dataclass(frozen=True)
class Selection:
    """How the best round is chosen: ``metric`` and its ``direction`` (both required).

    Raises
    ------
    ValueError
        Unknown metric or direction, or a direction opposite to the metric's.
    """

    metric: str
    direction: Direction

    def __post_init__(self) -> None:
        if not isinstance(self.metric, str) or not self.metric:
            raise ValueError(
                f"selection.metric = {self.metric!r}: name a validation metric, e.g. 'WT/dice'"
            )
        try:
            direction = Direction(self.direction)
        except ValueError:
            raise ValueError(
                f'selection.direction = {self.direction!r} is invalid: use "max" (higher is '
                'better, e.g. Dice) or "min" (lower is better, e.g. MAE, loss)'
            ) from None
        natural = metric_direction(self.metric)
        if direction is not natural:
            better = "higher" if natural is Direction.MAX else "lower"
            raise ValueError(
                f"selection.direction = {direction.value!r} for {self.metric!r}, which is "
                f'better when {better}: use direction = "{natural.value}"'
            )
        object.__setattr__(self, "direction", direction)

    def best(self, history: Mapping[int, Mapping[str, float]]) -> tuple[int, float]:
        """:func:`best_round` of ``history`` by this selection."""
        return best_round(history, self.metric, self.direction)


def best_round(
    history: Mapping[int, Mapping[str, float]], metric: str, direction: Direction | str
) -> tuple[int, float]:
    """The round whose ``metric`` is best in ``direction``, and that value.

    Rounds without the metric, or with a NaN or infinite value, are ignored; on a tie the
    earliest round wins.

    Parameters
    ----------
    history
        Round number → that round's validation metrics.
    metric
        The metric's name.
    direction
        ``"max"`` or ``"min"``.

    Raises
    ------
    ValueError
        Unknown direction, or no round with a finite value of ``metric``.
    """
    try:
        direction = Direction(direction)
    except ValueError:
        raise ValueError(f"direction = {direction!r} is invalid: use 'max' or 'min'") from None
    best: tuple[int, float] | None = None
    for round_number in sorted(history):
        value = history[round_number].get(metric)
        if value is None or not math.isfinite(value):
            continue
        value = float(value)
        better = (
            best is None
            or (direction is Direction.MAX and value > best[1])
            or (direction is Direction.MIN and value < best[1])
        )
        if better:
            best = (round_number, value)
    if best is None:
        raise ValueError(
            f"no round has a finite value of {metric!r} ({len(history)} round(s) recorded)"
        )
    return best
