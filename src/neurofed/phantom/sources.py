"""Template tensors the renderer warps, and the cheap masks and layers derived around them.

Examples
--------
>>> import numpy as np
>>> distance = np.array([0.5, 3.0, 8.0, 30.0], np.float32)
>>> shell, layers = head_layers(distance, np.zeros(4, np.float32), (1.5, 5.0, 4.0), voxel_mm=1.0)
>>> shell.tolist(), layers.round(2).tolist()  # rows: extra-axial CSF, skull, scalp
([0, 1, 2], [[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import torch
from scipy import ndimage

from neurofed.phantom.anatomy import Lattice, head_distance, pial_depth, tissue_maps

__all__ = ["FAR_MM", "head_layers", "source", "support_mask", "thinned_source"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: The head-distance channel is stored minus this, so that "outside the template" (0) reads far.
FAR_MM = 1000.0
_SUPPORT_HEAD_MM = 18.0  # beyond any CSF + skull + scalp (at most 16.5 mm)


@functools.lru_cache(maxsize=4)
def source(spacing: float, head: bool) -> tuple[torch.Tensor, Lattice]:
    """(1, C, X, Y, Z) template channels GM, WM, CSF (+ head distance - FAR_MM), anti-aliased.

    Uses the 1 mm template below 2 mm spacing, else the 2 mm one, smoothed when coarser.
    """
    resolution = 1 if spacing < 2.0 else 2
    maps = tissue_maps(resolution)
    channels = [maps.gm, maps.wm, maps.csf]
    if head:
        channels.append(head_distance(resolution) - np.float32(FAR_MM))
    sigma = 0.42 * math.sqrt(max((spacing / resolution) ** 2 - 1.0, 0.0))
    if sigma > 0.1:
        channels = [ndimage.gaussian_filter(c, sigma, mode="nearest") for c in channels]
    stacked = np.ascontiguousarray(np.stack(channels)[None], dtype=np.float32)
    return torch.from_numpy(stacked), maps.lattice


@functools.lru_cache(maxsize=2)
def _cortex_band(resolution: int) -> tuple[npt.NDArray[np.intp], F32]:
    depth = pial_depth(resolution).reshape(-1)
    index = np.flatnonzero((depth > 0) & (depth <= 3.0 + resolution))
    return index, depth[index]


@contextlib.contextmanager
def thinned_source(spacing: float, thinning_mm: float) -> Iterator[tuple[torch.Tensor, Lattice]]:
    """The head source with ``thinning_mm`` of outer cortex turned into CSF, while in use.

    The cached tensor is changed in place (only the thin cortical band) and restored on exit,
    which avoids copying the whole template for every subject.
    """
    tensor, lattice = source(spacing, True)
    if thinning_mm <= 0.0:
        yield tensor, lattice
        return
    resolution = lattice.resolution
    index, depth = _cortex_band(int(resolution))
    array = tensor.numpy()
    gm, csf = array[0, 0].reshape(-1), array[0, 2].reshape(-1)
    saved_gm, saved_csf = gm[index], csf[index]
    moved = saved_gm * np.clip((thinning_mm - depth + resolution) / resolution, 0.0, 1.0)
    gm[index] = saved_gm - moved
    csf[index] = saved_csf + moved
    try:
        yield tensor, lattice
    finally:
        gm[index] = saved_gm
        csf[index] = saved_csf


@functools.lru_cache(maxsize=2)
def _support(head: bool) -> F32:
    """Where anything but air can be, at 2 mm: the dilated brain mask, or the head."""
    if head:
        return (head_distance(2) <= _SUPPORT_HEAD_MM).astype(np.float32)
    return np.asarray(ndimage.binary_dilation(tissue_maps(2).brain, iterations=2), np.float32)


def support_mask(
    coarse_mm: F64, head: bool, steps: tuple[int, int, int], shape: tuple[int, int, int]
) -> Bool:
    """(X, Y, Z) voxels near a coarse node that may show tissue (conservative).

    ``coarse_mm`` (cx, cy, cz, 3) holds the template points of every ``steps[a]``-th voxel.
    """
    lattice = tissue_maps(2).lattice
    index = lattice.index(coarse_mm.reshape(-1, 3)).T
    inside = ndimage.map_coordinates(_support(head), index, order=1, mode="constant") > 0.0
    coarse = ndimage.binary_dilation(inside.reshape(coarse_mm.shape[:3]), iterations=1)
    for axis in range(3):
        coarse = np.repeat(coarse, steps[axis], axis=axis)
    return np.ascontiguousarray(coarse[: shape[0], : shape[1], : shape[2]])


def head_layers(
    distance: F32, brain: F32, thickness_mm: tuple[float, float, float], voxel_mm: float
) -> tuple[npt.NDArray[np.intp], F32]:
    """Extra-axial CSF, skull and scalp fractions from the distance (mm) to the brain surface.

    Only the shell where they can be non-zero is computed: returns its flat voxel indices (P,)
    and the (3, P) fractions; ``voxel_mm`` softens the edges.
    """
    edges = [float(e) for e in np.cumsum(thickness_mm)]
    lo, hi = -2.0 * voxel_mm, edges[-1] + voxel_mm  # deeper inside, the brain fills the voxel
    flat = distance.reshape(-1)
    shell = np.flatnonzero((flat > lo) & (flat < hi))
    d = flat[shell]
    outside = np.clip(1.0 - brain.reshape(-1)[shell], 0.0, 1.0)
    steps = [np.clip((d - np.float32(e)) / np.float32(voxel_mm) + 0.5, 0.0, 1.0) for e in edges]
    layers = np.stack([1.0 - steps[0], steps[0] - steps[1], steps[1] - steps[2]]) * outside
    return shell, layers.astype(np.float32)
