"""``ms-lesion``: binary MS lesion segmentation from FLAIR and T1 with a planned ``dynunet``.

The ``dynunet`` (built from a :class:`~neurofed.models.NetworkPlan`, later derived from a federated
fingerprint) outputs two channels (background, lesion); the prediction is their arg-max. Loss:
MONAI ``DiceCELoss`` (softmax, one-hot target, Dice over the lesion channel only and over the
labelled cases of the batch together, as nnU-Net's batch Dice) plus cross-entropy, over the
labelled cases.

Metrics: ``dice`` (mean per-case Dice), ``dice_pooled``, ``sensitivity``, ``precision`` (voxel
counts summed over cases), ``lesion_f1`` (connected components, ``connectivity`` 3 = 26-neighbour
by default; see :mod:`neurofed.tasks.segmentation_metrics`) and ``num_examples``.

Examples
--------
>>> task = MSLesionTask()
>>> [m.value for m in task.modalities], task.out_channels, task.config.connectivity
(['FLAIR', 'T1'], 2, 3)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch
from monai.losses.dice import DiceCELoss

from neurofed.config import ConfigBase, require
from neurofed.keys import LesionLabel, MetricName, Modality, TaskId
from neurofed.models import DynUNetConfig, ModelName
from neurofed.tasks.base import ModelOutput, Task
from neurofed.tasks.batch import Batch
from neurofed.tasks.losses import zero_loss
from neurofed.tasks.metric_state import MetricState, StateKey
from neurofed.tasks.segmentation_metrics import (
    confusion_counts,
    dice_per_case,
    lesion_counts,
    pooled_dice,
    ratio,
)
from neurofed.tasks.sharing import case_mean

__all__ = ["MSLesionConfig", "MSLesionTask"]


@dataclass(frozen=True)
class MSLesionConfig(ConfigBase):
    """Configuration of ``ms-lesion``.

    Parameters
    ----------
    connectivity
        Connected-component neighbourhood for lesion counting: 1 (6), 2 (18) or 3 (26 neighbours).
    """

    connectivity: int = 3

    def __post_init__(self) -> None:
        require(
            self.connectivity in (1, 2, 3) and not isinstance(self.connectivity, bool),
            self,
            "connectivity",
            "use 1 (6-neighbourhood), 2 (18) or 3 (26)",
        )


class MSLesionTask(Task):
    """Segment MS lesions (see the module docstring)."""

    task_id: ClassVar[TaskId] = TaskId.MS_LESION
    modalities: ClassVar[tuple[Modality, ...]] = (Modality.FLAIR, Modality.T1)
    model_name: ClassVar[str] = ModelName.DYNUNET
    out_channels: ClassVar[int] = 2
    needs_label_map: ClassVar[bool] = True
    max_label: ClassVar[int] = int(LesionLabel.LESION)
    config_type: ClassVar[type[ConfigBase]] = MSLesionConfig
    config: MSLesionConfig

    def __init__(self, config: Mapping[str, Any] | MSLesionConfig | None = None) -> None:
        super().__init__(config)
        self._dice_ce = DiceCELoss(
            include_background=False, to_onehot_y=True, softmax=True, batch=True
        )

    def default_model_config(self) -> ConfigBase:
        """``dynunet`` with ``default_plan((128, 128, 128), (1.0, 1.0, 1.0))``."""
        return DynUNetConfig()

    def _logits(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        return self._segmentation_output(self._tensor_output(outputs), batch, self.out_channels)

    def _loss(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        logits = self._logits(outputs, batch)  # (B, 2, X, Y, Z)
        labelled = batch.labelled
        if not bool(labelled.any()):
            return zero_loss(logits)
        assert batch.label is not None  # check_batch
        target = batch.label[labelled][:, None].long()  # (N, 1, X, Y, Z)
        loss: torch.Tensor = self._dice_ce(logits[labelled], target)
        return loss

    def postprocess(self, outputs: ModelOutput) -> torch.Tensor:
        """``(B, 1, X, Y, Z)`` uint8 lesion mask (arg-max over background / lesion)."""
        logits = self._tensor_output(outputs)
        return logits.argmax(dim=1, keepdim=True).to(torch.uint8)

    def _metric_state(self, outputs: ModelOutput, batch: Batch) -> MetricState:
        labelled = batch.labelled
        assert batch.label is not None  # check_batch
        pred = self.postprocess(self._logits(outputs, batch))[labelled][:, 0].bool().cpu().numpy()
        target = (batch.label[labelled] == int(LesionLabel.LESION)).cpu().numpy()  # (N, X, Y, Z)
        counts = confusion_counts(pred, target)  # (N, 3)
        lesions = lesion_counts(pred, target, connectivity=self.config.connectivity)  # (N, 3)
        sums: dict[str, np.ndarray] = {StateKey.NUM_EXAMPLES: np.array(len(counts))}
        for c, key in enumerate((StateKey.TP, StateKey.FP, StateKey.FN)):
            sums[key] = counts[:, c].sum()
        for c, key in enumerate((StateKey.LESION_TP, StateKey.LESION_FN, StateKey.LESION_FP)):
            sums[key] = lesions[:, c].sum()
        return MetricState(sums=sums, cases={StateKey.DICE: dice_per_case(counts)})

    def _finalize(self, state: MetricState) -> dict[str, float]:
        tp, fp, fn = (int(state.sums[k]) for k in (StateKey.TP, StateKey.FP, StateKey.FN))
        lesion_tp, lesion_fn, lesion_fp = (
            int(state.sums[k]) for k in (StateKey.LESION_TP, StateKey.LESION_FN, StateKey.LESION_FP)
        )
        cases = float(state.sums[StateKey.NUM_EXAMPLES])
        return {
            MetricName.DICE: case_mean(state, StateKey.DICE),
            MetricName.DICE_POOLED: pooled_dice(tp, fp, fn, cases),
            MetricName.SENSITIVITY: ratio(tp, tp + fn),
            MetricName.PRECISION: ratio(tp, tp + fp),
            MetricName.LESION_F1: pooled_dice(lesion_tp, lesion_fp, lesion_fn, cases),
            MetricName.NUM_EXAMPLES: cases,
        }
