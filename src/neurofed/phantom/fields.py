"""Small deterministic building blocks shared by the lesion renderers.

Examples
--------
>>> import numpy as np
>>> from neurofed.phantom.anatomy import Lattice
>>> lattice = Lattice((0.0, 0.0, 0.0), 2.0, (10, 10, 10))
>>> box = Box.around(lattice, np.array([9.0, 9.0, 9.0]), 3.0)
>>> box.slices, box.dx.tolist()
((slice(3, 7, None), slice(3, 7, None), slice(3, 7, None)), [-3.0, -1.0, 1.0, 3.0])
>>> smooth_noise(np.random.default_rng(0), box, (4.0, 8.0)).shape
(4, 4, 4)
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from neurofed.phantom.anatomy import Lattice
from neurofed.phantom.physics import Relaxation

__all__ = ["Box", "Inclusion", "smooth_noise"]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class Box:
    """A sub-box of a lattice around a centre; ``dx, dy, dz`` are world offsets (mm)."""

    slices: tuple[slice, slice, slice]
    dx: F64
    dy: F64
    dz: F64

    @classmethod
    def around(cls, lattice: Lattice, centre: F64, radius_mm: float) -> Box:
        lo = np.floor(lattice.index(centre - radius_mm))
        hi = np.ceil(lattice.index(centre + radius_mm)) + 1
        lo = np.clip(lo, 0, lattice.shape).astype(int)
        hi = np.clip(hi, 0, lattice.shape).astype(int)
        offsets = [
            lattice.origin[a] + lattice.spacing[a] * np.arange(lo[a], hi[a]) - centre[a]
            for a in range(3)
        ]
        a, b = [int(v) for v in lo], [int(v) for v in hi]
        slices = (slice(a[0], b[0]), slice(a[1], b[1]), slice(a[2], b[2]))
        return cls(slices, offsets[0], offsets[1], offsets[2])

    @property
    def shape(self) -> tuple[int, int, int]:
        return (len(self.dx), len(self.dy), len(self.dz))

    @property
    def empty(self) -> bool:
        return min(self.shape) == 0

    def radius(self) -> F32:
        """(X, Y, Z) distance to the centre in mm."""
        r2 = (
            (self.dx**2)[:, None, None].astype(np.float32)
            + (self.dy**2)[None, :, None].astype(np.float32)
            + (self.dz**2)[None, None, :].astype(np.float32)
        )
        return np.sqrt(r2)

    def along(self, axis: F64) -> F32:
        """(X, Y, Z) signed offset along a unit vector ``axis``."""
        ax = (axis[0] * self.dx).astype(np.float32)[:, None, None]
        ay = (axis[1] * self.dy).astype(np.float32)[None, :, None]
        az = (axis[2] * self.dz).astype(np.float32)[None, None, :]
        return np.asarray(ax + ay + az, dtype=np.float32)


@dataclass(frozen=True)
class Inclusion:
    """A tissue placed inside a box: partial-volume fraction, relaxation, contrast agent."""

    box: Box
    fraction: F32  # (X, Y, Z) of the box
    relaxation: Relaxation
    gd_mmol: float = 0.0
    texture: F32 | None = None  # (X, Y, Z) multiplicative signal texture around 1


def smooth_noise(
    rng: np.random.Generator, box: Box, wavelengths_mm: tuple[float, float], waves: int = 8
) -> F32:
    """Unit-variance smooth random field on ``box``: a sum of random plane waves.

    Each wave ``cos(k·x + phi)`` is built separably from 1-D complex exponentials.
    """
    out = np.zeros(box.shape, dtype=np.float32)
    for _ in range(waves):
        direction = rng.standard_normal(3)
        direction /= max(float(np.linalg.norm(direction)), 1e-9)
        k = direction * 2.0 * math.pi / rng.uniform(*wavelengths_mm)
        phase = rng.uniform(0.0, 2.0 * math.pi)
        ex = np.exp(1j * (k[0] * box.dx + phase)).astype(np.complex64)
        ey = np.exp(1j * k[1] * box.dy).astype(np.complex64)
        ez = np.exp(1j * k[2] * box.dz).astype(np.complex64)
        out += (ex[:, None, None] * ey[None, :, None] * ez[None, None, :]).real
    out *= math.sqrt(2.0 / waves)
    return out
