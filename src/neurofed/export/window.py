"""Sliding-window and whole-volume inference in numpy, as :mod:`neurofed.training.inference`
does it with MONAI and PyTorch: the same windows, the same Gaussian blending, the same padding.

``run`` is any function from a batch ``(B, C, x, y, z)`` float32 array to the network's named
outputs (``dict[str, ndarray]``, in output order). Spatial outputs (5-D) are blended over
windows of ``patch_shape`` placed as MONAI's ``sliding_window_inference`` places them (step
``int(patch * (1 - overlap))``, the last window flush with the end, a volume smaller than the
window zero-padded on both sides); each window's output is weighted by MONAI's Gaussian
importance map (sigma = patch / 8 per axis, clamped below at its minimum or 1e-3). Without a
patch shape, and for the other outputs (marker logits) of a named model, the volume is
zero-padded at its end to a multiple of ``divisor``, passed once, and spatial outputs are cropped
back. Imports no torch.

Examples
--------
>>> import numpy as np
>>> def run(batch):
...     return {"logits": batch[:, :1] * 2.0}
>>> image = np.ones((1, 2, 20, 9, 12), np.float32)
>>> out = infer(run, image, patch_shape=(8, 8, 8), divisor=(8, 8, 8), overlap=0.25)
>>> out["logits"].shape, float(out["logits"].min()), float(out["logits"].max())
((1, 1, 20, 9, 12), 2.0, 2.0)
>>> infer(run, image, patch_shape=None, divisor=(8, 8, 8))["logits"].shape
(1, 1, 20, 9, 12)
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["Runner", "gaussian_importance", "infer", "window_starts"]

Array = npt.NDArray[np.float32]
#: A network: batch ``(B, C, x, y, z)`` → named outputs, in output order.
Runner = Callable[[Array], dict[str, Array]]


def gaussian_importance(patch_shape: Sequence[int], sigma_scale: float = 0.125) -> Array:
    """MONAI's Gaussian importance map (``compute_importance_map(mode="gaussian")``)."""
    result = np.ones((), np.float32)
    for size in patch_shape:
        x = np.arange(-(size - 1) / 2.0, (size - 1) / 2.0 + 1, dtype=np.float32)
        sigma = size * sigma_scale
        curve = np.exp(x**2 / (-2 * sigma**2)).astype(np.float32)  # (size,)
        result = result[..., None] * curve
    floor = max(float(result.min()), 1e-3)
    return np.maximum(result, floor).astype(np.float32)


def window_starts(size: int, patch: int, overlap: float) -> list[int]:
    """Start of each window along one axis of ``size`` voxels (``size >= patch``), as MONAI's
    ``dense_patch_slices`` with its scan interval.

    >>> window_starts(20, 8, 0.25), window_starts(8, 8, 0.5)
    ([0, 6, 12], [0])
    """
    if size == patch:
        return [0]
    step = max(int(patch * (1 - overlap)), 1)
    count = next(
        (d + 1 for d in range(-(-size // step)) if d * step + patch >= size),
        1,
    )
    return [min(k * step, size - patch) for k in range(count)]


def _whole_volume(run: Runner, image: Array, divisor: Sequence[int]) -> dict[str, Array]:
    shape = image.shape[2:]
    padding = [(0, 0), (0, 0)] + [
        (0, -(-int(n) // int(d)) * int(d) - int(n)) for n, d in zip(shape, divisor, strict=True)
    ]
    padded = np.pad(image, padding) if any(p for _, p in padding) else image  # (B, C, X', Y', Z')
    x, y, z = shape
    return {
        name: out[..., :x, :y, :z] if out.ndim == 5 else out for name, out in run(padded).items()
    }


def _sliding(
    run: Runner,
    image: Array,
    patch_shape: Sequence[int],
    overlap: float,
    batch_size: int,
) -> tuple[dict[str, Array], set[str]]:
    """Blended spatial outputs, and the names of the other outputs."""
    shape = image.shape[2:]
    before = [max(p - n, 0) // 2 for n, p in zip(shape, patch_shape, strict=True)]
    after = [max(p - n, 0) - b for n, p, b in zip(shape, patch_shape, before, strict=True)]
    if any(before) or any(after):
        image = np.pad(image, [(0, 0), (0, 0), *zip(before, after, strict=True)])
    grid = image.shape[2:]
    axes = [window_starts(n, p, overlap) for n, p in zip(grid, patch_shape, strict=True)]
    starts = list(itertools.product(*axes))
    weight = gaussian_importance(patch_shape)  # (px, py, pz)
    sums: dict[str, Array] = {}
    others: set[str] = set()
    count = np.zeros(grid, np.float32)  # (X, Y, Z)
    px, py, pz = patch_shape
    for b in range(image.shape[0]):
        for first in range(0, len(starts), batch_size):
            chunk = starts[first : first + batch_size]
            windows = np.stack(
                [image[b, :, x : x + px, y : y + py, z : z + pz] for x, y, z in chunk]
            )  # (n, C, px, py, pz)
            for name, out in run(np.ascontiguousarray(windows)).items():
                if out.ndim != 5:
                    others.add(name)
                    continue
                total = sums.setdefault(
                    name, np.zeros((image.shape[0], out.shape[1], *grid), np.float32)
                )  # (B, c, X, Y, Z)
                for (x, y, z), window in zip(chunk, out, strict=True):
                    total[b, :, x : x + px, y : y + py, z : z + pz] += window * weight
            if b == 0:
                for x, y, z in chunk:
                    count[x : x + px, y : y + py, z : z + pz] += weight
    crop = (
        slice(None),
        slice(None),
        *(slice(s, s + n) for s, n in zip(before, shape, strict=True)),
    )
    return {name: (total / count)[crop] for name, total in sums.items()}, others


def infer(
    run: Runner,
    image: Array,
    *,
    patch_shape: Sequence[int] | None,
    divisor: Sequence[int],
    overlap: float = 0.25,
    batch_size: int = 2,
) -> dict[str, Array]:
    """Named outputs of ``run`` for ``image`` ``(B, C, X, Y, Z)`` on its full grid (see the
    module docstring)."""
    if patch_shape is None:
        return _whole_volume(run, image, divisor)
    spatial, others = _sliding(run, image, patch_shape, overlap, batch_size)
    if not others:
        return spatial
    whole = _whole_volume(run, image, divisor)  # the marker logits: one whole-volume pass
    return {name: spatial.get(name, value) for name, value in whole.items()}
