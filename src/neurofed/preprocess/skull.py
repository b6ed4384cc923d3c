"""Is this scan skull-stripped, and extract the brain when it is not.

Three pure functions on one scan, a 3-D array ``image`` ``(X, Y, Z)`` with its 4x4 voxel-to-world
``affine`` (mm):

- :func:`detect_skull_stripped` decides from the scan's shape, not from its zero borders: the
  volume of everything that is not background (a head is 2.5 L or more; a brain is not) and the
  fraction of it that lies outside its largest bright structure (a head has a shell of skull and
  scalp around the brain; a stripped brain has none). A full head whose background was zeroed,
  so that most of the array's border is exactly 0, is still a head.
- :func:`extract_brain` masks the brain of a full-head T1-weighted scan with deepbet (Fisch et
  al., Comput. Biol. Med. 2024), a network whose TorchScript weights ship inside its wheel, so
  it runs offline on CPU. It won ``bench/brain_extraction.py`` (12 phantom heads in RAS, LPS
  with zeroed background, LAS with 5 mm slices, 2 mm and with a neck; 2 CPU cores): Dice
  0.963-0.973 on every case in about 2 s, against ROBEX 0.868-0.971 in about 50 s and BET
  (brainextractor) 0.408-0.977 in about 16 s (it fails on thick slices); HD-BET reached 0.982
  but took about 10 minutes per 1 mm head on CPU. deepbet's masks keep the 1-2.5 mm of
  extra-axial CSF the phantom's truth leaves out (about +7 % volume). It is installed with
  neurofed and imported only here, when a brain is extracted (it needs torch).
- :func:`judge_brain_mask` lists what looks wrong with a brain mask: a volume no brain has (a
  whole head), a mask cut by the field of view, or several separate pieces.

Volumes: a plausible adult brain mask holds :data:`BRAIN_ML` (800-2200 mL: adult intracranial
volume is about 1.1-1.9 L, and masks often keep some extra-axial CSF); anything past
:data:`HEAD_ML` (2.7 L) is bigger than any brain.

Examples
--------
>>> import numpy as np
>>> x, y, z = np.ogrid[:60, :60, :60]
>>> r2 = (x - 30.0) ** 2 + (y - 30.0) ** 2 + (z - 30.0) ** 2
>>> head = np.where(r2 < 28.0**2, 1.3, 0.0)  # scalp (fat, bright in T1)...
>>> head[r2 < 24.0**2] = 0.0  # ...around a dark skull...
>>> head[r2 < 20.0**2] = 1.0  # ...around the brain
>>> check = detect_skull_stripped(head, np.diag([2.0, 2.0, 2.0, 1.0]))
>>> check.stripped, check.zero_border_fraction
(False, 1.0)
"""

from __future__ import annotations

import functools
import time
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.data.nifti import voxel_spacing
from neurofed.keys import Modality
from neurofed.preprocess.params import PreprocessError
from neurofed.preprocess.volumes import (
    Affine,
    border_values,
    check_affine,
    otsu_threshold,
    voxel_ml,
)

__all__ = [
    "BRAIN_ML",
    "DEEPBET_PIN",
    "HEAD_ML",
    "OUTSIDE_FRACTION",
    "BrainExtraction",
    "BrainExtractionMethod",
    "StrippedCheck",
    "detect_skull_stripped",
    "extract_brain",
    "extraction_channel",
    "extraction_record",
    "judge_brain_mask",
]

Volume = npt.NDArray[np.floating[Any]]  # (X, Y, Z)
Mask = npt.NDArray[np.bool_]  # (X, Y, Z)

