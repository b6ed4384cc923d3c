"""``glioma-multitask``: T2-hyperintense region + IDH, 1p/19q, MGMT + WHO grade (Ren et al.).

Inputs T1, T1CE, T2, FLAIR; the ``multitask-unet`` returns a dict keyed by
:class:`~neurofed.models.OutputKey`: one segmentation channel (WT, the T2-hyperintense region),
one logit per binary marker and three grade logits (II, III, IV).

Loss: ``Σ_t w_t · L_t`` over the terms, each term **masked** to the cases whose label is known
and averaged over them (so a term's scale does not depend on how many cases of the batch are
known); a term with no known case in the batch is exactly 0, never NaN. Terms are not re-weighted
by how many are present. Weights default to 1 (:class:`GliomaMultitaskConfig`).

- segmentation: per labelled case, ``1 - soft Dice + binary cross-entropy`` of the WT channel;
- IDH, 1p/19q, MGMT: binary cross-entropy on the logits;
- grade: cross-entropy over II/III/IV (a known grade outside 2–4 is an error).

Metrics: ``WT/dice`` (mean per-case Dice), ``WT/dice_pooled``, ``WT/num_examples``; per marker
``<marker>/auc``, ``accuracy``, ``recall``, ``f1``, ``specificity``, ``num_examples``,
``num_positive`` (``score >= threshold`` is positive; AUC NaN when the known cases hold one class);
for grade one-vs-rest ``grade/<II|III|IV>/<auc|recall|f1|specificity|num_positive>``, their macro
averages ``grade/<metric>``, ``grade/accuracy`` and ``grade/num_examples``.

Examples
--------
>>> task = GliomaMultitaskTask()
>>> [f.value for f in task.clinical_fields]
['idh', 'codel_1p19q', 'mgmt', 'grade']
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import ClassVar

import numpy as np
import numpy.typing as npt
import torch
from torch.nn import functional as nnf

from neurofed.config import ConfigBase, require
from neurofed.keys import (
    ClinicalField,
    Marker,
    MetricName,
    Modality,
    TaskId,
    TumorLabel,
    TumorRegion,
)
from neurofed.models import ModelName, MultitaskUNetConfig, OutputKey
from neurofed.tasks.base import ModelOutput, Task
from neurofed.tasks.batch import Batch
from neurofed.tasks.classification_metrics import (
    binary_counts,
    binary_report_with_auc,
    multiclass_confusion,
    multiclass_report_with_aucs,
)
from neurofed.tasks.losses import masked_bce_with_logits, masked_cross_entropy, soft_dice, zero_loss
from neurofed.tasks.metric_state import MetricState, StateKey
from neurofed.tasks.regions import labels_to_regions
from neurofed.tasks.segmentation_metrics import (
    confusion_counts,
    dice_per_case,
    pooled_dice,
)
from neurofed.tasks.sharing import binary_auc, case_mean, class_auc

__all__ = [
    "BINARY_MARKERS",
    "GliomaMultitaskConfig",
    "GliomaMultitaskTask",
    "Grade",
    "marker_scores",
]

#: Markers with one logit each, in output order.
BINARY_MARKERS: tuple[Marker, ...] = (Marker.IDH, Marker.CODEL_1P19Q, Marker.MGMT)

_SEGMENTED = TumorRegion.WT


class Grade(StrEnum):
    """WHO grade classes predicted by the grade head (index = WHO grade - 2)."""

    II = "II"
    III = "III"
    IV = "IV"

    @property
    def who(self) -> int:
        """The WHO CNS grade number."""
        return list(Grade).index(self) + 2


def marker_scores(
    cases: Mapping[str, npt.ArrayLike],
) -> dict[Marker, tuple[npt.NDArray[np.int64], npt.NDArray[np.float64]]]:
    """Per marker, the true classes of the cases with a known value and the model's scores for
    them, from a metric state's per-case arrays: each binary marker's score, and for the grade
    the probability of IV against II and III (as ``grade/IV/auc``).

    Examples
    --------
    >>> cases = {"idh/score": [0.2, 0.9], "idh/target": [0, 1],
    ...          "grade/probabilities": [[0.6, 0.3, 0.1], [0.1, 0.2, 0.7]], "grade/target": [0, 2]}
    >>> {m.value: (y.tolist(), s.tolist()) for m, (y, s) in marker_scores(cases).items()}
    {'idh': ([0, 1], [0.2, 0.9]), 'grade': ([0, 1], [0.1, 0.7])}
    """
    out = {}
    for marker in BINARY_MARKERS:
        if f"{marker}/{StateKey.SCORE}" in cases:
            target = np.asarray(cases[f"{marker}/{StateKey.TARGET}"], dtype=np.int64)
            score = np.asarray(cases[f"{marker}/{StateKey.SCORE}"], dtype=np.float64)
            out[marker] = (target, score)
    if f"{Marker.GRADE}/{StateKey.PROBABILITIES}" in cases:
        four = list(Grade).index(Grade.IV)
        classes = np.asarray(cases[f"{Marker.GRADE}/{StateKey.TARGET}"], dtype=np.int64)
        probabilities = np.asarray(cases[f"{Marker.GRADE}/{StateKey.PROBABILITIES}"], np.float64)
        out[Marker.GRADE] = ((classes == four).astype(np.int64), probabilities[:, four])  # (n,)
    return out


@dataclass(frozen=True)
class GliomaMultitaskConfig(ConfigBase):
    """Configuration of ``glioma-multitask``: term weights, threshold, Dice smoothing."""

    segmentation_weight: float = 1.0
    idh_weight: float = 1.0
    codel_1p19q_weight: float = 1.0
    mgmt_weight: float = 1.0
    grade_weight: float = 1.0
    threshold: float = 0.5
    smooth: float = 1e-5

    def __post_init__(self) -> None:
        for name in (
            "segmentation_weight",
            "idh_weight",
            "codel_1p19q_weight",
            "mgmt_weight",
            "grade_weight",
            "smooth",
        ):
            value = getattr(self, name)
            require(
                isinstance(value, int | float) and 0 <= value < math.inf,
                self,
                name,
                "use a finite number >= 0 (0 switches the term off)",
            )
            object.__setattr__(self, name, float(value))
        require(
            isinstance(self.threshold, int | float) and 0.0 < self.threshold < 1.0,
            self,
            "threshold",
            "use a probability in (0, 1), e.g. 0.5",
        )
        object.__setattr__(self, "threshold", float(self.threshold))

    def weight(self, marker: Marker) -> float:
        """Loss weight of ``marker``'s term."""
        value: float = getattr(self, f"{Marker(marker).value}_weight")
        return value


