"""Tiny NIfTI files for tests: a few voxels, written in milliseconds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import numpy.typing as npt

from neurofed.data.nifti import write_image, write_label

__all__ = ["AFFINE", "SHAPE", "tiny_image", "tiny_label", "write_tiny_image", "write_tiny_label"]

SHAPE = (6, 7, 5)
AFFINE = np.diag([2.0, 2.0, 3.0, 1.0])


def tiny_image(seed: int = 0, shape: tuple[int, ...] = SHAPE) -> npt.NDArray[np.float32]:
    """A positive random image (never all-zero, never NaN)."""
    return (np.random.default_rng(seed).random(shape) + 0.5).astype(np.float32)


def tiny_label(values: tuple[int, ...] = (0, 1, 2, 4), shape: tuple[int, ...] = SHAPE):
    """A label map holding each of ``values`` at least once."""
    labels = np.zeros(shape, dtype=np.uint8)
    flat = labels.reshape(-1)
    for i, v in enumerate(values):
        flat[i * 3 : (i + 1) * 3] = v
    return labels


def write_tiny_image(path: Path, seed: int = 0, shape=SHAPE, affine=AFFINE) -> Path:
    write_image(path, tiny_image(seed, shape), affine)
    return path


def write_tiny_label(path: Path, values=(0, 1, 2, 4), shape=SHAPE, affine=AFFINE) -> Path:
    write_label(path, tiny_label(values, shape), affine)
    return path