#: Plausible volume (mL) of an adult brain mask: intracranial volume is about 1.1-1.9 L, and
#: masks often keep some extra-axial CSF; the phantom's MNI152-sized brains reach 2.1 L at scale 1.
BRAIN_ML = (800.0, 2200.0)
#: Bigger than any brain (mL): a non-background volume past this is a head (phantom heads,
#: without neck, measure 2.5-3.8 L; real heads with face and neck more).
HEAD_ML = 2700.0
#: A head's non-background volume has at least this fraction outside its largest bright
#: structure (skull and scalp: 0.19-0.57 on phantom heads in T1, T2 and FLAIR; stripped
#: phantom brains 0.00-0.10).
OUTSIDE_FRACTION = 0.2
#: The package and version whose numbers are in ``bench/brain_extraction.py``'s results.
DEEPBET_PIN = "deepbet==1.0.2"

_SMOOTH_MM = 1.0  # Gaussian sigma before thresholds
_DETECT_MM = 2.0  # detection works on a grid about this coarse (it needs no detail)
_BORDER_VOXELS = 3  # background noise is measured on this many voxels at each face
_NOISE_MADS = 6.0  # background level = median + this many MADs of the border's air
_FACE_CM2 = 10.0  # contact with a face past this is a cut (a brainstem alone is 3-6 cm²)
_PIECE_ML = 5.0  # a separate piece of a mask this big is worth a warning
_FACE_NAMES = {
    "R": "right",
    "L": "left",
    "A": "anterior",
    "P": "posterior",
    "S": "superior",
    "I": "inferior",
}
_OPPOSITE = {"R": "L", "L": "R", "A": "P", "P": "A", "S": "I", "I": "S"}


class BrainExtractionMethod(StrEnum):
    """How :func:`extract_brain` finds the brain (the winner of ``bench/brain_extraction.py``)."""

    DEEPBET = "deepbet"  # Fisch et al. 2024, TorchScript weights in the wheel, CPU in seconds


@dataclass(frozen=True)
class StrippedCheck:
    """Whether a scan is skull-stripped, the evidence, and one line saying why.

    Attributes
    ----------
    stripped : bool
        True when the scan shows a brain without skull and scalp.
    object_ml : float
        Volume (mL) of everything that is not background, holes filled (the head, or the brain).
    outside_fraction : float
        Fraction of ``object_ml`` outside the largest bright structure, filled (skull and scalp
        around a brain; about 0 for a stripped brain).
    zero_border_fraction : float
        Fraction of the voxels on the array's six faces that are exactly 0 (shown as context:
        a zeroed background makes it high for heads too).
    reason : str
        One line for a person.
    """

    stripped: bool
    object_ml: float
    outside_fraction: float
    zero_border_fraction: float
    reason: str


@dataclass(frozen=True, eq=False)
class BrainExtraction:
    """A brain mask on the input grid and how it was made (for provenance).

    Attributes
    ----------
    mask : numpy.ndarray
        ``(X, Y, Z)`` bool, the same grid as the image given to :func:`extract_brain`.
    method : BrainExtractionMethod
    package : str
        The distribution that did it, e.g. ``"deepbet"``.
    version : str
        Its installed version, e.g. ``"1.0.2"``.
    seconds : float
        Wall time of the extraction (model loading included on the first call of a process).
    """

    mask: Mask
    method: BrainExtractionMethod
    package: str
    version: str
    seconds: float


def extraction_channel(modalities: Sequence[Modality | str]) -> int:
    """The channel deepbet reads: the T1-weighted one (it was trained on T1), else the first.

    Examples
    --------
    >>> extraction_channel(["FLAIR", "T1"]), extraction_channel(["T1CE", "FLAIR"])
    (1, 0)
    """
    names = [str(m) for m in modalities]
    return names.index(Modality.T1.value) if Modality.T1.value in names else 0


def _check_volume(name: str, image: npt.ArrayLike) -> Volume:
    array = np.asarray(image)
    if array.ndim == 4 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 3:
        raise PreprocessError(
            f"{name}: got shape {array.shape}; expected one 3-D volume (X, Y, Z) - "
            "pass one channel, e.g. image[0] of a (C, X, Y, Z) array"
        )
    if not np.issubdtype(array.dtype, np.number) and array.dtype != np.bool_:
        raise PreprocessError(f"{name}: got dtype {array.dtype}; expected numbers")
    if min(array.shape) < 2:
        raise PreprocessError(f"{name}: got shape {array.shape}; every axis needs 2 voxels or more")
    return array


