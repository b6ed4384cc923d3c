"""Quality control of harmonised cases: per-case measures, then pass / warn / fail per check.

:func:`measure_case` turns one :class:`~neurofed.preprocess.ops.HarmonisedCase` (RAS, native
grid, after N4 and registration) into a :class:`CaseMeasures` of plain numbers; it is what the
pipeline records per case. :func:`evaluate_qc` judges the measures of all of a site's cases
against a frozen :class:`QCConfig` and returns a :class:`QCTable` of :class:`QCRow` (one per
case, modality and check, each with its value, threshold and reason). Everything stays at the
site: the table names subjects.

The checks
----------
``snr``
    Signal over noise per modality. The noise σ is estimated from differences of neighbouring
    voxels along the finest axis, ``σ = 1.4826 · MAD(ΔI) / √2``, inside a homogeneous region,
    so it needs no air background and works on skull-stripped data (background exactly 0).
    T1, T1CE, T2: signal and noise in **white matter**, the most populated intensity band of
    the brain eroded by 3 mm (the histogram mode of the smoothed image, ±1/8 of its 5–95 %
    range). FLAIR: signal in that band (parenchyma), noise in **CSF**, the darkest tenth of the
    eroded brain eroded once more: suppressed CSF is FLAIR's homogeneous dark region, as the MS
    study used it (at zero signal the magnitude noise is Rayleigh, so σ there is underestimated
    by about a third; the FLAIR thresholds are set for that).
``voxel_size``
    The scan's largest voxel edge against the expected range (scaled by the target spacing:
    a study resampling to 2 mm expects coarser scans than one at 1 mm).
``coverage``
    The fraction of the brain's largest cross-section lying on each face of the field of view
    (0 = the brain ends inside it). Any face but the inferior one fails when the brain is cut;
    the inferior face (where the brainstem and neck leave any head scan) only warns.
``mask_dice``
    Dice between each modality's foreground mask and the reference modality's, after
    registration (masks: the nonzero region of skull-stripped data, else voxels well above the
    noise of the field of view's faces).
``registration``
    A large rigid correction (the brain's centre moved or the modality rotated: it was
    misaligned, now corrected), a correction that made the masks agree less, or an implausibly
    large one (a failed registration or a wrong series).
``intensity_outlier``
    Robust z (median / MAD over the site's cases of that modality) of the case's intensity
    shape inside the brain: the 5th and 95th percentiles over the median. Needs a few cases.
``brain_mask``
    Whether the scan shows a full head or a skull-stripped brain (judged from its shape by
    :func:`~neurofed.preprocess.skull.detect_skull_stripped`, not from zero borders) and, when
    deepbet extracted the brain, what :func:`~neurofed.preprocess.skull.judge_brain_mask` finds
    wrong with its mask (a volume no brain has, a cut by the field of view, separate pieces).
    A full head preprocessed without brain extraction warns: its crop and normalisation then
    use the whole head. Cases measured before this check have none.
``preprocess``
    The case could not be preprocessed at all (the reason and fix come from the error).

Examples
--------
>>> config = QCConfig.for_spacing((2.0, 2.0, 2.0))  # voxel thresholds doubled
>>> config.snr_fail, config.voxel_pass_mm * config.spacing_scale
(5.0, 6.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.data.nifti import voxel_spacing
from neurofed.keys import Modality
from neurofed.preprocess.harmonise import Registration
from neurofed.preprocess.ops import HarmonisedCase, brain_mask
from neurofed.preprocess.params import PreprocessError
from neurofed.preprocess.skull import BRAIN_ML, detect_skull_stripped, judge_brain_mask
from neurofed.preprocess.volumes import voxel_ml

__all__ = [
    "BrainMaskMeasures",
    "CaseMeasures",
    "Face",
    "ModalityMeasures",
    "QCCheck",
    "QCConfig",
    "QCRow",
    "QCStatus",
    "QCTable",
    "dice",
    "evaluate_qc",
    "face_contact",
    "foreground_mask",
    "measure_case",
    "noise_sigma",
    "snr",
]

Channel = npt.NDArray[np.float32]  # (X, Y, Z)
Mask = npt.NDArray[np.bool_]  # (X, Y, Z)


class QCCheck(StrEnum):
    PREPROCESS = "preprocess"
    SNR = "snr"
    VOXEL_SIZE = "voxel_size"
    COVERAGE = "coverage"
    MASK_DICE = "mask_dice"
    REGISTRATION = "registration"
    INTENSITY_OUTLIER = "intensity_outlier"
    BRAIN_MASK = "brain_mask"


class QCStatus(StrEnum):
    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"

    @property
    def rank(self) -> int:
        return (QCStatus.PASS, QCStatus.WARN, QCStatus.FAIL).index(self)


class Face(StrEnum):
    """Faces of a RAS array: axis 0 runs left → right, 1 posterior → anterior, 2 inferior →
    superior."""

    LEFT = "left"
    RIGHT = "right"
    POSTERIOR = "posterior"
    ANTERIOR = "anterior"
    INFERIOR = "inferior"
    SUPERIOR = "superior"


_FACES = ((Face.LEFT, Face.RIGHT), (Face.POSTERIOR, Face.ANTERIOR), (Face.INFERIOR, Face.SUPERIOR))


@dataclass(frozen=True)
class QCConfig:
    """Thresholds of every check (see the module docstring for what each measures).

    Voxel-size thresholds are for a 1 mm target grid and are multiplied by ``spacing_scale``
    (:meth:`for_spacing` sets it to the coarsest target edge, at least 1).
    """

    snr_warn: float = 10.0  # T1, T1CE, T2 (white matter)
    snr_fail: float = 5.0
    flair_snr_warn: float = 6.0  # FLAIR (noise in CSF)
    flair_snr_fail: float = 4.0
    voxel_pass_mm: float = 3.0  # largest voxel edge
    voxel_warn_mm: float = 6.0  # above: fail
    voxel_min_mm: float = 0.25  # below: warn (header in the wrong units?)
    coverage_warn: float = 0.02  # fraction of the largest cross-section on a face
    coverage_fail: float = 0.10
    inferior_warn: float = 0.50
    dice_warn: float = 0.93
    dice_fail: float = 0.85
    dice_drop_fail: float = 0.02  # registration lowered the mask Dice by more than this
    motion_warn_mm: float = 3.0  # shift of the brain's centre
    motion_warn_deg: float = 3.0
    motion_fail_mm: float = 30.0
    motion_fail_deg: float = 30.0
    outlier_warn_z: float = 3.5
    outlier_fail_z: float = 6.0
    outlier_min_cases: int = 5
    spacing_scale: float = 1.0

    @classmethod
    def for_spacing(cls, spacing: Sequence[float] | None, **changes: Any) -> QCConfig:
        """The defaults (with ``changes``) for a study resampling to ``spacing`` mm."""
        scale = max(1.0, *(float(s) for s in spacing)) if spacing else 1.0
        return replace(cls(**changes), spacing_scale=scale)

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> QCConfig:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise PreprocessError(f"QCConfig: unknown fields {unknown}; known: {sorted(known)}")
        return cls(**dict(data))


@dataclass(frozen=True)
class ModalityMeasures:
    """What :func:`measure_case` found for one modality (``None``: not measurable / not run)."""

    modality: Modality
    snr: float | None
    snr_region: str
    percentiles: tuple[float, float, float]  # 5th, 50th, 95th inside the brain
    dice_before: float | None = None  # mask Dice with the reference before registration
    dice_after: float | None = None
    registration: Registration | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "modality": self.modality.value,
            "snr": self.snr,
            "snr_region": self.snr_region,
            "percentiles": list(self.percentiles),
            "dice_before": self.dice_before,
            "dice_after": self.dice_after,
            "registration": self.registration.to_json() if self.registration else None,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ModalityMeasures:
        p = [float(v) for v in data["percentiles"]]
        registration = data.get("registration")
        return cls(
            modality=Modality(data["modality"]),
            snr=None if data.get("snr") is None else float(data["snr"]),
            snr_region=str(data.get("snr_region", "")),
            percentiles=(p[0], p[1], p[2]),
            dice_before=None if data.get("dice_before") is None else float(data["dice_before"]),
            dice_after=None if data.get("dice_after") is None else float(data["dice_after"]),
            registration=Registration.from_json(registration) if registration else None,
        )


@dataclass(frozen=True)
class BrainMaskMeasures:
    """What the scan shows (a full head or a brain) and how its brain was masked."""

    head: bool  # the scan shows a full head (skull and scalp), not a skull-stripped brain
    reason: str  # the detection's one line
    extracted_ml: float | None = None  # deepbet's brain mask (mL), None when not extracted
    problems: tuple[str, ...] = ()  # judge_brain_mask's findings on that mask

    def to_json(self) -> dict[str, Any]:
        return {
            "head": self.head,
            "reason": self.reason,
            "extracted_ml": self.extracted_ml,
            "problems": list(self.problems),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> BrainMaskMeasures:
        ml = data.get("extracted_ml")
        return cls(
            head=bool(data["head"]),
            reason=str(data.get("reason", "")),
            extracted_ml=None if ml is None else float(ml),
            problems=tuple(str(p) for p in data.get("problems", ())),
        )


@dataclass(frozen=True)
class CaseMeasures:
    """Plain numbers describing one case's quality (what ``provenance.json`` records)."""

    subject_id: str
    voxel_size_mm: tuple[float, float, float]
    face_contact: Mapping[Face, float]
    modalities: tuple[ModalityMeasures, ...]
    anatomy: BrainMaskMeasures | None = None

    def to_json(self) -> dict[str, Any]:
        out = {
            "subject_id": self.subject_id,
            "voxel_size_mm": list(self.voxel_size_mm),
            "face_contact": {face.value: value for face, value in self.face_contact.items()},
            "modalities": [m.to_json() for m in self.modalities],
        }
        if self.anatomy is not None:
            out["anatomy"] = self.anatomy.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseMeasures:
        size = [float(v) for v in data["voxel_size_mm"]]
        return cls(
            subject_id=str(data["subject_id"]),
            voxel_size_mm=(size[0], size[1], size[2]),
            face_contact=MappingProxyType(
                {Face(k): float(v) for k, v in data["face_contact"].items()}
            ),
            modalities=tuple(ModalityMeasures.from_json(m) for m in data["modalities"]),
            anatomy=BrainMaskMeasures.from_json(data["anatomy"]) if data.get("anatomy") else None,
        )