class GliomaMultitaskTask(Task):
    """Segmentation plus marker and grade prediction with masked terms (module docstring)."""

    task_id: ClassVar[TaskId] = TaskId.GLIOMA_MULTITASK
    modalities: ClassVar[tuple[Modality, ...]] = (
        Modality.T1,
        Modality.T1CE,
        Modality.T2,
        Modality.FLAIR,
    )
    model_name: ClassVar[str] = ModelName.MULTITASK_UNET
    out_channels: ClassVar[int] = 1
    needs_label_map: ClassVar[bool] = True
    max_label: ClassVar[int] = int(TumorLabel.ET)
    config_type: ClassVar[type[ConfigBase]] = GliomaMultitaskConfig
    config: GliomaMultitaskConfig

    @property
    def clinical_fields(self) -> tuple[ClinicalField, ...]:
        return (*(ClinicalField(m.value) for m in BINARY_MARKERS), ClinicalField.GRADE)

    def default_model_config(self) -> ConfigBase:
        """``multitask-unet``: base 16, three (1, 2, 2) poolings, three grades."""
        return MultitaskUNetConfig(num_grades=len(Grade))

    # -- helpers -----------------------------------------------------------------------------

    def _outputs(self, outputs: ModelOutput, batch: Batch | None) -> Mapping[str, torch.Tensor]:
        if isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"task {self.task_id.value!r} expects a dict of named outputs (OutputKey); "
                "got a tensor"
            )
        missing = [k.value for k in OutputKey if k not in outputs]
        if missing:
            raise ValueError(f"task {self.task_id.value!r}: model outputs lack {missing}")
        if batch is not None:
            self._segmentation_output(outputs[OutputKey.SEGMENTATION], batch, self.out_channels)
            b = batch.batch_size
            for key in BINARY_MARKERS:
                if tuple(outputs[key].shape) != (b,):
                    raise ValueError(
                        f"output {key.value!r} has shape {tuple(outputs[key].shape)}; "
                        f"expected ({b},)"
                    )
            if tuple(outputs[OutputKey.GRADE].shape) != (b, len(Grade)):
                raise ValueError(
                    f"output 'grade' has shape {tuple(outputs[OutputKey.GRADE].shape)}; "
                    f"expected ({b}, {len(Grade)}) — build the model with num_grades={len(Grade)}"
                )
        return outputs

    def _grade_classes(self, batch: Batch) -> tuple[torch.Tensor, torch.Tensor]:
        target = batch.clinical[ClinicalField.GRADE]
        known = target.known
        grades = target.values[known]
        valid = (grades == 2) | (grades == 3) | (grades == 4)
        if not bool(valid.all()):
            bad = sorted({float(g) for g in grades[~valid]})
            raise ValueError(
                f"task {self.task_id.value!r} predicts WHO grade II/III/IV; known grades {bad} "
                "are out of range — mark them unknown or exclude those cases"
            )
        classes = torch.zeros_like(target.values, dtype=torch.long)
        classes[known] = grades.long() - 2
        return classes, known

    # -- task --------------------------------------------------------------------------------

    def _loss(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        out = self._outputs(outputs, batch)
        seg = out[OutputKey.SEGMENTATION]  # (B, 1, X, Y, Z)
        labelled = batch.labelled
        if bool(labelled.any()):
            assert batch.label is not None  # check_batch
            logits = seg[labelled]  # (N, 1, X, Y, Z)
            target = labels_to_regions(batch.label[labelled], (_SEGMENTED,)).to(logits.dtype)
            dice = soft_dice(
                torch.sigmoid(logits), target, (1, 2, 3, 4), self.config.smooth
            )  # (N,)
            bce = nnf.binary_cross_entropy_with_logits(logits, target, reduction="none")
            seg_loss = (1.0 - dice + bce.mean(dim=(1, 2, 3, 4))).mean()
        else:
            seg_loss = zero_loss(seg)
        total = self.config.segmentation_weight * seg_loss
        for marker in BINARY_MARKERS:
            clinical = batch.clinical[ClinicalField(marker.value)]
            term = masked_bce_with_logits(out[marker], clinical.values, clinical.known)
            total = total + self.config.weight(marker) * term
        classes, known = self._grade_classes(batch)
        grade_loss = masked_cross_entropy(out[OutputKey.GRADE], classes, known)
        return total + self.config.grade_weight * grade_loss

    def postprocess(self, outputs: ModelOutput) -> dict[str, torch.Tensor]:
        """Segmentation ``(B, 1, X, Y, Z)`` uint8 mask, marker probabilities ``(B,)``,
        grade probabilities ``(B, 3)`` (II, III, IV)."""
        out = self._outputs(outputs, None)
        seg = (torch.sigmoid(out[OutputKey.SEGMENTATION]) > self.config.threshold).to(torch.uint8)
        result = {str(OutputKey.SEGMENTATION): seg}
        for marker in BINARY_MARKERS:
            result[str(marker)] = torch.sigmoid(out[marker])
        result[str(OutputKey.GRADE)] = torch.softmax(out[OutputKey.GRADE], dim=1)
        return result

    def _metric_state(self, outputs: ModelOutput, batch: Batch) -> MetricState:
        self._outputs(outputs, batch)
        predicted = self.postprocess(outputs)
        sums: dict[str, np.ndarray] = {}
        cases: dict[str, np.ndarray] = {}
        labelled = batch.labelled
        assert batch.label is not None  # check_batch
        pred = predicted[OutputKey.SEGMENTATION][labelled][:, 0].bool().cpu().numpy()
        target = labels_to_regions(batch.label[labelled], (_SEGMENTED,))[:, 0].bool().cpu().numpy()
        counts = confusion_counts(pred, target)  # (N, 3)
        for c, key in enumerate((StateKey.TP, StateKey.FP, StateKey.FN)):
            sums[f"{_SEGMENTED}/{key}"] = counts[:, c].sum()
        sums[f"{_SEGMENTED}/{StateKey.NUM_EXAMPLES}"] = np.array(len(counts))
        cases[f"{_SEGMENTED}/{StateKey.DICE}"] = dice_per_case(counts)
        for marker in BINARY_MARKERS:
            clinical = batch.clinical[ClinicalField(marker.value)]
            known = clinical.known
            scores = predicted[marker][known].double().cpu().numpy()
            labels = clinical.values[known].cpu().numpy().astype(np.int64)
            marker_counts = binary_counts(scores, labels, threshold=self.config.threshold)
            for c, key in enumerate((StateKey.TP, StateKey.FP, StateKey.TN, StateKey.FN)):
                sums[f"{marker}/{key}"] = marker_counts[c]
            cases[f"{marker}/{StateKey.SCORE}"] = scores
            cases[f"{marker}/{StateKey.TARGET}"] = labels
        classes, known = self._grade_classes(batch)
        probabilities = predicted[OutputKey.GRADE][known].double().cpu().numpy()  # (n, 3)
        grade_targets = classes[known].cpu().numpy().astype(np.int64)
        sums[f"{Marker.GRADE}/{StateKey.CONFUSION}"] = multiclass_confusion(
            probabilities, grade_targets
        )
        cases[f"{Marker.GRADE}/{StateKey.PROBABILITIES}"] = probabilities
        cases[f"{Marker.GRADE}/{StateKey.TARGET}"] = grade_targets
        return MetricState(sums=sums, cases=cases)

    def _finalize(self, state: MetricState) -> dict[str, float]:
        out: dict[str, float] = {}
        tp, fp, fn = (
            int(state.sums[f"{_SEGMENTED}/{k}"]) for k in (StateKey.TP, StateKey.FP, StateKey.FN)
        )
        out[f"{_SEGMENTED}/{MetricName.DICE}"] = case_mean(state, f"{_SEGMENTED}/{StateKey.DICE}")
        segmented = float(state.sums[f"{_SEGMENTED}/{StateKey.NUM_EXAMPLES}"])
        out[f"{_SEGMENTED}/{MetricName.DICE_POOLED}"] = pooled_dice(tp, fp, fn, segmented)
        out[f"{_SEGMENTED}/{MetricName.NUM_EXAMPLES}"] = segmented
        for marker in BINARY_MARKERS:
            counts = np.array(
                [
                    state.sums[f"{marker}/{k}"]
                    for k in (StateKey.TP, StateKey.FP, StateKey.TN, StateKey.FN)
                ]
            )
            report = binary_report_with_auc(counts, binary_auc(state, str(marker)))
            out.update({f"{marker}/{name}": value for name, value in report.items()})
        grades = [g.value for g in Grade]
        grade_report = multiclass_report_with_aucs(
            state.sums[f"{Marker.GRADE}/{StateKey.CONFUSION}"],
            [class_auc(state, str(Marker.GRADE), k) for k in range(len(grades))],
            grades,
        )
        out.update({f"{Marker.GRADE}/{name}": value for name, value in grade_report.items()})
        return out