def _largest(mask: Mask) -> Mask:
    labels, count = ndimage.label(mask)
    if count <= 1:
        return mask
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))


def _fill(mask: Mask, axis: int | None) -> Mask:
    """Fill holes: in 3-D (``axis=None``) or in every slice across ``axis`` (2-D).

    A background component is a hole when it touches no face of the array (of its slice, in
    2-D). Labelling once is far faster than ``binary_fill_holes``'s repeated dilation at 1 mm.
    """
    if axis is None:
        structure = ndimage.generate_binary_structure(3, 1)
    else:
        structure = np.zeros((3, 3, 3), dtype=bool)
        plane: list[slice | int] = [slice(None)] * 3
        plane[axis] = 1
        structure[tuple(plane)] = ndimage.generate_binary_structure(2, 1)
    labels, count = ndimage.label(~mask, structure)
    outside = np.zeros(count + 1, dtype=bool)
    outside[0] = True
    for a in range(3):
        if a != axis:
            outside[np.take(labels, 0, axis=a)] = True
            outside[np.take(labels, -1, axis=a)] = True
    return np.asarray(mask | ~outside[labels])


def _filled(mask: Mask) -> Mask:
    """Holes filled in 3-D and in the slices across each axis (a head cut open at the neck
    still encloses its skull in the axial slices)."""
    out = _fill(mask, None)
    for axis in range(3):
        out |= _fill(mask, axis)
    return out


def _coarse(
    image: Volume, affine: Affine
) -> tuple[npt.NDArray[np.float32], Mask, npt.NDArray[np.float64]]:
    """Smoothed image and non-zero mask on a grid of about ``_DETECT_MM``, and its spacing."""
    spacing = np.asarray(voxel_spacing(affine))
    smooth = ndimage.gaussian_filter(
        np.asarray(image, dtype=np.float32), sigma=tuple(_SMOOTH_MM / spacing), mode="nearest"
    )
    step = np.array([max(1, round(_DETECT_MM / s)) for s in spacing])
    window = tuple(slice(None, None, int(s)) for s in step)
    return (
        np.ascontiguousarray(smooth[window]),
        np.ascontiguousarray(np.asarray(image)[window] != 0),
        spacing * step,
    )


def _central(bright: Mask, obj: Mask, spacing: npt.NDArray[np.float64]) -> Mask:
    """The bright piece that fills most of the object's deep half (the brain, in a head)."""
    depth = ndimage.distance_transform_edt(obj, sampling=tuple(spacing))
    deep = depth >= 0.5 * float(depth.max())
    labels, count = ndimage.label(bright & obj)
    if count == 0:
        return np.zeros_like(obj)
    votes = np.bincount(labels[deep], minlength=count + 1)
    votes[0] = 0
    if not votes.any():  # nothing bright deep inside: fall back to the largest piece
        votes = np.bincount(labels.ravel())
        votes[0] = 0
    return np.asarray(labels == int(np.argmax(votes)))