def dice(a: Mask, b: Mask) -> float:
    """Dice overlap of two masks (1.0 when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return 1.0 if total == 0 else 2.0 * int(np.logical_and(a, b).sum()) / total


def _faces(array: npt.NDArray[Any]) -> npt.NDArray[Any]:
    return np.concatenate(
        [np.moveaxis(array, axis, 0)[end].ravel() for axis in range(3) for end in (0, -1)]
    )


def foreground_mask(channel: Channel) -> Mask:
    """The head (or the brain of skull-stripped data) in one channel, whatever its contrast.

    If at least 90 % of the voxels on the array's faces are exactly 0, the nonzero voxels
    (holes filled). Otherwise voxels of the smoothed channel (σ 1 voxel) above the faces'
    noise (median + 10 MAD, and at least 2 % of the 99th percentile), largest component, holes
    filled: unlike an Otsu threshold (which may split dark from bright tissue), this finds the
    head's edge against the air in every contrast.

    Examples
    --------
    >>> import numpy as np
    >>> channel = np.zeros((6, 6, 6), np.float32)
    >>> channel[1:5, 1:5, 1:5] = 3.0
    >>> int(foreground_mask(channel).sum())
    64
    """
    if float(np.mean(_faces(channel) == 0)) >= 0.9:
        return np.asarray(ndimage.binary_fill_holes(channel != 0), dtype=bool)
    smooth = ndimage.gaussian_filter(channel.astype(np.float32), 1.0)
    border = _faces(smooth)
    median = float(np.median(border))
    mad = 1.4826 * float(np.median(np.abs(border - median)))
    threshold = median + max(10.0 * mad, 0.02 * float(np.percentile(smooth, 99)))
    components, count = ndimage.label(smooth > threshold)
    if count == 0:
        return np.zeros(channel.shape, dtype=bool)
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    return np.asarray(ndimage.binary_fill_holes(components == int(np.argmax(sizes))), dtype=bool)


def face_contact(mask: Mask) -> dict[Face, float]:
    """Per face of a RAS array: mask voxels on it over the mask's largest cross-section.

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((5, 5, 5), bool)
    >>> mask[1:4, 1:4, 2:] = True  # reaches the top
    >>> face_contact(mask)[Face.SUPERIOR], face_contact(mask)[Face.LEFT]
    (1.0, 0.0)
    """
    out: dict[Face, float] = {}
    for axis, (low, high) in enumerate(_FACES):
        moved = np.moveaxis(mask, axis, 0)
        largest = max(int(moved.reshape(moved.shape[0], -1).sum(axis=1).max()), 1)
        out[low] = float(moved[0].sum()) / largest
        out[high] = float(moved[-1].sum()) / largest
    return out


def noise_sigma(channel: Channel, region: Mask, axis: int = 0) -> tuple[float, int]:
    """Noise σ from neighbour differences along ``axis`` inside ``region``, and the pairs used.

    Examples
    --------
    >>> import numpy as np
    >>> noise = np.random.default_rng(0).normal(100.0, 4.0, (40, 40, 40)).astype(np.float32)
    >>> sigma, pairs = noise_sigma(noise, np.ones(noise.shape, bool))
    >>> round(sigma), pairs
    (4, 62400)
    """
    values = np.moveaxis(channel, axis, 0)
    inside = np.moveaxis(region, axis, 0)
    pairs = inside[1:] & inside[:-1]
    differences = (values[1:].astype(np.float64) - values[:-1])[pairs]
    if differences.size == 0:
        return math.nan, 0
    mad = float(np.median(np.abs(differences - np.median(differences))))
    return 1.4826 * mad / math.sqrt(2.0), int(differences.size)


_MIN_PAIRS = 100


def snr(
    channel: Channel, brain: Mask, spacing: Sequence[float], modality: Modality
) -> tuple[float | None, str]:
    """SNR of one channel and the region it was measured in (see the module docstring).

    Returns ``(None, why)`` when the brain is too small to find a homogeneous region.
    """
    step = min(spacing)
    eroded = ndimage.binary_erosion(brain, iterations=max(1, round(3.0 / step)))
    if int(eroded.sum()) < 10 * _MIN_PAIRS:
        return None, "brain too small to measure"
    smooth = ndimage.gaussian_filter(channel.astype(np.float32), 1.0)
    values = smooth[eroded]
    low, high = np.percentile(values, [1, 99])
    counts, edges = np.histogram(values, bins=64, range=(float(low), float(high)))
    peak = float(edges[int(np.argmax(counts))] + edges[int(np.argmax(counts)) + 1]) / 2.0
    p5, p95 = np.percentile(values, [5, 95])
    tissue = eroded & (np.abs(smooth - peak) <= (p95 - p5) / 8.0)
    axis = int(np.argmin(spacing))
    region, name = tissue, "white matter"
    if modality is Modality.FLAIR:
        csf = ndimage.binary_erosion(eroded & (smooth <= np.percentile(values, 10)))
        region, name = csf, "csf"
    sigma, pairs = noise_sigma(channel, region, axis)
    if pairs < _MIN_PAIRS and region is not tissue:
        sigma, pairs = noise_sigma(channel, tissue, axis)
        name = "parenchyma (too little CSF)"
    if pairs < _MIN_PAIRS or not sigma > 0:
        return None, f"{name}: too few voxels to measure"
    return float(channel[tissue].mean()) / sigma, name


def measure_case(
    subject_id: str, case: HarmonisedCase, modalities: Sequence[Modality]
) -> CaseMeasures:
    """Measure one harmonised case; ``modalities`` name its channels (the first is the
    reference). Noise and intensities are measured before registration resampled anything."""
    if len(modalities) != case.image.shape[0]:
        raise PreprocessError(
            f"{subject_id}: {len(modalities)} modalities named for {case.image.shape[0]} channels"
        )
    native = case.image if case.unregistered is None else case.unregistered
    spacing = voxel_spacing(case.affine)
    after = [foreground_mask(channel) for channel in case.image]
    before = after if case.unregistered is None else [foreground_mask(c) for c in native]
    measured = []
    for index, modality in enumerate(modalities):
        brain, _ = brain_mask(native[index][None])
        value, region = snr(native[index], brain, spacing, modality)
        p5, p50, p95 = (float(v) for v in np.percentile(native[index][brain], [5, 50, 95]))
        registration = case.registration[index] if index < len(case.registration) else None
        measured.append(
            ModalityMeasures(
                modality=modality,
                snr=value,
                snr_region=region,
                percentiles=(p5, p50, p95),
                dice_before=dice(before[index], before[0]) if index else None,
                dice_after=dice(after[index], after[0]) if index else None,
                registration=registration,
            )
        )
    return CaseMeasures(
        subject_id=subject_id,
        voxel_size_mm=case.original_spacing,
        face_contact=MappingProxyType(face_contact(after[0])),
        modalities=tuple(measured),
        anatomy=_anatomy(case, native[0]),
    )


def _anatomy(case: HarmonisedCase, reference: Channel) -> BrainMaskMeasures | None:
    """Head or brain (the pipeline's detection when it ran, else measured here), and the
    judgement of deepbet's mask when it extracted one."""
    stripped = case.stripped
    if stripped is None:
        try:
            stripped = detect_skull_stripped(reference, case.affine)
        except PreprocessError:
            return None
    if case.extraction is None:
        return BrainMaskMeasures(head=not stripped.stripped, reason=stripped.reason)
    mask = case.extraction.mask
    ml = float(mask.sum()) * voxel_ml(case.affine)
    problems = tuple(judge_brain_mask(mask, case.affine))
    return BrainMaskMeasures(True, stripped.reason, round(ml, 1), problems)


@dataclass(frozen=True)
class QCRow:
    """One check of one case (``modality`` ``None``: the check is about the whole case)."""

    subject_id: str
    modality: Modality | None
    check: QCCheck
    status: QCStatus
    value: float | None
    threshold: str
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "modality": self.modality.value if self.modality else None,
            "check": self.check.value,
            "status": self.status.value,
            "value": None if self.value is None else round(float(self.value), 4),
            "threshold": self.threshold,
            "reason": self.reason,
        }


