"""What the scanner does to the ideal signal: bias field, thick slices, Rician noise, FOV, storage.

Examples
--------
>>> import numpy as np
>>> volume = np.arange(8, dtype=np.float32).reshape(1, 1, 8)
>>> thick, first = slice_average(volume, 2.0)
>>> thick.ravel().tolist(), first
([0.5, 2.5, 4.5, 6.5], 0.5)
>>> slices_to_iso(thick, 2.0, first, 8).ravel().tolist()
[0.5, 1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 6.5]
>>> flip_to(np.zeros((2, 3, 4)), np.eye(4), "LPS")[1][:3, 3].tolist()
[1.0, 2.0, 0.0]
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from neurofed.phantom.anatomy import BRAIN_CENTRE_MM
from neurofed.phantom.site import Orientation, bias_terms

__all__ = ["bias_log", "flip_to", "rician", "slab_weights", "slice_average", "slices_to_iso"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

_BIAS_SCALE_MM = 100.0


def bias_log(coefficients: tuple[float, ...], x: F64, y: F64, z: F64) -> F32:
    """(X, Y, Z) log bias at world axes ``x``, ``y``, ``z`` (mm, 1-D each)."""
    c = coefficients
    u = ((x - BRAIN_CENTRE_MM[0]) / _BIAS_SCALE_MM).astype(np.float32)[:, None, None]
    v = ((y - BRAIN_CENTRE_MM[1]) / _BIAS_SCALE_MM).astype(np.float32)[None, :, None]
    w = ((z - BRAIN_CENTRE_MM[2]) / _BIAS_SCALE_MM).astype(np.float32)[None, None, :]
    t = bias_terms(u, v, w)
    xy = c[0] * t[0] + c[3] * t[3] + c[1] * t[1] + c[4] * t[4] + c[6] * t[6]  # (X, Y, 1)
    xz = c[2] * t[2] + c[5] * t[5] + c[7] * t[7]  # (X, 1, Z)
    yz = c[8] * t[8]  # (1, Y, Z)
    return (xy + xz + yz).astype(np.float32)


def slab_weights(n_z: int, ratio: float) -> tuple[F32, float]:
    """(n, n_z) box-profile weights of slabs ``ratio`` voxels thick, and the first centre."""
    count = max(math.floor(n_z / ratio), 1)
    edges = np.minimum(np.arange(count + 1) * ratio, n_z)  # slab boundaries in voxel units
    k = np.arange(n_z)[None, :]
    overlap = np.minimum(edges[1:, None], k + 1) - np.maximum(edges[:-1, None], k)
    weights = np.clip(overlap, 0.0, None) / np.diff(edges)[:, None]
    return weights.astype(np.float32), float(ratio / 2.0 - 0.5)


def _along_z(volume: F32, weights: F32) -> F32:
    """Apply (n_out, n_z) ``weights`` along the last axis: (X, Y, n_z) -> (X, Y, n_out)."""
    x, y, n_z = volume.shape
    out = np.ascontiguousarray(volume, dtype=np.float32).reshape(x * y, n_z) @ weights.T
    return out.reshape(x, y, weights.shape[0])


def slice_average(volume: F32, ratio: float) -> tuple[F32, float]:
    """Average along z over slabs ``ratio`` voxels thick (a box slice profile).

    Returns the (X, Y, n) slabs and the iso z index of the first slab's centre.
    """
    if ratio <= 1.0 + 1e-6:
        return volume, 0.0
    weights, first = slab_weights(volume.shape[2], ratio)
    return _along_z(volume, weights), first


def slices_to_iso(thick: F32, ratio: float, first: float, n_z: int) -> F32:
    """Linear interpolation of slabs back onto ``n_z`` iso slices (as a scanner reformat)."""
    if thick.shape[2] == n_z and first == 0.0:
        return thick
    count = thick.shape[2]
    pos = np.clip((np.arange(n_z) - first) / ratio, 0.0, count - 1.0)
    j0 = np.minimum(np.floor(pos).astype(int), max(count - 2, 0))
    j1 = np.minimum(j0 + 1, count - 1)
    weights = np.zeros((n_z, count), dtype=np.float64)
    rows = np.arange(n_z)
    np.add.at(weights, (rows, j0), 1.0 - (pos - j0))
    np.add.at(weights, (rows, j1), pos - j0)
    return _along_z(thick, weights.astype(np.float32))


def rician(
    signal: F32, sigma: float, rng: np.random.Generator, where: npt.NDArray[np.bool_] | None = None
) -> F32:
    """Magnitude of complex Gaussian noise added to a real signal (only ``where`` if given)."""
    if sigma <= 0:
        return signal
    if where is None:
        noise = rng.standard_normal((2, *signal.shape), dtype=np.float32)
        noise *= sigma
        noise[0] += signal
        return np.asarray(np.hypot(noise[0], noise[1]), dtype=np.float32)
    out = np.zeros_like(signal)
    values = signal[where]
    noise = rng.standard_normal((2, values.size), dtype=np.float32)
    noise *= sigma
    noise[0] += values
    out[where] = np.hypot(noise[0], noise[1])
    return out


def flip_to(
    array: npt.NDArray[np.generic], affine: F64, orientation: str
) -> tuple[npt.NDArray[np.generic], F64]:
    """Store an RAS array as ``orientation`` (LAS: x flipped, LPS: x and y), keeping world."""
    axes = {Orientation.RAS: (), Orientation.LAS: (0,), Orientation.LPS: (0, 1)}[
        Orientation(orientation)
    ]
    out = np.asarray(affine, dtype=np.float64).copy()
    for axis in axes:
        out[:3, 3] += out[:3, axis] * (array.shape[axis] - 1)
        out[:3, axis] *= -1.0
    if axes:
        array = np.ascontiguousarray(np.flip(array, axis=axes))
    return array, out
