"""What training reports: one :class:`EpochRecord` per epoch, and finalised metric numbers.

Metrics travel as :class:`~neurofed.tasks.MetricState` (sums, counts, per-case values);
:func:`finalize_metrics` turns a state into numbers at the very end, and JSON output writes an
undefined value (NaN, e.g. an AUC over one class) as ``null``.

Examples
--------
>>> record = EpochRecord(epoch=1, train_loss=0.5, validation={"mae": 7.5, "pearson_r": math.nan},
...                      seconds=2.0, steps=4)
>>> record.to_json()["validation"]
{'mae': 7.5, 'pearson_r': None}
>>> EpochRecord.from_json(record.to_json()) == record
True
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from neurofed.keys import Marker, MetricName, TaskId, TumorRegion
from neurofed.tasks import MetricState, Task

__all__ = ["HEADLINE_METRICS", "EpochRecord", "finalize_metrics", "json_number", "number"]

#: The metrics shown first for each task (CLI lines and summaries).
HEADLINE_METRICS: Mapping[TaskId, tuple[str, ...]] = MappingProxyType(
    {
        TaskId.TUMOR_REGIONS: tuple(f"{r}/{MetricName.DICE}" for r in TumorRegion),
        TaskId.GLIOMA_MULTITASK: (
            f"{TumorRegion.WT}/{MetricName.DICE}",
            f"{Marker.IDH}/{MetricName.AUC}",
            f"{Marker.CODEL_1P19Q}/{MetricName.AUC}",
            f"{Marker.MGMT}/{MetricName.AUC}",
            f"{Marker.GRADE}/{MetricName.ACCURACY}",
        ),
        TaskId.MS_LESION: (MetricName.DICE.value, MetricName.LESION_F1.value),
        TaskId.BRAIN_AGE: (MetricName.MAE.value, MetricName.PEARSON_R.value),
    }
)


def json_number(value: float) -> float | None:
    """``value`` for JSON: ``None`` when it is NaN or infinite."""
    return float(value) if math.isfinite(value) else None


def number(value: float | None) -> float:
    """Inverse of :func:`json_number`: ``None`` becomes NaN."""
    return math.nan if value is None else float(value)


def finalize_metrics(task: Task, state: MetricState) -> dict[str, float]:
    """``task.finalize(state)``, or ``{}`` when nothing was evaluated."""
    return {} if state.is_empty else task.finalize(state)


def _same(a: Mapping[str, float], b: Mapping[str, float]) -> bool:
    return a.keys() == b.keys() and all(
        (math.isnan(a[k]) and math.isnan(b[k])) or a[k] == b[k] for k in a
    )


@dataclass(frozen=True, eq=False)
class EpochRecord:
    """One epoch of training.

    Attributes
    ----------
    epoch
        1-based epoch number; 0 is the untrained model (no training loss).
    train_loss
        Mean task loss over the epoch's optimiser steps (without the FedProx term).
    validation
        Finalised validation metrics (empty when the epoch was not validated).
    seconds
        Wall time of the epoch, validation included.
    steps
        Optimiser steps in the epoch.
    """

    epoch: int
    train_loss: float | None
    validation: Mapping[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    steps: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "validation", MappingProxyType(dict(self.validation)))

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, EpochRecord):
            return NotImplemented
        return (
            (self.epoch, self.train_loss, self.seconds, self.steps)
            == (other.epoch, other.train_loss, other.seconds, other.steps)
        ) and _same(self.validation, other.validation)

    def to_json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_loss": None if self.train_loss is None else json_number(self.train_loss),
            "validation": {k: json_number(v) for k, v in self.validation.items()},
            "seconds": round(self.seconds, 3),
            "steps": self.steps,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> EpochRecord:
        loss = data.get("train_loss")
        return cls(
            epoch=int(data["epoch"]),
            train_loss=None if loss is None else float(loss),
            validation={str(k): number(v) for k, v in data.get("validation", {}).items()},
            seconds=float(data.get("seconds", 0.0)),
            steps=int(data.get("steps", 0)),
        )