@dataclass(frozen=True)
class QCTable:
    """Every check of every case of a site, with the config that judged them."""

    config: QCConfig
    rows: tuple[QCRow, ...]

    def case_status(self) -> dict[str, QCStatus]:
        """Each case's worst status, cases in first-seen order."""
        out: dict[str, QCStatus] = {}
        for row in self.rows:
            seen = out.get(row.subject_id, QCStatus.PASS)
            out[row.subject_id] = row.status if row.status.rank > seen.rank else seen
        return out

    def failures(self) -> dict[str, tuple[QCRow, ...]]:
        """The failed rows of each case that has any."""
        out: dict[str, list[QCRow]] = {}
        for row in self.rows:
            if row.status is QCStatus.FAIL:
                out.setdefault(row.subject_id, []).append(row)
        return {k: tuple(v) for k, v in out.items()}


def _grade(value: float, warn: float, fail: float, higher_is_better: bool = True) -> QCStatus:
    if higher_is_better:
        return QCStatus.FAIL if value < fail else QCStatus.WARN if value < warn else QCStatus.PASS
    return QCStatus.FAIL if value > fail else QCStatus.WARN if value > warn else QCStatus.PASS


def _case_rows(measures: CaseMeasures, c: QCConfig) -> list[QCRow]:
    sid = measures.subject_id
    rows = []
    largest, smallest = max(measures.voxel_size_mm), min(measures.voxel_size_mm)
    pass_mm, warn_mm = c.voxel_pass_mm * c.spacing_scale, c.voxel_warn_mm * c.spacing_scale
    status = _grade(largest, pass_mm, warn_mm, higher_is_better=False)
    size = " x ".join(f"{v:.2f}" for v in measures.voxel_size_mm)
    reason = f"voxels {size} mm"
    if status is not QCStatus.PASS:
        reason += f": {largest:.1f} mm is coarser than expected; resampling cannot restore detail"
    elif smallest < c.voxel_min_mm:
        status = QCStatus.WARN
        reason += f": {smallest:.2f} mm is implausibly fine; check the header's units"
    threshold = f"pass <= {pass_mm:g} mm, warn <= {warn_mm:g} mm"
    rows.append(QCRow(sid, None, QCCheck.VOXEL_SIZE, status, largest, threshold, reason))
    contact = measures.face_contact
    sides: dict[Face, float] = {f: v for f, v in contact.items() if f is not Face.INFERIOR}
    worst = max(sides, key=lambda f: sides[f])
    status = _grade(sides[worst], c.coverage_warn, c.coverage_fail, higher_is_better=False)
    inferior = contact.get(Face.INFERIOR, 0.0)
    if status is QCStatus.PASS and inferior > c.inferior_warn:
        status, worst = QCStatus.WARN, Face.INFERIOR
    touching = [f"{f.value} {v:.0%}" for f, v in contact.items() if v > 0]
    anatomy = measures.anatomy
    shown = "head" if anatomy and anatomy.head and anatomy.extracted_ml is None else "brain"
    reason = f"the {shown} lies inside the field of view"
    if touching:
        reason = f"the {shown} touches the field of view's edge ({', '.join(touching)})"
    if status is not QCStatus.PASS:
        reason += f": the {worst.value} part is cut off; re-export with the whole head"
    threshold = (
        f"cut fraction pass <= {c.coverage_warn:g}, warn <= {c.coverage_fail:g} "
        f"(inferior: warn > {c.inferior_warn:g})"
    )
    value = contact.get(worst, 0.0)
    rows.append(QCRow(sid, None, QCCheck.COVERAGE, status, value, threshold, reason))
    if anatomy is not None:
        rows.append(_brain_mask_row(sid, anatomy))
    return rows


