"""``tumor-regions``: glioma sub-regions ET / TC / WT (FeTS).

Inputs T1, T1CE, T2, FLAIR; the ``residual-unet`` predicts one sigmoid channel per region in
:data:`~neurofed.tasks.regions.REGION_ORDER` (ET, TC, WT), targets built from internal labels by
:func:`~neurofed.tasks.regions.labels_to_regions`. Loss: FeTS's mirrored Dice
(:func:`~neurofed.tasks.losses.mirrored_dice_loss`) over the labelled cases of the batch.

Metrics per region (``<region>/<metric>``), voxels predicted where ``sigmoid > threshold``:

- ``dice``: mean over cases of the per-case Dice (BraTS style; 1 when both masks are empty);
- ``dice_pooled``: ``2·ΣTP / (2·ΣTP + ΣFP + ΣFN)`` with counts summed over all cases;
- ``hd95``: mean over cases of the per-case 95% Hausdorff distance in mm (0 when both masks are
  empty, ``hd95_empty`` when only one is);
- ``sensitivity`` and ``precision`` from the summed counts;

plus ``num_examples``, the labelled cases evaluated. See
:mod:`neurofed.tasks.segmentation_metrics` for the conventions.

Examples
--------
>>> import torch
>>> task = TumorRegionsTask()
>>> [m.value for m in task.modalities], str(task.model_name)
(['T1', 'T1CE', 'T2', 'FLAIR'], 'residual-unet')
>>> label = torch.zeros(1, 8, 8, 8, dtype=torch.long); label[0, 2:4, 2:4, 2:4] = 3
>>> batch = Batch(image=torch.zeros(1, 4, 8, 8, 8), label=label)
>>> perfect = (labels_to_regions(label) * 20 - 10)  # logits of a perfect prediction
>>> metrics = task.finalize(task.metric_state(perfect, batch))
>>> metrics["ET/dice"], metrics["WT/hd95"], metrics["num_examples"]
(1.0, 0.0, 1.0)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch

from neurofed.config import ConfigBase, require
from neurofed.keys import MetricName, Modality, TaskId, TumorLabel
from neurofed.models import ModelName, ResidualUNetConfig
from neurofed.tasks.base import ModelOutput, Task
from neurofed.tasks.batch import Batch
from neurofed.tasks.losses import mirrored_dice_loss, zero_loss
from neurofed.tasks.metric_state import MetricState, StateKey
from neurofed.tasks.regions import REGION_ORDER, labels_to_regions
from neurofed.tasks.segmentation_metrics import (
    confusion_counts,
    dice_per_case,
    hd95_per_case,
    pooled_dice,
    ratio,
)
from neurofed.tasks.sharing import case_mean

__all__ = ["TumorRegionsConfig", "TumorRegionsTask"]


@dataclass(frozen=True)
class TumorRegionsConfig(ConfigBase):
    """Configuration of ``tumor-regions``.

    Parameters
    ----------
    threshold
        Probability above which a voxel belongs to a region.
    smooth
        Smoothing of the mirrored Dice loss (FeTS: 1e-7).
    spacing
        Voxel spacing in mm of the evaluated images (for HD95).
    hd95_empty
        HD95 (mm) of a case where exactly one of prediction and reference is empty.
    """

    threshold: float = 0.5
    smooth: float = 1e-7
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    hd95_empty: float = 373.13

    def __post_init__(self) -> None:
        require(
            isinstance(self.threshold, int | float) and 0.0 < self.threshold < 1.0,
            self,
            "threshold",
            "use a probability in (0, 1), e.g. 0.5",
        )
        require(
            isinstance(self.smooth, int | float) and self.smooth >= 0,
            self,
            "smooth",
            "use a number >= 0, e.g. 1e-7",
        )
        require(
            isinstance(self.spacing, tuple)
            and len(self.spacing) == 3
            and all(isinstance(s, int | float) and 0 < s < math.inf for s in self.spacing),
            self,
            "spacing",
            "give three positive spacings in mm",
        )
        require(
            isinstance(self.hd95_empty, int | float) and 0 <= self.hd95_empty < math.inf,
            self,
            "hd95_empty",
            "use a finite distance in mm (BraTS: 373.13)",
        )
        object.__setattr__(self, "threshold", float(self.threshold))
        object.__setattr__(self, "smooth", float(self.smooth))
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        object.__setattr__(self, "hd95_empty", float(self.hd95_empty))


class TumorRegionsTask(Task):
    """Segment ET, TC and WT with one sigmoid channel each (see the module docstring)."""

    task_id: ClassVar[TaskId] = TaskId.TUMOR_REGIONS
    modalities: ClassVar[tuple[Modality, ...]] = (
        Modality.T1,
        Modality.T1CE,
        Modality.T2,
        Modality.FLAIR,
    )
    model_name: ClassVar[str] = ModelName.RESIDUAL_UNET
    out_channels: ClassVar[int] = len(REGION_ORDER)
    needs_label_map: ClassVar[bool] = True
    max_label: ClassVar[int] = int(TumorLabel.ET)
    config_type: ClassVar[type[ConfigBase]] = TumorRegionsConfig
    config: TumorRegionsConfig

    def default_model_config(self) -> ConfigBase:
        """``residual-unet`` with 16 base filters (FeTS used 30)."""
        return ResidualUNetConfig()

    def _logits(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        return self._segmentation_output(self._tensor_output(outputs), batch, self.out_channels)

    def _loss(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        logits = self._logits(outputs, batch)  # (B, 3, X, Y, Z)
        labelled = batch.labelled
        if not bool(labelled.any()):
            return zero_loss(logits)
        assert batch.label is not None  # check_batch
        target = labels_to_regions(batch.label[labelled]).to(logits.dtype)  # (N, 3, X, Y, Z)
        return mirrored_dice_loss(torch.sigmoid(logits[labelled]), target, self.config.smooth)

    def postprocess(self, outputs: ModelOutput) -> torch.Tensor:
        """``(B, 3, X, Y, Z)`` uint8 masks: ``sigmoid(logits) > threshold``."""
        logits = self._tensor_output(outputs)
        return (torch.sigmoid(logits) > self.config.threshold).to(torch.uint8)

    def _metric_state(self, outputs: ModelOutput, batch: Batch) -> MetricState:
        labelled = batch.labelled
        assert batch.label is not None  # check_batch
        prediction = self.postprocess(self._logits(outputs, batch))[labelled]  # (N, 3, X, Y, Z)
        pred = prediction.bool().cpu().numpy()
        target = labels_to_regions(batch.label[labelled]).bool().cpu().numpy()  # (N, 3, X, Y, Z)
        sums: dict[str, np.ndarray] = {StateKey.NUM_EXAMPLES: np.array(pred.shape[0])}
        cases: dict[str, np.ndarray] = {}
        for r, region in enumerate(REGION_ORDER):
            counts = confusion_counts(pred[:, r], target[:, r])  # (N, 3)
            for c, key in enumerate((StateKey.TP, StateKey.FP, StateKey.FN)):
                sums[f"{region}/{key}"] = counts[:, c].sum()
            cases[f"{region}/{StateKey.DICE}"] = dice_per_case(counts)
            cases[f"{region}/{StateKey.HD95}"] = hd95_per_case(
                pred[:, r],
                target[:, r],
                spacing=self.config.spacing,
                empty_value=self.config.hd95_empty,
            )
        return MetricState(sums=sums, cases=cases)

    def _finalize(self, state: MetricState) -> dict[str, float]:
        out: dict[str, float] = {}
        cases = float(state.sums[StateKey.NUM_EXAMPLES])
        for region in REGION_ORDER:
            tp, fp, fn = (
                int(state.sums[f"{region}/{k}"]) for k in (StateKey.TP, StateKey.FP, StateKey.FN)
            )
            out[f"{region}/{MetricName.DICE}"] = case_mean(state, f"{region}/{StateKey.DICE}")
            out[f"{region}/{MetricName.DICE_POOLED}"] = pooled_dice(tp, fp, fn, cases)
            out[f"{region}/{MetricName.HD95}"] = case_mean(state, f"{region}/{StateKey.HD95}")
            out[f"{region}/{MetricName.SENSITIVITY}"] = ratio(tp, tp + fn)
            out[f"{region}/{MetricName.PRECISION}"] = ratio(tp, tp + fp)
        out[MetricName.NUM_EXAMPLES] = cases
        return out