def detect_skull_stripped(image: npt.ArrayLike, affine: npt.ArrayLike) -> StrippedCheck:
    """Whether ``image`` (X, Y, Z) is skull-stripped, from its shape rather than its zero borders.

    On a grid of about 2 mm, after a 1 mm Gaussian: the *object* is every voxel above the
    background (the border's air: median + 6 MADs, or simply non-zero when the background is
    exactly 0), holes filled in 3-D and slice by slice, largest piece. The *bright core* is the
    piece above an Otsu threshold that fills most of the object's deep half, holes filled: the
    brain in a head, since the dark skull separates it from the scalp. A head has an object
    bigger than any brain (:data:`HEAD_ML`) or a shell of at least :data:`OUTSIDE_FRACTION` of
    the object outside the core, or both; a stripped brain has neither.

    Examples
    --------
    >>> import numpy as np
    >>> x, y, z = np.ogrid[:60, :60, :60]
    >>> r2 = (x - 30.0) ** 2 + (y - 30.0) ** 2 + (z - 30.0) ** 2
    >>> brain = np.where(r2 < 20.0**2, 1.0, 0.0)  # 2 mm voxels: 268 mL
    >>> head = np.where(r2 < 28.0**2, 1.3, 0.0)  # scalp
    >>> head[r2 < 24.0**2] = 0.0  # dark skull
    >>> head[r2 < 20.0**2] = 1.0
    >>> affine = np.diag([2.0, 2.0, 2.0, 1.0])
    >>> detect_skull_stripped(brain, affine).stripped, detect_skull_stripped(head, affine).stripped
    (True, False)
    """
    volume = _check_volume("image", image)
    matrix = check_affine(affine)
    if not np.all(np.isfinite(volume)):
        raise PreprocessError("image: has NaN or infinite voxels; run `neurofed site check`")
    nonzero_any = volume != 0
    if not nonzero_any.any():
        raise PreprocessError("image is all zero: nothing to judge; run `neurofed site check`")
    zero_border = float(np.mean(border_values(~nonzero_any)))
    smooth, nonzero, spacing = _coarse(volume, matrix)
    voxel_ml = float(np.prod(spacing)) / 1000.0
    tissue_level = otsu_threshold(smooth.ravel())
    air = border_values(smooth, _BORDER_VOXELS)
    air = air[air < tissue_level]
    level = 0.0
    if air.size:
        median = float(np.median(air))
        level = median + _NOISE_MADS * 1.4826 * float(np.median(np.abs(air - median)))
    raw = (smooth > level) if level > 0.0 else nonzero
    obj = _largest(_filled(raw))
    core = _fill(_central(smooth > tissue_level, obj, spacing), None)
    object_ml = float(obj.sum()) * voxel_ml
    outside = float((obj & ~core).sum()) / max(float(obj.sum()), 1.0)
    head_sized = object_ml > HEAD_ML
    shell = outside >= OUTSIDE_FRACTION
    zeros = (
        f" although {zero_border:.0%} of its border voxels are exactly 0"
        if zero_border >= 0.5
        else ""
    )
    if head_sized or shell:
        why = []
        if head_sized:
            why.append(
                f"its non-background volume is {object_ml / 1000:.1f} L, more than any brain "
                f"({HEAD_ML / 1000:.1f} L)"
            )
        if shell:
            why.append(
                f"{outside:.0%} of it lies in a shell outside the brain-like core (skull and scalp)"
            )
        reason = f"not skull-stripped{zeros}: " + " and ".join(why)
        return StrippedCheck(False, object_ml, outside, zero_border, reason)
    size = "brain-sized" if object_ml >= BRAIN_ML[0] else "smaller than a whole brain"
    reason = (
        f"skull-stripped: its non-background volume is {object_ml:.0f} mL ({size}) and only "
        f"{outside:.0%} of it lies outside the brain-like core"
    )
    return StrippedCheck(True, object_ml, outside, zero_border, reason)


@functools.lru_cache(maxsize=1)
def _deepbet_extractor() -> Any:
    """deepbet's extractor with both TorchScript models on the CPU, loaded once per process."""
    import warnings

    from deepbet import BrainExtraction as DeepBet  # heavy: torch + two TorchScript models

    with warnings.catch_warnings():  # deepbet's models are TorchScript, read by torch.jit.load
        warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", DeprecationWarning)
        return DeepBet(no_gpu=True)