def _brain_mask_row(sid: str, anatomy: BrainMaskMeasures) -> QCRow:
    low, high = BRAIN_ML
    threshold = f"a full head is extracted; its brain mask {low:.0f}-{high:.0f} mL, one piece"
    if not anatomy.head:
        return QCRow(sid, None, QCCheck.BRAIN_MASK, QCStatus.PASS, None, threshold, anatomy.reason)
    if anatomy.extracted_ml is None:
        reason = (
            f"the scan shows a full head ({anatomy.reason}), but brain extraction is off: the "
            "crop and the normalisation use the whole head; preprocess with brain extraction "
            "(--brain-extraction, or preprocess.brain_extraction = true in the study)"
        )
        return QCRow(sid, None, QCCheck.BRAIN_MASK, QCStatus.WARN, None, threshold, reason)
    reason = f"deepbet brain mask {anatomy.extracted_ml:.0f} mL of a full head"
    if anatomy.problems:
        reason += ": " + "; ".join(anatomy.problems)
        status = QCStatus.WARN
    else:
        status = QCStatus.PASS
    return QCRow(sid, None, QCCheck.BRAIN_MASK, status, anatomy.extracted_ml, threshold, reason)


def _modality_rows(measures: CaseMeasures, c: QCConfig) -> list[QCRow]:
    sid, rows = measures.subject_id, []
    reference = measures.modalities[0].modality
    for m in measures.modalities:
        flair = m.modality is Modality.FLAIR
        warn, fail = (c.flair_snr_warn, c.flair_snr_fail) if flair else (c.snr_warn, c.snr_fail)
        threshold = f"pass >= {warn:g}, warn >= {fail:g}"
        if m.snr is None:
            status, reason = QCStatus.WARN, f"SNR not measured: {m.snr_region}"
        else:
            status = _grade(m.snr, warn, fail)
            reason = f"SNR {m.snr:.1f} (noise in {m.snr_region})"
            if status is not QCStatus.PASS:
                reason += ": noisy scan; check the coil and sequence, or re-scan"
        rows.append(QCRow(sid, m.modality, QCCheck.SNR, status, m.snr, threshold, reason))
        if m.dice_after is not None:
            status = _grade(m.dice_after, c.dice_warn, c.dice_fail)
            reason = f"mask Dice with {reference.value} {m.dice_after:.3f}"
            if status is not QCStatus.PASS:
                reason += f": {m.modality.value} does not overlay {reference.value}"
                reason += "; check the series, or run preprocess with registration"
            threshold = f"pass >= {c.dice_warn:g}, warn >= {c.dice_fail:g}"
            row = QCRow(sid, m.modality, QCCheck.MASK_DICE, status, m.dice_after, threshold, reason)
            rows.append(row)
        if m.registration is not None:
            rows.append(_registration_row(sid, reference, m, m.registration, c))
    return rows


