"""Plant a quality problem in a rendered case, for ``neurofed site qc`` to find.

Unlike the broken cases of :mod:`neurofed.phantom.broken`, these files read fine and pass
``neurofed site check``; only quality control can tell them apart. Each problem is a
deterministic function of the case's arrays (and its noise seed), applied before writing:

- ``low-snr``: Rician noise of σ = 0.4 × the 90th percentile of the nonzero voxels, in every
  modality (only inside the brain of skull-stripped data, whose background stays exactly 0);
- ``misregistered``: the last modality (FLAIR) rotated 8° about the superior axis through the
  volume's centre and shifted by (6, -6, 3) mm; BIDS lesion masks move with it (they are drawn
  on FLAIR), BraTS labels do not (they live in the common T1 space);
- ``cropped-fov``: the top 30 % of the axial slices removed (the brain runs into the top face);
- ``thick-slices``: slabs of at least 8 × the grid spacing (and twice the native slices)
  averaged into thick axial slices (a skull-stripped volume is first padded by one slab above
  and below, as the scanner's field of view was larger); the label keeps each slab's central
  slice.

Examples
--------
>>> import numpy as np
>>> images = {Modality.T1: np.ones((4, 4, 10), np.float32)}
>>> label = np.zeros((4, 4, 10), np.uint8)
>>> out = plant(QCProblem.CROPPED_FOV, images, label, np.eye(4), spacing=1.0, noise_seed=0)
>>> out.images[Modality.T1].shape, out.label.shape
((4, 4, 7), (4, 4, 7))
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import NamedTuple

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.keys import Modality
from neurofed.phantom.acquisition import rician, slice_average
from neurofed.phantom.site import QCProblem

__all__ = ["LOW_SNR_FRACTION", "MISREGISTRATION", "Planted", "label_measures", "plant"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]

LOW_SNR_FRACTION = 0.4
#: Rotation about the superior axis (degrees) and shift (mm, RAS) of the misregistered modality.
MISREGISTRATION = (8.0, (6.0, -6.0, 3.0))
_CROP_FRACTION = 0.3
_THICK_TIMES_SPACING = 8.0


class Planted(NamedTuple):
    images: dict[Modality, F32]
    label: U8
    affine: F64


def _low_snr(images: Mapping[Modality, F32], noise_seed: int) -> dict[Modality, F32]:
    rng = np.random.default_rng([noise_seed, 7])
    out = {}
    for modality, image in images.items():
        nonzero = image > 0
        sigma = LOW_SNR_FRACTION * float(np.percentile(image[nonzero], 90))
        stripped = float(np.mean(image == 0)) > 0.3  # BraTS: a zero background
        noisy = rician(image, sigma, rng, nonzero if stripped else None)
        out[modality] = np.rint(noisy, out=noisy)
    return out


def _rigid(array: npt.NDArray[np.generic], affine: F64, order: int) -> npt.NDArray[np.generic]:
    """``array`` with its content rotated and shifted by :data:`MISREGISTRATION` in world mm."""
    degrees, shift = MISREGISTRATION
    angle = math.radians(degrees)
    rotation = np.array(
        [[math.cos(angle), -math.sin(angle), 0.0], [math.sin(angle), math.cos(angle), 0.0],
         [0.0, 0.0, 1.0]]
    )  # fmt: skip
    linear = affine[:3, :3]
    centre = linear @ ((np.array(array.shape) - 1) / 2.0) + affine[:3, 3]
    # output voxel v -> world x -> source world R^-1 (x - c - t) + c -> source voxel
    inverse = np.linalg.inv(linear)
    matrix = inverse @ rotation.T @ linear
    source_origin = rotation.T @ (affine[:3, 3] - centre - np.array(shift)) + centre
    offset = inverse @ (source_origin - affine[:3, 3])
    moved = ndimage.affine_transform(array, matrix, offset, order=order, mode="constant", cval=0)
    return np.asarray(moved)


def _thick(
    images: Mapping[Modality, F32], label: U8, affine: F64, spacing: float, pad: bool
) -> Planted:
    step = float(np.linalg.norm(affine[:3, 2]))
    ratio = max(2, math.ceil(_THICK_TIMES_SPACING * spacing / step - 1e-9))
    if pad:  # a tightly cropped (skull-stripped) volume: the scanner's slabs covered more
        top = ratio + (-(label.shape[2] + 2 * ratio)) % ratio  # whole slabs only
        widths = ((0, 0), (0, 0), (ratio, top))
        images = {m: np.pad(v, widths) for m, v in images.items()}
        label = np.pad(label, widths)
        affine = affine.copy()
        affine[:3, 3] -= affine[:3, 2] * ratio
    out = {m: slice_average(np.asarray(v, np.float32), float(ratio))[0] for m, v in images.items()}
    count = next(iter(out.values())).shape[2]
    centres = np.minimum(np.arange(count) * ratio + ratio // 2, label.shape[2] - 1)
    new_affine = affine.copy()
    new_affine[:3, 3] += affine[:3, 2] * (ratio - 1) / 2.0  # the first slab's centre
    new_affine[:3, 2] *= ratio
    return Planted({m: np.rint(v) for m, v in out.items()}, label[:, :, centres], new_affine)


def plant(
    problem: QCProblem,
    images: Mapping[Modality, F32],
    label: U8,
    affine: F64,
    *,
    spacing: float,
    noise_seed: int,
    label_follows_last: bool = False,
) -> Planted:
    """Return the case's arrays with ``problem`` planted (the inputs are not modified)."""
    images = {m: np.asarray(v, dtype=np.float32) for m, v in images.items()}
    if problem is QCProblem.LOW_SNR:
        return Planted(_low_snr(images, noise_seed), label, affine)
    if problem is QCProblem.MISREGISTERED:
        last = list(images)[-1]
        moved = dict(images)
        moved[last] = np.rint(np.asarray(_rigid(images[last], affine, 1), np.float32))
        if label_follows_last:
            label = np.asarray(_rigid(label, affine, 0), dtype=np.uint8)
        return Planted(moved, label, affine)
    if problem is QCProblem.CROPPED_FOV:
        keep = label.shape[2] - max(1, round(_CROP_FRACTION * label.shape[2]))
        cut = {m: np.ascontiguousarray(v[:, :, :keep]) for m, v in images.items()}
        return Planted(cut, np.ascontiguousarray(label[:, :, :keep]), affine)
    if problem is QCProblem.THICK_SLICES:
        return _thick(images, label, affine, spacing, pad=not label_follows_last)
    raise ValueError(f"QC problem {problem!r} is not one the phantom can plant")


def label_measures(label: U8, affine: F64, glioma: bool) -> dict[str, float]:
    """Label volumes (mL) as :func:`~neurofed.phantom.render.render_case` reports them."""
    ml = abs(float(np.linalg.det(affine[:3, :3]))) / 1000.0
    if not glioma:
        return {"lesion_ml": float((label > 0).sum()) * ml}
    regions = (("wt_ml", (1, 2, 4)), ("tc_ml", (1, 4)), ("et_ml", (4,)))
    return {name: float(np.isin(label, values).sum()) * ml for name, values in regions}
