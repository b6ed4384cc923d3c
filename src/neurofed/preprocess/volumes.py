"""Small checks and measures on one scan's arrays and affine, shared by :mod:`.ops` (the
pipeline) and :mod:`.skull` (head or brain, brain extraction).

Examples
--------
>>> import numpy as np
>>> round(voxel_ml(np.diag([2.0, 2.0, 2.0, 1.0])), 6)
0.008
>>> border_values(np.arange(27).reshape(3, 3, 3)).size  # every voxel but the centre
26
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.preprocess.params import PreprocessError

__all__ = ["Affine", "border_values", "check_affine", "otsu_threshold", "voxel_ml"]

Affine = npt.NDArray[np.float64]  # (4, 4)


def check_affine(affine: npt.ArrayLike) -> Affine:
    """``affine`` as a finite, invertible 4x4 float64 matrix, or a :class:`PreprocessError`."""
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or not np.all(np.isfinite(matrix)):
        raise PreprocessError(f"affine: got {matrix.tolist()}; expected a finite 4x4 matrix")
    if abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise PreprocessError("affine: its 3x3 part is singular; fix the scan's header")
    return matrix


def voxel_ml(affine: npt.ArrayLike) -> float:
    """The volume of one voxel in mL."""
    return float(abs(np.linalg.det(np.asarray(affine, dtype=np.float64)[:3, :3]))) / 1000.0


def otsu_threshold(values: npt.NDArray[np.floating[Any]], bins: int = 256) -> float:
    """Otsu's threshold of ``values`` (numpy: the bin edge that maximises the between-class
    variance of a ``bins``-bin histogram)."""
    counts, edges = np.histogram(values, bins=bins)
    centres = (edges[:-1] + edges[1:]) / 2
    low = np.cumsum(counts)
    high = low[-1] - low
    cumulative = np.cumsum(counts * centres)
    mean_low = cumulative / np.maximum(low, 1)
    mean_high = (cumulative[-1] - cumulative) / np.maximum(high, 1)
    between = low * high * (mean_low - mean_high) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def border_values(array: npt.NDArray[Any], width: int = 1) -> npt.NDArray[Any]:
    """The values within ``width`` voxels of any face of ``array``, flattened."""
    inner = tuple(slice(width, -width) if n > 2 * width else slice(0, 0) for n in array.shape)
    keep = np.ones(array.shape, dtype=bool)
    keep[inner] = False
    return array[keep]