def _registration_row(
    sid: str, reference: Modality, m: ModalityMeasures, r: Registration, c: QCConfig
) -> QCRow:
    motion = f"{r.shift_mm:.1f} mm / {r.rotation_deg:.1f}°"
    metric = f"MI {r.metric_before:.3f} -> {r.metric_after:.3f}"
    threshold = (
        f"warn > {c.motion_warn_mm:g} mm or {c.motion_warn_deg:g}°, fail > "
        f"{c.motion_fail_mm:g} mm or {c.motion_fail_deg:g}° or Dice drop > {c.dice_drop_fail:g}"
    )
    big = r.shift_mm > c.motion_warn_mm or r.rotation_deg > c.motion_warn_deg
    huge = r.shift_mm > c.motion_fail_mm or r.rotation_deg > c.motion_fail_deg
    drop = (m.dice_before or 0.0) - (m.dice_after or 0.0)
    if r.applied and huge:
        status = QCStatus.FAIL
        reason = f"implausibly large correction {motion} ({metric}): a failed registration or "
        reason += "a wrong series; check the files, or run with --no-registration"
    elif r.applied and drop > c.dice_drop_fail:
        status = QCStatus.FAIL
        reason = f"registration lowered the mask Dice {m.dice_before:.3f} -> {m.dice_after:.3f}"
        reason += "; check the series, or run with --no-registration"
    elif r.applied and big:
        status = QCStatus.WARN
        reason = f"{m.modality.value} was {motion} off {reference.value}; corrected ({metric})"
    else:
        status = QCStatus.PASS
        reason = f"{'corrected' if r.applied else 'aligned'}: {motion} ({metric})"
        if r.reason:
            reason += f"; not resampled: {r.reason}"
    return QCRow(sid, m.modality, QCCheck.REGISTRATION, status, r.shift_mm, threshold, reason)


