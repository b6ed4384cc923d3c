"""Small, pure preprocessing steps: arrays and affine in, new arrays and exact affine out.

Every step takes ``image`` float32 ``(C, X, Y, Z)``, an optional ``label`` uint8 ``(X, Y, Z)`` on
the same grid and the 4x4 voxel-to-world ``affine`` (RAS+ mm, as nibabel gives it), and returns a
:class:`CaseArrays` whose affine still maps every voxel to the same place in the world.
:func:`preprocess_case` chains them in two stages: :func:`harmonise_case` (RAS, N4 bias-field
correction and rigid co-registration on the scan's own grid, see
:mod:`neurofed.preprocess.harmonise`) and :func:`finish_case` (resampling, brain mask, z-score,
crops).

Examples
--------
>>> import numpy as np
>>> image = np.zeros((1, 8, 8, 8), np.float32)
>>> image[0, 2:6, 2:6, 2:6] = np.arange(64).reshape(4, 4, 4) + 1
>>> case = preprocess_case(image, None, np.eye(4), PreprocessParams(spatial_shape=(6, 6, 6)))
>>> case.image.shape, case.brain_mask_method.value
((1, 6, 6, 6), 'nonzero')
>>> case.affine[:3, 3].tolist()  # one voxel of zero padding around the 4-voxel brain
[1.0, 1.0, 1.0]
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import NamedTuple, TypeVar

import numpy as np
import numpy.typing as npt
from nibabel import orientations
from scipy import ndimage

from neurofed.data.nifti import voxel_spacing
from neurofed.preprocess.harmonise import (
    BiasCorrection,
    N4Settings,
    Registration,
    RegistrationSettings,
    correct_bias,
    register_rigid,
)
from neurofed.preprocess.params import (
    BrainMaskMethod,
    PreprocessedCase,
    PreprocessError,
    PreprocessParams,
)
from neurofed.preprocess.skull import (
    BrainExtraction,
    StrippedCheck,
    detect_skull_stripped,
    extract_brain,
)
from neurofed.preprocess.volumes import border_values, check_affine, otsu_threshold

__all__ = [
    "CaseArrays",
    "HarmonisedCase",
    "brain_mask",
    "crop_or_pad",
    "crop_to_mask",
    "finish_case",
    "harmonise_case",
    "preprocess_case",
    "reorient_to_ras",
    "resample_to_spacing",
    "zscore_in_mask",
]

FloatImage = npt.NDArray[np.float32]  # (C, X, Y, Z)
LabelMap = npt.NDArray[np.uint8]  # (X, Y, Z)
Affine = npt.NDArray[np.float64]  # (4, 4)
Mask = npt.NDArray[np.bool_]  # (X, Y, Z)
_T = TypeVar("_T", bound=np.generic)


class CaseArrays(NamedTuple):
    """The result of a geometric step; unpacks as ``image, label, affine = step(...)``."""

    image: FloatImage
    label: LabelMap | None
    affine: Affine


def _check(image: FloatImage, label: LabelMap | None, affine: npt.ArrayLike) -> Affine:
    if image.ndim != 4:
        raise PreprocessError(
            f"image: got shape {image.shape}; expected (C, X, Y, Z) with a channel axis first"
        )
    if label is not None and label.shape != image.shape[1:]:
        raise PreprocessError(
            f"label: shape {label.shape} differs from the image's {image.shape[1:]}; "
            "resample the label onto the image grid"
        )
    return check_affine(affine)


def reorient_to_ras(image: FloatImage, label: LabelMap | None, affine: npt.ArrayLike) -> CaseArrays:
    """Permute and flip the array axes so that they point (as near as they can) to R, A, S.

    Only axes are reordered (no interpolation); the new affine comes from nibabel's
    ``inv_ornt_aff``, so each voxel keeps its world position exactly. An oblique scan stays
    oblique: its axes become the ones closest to R, A, S. An array already in RAS is returned
    without copying.

    Examples
    --------
    >>> import numpy as np
    >>> lps = np.diag([-1.0, -1.0, 2.0, 1.0])
    >>> image = np.arange(24, dtype=np.float32).reshape(1, 2, 3, 4)
    >>> ras = reorient_to_ras(image, None, lps)
    >>> ras.image.shape, np.diag(ras.affine).tolist()
    ((1, 2, 3, 4), [1.0, 1.0, 2.0, 1.0])
    >>> float(ras.image[0, 1, 2, 0]) == float(image[0, 0, 0, 0])
    True
    """
    matrix = _check(image, label, affine)
    current = orientations.io_orientation(matrix)
    transform = orientations.ornt_transform(current, orientations.axcodes2ornt("RAS"))
    if np.array_equal(transform, orientations.axcodes2ornt("RAS")):
        return CaseArrays(image, label, matrix)
    new_affine = matrix @ orientations.inv_ornt_aff(transform, image.shape[1:])
    channels_last = orientations.apply_orientation(np.moveaxis(image, 0, -1), transform)
    new_image = np.ascontiguousarray(np.moveaxis(channels_last, -1, 0))
    new_label = None
    if label is not None:
        new_label = np.ascontiguousarray(orientations.apply_orientation(label, transform))
    return CaseArrays(new_image, new_label, new_affine)


def resample_to_spacing(
    image: FloatImage,
    label: LabelMap | None,
    affine: npt.ArrayLike,
    spacing: tuple[float, float, float],
    *,
    tolerance: float = 1e-3,
) -> CaseArrays:
    """Resample onto voxels of ``spacing`` mm: linear for the image, nearest for the label.

    Uses MONAI's ``Spacing`` (default ``align_corners=False``, ``border`` padding). The array
    axes keep their directions (an oblique scan stays oblique, no rotation); voxel ``(0, 0, 0)``
    keeps its world position, so the volume's centre moves by less than half an output voxel.
    Nothing is done when every axis is already within ``tolerance`` (relative) of ``spacing``.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.ones((1, 4, 4, 3), np.float32)
    >>> out = resample_to_spacing(image, None, np.diag([1.0, 1.0, 3.0, 1.0]), (2.0, 2.0, 2.0))
    >>> out.image.shape, np.diag(out.affine).tolist()
    ((1, 2, 2, 4), [2.0, 2.0, 2.0, 1.0])
    """
    matrix = _check(image, label, affine)
    current = np.array(voxel_spacing(matrix))
    target = np.array(spacing, dtype=np.float64)
    if target.shape != (3,) or not np.all(target > 0):
        raise PreprocessError(f"spacing: got {spacing!r}; give three positive sizes in mm")
    if np.all(np.abs(current - target) <= tolerance * target):
        return CaseArrays(image, label, matrix)

    import torch
    from monai.data.meta_tensor import MetaTensor
    from monai.transforms.spatial.array import Spacing

    def run(array: npt.NDArray[np.float32], mode: str) -> tuple[npt.NDArray[np.float32], Affine]:
        tensor = MetaTensor(torch.from_numpy(np.ascontiguousarray(array)))
        tensor.affine = torch.from_numpy(matrix)  # (4, 4) float64
        out = Spacing(pixdim=tuple(target), mode=mode, dtype=np.float32)(tensor)
        assert isinstance(out, MetaTensor)
        new_affine = np.asarray(out.affine.numpy(), dtype=np.float64)
        return np.asarray(out.numpy(), dtype=np.float32), new_affine

    new_image, new_affine = run(image.astype(np.float32, copy=False), "bilinear")
    new_label = None
    if label is not None:
        label_out, _ = run(label[None].astype(np.float32), "nearest")
        new_label = np.rint(label_out[0]).astype(np.uint8)
    return CaseArrays(new_image, new_label, new_affine)


def brain_mask(
    image: FloatImage, *, zero_border_fraction: float = 0.9
) -> tuple[Mask, BrainMaskMethod]:
    """Where the brain is, and how that was decided.

    If at least ``zero_border_fraction`` of the voxels on the array's six faces are exactly 0 in
    every channel, the background is taken to be exactly 0 (skull-stripped data such as BraTS):
    the mask is every voxel nonzero in some channel, holes filled (``NONZERO``). Otherwise
    (``OTSU``) each channel is divided by its 99th percentile, the channel mean is smoothed
    (Gaussian, sigma 1 voxel), thresholded with Otsu's method (numpy), and the largest connected
    component is kept with its holes filled (scipy.ndimage).

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((2, 6, 6, 6), np.float32)
    >>> image[:, 1:4, 2:5, 2:4] = 7.0
    >>> mask, method = brain_mask(image)
    >>> int(mask.sum()), method.value
    (18, 'nonzero')
    """
    if image.ndim != 4:
        raise PreprocessError(f"image: got shape {image.shape}; expected (C, X, Y, Z)")
    nonzero = np.any(image != 0, axis=0)  # (X, Y, Z)
    if not nonzero.any():
        raise PreprocessError("image is all zero: no brain to mask; run `neurofed site check`")
    if float(np.mean(~border_values(nonzero))) >= zero_border_fraction:
        return ndimage.binary_fill_holes(nonzero), BrainMaskMethod.NONZERO
    scaled = np.zeros(image.shape[1:], dtype=np.float64)
    for channel in image:
        scale = float(np.percentile(np.abs(channel), 99)) or 1.0
        scaled += channel / scale
    smooth = ndimage.gaussian_filter(scaled / len(image), sigma=1.0)
    if float(smooth.max() - smooth.min()) <= 1e-12 * max(1.0, float(np.abs(smooth).max())):
        raise PreprocessError("image is constant: no brain to mask; run `neurofed site check`")
    components, _ = ndimage.label(smooth > otsu_threshold(smooth.ravel()))
    sizes = np.bincount(components.ravel())
    sizes[0] = 0
    largest = components == int(np.argmax(sizes))
    return ndimage.binary_fill_holes(largest), BrainMaskMethod.OTSU


def zscore_in_mask(image: FloatImage, mask: Mask) -> FloatImage:
    """Per channel: subtract the mean and divide by the std of the voxels in ``mask``; 0 outside.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.array([[[[1.0, 3.0, 9.0]]]], np.float32)
    >>> zscore_in_mask(image, np.array([[[True, True, False]]])).tolist()
    [[[[-1.0, 1.0, 0.0]]]]
    >>> flat = np.ones((1, 1, 1, 3), np.float32)
    >>> zscore_in_mask(flat, np.ones((1, 1, 3), bool))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.preprocess.params.PreprocessError: image channel 0 is constant (1) inside the ...
    """
    if image.ndim != 4 or mask.shape != image.shape[1:]:
        raise PreprocessError(
            f"mask: shape {mask.shape} does not match image {image.shape}; expected (X, Y, Z)"
        )
    if not mask.any():
        raise PreprocessError("mask is empty: no voxels to take mean and std from")
    out = np.zeros(image.shape, dtype=np.float32)
    for index, channel in enumerate(image):
        inside = channel[mask].astype(np.float64)
        mean, std = float(inside.mean()), float(inside.std())
        if not std > 1e-6 * max(1.0, abs(mean)):
            raise PreprocessError(
                f"image channel {index} is constant ({mean:g}) inside the brain mask, so it "
                "cannot be z-scored; check that modality's file (blank or all-one series?)"
            )
        out[index][mask] = ((inside - mean) / std).astype(np.float32)
    return out


def _take_box(
    array: npt.NDArray[_T], start: npt.NDArray[np.int64], shape: tuple[int, int, int]
) -> npt.NDArray[_T]:
    """``array[..., start:start+shape]`` over the last 3 axes, with zeros where out of bounds."""
    out = np.zeros((*array.shape[:-3], *shape), dtype=array.dtype)
    source: list[slice] = [slice(None)] * (array.ndim - 3)
    target = list(source)
    for first, size, available in zip(start.tolist(), shape, array.shape[-3:], strict=True):
        low, high = max(first, 0), min(first + size, available)
        source.append(slice(low, high))
        target.append(slice(low - first, high - first))
    out[tuple(target)] = array[tuple(source)]
    return out


def _box(
    image: FloatImage,
    label: LabelMap | None,
    matrix: Affine,
    start: npt.NDArray[np.int64],
    shape: tuple[int, int, int],
) -> CaseArrays:
    new_affine = matrix.copy()
    new_affine[:3, 3] = matrix[:3, :3] @ start + matrix[:3, 3]
    new_label = _take_box(label, start, shape) if label is not None else None
    return CaseArrays(_take_box(image, start, shape), new_label, new_affine)


def crop_to_mask(
    image: FloatImage, label: LabelMap | None, affine: npt.ArrayLike, mask: Mask, margin: int = 0
) -> CaseArrays:
    """Crop to the bounding box of ``mask`` grown by ``margin`` voxels (never past the array).

    Examples
    --------
    >>> import numpy as np
    >>> mask = np.zeros((5, 5, 5), bool)
    >>> mask[2, 2, 1:3] = True
    >>> out = crop_to_mask(np.ones((1, 5, 5, 5), np.float32), None, np.eye(4), mask, margin=1)
    >>> out.image.shape, out.affine[:3, 3].tolist()
    ((1, 3, 3, 4), [1.0, 1.0, 0.0])
    """
    matrix = _check(image, label, affine)
    if mask.shape != image.shape[1:] or not mask.any():
        raise PreprocessError(f"mask: empty or shape {mask.shape} is not {image.shape[1:]}")
    if margin < 0:
        raise PreprocessError(f"margin: got {margin}; give a number of voxels >= 0")
    where = np.argwhere(mask)
    start = np.maximum(where.min(axis=0) - margin, 0)
    stop = np.minimum(where.max(axis=0) + 1 + margin, image.shape[1:])
    x, y, z = (int(n) for n in stop - start)
    return _box(image, label, matrix, start.astype(np.int64), (x, y, z))


def crop_or_pad(
    image: FloatImage,
    label: LabelMap | None,
    affine: npt.ArrayLike,
    spatial_shape: tuple[int, int, int],
) -> CaseArrays:
    """Centre-crop or zero-pad each axis to ``spatial_shape`` (odd differences: less before).

    Examples
    --------
    >>> import numpy as np
    >>> out = crop_or_pad(np.ones((1, 4, 7, 5), np.float32), None, np.eye(4), (6, 4, 5))
    >>> out.image.shape, out.affine[:3, 3].tolist()
    ((1, 6, 4, 5), [-1.0, 1.0, 0.0])
    """
    matrix = _check(image, label, affine)
    shape = tuple(int(n) for n in spatial_shape)
    if len(shape) != 3 or min(shape) <= 0:
        raise PreprocessError(f"spatial_shape: got {spatial_shape!r}; give three sizes > 0")
    difference = np.array(image.shape[1:]) - np.array(shape)
    start = np.where(difference >= 0, difference // 2, -((-difference) // 2))
    return _box(image, label, matrix, start.astype(np.int64), (shape[0], shape[1], shape[2]))


@dataclass(frozen=True, eq=False)
class HarmonisedCase:
    """A case in RAS, bias-corrected and co-registered as ``params`` asked, on its native grid.

    ``image`` float32 ``(C, X, Y, Z)`` (channel 0 is the reference modality), ``label`` on the
    same grid, ``affine`` its voxel-to-world map. ``unregistered`` is the image before
    registration when some channel was resampled (quality control measures noise there), else
    ``None``. ``bias`` and ``registration`` hold one record per channel (``None`` where the step
    was off, and for the reference channel's registration); ``seconds`` the time of each step.
    With ``params.brain_extraction``, ``stripped`` says whether the case was skull-stripped
    already and ``extraction`` holds deepbet's brain mask (on this grid) when it was not; every
    channel is then 0 outside that mask.
    """

    image: FloatImage
    label: LabelMap | None
    affine: Affine
    original_affine: Affine
    original_spacing: tuple[float, float, float]
    original_shape: tuple[int, int, int]
    unregistered: FloatImage | None = None
    bias: tuple[BiasCorrection | None, ...] = ()
    registration: tuple[Registration | None, ...] = ()
    seconds: Mapping[str, float] = field(default_factory=dict)
    stripped: StrippedCheck | None = None
    extraction: BrainExtraction | None = None

    @property
    def arrays(self) -> CaseArrays:
        return CaseArrays(self.image, self.label, self.affine)


@contextmanager
def _named(subject_id: str | None) -> Iterator[None]:
    """Prefix a :class:`PreprocessError` raised inside with the subject id."""
    try:
        yield
    except PreprocessError as exc:
        if subject_id is None:
            raise
        raise PreprocessError(f"{subject_id}: {exc}") from exc


def harmonise_case(
    image: FloatImage,
    label: LabelMap | None,
    affine: npt.ArrayLike,
    params: PreprocessParams,
    *,
    subject_id: str | None = None,
    n4: N4Settings | None = None,
    registration: RegistrationSettings | None = None,
    extract_from: int = 0,
) -> HarmonisedCase:
    """RAS → N4 per channel (``params.bias_correction``) → rigid co-registration of every
    channel to channel 0 (``params.registration``) → brain extraction of a full head from
    channel ``extract_from`` (``params.brain_extraction``; see
    :func:`neurofed.preprocess.skull.extraction_channel`), all on the scan's own grid.

    N4 is fitted inside each channel's own :func:`brain_mask` (the head, or the brain of
    skull-stripped data); registration rotates about the centre of channel 0's mask.

    Examples
    --------
    >>> import numpy as np
    >>> image = np.zeros((2, 8, 8, 8), np.float32)
    >>> image[:, 2:6, 2:6, 2:6] = 1.0
    >>> case = harmonise_case(image, None, np.diag([-1.0, 1.0, 1.0, 1.0]), PreprocessParams())
    >>> float(case.affine[0, 0]), case.bias, case.unregistered is None
    (1.0, (None, None), True)
    """
    seconds: dict[str, float] = {}
    with _named(subject_id):
        start = time.perf_counter()
        matrix = _check(image, label, affine)
        if not np.all(np.isfinite(image)):
            raise PreprocessError("image has NaN or infinite voxels; run `neurofed site check`")
        x, y, z = (int(n) for n in image.shape[1:])
        arrays = reorient_to_ras(image.astype(np.float32, copy=False), label, matrix)
        seconds["reorient"] = time.perf_counter() - start
        channels = list(arrays.image)
        bias: list[BiasCorrection | None] = [None] * len(channels)
        if params.bias_correction:
            start = time.perf_counter()
            for index, channel in enumerate(channels):
                mask, _ = brain_mask(channel[None])
                channels[index], bias[index] = correct_bias(channel, arrays.affine, mask, n4)
            seconds["bias_correction"] = time.perf_counter() - start
        moved: list[Registration | None] = [None] * len(channels)
        unregistered = None
        if params.registration and len(channels) > 1:
            start = time.perf_counter()
            reference, _ = brain_mask(channels[0][None])
            before = list(channels)
            for index in range(1, len(channels)):
                channels[index], moved[index] = register_rigid(
                    channels[0], channels[index], arrays.affine, reference, registration
                )
            if any(r is not None and r.applied for r in moved):
                unregistered = np.stack(before)
            seconds["registration"] = time.perf_counter() - start
        stripped, extraction = None, None
        if params.brain_extraction:
            start = time.perf_counter()
            if not 0 <= extract_from < len(channels):
                raise PreprocessError(
                    f"extract_from = {extract_from}: the case has {len(channels)} channels"
                )
            stripped = detect_skull_stripped(channels[extract_from], arrays.affine)
            if not stripped.stripped:
                extraction = extract_brain(channels[extract_from], arrays.affine)
                channels = [np.where(extraction.mask, c, 0).astype(np.float32) for c in channels]
            seconds["brain_extraction"] = time.perf_counter() - start
        harmonised = (
            np.stack(channels)
            if params.bias_correction or unregistered is not None or extraction is not None
            else arrays.image
        )
    return HarmonisedCase(
        image=harmonised,
        label=arrays.label,
        affine=arrays.affine,
        original_affine=matrix.copy(),
        original_spacing=voxel_spacing(matrix),
        original_shape=(x, y, z),
        unregistered=unregistered,
        bias=tuple(bias),
        registration=tuple(moved),
        seconds=MappingProxyType(seconds),
        stripped=stripped,
        extraction=extraction,
    )


def finish_case(
    case: HarmonisedCase,
    params: PreprocessParams,
    *,
    subject_id: str | None = None,
    timings: MutableMapping[str, float] | None = None,
) -> PreprocessedCase:
    """Resample → brain mask → z-score → crop to brain → crop/pad, as ``params`` asks.

    ``timings``, if given, receives the seconds of ``resample`` and of the ``rest``.
    """
    with _named(subject_id):
        start = time.perf_counter()
        arrays = case.arrays
        if params.spacing is not None:
            arrays = resample_to_spacing(*arrays, params.spacing)
        resampled = time.perf_counter()
        if case.extraction is not None:  # the background is 0 outside deepbet's brain
            mask = np.asarray(ndimage.binary_fill_holes(np.any(arrays.image != 0, axis=0)))
            method = BrainMaskMethod.DEEPBET
        else:
            mask, method = brain_mask(arrays.image)
        if params.zscore:
            arrays = arrays._replace(image=zscore_in_mask(arrays.image, mask))
        if params.crop_to_brain:
            arrays = crop_to_mask(*arrays, mask, params.margin)
        if params.spatial_shape is not None:
            arrays = crop_or_pad(*arrays, params.spatial_shape)
        if timings is not None:
            timings["resample"] = resampled - start
            timings["rest"] = time.perf_counter() - resampled
    return PreprocessedCase(
        image=np.ascontiguousarray(arrays.image, dtype=np.float32),
        label=np.ascontiguousarray(arrays.label, dtype=np.uint8)
        if arrays.label is not None
        else None,
        affine=np.asarray(arrays.affine, dtype=np.float64),
        brain_mask_method=method,
        original_spacing=case.original_spacing,
        original_shape=case.original_shape,
        original_affine=case.original_affine.copy(),
    )


def preprocess_case(
    image: FloatImage,
    label: LabelMap | None,
    affine: npt.ArrayLike,
    params: PreprocessParams,
    *,
    subject_id: str | None = None,
    extract_from: int = 0,
) -> PreprocessedCase:
    """:func:`harmonise_case` then :func:`finish_case`: the whole pipeline of ``params``.

    ``subject_id`` only prefixes error messages; ``extract_from`` is the channel brain
    extraction reads (:func:`neurofed.preprocess.skull.extraction_channel`). The result never
    shares memory with the input.
    """
    harmonised = harmonise_case(
        image, label, affine, params, subject_id=subject_id, extract_from=extract_from
    )
    case = finish_case(harmonised, params, subject_id=subject_id)
    if np.may_share_memory(case.image, image) or (
        case.label is not None and label is not None and np.may_share_memory(case.label, label)
    ):
        label_copy = case.label.copy() if case.label is not None else None
        case = replace(case, image=case.image.copy(), label=label_copy)
    return case
