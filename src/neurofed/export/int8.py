"""Accuracy-gated INT8: NNCF accuracy-aware quantisation on a site's validation cases.

The site's validation cases are read and preprocessed exactly as the model was trained
(:class:`~neurofed.training.site_data.SiteData` with the model folder's preprocessing, the path
``neurofed evaluate`` takes). Calibration sees what the network sees at inference: every
sliding window of those cases (or the padded whole volumes of whole-volume models).
``nncf.quantize_with_accuracy_control`` then quantises the OpenVINO model and keeps layers in
FP32 where needed so that the **gate metric** drops by at most ``max_metric_drop`` (absolute);
its validation function runs a compiled model over the cases exactly as a clinic does
(:func:`neurofed.export.window.infer`) and scores them with the task's own metrics.

The gate metric is the task's headline metric (:data:`neurofed.training.HEADLINE_METRICS`),
as a number where higher is better: the mean of the ET / TC / WT Dice (``tumor-regions``), the
WT Dice (``glioma-multitask``), the lesion Dice (``ms-lesion``) and minus the MAE in years
(``brain-age``). Whatever NNCF reaches, the drop is measured again here between the PyTorch
model and the final INT8 model on the same cases; above ``max_metric_drop`` the export is
refused with the measured numbers.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from statistics import fmean
from typing import Any

import numpy as np
import torch

from neurofed.export.folder import ExportError, MetricDropError
from neurofed.export.runtime import Network, openvino_config
from neurofed.export.telemetry import disable_telemetry
from neurofed.export.window import Array, infer, window_starts
from neurofed.keys import Split, TaskId
from neurofed.tasks import merge_states
from neurofed.training.dataset import TrainingCase, collate
from neurofed.training.model_folder import TrainedModel
from neurofed.training.records import HEADLINE_METRICS
from neurofed.training.site_data import SiteData

__all__ = ["GATE_METRIC", "gate_metric", "quantize", "score_cases"]

#: What the gate metric is, per task (see the module docstring).
GATE_METRIC: dict[TaskId, str] = {
    TaskId.TUMOR_REGIONS: "mean of " + ", ".join(HEADLINE_METRICS[TaskId.TUMOR_REGIONS]),
    TaskId.GLIOMA_MULTITASK: HEADLINE_METRICS[TaskId.GLIOMA_MULTITASK][0],
    TaskId.MS_LESION: HEADLINE_METRICS[TaskId.MS_LESION][0],
    TaskId.BRAIN_AGE: "-" + HEADLINE_METRICS[TaskId.BRAIN_AGE][0],
}
#: Calibration windows at most (NNCF's subset size).
_CALIBRATION_WINDOWS = 300


def gate_metric(task_id: TaskId, metrics: dict[str, float]) -> float:
    """The gate metric (higher is better) from a task's finalised metrics.

    >>> gate_metric(TaskId.BRAIN_AGE, {"mae": 6.5, "pearson_r": 0.8})
    -6.5
    >>> gate_metric(TaskId.TUMOR_REGIONS, {"ET/dice": 0.5, "TC/dice": 0.7, "WT/dice": 0.9})
    0.7
    """
    headline = HEADLINE_METRICS[task_id]
    if task_id is TaskId.TUMOR_REGIONS:
        return round(fmean(metrics[name] for name in headline), 12)
    value = metrics[headline[0]]
    return -value if task_id is TaskId.BRAIN_AGE else value


def _as_model_outputs(
    outputs: dict[str, Array], names: Sequence[str]
) -> torch.Tensor | dict[str, torch.Tensor]:
    if len(names) == 1 and names[0] == "output":
        return torch.from_numpy(outputs[names[0]])
    return {n: torch.from_numpy(outputs[n]) for n in names}


def score_cases(
    trained: TrainedModel,
    network: Network | None,
    names: Sequence[str],
    cases: Iterable[TrainingCase],
) -> float:
    """The gate metric of ``network`` (``None``: the PyTorch model) over ``cases``."""
    task = trained.task
    divisor = trained.config.spatial_divisor()
    states = []
    for case in cases:
        batch = collate([(case.image, case.label, case.clinical)], task, (1, 1, 1))
        if network is None:
            outputs: Any = trained.raw_outputs(batch.image)
        else:
            raw = infer(
                network,
                batch.image.numpy(),
                patch_shape=trained.config.patch_shape,
                divisor=divisor,
                overlap=trained.config.sliding_window_overlap,
                batch_size=trained.config.batch_size,
            )
            outputs = _as_model_outputs(raw, names)
        states.append(task.metric_state(outputs, batch))
    state = merge_states(states)
    if state.is_empty:
        return math.nan
    return gate_metric(task.task_id, task.finalize(state))


def _windows(trained: TrainedModel, cases: Sequence[TrainingCase]) -> list[Array]:
    """The network's inputs at inference: every window (or padded volume) of ``cases``."""
    patch = trained.config.patch_shape
    divisor = trained.config.spatial_divisor()
    items: list[Array] = []
    for case in cases:
        image = case.image  # (C, X, Y, Z)
        if patch is None:
            pad = [(0, 0)] + [
                (0, -(-n // d) * d - n) for n, d in zip(image.shape[1:], divisor, strict=True)
            ]
            items.append(np.pad(image, pad)[None].astype(np.float32))
            continue
        before = [max(p - n, 0) // 2 for n, p in zip(image.shape[1:], patch, strict=True)]
        after = [max(p - n, 0) - b for n, p, b in zip(image.shape[1:], patch, before, strict=True)]
        image = np.pad(image, [(0, 0), *zip(before, after, strict=True)])
        starts = [
            window_starts(n, p, trained.config.sliding_window_overlap)
            for n, p in zip(image.shape[1:], patch, strict=True)
        ]
        px, py, pz = patch
        for x in starts[0]:
            for y in starts[1]:
                for z in starts[2]:
                    window = image[:, x : x + px, y : y + py, z : z + pz]
                    items.append(np.ascontiguousarray(window[None], np.float32))
    if len(items) > _CALIBRATION_WINDOWS:
        keep = np.linspace(0, len(items) - 1, _CALIBRATION_WINDOWS).round().astype(int)
        items = [items[k] for k in keep]
    return items


def _compiled_network(compiled: Any, names: Sequence[str]) -> Network:
    ports = [compiled.output(n) for n in names]

    def run(batch: Array) -> dict[str, Array]:
        result = compiled(np.ascontiguousarray(batch, np.float32))
        return {n: np.asarray(result[p]) for n, p in zip(names, ports, strict=True)}

    return run


def quantize(
    trained: TrainedModel,
    model: Any,
    names: Sequence[str],
    site: Any,
    max_metric_drop: float,
) -> tuple[Any, dict[str, Any]]:
    """INT8 ``model`` (an ``openvino.Model``) within ``max_metric_drop``; returns it and what
    was measured.

    Raises
    ------
    ExportError
        The site has no validation case, the metric cannot be computed on them, or the INT8
        model loses more than ``max_metric_drop``.
    """
    disable_telemetry()
    import nncf
    import openvino as ov
    from nncf.quantization.advanced_parameters import AdvancedAccuracyRestorerParameters

    cases = list(SiteData(site, trained.task, trained.preprocess).split(Split.VALIDATION))
    if not cases:
        raise ExportError(
            f"{site}: no validation case to calibrate and validate INT8 on; give a site with a "
            "validation split (`neurofed site check`)"
        )
    reference = score_cases(trained, None, names, cases)
    if not math.isfinite(reference):
        raise ExportError(
            f"{site}: the gate metric ({GATE_METRIC[trained.task.task_id]}) cannot be computed "
            "on its validation cases (no labelled case?); give a site whose validation cases "
            "carry the task's labels"
        )

    def validate(compiled: Any, items: Iterable[TrainingCase]) -> tuple[float, None]:
        return score_cases(trained, _compiled_network(compiled, names), names, items), None

    calibration = _windows(trained, cases)
    quantized = nncf.quantize_with_accuracy_control(
        model,
        calibration_dataset=nncf.Dataset(calibration),
        validation_dataset=nncf.Dataset(cases),
        validation_fn=validate,
        max_drop=max_metric_drop,
        drop_type=nncf.DropType.ABSOLUTE,
        subset_size=len(calibration),
        advanced_accuracy_restorer_parameters=AdvancedAccuracyRestorerParameters(
            max_num_iterations=3, ranking_subset_size=min(len(cases), 5)
        ),
    )
    compiled = ov.Core().compile_model(quantized, "CPU", openvino_config())
    measured = score_cases(trained, _compiled_network(compiled, names), names, cases)
    drop = reference - measured
    record = {
        "gate_metric": GATE_METRIC[trained.task.task_id],
        "fp32_pytorch": reference,
        "int8": measured,
        "metric_drop": drop,
        "max_metric_drop": max_metric_drop,
        "validation_cases": len(cases),
        "calibration_windows": len(calibration),
        "site": getattr(site, "name", str(site)),
        "method": "nncf.quantize_with_accuracy_control",
    }
    if not (math.isfinite(measured) and drop <= max_metric_drop):
        raise MetricDropError(
            f"INT8 refused: {GATE_METRIC[trained.task.task_id]} is {reference:.4f} with PyTorch "
            f"and {measured:.4f} in INT8 on {len(cases)} validation case(s) of {site}: a drop of "
            f"{drop:.4f} > the allowed {max_metric_drop}; export FP32 (without --int8) or allow "
            "a larger --max-metric-drop"
        )
    return quantized, record