_FEATURES = ("p5/p50", "p95/p50")


def _outlier_rows(measures: Sequence[CaseMeasures], c: QCConfig) -> list[QCRow]:
    by_modality: dict[Modality, list[tuple[str, tuple[float, float]]]] = {}
    for case in measures:
        for m in case.modalities:
            p5, p50, p95 = m.percentiles
            if p50 > 0:
                by_modality.setdefault(m.modality, []).append(
                    (case.subject_id, (p5 / p50, p95 / p50))
                )
    rows = []
    threshold = f"|robust z| pass <= {c.outlier_warn_z:g}, warn <= {c.outlier_fail_z:g}"
    for modality, items in by_modality.items():
        if len(items) < c.outlier_min_cases:
            reason = f"not assessed: {len(items)} cases, {c.outlier_min_cases} needed"
            for sid, _ in items:
                rows.append(QCRow(sid, modality, QCCheck.INTENSITY_OUTLIER, QCStatus.PASS, None,
                                  threshold, reason))  # fmt: skip
            continue
        values = np.array([v for _, v in items])  # (N, 2)
        median = np.median(values, axis=0)
        scale = np.maximum(
            1.4826 * np.median(np.abs(values - median), axis=0), 0.05 * np.abs(median)
        )
        z = (values - median) / scale
        for (sid, _), row in zip(items, z, strict=True):
            k = int(np.argmax(np.abs(row)))
            value = float(row[k])
            status = _grade(abs(value), c.outlier_warn_z, c.outlier_fail_z, higher_is_better=False)
            reason = f"intensity {_FEATURES[k]} robust z {value:+.1f} against the site"
            if status is not QCStatus.PASS:
                reason += f": unlike this site's other {modality.value} scans; check the series"
            rows.append(QCRow(sid, modality, QCCheck.INTENSITY_OUTLIER, status, value, threshold,
                              reason))  # fmt: skip
    return rows


def evaluate_qc(
    measures: Sequence[CaseMeasures],
    config: QCConfig | None = None,
    failed: Mapping[str, str] | None = None,
) -> QCTable:
    """Judge every case of a site; ``failed`` maps cases that could not be preprocessed to why.

    Examples
    --------
    >>> table = evaluate_qc([], failed={"case-1": "unreadable file"})
    >>> [(r.check.value, r.status.value) for r in table.rows], table.case_status()
    ([('preprocess', 'fail')], {'case-1': <QCStatus.FAIL: 'fail'>})
    """
    config = config or QCConfig()
    rows: list[QCRow] = []
    for sid, reason in (failed or {}).items():
        rows.append(QCRow(sid, None, QCCheck.PREPROCESS, QCStatus.FAIL, None, "", reason))
    for case in measures:
        rows += _case_rows(case, config) + _modality_rows(case, config)
    rows += _outlier_rows(measures, config)
    order = {sid: i for i, sid in enumerate(dict.fromkeys(r.subject_id for r in rows))}
    rows.sort(key=lambda r: order[r.subject_id])
    return QCTable(config, tuple(rows))
