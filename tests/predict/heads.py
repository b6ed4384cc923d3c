"""Synthetic skull-stripped heads defined in world coordinates, so that any grid (orientation,
obliquity, voxel size) samples the same brain and the truth is known on every grid."""

from __future__ import annotations

import math
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

#: Ellipsoid brain radii (mm) around the world origin: about 880 mL.
BRAIN_RADII = (68.0, 56.0, 55.0)
#: A bright blob inside the brain: centre and radius (mm).
BLOB = ((20.0, 10.0, 5.0), 12.0)


def grid_affine(
    shape: tuple[int, int, int],
    spacing: tuple[float, float, float],
    *,
    flips: tuple[int, int, int] = (1, 1, 1),
    degrees: float = 0.0,
) -> npt.NDArray[np.float64]:
    """An affine whose voxel centre ``(shape - 1) / 2`` sits at the world origin; ``flips``
    reverse axes (LPS = (-1, -1, 1)), ``degrees`` tilts the grid about z then x (oblique)."""
    a = math.radians(degrees)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(a), -math.sin(a)], [0, math.sin(a), math.cos(a)]])
    linear = rx @ rz @ np.diag(np.asarray(flips, float) * np.asarray(spacing, float))
    affine = np.eye(4)
    affine[:3, :3] = linear
    affine[:3, 3] = -linear @ ((np.asarray(shape, float) - 1) / 2)
    return affine


def world(shape: tuple[int, int, int], affine: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """World coordinates (3, X, Y, Z) of every voxel centre."""
    index = np.indices(shape, dtype=np.float64).reshape(3, -1)
    return (affine[:3, :3] @ index + affine[:3, 3:]).reshape(3, *shape)


def brain_truth(
    shape: tuple[int, int, int], affine: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    x, y, z = world(shape, affine)
    a, b, c = BRAIN_RADII
    return (x / a) ** 2 + (y / b) ** 2 + (z / c) ** 2 <= 1.0


def head(
    shape: tuple[int, int, int], affine: npt.NDArray[np.float64], *, contrast: float = 1.0
) -> npt.NDArray[np.float32]:
    """Brain intensities (grey-white texture and a bright blob), 0 outside the brain."""
    x, y, z = world(shape, affine)
    brain = brain_truth(shape, affine)
    (cx, cy, cz), radius = BLOB
    blob = (x - cx) ** 2 + (y - cy) ** 2 + (z - cz) ** 2 <= radius**2
    texture = 100.0 + 15.0 * np.sin(x / 9.0) * np.cos(y / 11.0) + 0.2 * z
    image = np.where(brain, texture + contrast * 80.0 * blob, 0.0)
    return image.astype(np.float32)


def write_head(
    path: Path,
    shape: tuple[int, int, int],
    affine: npt.NDArray[np.float64],
    *,
    contrast: float = 1.0,
) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    nib.save(nib.Nifti1Image(head(shape, affine, contrast=contrast), affine), path)
    return path
