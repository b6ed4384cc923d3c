"""``brain-age``: regression of age (or, for transfer, another score such as SDMT) from T1.

The ``sfcn`` predicts the **normalised** target ``(y - target_mean) / target_std``; the loss is
the L1 distance to it over the cases whose target is known (exactly 0 when none is).
:meth:`BrainAgeTask.postprocess` returns predictions in the target's original units. Set
``target_mean`` / ``target_std`` from the training data (e.g. federated sums); they are stored
in the task config so that predictions come back in original units wherever the model goes.

Metrics, in original units, from sums that merge exactly across sites: ``mae`` and Pearson's
``pearson_r`` from ``n, Σx, Σy, Σx², Σy², Σxy`` (x prediction, y target, both shifted by
``target_mean`` to limit cancellation; NaN with fewer than two cases or a constant side), and
``num_examples``. The state also holds each case's prediction and true value, in original units
(``<target>/prediction``, ``<target>/target``, e.g. ``age/prediction``), for statistics that
need the cases (Bland–Altman, intervals; :func:`regression_pairs` reads them). Like every
per-case array they leave a site only where its custodian allows per-case values
(:func:`~neurofed.tasks.sharing.share_state`); the metrics come from the sums alone.

Transfer to SDMT: ``get_task("brain-age", {"target": "sdmt", "target_mean": 50, "target_std": 12})``
and :func:`~neurofed.models.prepare_transfer` with ``full`` or ``head``.

Examples
--------
>>> import torch
>>> task = BrainAgeTask({"target_mean": 60.0, "target_std": 10.0})
>>> task.postprocess(torch.tensor([[0.0], [1.5]])).tolist()
[60.0, 75.0]
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch

from neurofed.config import ConfigBase, coerce_enum, require
from neurofed.keys import ClinicalField, MetricName, Modality, TaskId
from neurofed.models import ModelName, SFCNConfig
from neurofed.tasks.base import ModelOutput, Task
from neurofed.tasks.batch import Batch
from neurofed.tasks.losses import masked_l1
from neurofed.tasks.metric_state import MetricState, StateKey
from neurofed.tasks.segmentation_metrics import ratio

__all__ = [
    "REGRESSION_TARGETS",
    "BrainAgeConfig",
    "BrainAgeTask",
    "pearson_from_sums",
    "regression_pairs",
]

#: Clinical fields ``brain-age`` can regress.
REGRESSION_TARGETS: tuple[ClinicalField, ...] = (ClinicalField.AGE, ClinicalField.SDMT)

_SUMS = (
    StateKey.SUM_X,
    StateKey.SUM_Y,
    StateKey.SUM_XX,
    StateKey.SUM_YY,
    StateKey.SUM_XY,
)


@dataclass(frozen=True)
class BrainAgeConfig(ConfigBase):
    """Configuration of ``brain-age``.

    Parameters
    ----------
    target
        The regressed clinical field (age; SDMT for transfer).
    target_mean, target_std
        Normalisation of the target (original units).
    """

    target: ClinicalField = ClinicalField.AGE
    target_mean: float = 50.0
    target_std: float = 20.0

    def __post_init__(self) -> None:
        coerce_enum(self, "target", ClinicalField)
        require(
            self.target in REGRESSION_TARGETS,
            self,
            "target",
            f"use one of {', '.join(t.value for t in REGRESSION_TARGETS)}",
        )
        require(
            isinstance(self.target_mean, int | float) and math.isfinite(self.target_mean),
            self,
            "target_mean",
            "use the finite mean of the training targets",
        )
        require(
            isinstance(self.target_std, int | float) and 0 < self.target_std < math.inf,
            self,
            "target_std",
            "use the positive standard deviation of the training targets",
        )
        object.__setattr__(self, "target_mean", float(self.target_mean))
        object.__setattr__(self, "target_std", float(self.target_std))


def pearson_from_sums(n: float, sx: float, sy: float, sxx: float, syy: float, sxy: float) -> float:
    """Pearson's r from ``n, Σx, Σy, Σx², Σy², Σxy``; NaN when undefined.

    >>> x, y = [1.0, 2.0, 4.0], [1.0, 3.0, 2.0]
    >>> sums = (3, sum(x), sum(y), sum(a * a for a in x), sum(b * b for b in y),
    ...         sum(a * b for a, b in zip(x, y)))
    >>> round(pearson_from_sums(*sums), 6)
    0.327327
    """
    if n < 2:
        return math.nan
    covariance = n * sxy - sx * sy
    variance_x = n * sxx - sx * sx
    variance_y = n * syy - sy * sy
    if variance_x <= 0 or variance_y <= 0:
        return math.nan
    return max(-1.0, min(1.0, covariance / math.sqrt(variance_x * variance_y)))


def regression_pairs(
    cases: Mapping[str, npt.ArrayLike],
) -> dict[ClinicalField, tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]]:
    """Per regressed target, the predictions and true values of its cases (original units),
    from a metric state's per-case arrays; targets without both arrays are left out.

    Examples
    --------
    >>> cases = {"age/prediction": [61.0, 47.5], "age/target": [58.0, 50.0]}
    >>> {f.value: (p.tolist(), t.tolist()) for f, (p, t) in regression_pairs(cases).items()}
    {'age': ([61.0, 47.5], [58.0, 50.0])}
    """
    out = {}
    for target in REGRESSION_TARGETS:
        predicted = cases.get(f"{target}/{StateKey.PREDICTION}")
        truth = cases.get(f"{target}/{StateKey.TARGET}")
        if predicted is not None and truth is not None:
            out[target] = (np.asarray(predicted, np.float64), np.asarray(truth, np.float64))
    return out


class BrainAgeTask(Task):
    """Regress the configured target from T1 (see the module docstring)."""

    task_id: ClassVar[TaskId] = TaskId.BRAIN_AGE
    modalities: ClassVar[tuple[Modality, ...]] = (Modality.T1,)
    model_name: ClassVar[str] = ModelName.SFCN
    out_channels: ClassVar[int] = 1
    needs_label_map: ClassVar[bool] = False
    config_type: ClassVar[type[ConfigBase]] = BrainAgeConfig
    config: BrainAgeConfig

    @property
    def clinical_fields(self) -> tuple[ClinicalField, ...]:
        return (self.config.target,)

    def default_model_config(self) -> ConfigBase:
        """``sfcn`` with SFCN's widths (32-64-128-256-256, 64)."""
        return SFCNConfig()

    def _normalised(self, outputs: ModelOutput, batch: Batch | None) -> torch.Tensor:
        prediction = self._tensor_output(outputs)
        b = prediction.shape[0] if batch is None else batch.batch_size
        if tuple(prediction.shape) != (b, 1):
            raise ValueError(
                f"task {self.task_id.value!r}: output has shape {tuple(prediction.shape)}; "
                f"expected ({b}, 1)"
            )
        return prediction[:, 0]  # (B,)

    def _loss(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        prediction = self._normalised(outputs, batch)  # (B,)
        target = batch.clinical[self.config.target]
        normalised = (target.values - self.config.target_mean) / self.config.target_std
        return masked_l1(prediction, normalised, target.known)

    def postprocess(self, outputs: ModelOutput) -> torch.Tensor:
        """``(B,)`` predictions in the target's original units."""
        return self._normalised(outputs, None) * self.config.target_std + self.config.target_mean

    def _metric_state(self, outputs: ModelOutput, batch: Batch) -> MetricState:
        target = batch.clinical[self.config.target]
        known = target.known
        normalised = self._normalised(outputs, batch)[known].double().cpu().numpy()
        x = normalised * self.config.target_std  # prediction - target_mean
        y = target.values[known].double().cpu().numpy() - self.config.target_mean
        sums = {
            StateKey.NUM_EXAMPLES: np.array(len(x), dtype=np.int64),
            StateKey.SUM_ABS_ERROR: np.abs(x - y).sum(),
            StateKey.SUM_X: x.sum(),
            StateKey.SUM_Y: y.sum(),
            StateKey.SUM_XX: (x * x).sum(),
            StateKey.SUM_YY: (y * y).sum(),
            StateKey.SUM_XY: (x * y).sum(),
        }
        mean = self.config.target_mean
        cases = {  # (n,) each, original units
            f"{self.config.target}/{StateKey.PREDICTION}": x + mean,
            f"{self.config.target}/{StateKey.TARGET}": y + mean,
        }
        return MetricState(sums={str(k): v for k, v in sums.items()}, cases=cases)

    def _finalize(self, state: MetricState) -> dict[str, float]:
        n = int(state.sums[StateKey.NUM_EXAMPLES])
        sx, sy, sxx, syy, sxy = (float(state.sums[k]) for k in _SUMS)
        return {
            MetricName.MAE: ratio(float(state.sums[StateKey.SUM_ABS_ERROR]), n),
            MetricName.PEARSON_R: pearson_from_sums(n, sx, sy, sxx, syy, sxy),
            MetricName.NUM_EXAMPLES: float(n),
        }
