"""A trained model run on one unlabelled case: its own preprocessing, then the results on the
grid of the scan that came in.

:func:`predict_case` takes the model folder's :class:`~neurofed.training.TrainedModel` (or an
exported folder's :class:`~neurofed.export.ExportedModel`, run without torch) and one
:class:`~neurofed.predict.scan.Scan` per modality the model needs:

1. checks the input (:func:`check_inputs`): every modality the model was trained on is there,
   the scan covers a head (at least :data:`MIN_FIELD_MM` along each axis), and its voxels are
   within :data:`MAX_SPACING_RATIO` of the model's spacing (the message says what resampling
   would do; ``allow_spacing`` goes on with a warning);
2. puts every modality on the grid of the first (the *reference* scan; ``resample``, linear) and
   runs the model folder's preprocessing (:func:`~neurofed.preprocess.ops.preprocess_case`:
   RAS, bias correction and co-registration as trained, brain extraction of a full head when
   the model's study extracted brains (deepbet, :mod:`neurofed.preprocess.skull`), spacing,
   brain mask, z-score, crops);
3. predicts (sliding windows as in training) and maps every segmentation back onto the
   reference scan's grid through the world coordinates (nearest neighbour): same shape, same
   affine, same orientation as the scan;
4. summarises what a clinician reads: lesion count and volumes in mL, marker probabilities with
   their threshold, the grade, the brain age — and the warnings about the input.

Whether the scan shows a full head or a skull-stripped brain is judged from its shape
(:func:`~neurofed.preprocess.skull.detect_skull_stripped`), not from zero borders. A brain mask
far from a brain's size means the scan is not a brain MRI the model can read, and is refused
(:class:`PredictError`); a full head given to a model trained without brain extraction gets a
warning that says so, and deepbet's mask gets :func:`~neurofed.preprocess.skull.judge_brain_mask`'s
findings as warnings.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.export.runtime import ExportedModel
from neurofed.keys import LesionLabel, Modality, OutputKey, TaskId, TumorLabel
from neurofed.predict.scan import Scan, resample
from neurofed.preprocess.ops import brain_mask, finish_case, harmonise_case
from neurofed.preprocess.params import BrainMaskMethod, PreprocessError
from neurofed.preprocess.skull import (
    StrippedCheck,
    detect_skull_stripped,
    extraction_channel,
    extraction_record,
    judge_brain_mask,
)

if TYPE_CHECKING:
    from neurofed.training.model_folder import TrainedModel

    #: A PyTorch model folder, or an exported one (run without torch).
    Model = TrainedModel | ExportedModel

__all__ = [
    "MAX_SPACING_RATIO",
    "MIN_FIELD_MM",
    "CasePrediction",
    "PredictError",
    "check_inputs",
    "predict_case",
]

#: The smallest extent (mm) a brain scan has along every axis.
MIN_FIELD_MM = 80.0
#: Voxels more than this many times larger (or smaller) than the model's are refused unless
#: allowed: the model would see a volume interpolated from far fewer (or more) voxels.
MAX_SPACING_RATIO = 3.0
#: Voxels between 1.5x and MAX_SPACING_RATIO of the model's get a warning.
_WARN_SPACING_RATIO = 1.5
#: A brain mask outside this many millilitres is not a brain the model can read.
_BRAIN_ML = (300.0, 3000.0)


class PredictError(ValueError):
    """The input cannot be predicted on; the message says which file or setting and the fix."""


@dataclass
class CasePrediction:
    """One case's results: label maps on the reference scan's grid, numbers, warnings."""

    task: TaskId
    reference: Scan
    segmentation: npt.NDArray[np.uint8] | None = None  # (X, Y, Z) on the reference grid
    brain_mask: npt.NDArray[np.bool_] | None = None  # (X, Y, Z) on the reference grid
    heatmaps: dict[str, npt.NDArray[np.float32]] = field(default_factory=dict)  # Grad-CAM
    results: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    brain_mask_method: str = ""
    brain_extraction: dict[str, Any] | None = None  # skull.extraction_record, None when off
    seconds: float = 0.0


def _model_spacing(model: Model) -> tuple[float, float, float] | None:
    plan_spacing = model.preprocess.spacing
    return None if plan_spacing is None else tuple(float(s) for s in plan_spacing)  # type: ignore[return-value]


def check_inputs(
    model: Model, scans: Mapping[Modality, Scan], *, allow_spacing: bool = False
) -> list[str]:
    """Refuse input the model cannot read; returns the warnings for input it can.

    Raises
    ------
    PredictError
        A modality the model needs is missing, a scan does not cover a head, or its voxels are
        too far from the model's spacing (unless ``allow_spacing``).
    """
    needed = list(model.task.modalities)
    missing = [m.value for m in needed if m not in scans]
    if missing:
        given = ", ".join(m.value for m in scans) or "none"
        options = " ".join(f"--{m.lower()} FILE" for m in missing)
        raise PredictError(
            f"the model ({model.task.task_id.value}) needs {', '.join(m.value for m in needed)}; "
            f"{', '.join(missing)} missing (given: {given}); add {options}"
        )
    warnings = []
    extra = [m.value for m in scans if m not in needed]
    if extra:
        warnings.append(f"{', '.join(extra)} given but not used: the model reads {needed}")
    target = _model_spacing(model)
    for modality in needed:
        scan = scans[modality]
        extent = [n * s for n, s in zip(scan.shape, scan.spacing, strict=True)]
        if min(extent) < MIN_FIELD_MM:
            raise PredictError(
                f"{scan.path}: covers {' x '.join(f'{e:.0f}' for e in extent)} mm, less than "
                f"{MIN_FIELD_MM:.0f} mm along an axis: not a whole-brain scan (a localiser, a "
                "single slab?); give the full 3-D acquisition"
            )
        if target is None:
            continue
        spacing = sorted(scan.spacing)
        ratio = max(max(spacing) / max(target), min(target) / min(spacing))
        what = (
            f"{scan.path.name}: voxels {' x '.join(f'{s:.2g}' for s in scan.spacing)} mm, the "
            f"model's {' x '.join(f'{s:.2g}' for s in target)} mm: the scan is resampled to the "
            f"model's grid ({ratio:.1f}x), so detail finer than its thickest voxel is "
            "interpolated, not seen"
        )
        if ratio > MAX_SPACING_RATIO and not allow_spacing:
            raise PredictError(
                f"{what}; give a thinner acquisition, or --allow-spacing to predict anyway"
            )
        if ratio > _WARN_SPACING_RATIO:
            warnings.append(what)
    return warnings


def _stack(model: Model, scans: Mapping[Modality, Scan]) -> tuple[np.ndarray, list[str]]:
    """The model's channels on the reference scan's grid."""
    reference = scans[model.task.modalities[0]]
    channels, warnings = [], []
    for modality in model.task.modalities:
        scan = scans[modality]
        same = scan.shape == reference.shape and np.allclose(
            scan.affine, reference.affine, atol=1e-3
        )
        if not same:
            warnings.append(
                f"{modality.value} is on another grid than {model.task.modalities[0].value}: "
                f"resampled onto it by its position in the scanner"
            )
            channels.append(
                resample(scan.array, scan.affine, reference.shape, reference.affine, order=1)
            )
        else:
            channels.append(scan.array)
    return np.stack(channels).astype(np.float32, copy=False), warnings


def _brain_warnings(mask_ml: float, method: BrainMaskMethod, stripped: StrippedCheck) -> list[str]:
    low, high = _BRAIN_ML
    # a full head whose brain was not extracted: the model was trained without extraction
    whole_head = not stripped.stripped and method is not BrainMaskMethod.DEEPBET
    if not low <= mask_ml <= high:
        why = (
            f"the scan shows a full head ({stripped.reason}) and this model was trained without "
            "brain extraction, so its mask is the whole head; give a skull-stripped scan, or "
            "use a model whose study extracts the brain"
            if whole_head
            else "this does not look like a brain MRI the model can read; check the files and "
            "the modalities"
        )
        raise PredictError(
            f"the brain mask is {mask_ml:.0f} mL (a brain is {low:.0f}-{high:.0f} mL): {why}"
        )
    if whole_head:
        return [
            f"the scan shows a full head ({stripped.reason}), and this model was trained "
            "without brain extraction: its mask, crop and normalisation use the whole head, as "
            "in training; check the mask in the overlay"
        ]
    return []


def _to_reference(
    label: npt.NDArray[np.uint8], affine: npt.NDArray[np.float64], reference: Scan
) -> npt.NDArray[np.uint8]:
    return resample(label, affine, reference.shape, reference.affine, order=0).astype(np.uint8)


def _lesions(mask: npt.NDArray[np.bool_], voxel_ml: float, connectivity: int) -> dict[str, Any]:
    structure = ndimage.generate_binary_structure(3, connectivity)
    components, count = ndimage.label(mask, structure=structure)
    sizes = np.bincount(components.ravel())[1:] if count else np.zeros(0, np.int64)
    volumes = sorted((float(n) * voxel_ml for n in sizes), reverse=True)
    return {
        "lesion_count": int(count),
        "total_volume_ml": round(float(mask.sum()) * voxel_ml, 3),
        "lesion_volumes_ml": [round(v, 3) for v in volumes],
    }


def _scalar(value: npt.NDArray[Any]) -> float:
    return float(np.asarray(value).reshape(-1)[0])


def _numpy(value: Any) -> npt.NDArray[Any]:
    """A model output as numpy (a torch tensor, read without importing torch, or an array)."""
    if hasattr(value, "detach"):
        return np.asarray(value.detach().cpu().numpy())
    return np.asarray(value)


def _region_labels(regions: npt.NDArray[Any]) -> npt.NDArray[np.uint8]:
    """``(B, 3, X, Y, Z)`` ET / TC / WT masks as a ``(B, X, Y, Z)`` label map, as
    :func:`neurofed.tasks.regions.regions_to_labels` makes it (inner regions win)."""
    masks = regions.astype(bool)
    out = np.zeros(masks[:, 0].shape, np.uint8)  # (B, X, Y, Z)
    out[masks[:, 2]] = int(TumorLabel.ED)
    out[masks[:, 1]] = int(TumorLabel.NCR)
    out[masks[:, 0]] = int(TumorLabel.ET)
    return out


def predict_case(
    model: Model,
    scans: Mapping[Modality, Scan],
    *,
    allow_spacing: bool = False,
    explain: bool = False,
) -> CasePrediction:
    """Run ``model`` on one case (see the module docstring); ``explain`` adds a Grad-CAM heat
    map per classification head on the reference grid (:func:`_explain`).

    Raises
    ------
    PredictError
        The input is refused (see :func:`check_inputs`), or it is not a brain the model can
        read.
    """
    began = time.perf_counter()
    warnings = check_inputs(model, scans, allow_spacing=allow_spacing)
    reference = scans[model.task.modalities[0]]
    image, moved = _stack(model, scans)
    warnings += moved
    channel = extraction_channel(model.task.modalities)
    try:
        harmonised = harmonise_case(
            image, None, reference.affine, model.preprocess, extract_from=channel
        )
        stripped = harmonised.stripped or detect_skull_stripped(image[channel], reference.affine)
        if harmonised.extraction is not None:  # deepbet's brain, back on the scan's grid
            brain = harmonised.extraction.mask.astype(np.uint8)
            mask = _to_reference(brain, harmonised.affine, reference).astype(bool)
            method = BrainMaskMethod.DEEPBET
            warnings += [f"brain extraction: {w}" for w in judge_brain_mask(mask, reference.affine)]
        else:
            mask, method = brain_mask(image)  # as the pipeline finds it, on the scan's grid
        warnings += _brain_warnings(float(mask.sum()) * reference.voxel_ml, method, stripped)
        case = finish_case(harmonised, model.preprocess)
    except PreprocessError as exc:
        raise PredictError(f"{reference.path}: cannot be preprocessed as trained: {exc}") from None
    predicted = model.predict(case.image)
    output: npt.NDArray[Any] | dict[str, npt.NDArray[Any]] = (
        {str(k): _numpy(v) for k, v in predicted.items()}
        if isinstance(predicted, Mapping)
        else _numpy(predicted)
    )
    task = model.task.task_id
    result = CasePrediction(task, reference, warnings=warnings, brain_mask=mask)
    result.brain_mask_method = case.brain_mask_method.value
    result.brain_extraction = extraction_record(
        harmonised.stripped, harmonised.extraction, harmonised.affine
    )
    voxel_ml = reference.voxel_ml
    if task is TaskId.BRAIN_AGE:
        assert isinstance(output, np.ndarray)
        target = str(getattr(model.task.config, "target", "age"))
        value = _scalar(output)
        result.results = {
            "target": target,
            "value": round(value, 2) if math.isfinite(value) else None,
        }
        if target == "age":
            result.results["unit"] = "years"
    elif task is TaskId.TUMOR_REGIONS:
        assert isinstance(output, np.ndarray)
        labels = _region_labels(output)[0]
        result.segmentation = _to_reference(labels, case.affine, reference)
        result.results = _tumour_volumes(result.segmentation, voxel_ml)
    elif task is TaskId.MS_LESION:
        assert isinstance(output, np.ndarray)
        lesion = (output[0, 0] == int(LesionLabel.LESION)).astype(np.uint8)
        result.segmentation = _to_reference(lesion, case.affine, reference)
        connectivity = int(getattr(model.task.config, "connectivity", 3))
        result.results = _lesions(result.segmentation.astype(bool), voxel_ml, connectivity)
    else:  # glioma multi-task: a tumour mask and the markers
        assert isinstance(output, Mapping)
        tumour = output[str(OutputKey.SEGMENTATION)][0, 0].astype(np.uint8)
        result.segmentation = _to_reference(tumour, case.affine, reference)
        result.results = _markers(model, output)
        result.results["tumour_volume_ml"] = round(float(result.segmentation.sum()) * voxel_ml, 3)
        if explain and not isinstance(model, ExportedModel):
            _explain(model, case.image, case.affine, result)
        elif explain:
            result.warnings.append(
                "--explain: Grad-CAM needs the PyTorch model folder; an exported model has no "
                "gradients (predict with the model folder it was exported from)"
            )
    if explain and task is not TaskId.GLIOMA_MULTITASK:
        result.warnings.append(
            f"--explain: a {task.value} model has no classification head to explain (Grad-CAM "
            "explains the glioma-multitask markers and grade)"
        )
    result.seconds = time.perf_counter() - began
    return result


def _tumour_volumes(labels: npt.NDArray[np.uint8], voxel_ml: float) -> dict[str, Any]:
    """Volumes of the BraTS regions (mL): whole tumour, tumour core, enhancing tumour."""
    counts = np.bincount(labels.ravel(), minlength=4)
    ncr, ed, et = (float(counts[k]) * voxel_ml for k in (1, 2, 3))
    return {
        "labels": {"1": "necrotic / non-enhancing core", "2": "oedema", "3": "enhancing tumour"},
        "volume_ml": {
            "WT": round(ncr + ed + et, 3),
            "TC": round(ncr + et, 3),
            "ET": round(et, 3),
        },
    }


def _markers(model: Model, output: Mapping[str, npt.NDArray[Any]]) -> dict[str, Any]:
    from neurofed.tasks.glioma_multitask import BINARY_MARKERS, Grade

    threshold = float(getattr(model.task.config, "threshold", 0.5))
    markers = {}
    for marker in BINARY_MARKERS:
        probability = _scalar(output[str(marker)])
        markers[marker.value] = {
            "probability": round(probability, 4),
            "threshold": threshold,
            "call": "positive" if probability >= threshold else "negative",
        }
    grades = np.asarray(output[str(OutputKey.GRADE)][0], np.float64)
    best = int(np.argmax(grades))
    return {
        "markers": markers,
        "grade": {
            "who": list(Grade)[best].who,
            "probabilities": {
                f"WHO {g.who}": round(float(p), 4) for g, p in zip(Grade, grades, strict=True)
            },
        },
    }


def _explain(
    model: TrainedModel,
    image: npt.NDArray[np.float32],
    affine: npt.NDArray[np.float64],
    result: CasePrediction,
) -> None:
    """Grad-CAM per head on the reference grid, and the share of its hottest tenth of the brain
    inside the predicted tumour (``results["explain"]``)."""
    import torch

    from neurofed.evaluate.explain import TOP_FRACTION, head_heatmaps, top_share_inside
    from neurofed.tasks.glioma_multitask import BINARY_MARKERS

    heads = [*(m.value for m in BINARY_MARKERS), str(OutputKey.GRADE)]
    tensor = torch.as_tensor(image)[None].to(model.device)
    maps = head_heatmaps(model.model, tensor, heads, model.config.spatial_divisor())
    reference = result.reference
    tumour = result.segmentation > 0 if result.segmentation is not None else None
    explained = {}
    for head, heat in maps.items():
        moved = resample(heat, affine, reference.shape, reference.affine, order=1)
        result.heatmaps[head] = moved
        share = (
            float("nan")
            if tumour is None
            else top_share_inside(moved, tumour, result.brain_mask, TOP_FRACTION)
        )
        explained[head] = {
            "file": f"gradcam-{head}.nii.gz",
            "top10_share_in_tumour": round(share, 4) if math.isfinite(share) else None,
        }
    result.results["explain"] = explained