def _deepbet_mask(volume: Volume, affine: Affine) -> Mask:
    import nibabel as nib

    extractor = _deepbet_extractor()
    nifti = nib.Nifti1Image(np.asarray(volume, dtype=np.float32), affine)
    try:
        # deepbet reorients to RAS, runs its bounding-box net at 128³ and its mask net on the
        # box at 256³, keeps the largest component, fills voids and orients the mask back.
        _, mask_image, _ = extractor.run(nifti)
    except (AssertionError, RuntimeError, ValueError) as exc:
        raise PreprocessError(
            f"deepbet found no brain in this scan ({exc}); check that it is a T1-weighted "
            "head or brain MRI with a correct affine"
        ) from exc
    mask = np.asarray(mask_image.dataobj) > 0
    if mask.shape != volume.shape:  # pragma: no cover - deepbet keeps the grid
        raise PreprocessError(f"deepbet returned a mask of shape {mask.shape}, not {volume.shape}")
    return np.asarray(mask)


def extract_brain(
    image: npt.ArrayLike,
    affine: npt.ArrayLike,
    method: BrainExtractionMethod | str = BrainExtractionMethod.DEEPBET,
) -> BrainExtraction:
    """The brain mask of a full-head T1-weighted scan ``image`` (X, Y, Z), on its own grid.

    ``method`` ``"deepbet"`` runs deepbet on the CPU (any orientation and voxel size: it
    reorients to RAS and resamples its boxes itself). deepbet is installed with neurofed; an
    environment without it (e.g. an exported, torch-free one) gets an error naming the fix.

    Examples
    --------
    >>> import numpy as np
    >>> extract_brain(np.ones((4, 4, 4)), np.eye(4), method="deepbt")
    Traceback (most recent call last):
    ...
    neurofed.preprocess.params.PreprocessError: extract_brain: unknown method 'deepbt' \
(did you mean 'deepbet'?); available: deepbet
    """
    try:
        chosen = BrainExtractionMethod(str(method))
    except ValueError:
        import difflib

        names = [m.value for m in BrainExtractionMethod]
        close = difflib.get_close_matches(str(method), names, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise PreprocessError(
            f"extract_brain: unknown method {str(method)!r}{hint}; available: {', '.join(names)}"
        ) from None
    volume = _check_volume("image", image)
    matrix = check_affine(affine)
    if not np.all(np.isfinite(volume)):
        raise PreprocessError("image: has NaN or infinite voxels; run `neurofed site check`")
    if not np.any(volume != 0):
        raise PreprocessError("image is all zero: no brain to extract; run `neurofed site check`")
    began = time.perf_counter()
    try:
        from importlib import metadata

        import deepbet  # noqa: F401  (only to fail early, with the fix, when it is missing)

        version = metadata.version("deepbet")
    except ImportError as exc:
        raise PreprocessError(
            f"extract_brain(method='deepbet') needs the package deepbet ({exc}); "
            f"install it with `pip install {DEEPBET_PIN}`"
        ) from exc
    mask = _deepbet_mask(volume, matrix)
    seconds = time.perf_counter() - began
    return BrainExtraction(mask, chosen, "deepbet", version, seconds)


def extraction_record(
    stripped: StrippedCheck | None, extraction: BrainExtraction | None, affine: Affine | None
) -> dict[str, Any] | None:
    """What provenance and ``prediction.json`` say about brain extraction (``None``: it was
    off): the detection's verdict and evidence, and deepbet's version, time and mask volume
    (``affine`` the mask's grid; ``None`` leaves the volume out).

    Examples
    --------
    >>> check = StrippedCheck(True, 1402.0, 0.03, 1.0, "skull-stripped: ...")
    >>> extraction_record(check, None, None)["method"] is None
    True
    """
    if stripped is None:
        return None
    record: dict[str, Any] = {
        "skull_stripped": stripped.stripped,
        "object_ml": round(stripped.object_ml, 1),
        "outside_fraction": round(stripped.outside_fraction, 3),
        "zero_border_fraction": round(stripped.zero_border_fraction, 3),
        "reason": stripped.reason,
        "method": None,
    }
    if extraction is not None:
        record |= {
            "method": extraction.method.value,
            "package": f"{extraction.package}=={extraction.version}",
            "seconds": round(extraction.seconds, 3),
        }
        if affine is not None:
            record["volume_ml"] = round(float(extraction.mask.sum()) * voxel_ml(affine), 1)
    return record


def _face_contacts(mask: Mask, affine: Affine) -> list[tuple[str, float]]:
    """(face name, contact area in cm²) for every face of the array the mask touches."""
    import nibabel as nib

    codes = nib.orientations.aff2axcodes(affine)
    spacing = np.asarray(voxel_spacing(affine))
    out = []
    for axis in range(3):
        others = [a for a in range(3) if a != axis]
        pixel_cm2 = float(spacing[others[0]] * spacing[others[1]]) / 100.0
        for end, letter in ((0, _OPPOSITE[str(codes[axis])]), (-1, str(codes[axis]))):
            touching = int(np.take(mask, end, axis=axis).sum())
            if touching:
                out.append((_FACE_NAMES[letter], touching * pixel_cm2))
    return out


def judge_brain_mask(mask: npt.ArrayLike, affine: npt.ArrayLike) -> list[str]:
    """What looks wrong with a brain ``mask`` (X, Y, Z): one line per problem, [] when none.

    Checks the volume against :data:`BRAIN_ML` (a whole head when past :data:`HEAD_ML`), contact
    with the array's faces (over 10 cm², more than a brainstem leaving the field of view) and
    separate pieces of 5 mL or more.

    Examples
    --------
    >>> import numpy as np
    >>> x, y, z = np.ogrid[:60, :60, :60]
    >>> r2 = (x - 30.0) ** 2 + (y - 30.0) ** 2 + (z - 30.0) ** 2
    >>> affine = np.diag([3.0, 3.0, 3.0, 1.0])
    >>> judge_brain_mask(r2 < 24.0**2, affine)  # 1.6 L
    []
    >>> judge_brain_mask(r2 < 29.0**2, affine)[0]  # 2.7 L
    'the mask looks like a whole head (0.5 L above brain size): the scan is probably not \
skull-stripped; extract the brain first (neurofed.preprocess.skull.extract_brain)'
    """
    volume = _check_volume("mask", mask).astype(bool)
    matrix = check_affine(affine)
    ml = float(volume.sum()) * voxel_ml(matrix)
    if ml == 0.0:
        return ["the mask is empty: no brain was found; check that the scan shows a head"]
    low, high = BRAIN_ML
    warnings = []
    if ml > HEAD_ML:
        warnings.append(
            f"the mask looks like a whole head ({(ml - high) / 1000:.1f} L above brain size): "
            "the scan is probably not skull-stripped; extract the brain first "
            "(neurofed.preprocess.skull.extract_brain)"
        )
    elif ml > high:
        warnings.append(
            f"the mask holds {ml:.0f} mL, above any adult brain ({low:.0f}-{high:.0f} mL): it "
            "probably includes skull, scalp or neck"
        )
    elif ml < low:
        warnings.append(
            f"the mask holds only {ml:.0f} mL, below a whole adult brain ({low:.0f}-{high:.0f} "
            "mL): part of the brain is missing (a cropped field of view or a failed extraction)"
        )
    cuts = [(face, cm2) for face, cm2 in _face_contacts(volume, matrix) if cm2 > _FACE_CM2]
    if cuts:
        where = ", ".join(f"{face} ({cm2:.0f} cm²)" for face, cm2 in cuts)
        warnings.append(
            f"the mask touches the array's {where} face{'s' if len(cuts) > 1 else ''}: the "
            "field of view probably cuts the brain there"
        )
    labels, count = ndimage.label(volume)
    if count > 1:
        sizes = np.bincount(labels.ravel())[1:] * voxel_ml(matrix)
        pieces = np.sort(sizes)[::-1]
        extra = pieces[1:][pieces[1:] >= _PIECE_ML]
        if extra.size:
            warnings.append(
                f"the mask has {extra.size + 1} separate pieces of {_PIECE_ML:.0f} mL or more "
                f"(largest {pieces[0]:.0f} mL, next {extra[0]:.0f} mL): a brain is one piece; "
                "the others are probably eyes, neck or noise"
            )
    return warnings
