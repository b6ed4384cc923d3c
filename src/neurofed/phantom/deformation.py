"""Subject anatomy: a random affine plus a smooth warp (and optional atrophy / mass effect).

A subject is the template seen through a *pull-back* map ``P``: subject world point ``x`` shows
the template at ``P(x)``. ``P`` is the inverse of an affine (isotropic scale, rotation about the
brain centre, translation) plus a smooth displacement (cubic B-spline on a 24 mm control lattice),
optionally preceded by a tumour's radial mass effect and followed by ventricular expansion.
``P`` is evaluated on a coarse grid and upsampled trilinearly; the tissue maps are then resampled
once with :func:`torch.nn.functional.grid_sample` on a stacked tensor.

Examples
--------
>>> import numpy as np
>>> params = SpatialParams(1.0, (0.0, 0.0, 0.0), (0.0, 0.0, 0.0), warp_mm=0.0, warp_seed=0)
>>> Deformation(params).pullback(np.array([[10.0, 20.0, 30.0]])).round(6).tolist()
[[10.0, 20.0, 30.0]]
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812 (the PyTorch convention)
from scipy import ndimage

from neurofed.phantom.anatomy import BRAIN_CENTRE_MM, Lattice, atrophy_field, tissue_maps

__all__ = [
    "Deformation",
    "MassEffect",
    "SpatialParams",
    "sample_spatial",
    "sampling_grid",
    "subject_lattice",
    "upsample",
    "warp",
]

F64 = npt.NDArray[np.float64]
F32 = npt.NDArray[np.float32]

CONTROL_SPACING_MM = 24.0
_CONTROL_LO = np.array([-184.0, -220.0, -172.0])  # wide enough that no subject reaches its edge
_CONTROL_SHAPE = (16, 18, 16)


@dataclass(frozen=True)
class SpatialParams:
    """Sampled geometry of one subject (all lengths in mm, angles in degrees)."""

    scale: float
    rotation_deg: tuple[float, float, float]
    translation_mm: tuple[float, float, float]
    warp_mm: float  # SD of the control-point displacements
    warp_seed: int  # seeds the control-point displacements
    ventricle_expansion_mm: float = 0.0  # atrophy: ventricles grow by this much


@dataclass(frozen=True)
class MassEffect:
    """Radial push of tissue away from a tumour centre (subject world mm).

    The pull-back samples ``c + (x - c)(1 - s exp(-(r/R)^2))``, invertible for ``s < 1``.
    """

    centre_mm: tuple[float, float, float]
    radius_mm: float
    strength: float


def sample_spatial(rng: np.random.Generator, ventricle_expansion_mm: float = 0.0) -> SpatialParams:
    """Size ±10 %, rotations of a few degrees, small translation, a warp of a few mm.

    >>> params = sample_spatial(np.random.default_rng(0))
    >>> 0.9 <= params.scale <= 1.1, params == sample_spatial(np.random.default_rng(0))
    (True, True)
    """
    scale = float(rng.uniform(0.9, 1.1))
    r = rng.normal(0.0, [4.0, 3.0, 3.0])
    t = rng.normal(0.0, 3.0, 3)
    return SpatialParams(
        scale=scale,
        rotation_deg=(float(r[0]), float(r[1]), float(r[2])),
        translation_mm=(float(t[0]), float(t[1]), float(t[2])),
        warp_mm=float(rng.uniform(1.5, 3.5)),
        warp_seed=int(rng.integers(2**31)),
        ventricle_expansion_mm=float(ventricle_expansion_mm),
    )


def _rotation(degrees: tuple[float, float, float]) -> F64:
    ax, ay, az = (math.radians(d) for d in degrees)
    rx = np.array([[1, 0, 0], [0, math.cos(ax), -math.sin(ax)], [0, math.sin(ax), math.cos(ax)]])
    ry = np.array([[math.cos(ay), 0, math.sin(ay)], [0, 1, 0], [-math.sin(ay), 0, math.cos(ay)]])
    rz = np.array([[math.cos(az), -math.sin(az), 0], [math.sin(az), math.cos(az), 0], [0, 0, 1]])
    return np.asarray(rz @ ry @ rx, dtype=np.float64)


@functools.lru_cache(maxsize=8)
def _control_coefficients(warp_seed: int, warp_mm: float) -> F64:
    """(3, *control shape) cubic B-spline coefficients of the smooth displacement (mm)."""
    rng = np.random.default_rng(warp_seed)
    values = rng.standard_normal((3, *_CONTROL_SHAPE)) * warp_mm
    values[:, :2] = values[:, -2:] = 0.0  # no displacement far from the head
    values[:, :, :2] = values[:, :, -2:] = 0.0
    values[:, :, :, :2] = values[:, :, :, -2:] = 0.0
    return np.stack([ndimage.spline_filter(v, order=3, mode="mirror") for v in values])


def _bspline_matrix(coordinates: F64, size: int) -> F64:
    """(N, size) cubic B-spline weights of control points at fractional ``coordinates``."""
    t = np.abs(coordinates[:, None] - np.arange(size)[None, :])
    return np.where(
        t < 1.0, 2.0 / 3.0 - t**2 + 0.5 * t**3, np.where(t < 2.0, (2.0 - t) ** 3 / 6.0, 0.0)
    )


def _displacement_on_axes(coef: F64, x: F64, y: F64, z: F64) -> F64:
    """(X, Y, Z, 3) displacement on the grid spanned by world axes ``x``, ``y``, ``z`` (mm)."""
    mats = [
        _bspline_matrix((axis - _CONTROL_LO[a]) / CONTROL_SPACING_MM, _CONTROL_SHAPE[a])
        for a, axis in enumerate((x, y, z))
    ]
    out = np.tensordot(coef, mats[2], axes=([3], [1]))  # (3, Kx, Ky, Z)
    out = np.tensordot(out, mats[1], axes=([2], [1]))  # (3, Kx, Z, Y)
    out = np.tensordot(out, mats[0], axes=([1], [1]))  # (3, Z, Y, X)
    return out.transpose(3, 2, 1, 0)


class Deformation:
    """The pull-back map of one subject (optionally with mass effect), evaluated on points."""

    def __init__(self, params: SpatialParams, mass: MassEffect | None = None) -> None:
        self.params = params
        self.mass = mass
        self.rotation = _rotation(params.rotation_deg)
        self.centre = np.asarray(BRAIN_CENTRE_MM)
        self.shift = self.centre + np.asarray(params.translation_mm)
        self.forward_linear = params.scale * self.rotation  # template -> subject

    def _displacement(self, points: F64) -> F64:
        if self.params.warp_mm <= 0.0:
            return np.zeros_like(points)
        coef = _control_coefficients(self.params.warp_seed, self.params.warp_mm)
        mats = [
            _bspline_matrix((points[:, a] - _CONTROL_LO[a]) / CONTROL_SPACING_MM, _CONTROL_SHAPE[a])
            for a in range(3)
        ]  # (N, K) each
        return np.asarray(np.einsum("ni,nj,nk,cijk->nc", *mats, coef, optimize=True), np.float64)

    def pullback(self, points: F64, displacement: F64 | None = None) -> F64:
        """(N, 3) subject world mm -> (N, 3) template world mm (``displacement`` precomputed)."""
        x = np.asarray(points, dtype=np.float64)
        if self.mass is not None and self.mass.strength > 0:
            c = np.asarray(self.mass.centre_mm)
            r2 = ((x - c) ** 2).sum(axis=-1, keepdims=True) / self.mass.radius_mm**2
            x = c + (x - c) * (1.0 - self.mass.strength * np.exp(-r2))
        y = self.centre + (x - self.shift) @ self.rotation / self.params.scale
        if displacement is None:
            displacement = self._displacement(np.asarray(points, dtype=np.float64))
        y = y + displacement
        e = self.params.ventricle_expansion_mm
        if e > 0:
            lattice = tissue_maps(2).lattice
            idx = lattice.index(y).T
            field = atrophy_field()
            y = y + e * np.stack(
                [ndimage.map_coordinates(f, idx, order=1, mode="nearest") for f in field],
                axis=-1,
            )
        return np.asarray(y, dtype=np.float64)

    def forward(self, template_points: F64, iterations: int = 10) -> F64:
        """(N, 3) template mm -> (N, 3) subject mm, inverting :meth:`pullback` by iteration."""
        y = np.atleast_2d(np.asarray(template_points, dtype=np.float64))
        x = self.shift + (y - self.centre) @ self.forward_linear.T
        for _ in range(iterations):
            x = x - (self.pullback(x) - y) @ self.forward_linear.T
        return np.asarray(x, dtype=np.float64)

    def direction(self, template_direction: F64) -> F64:
        """Map a template direction to subject space (linear part) and normalise it."""
        v = self.forward_linear @ np.asarray(template_direction, dtype=np.float64)
        return v / max(float(np.linalg.norm(v)), 1e-9)

    def coarse_pullback(self, lattice: Lattice, steps: tuple[int, int, int]) -> F64:
        """(cx, cy, cz, 3) template mm of every ``steps[a]``-th voxel of ``lattice`` along axis a.

        The nodes extend to (or just past) the last voxel of every axis.
        """
        shape = tuple(math.ceil((n - 1) / k) + 1 for n, k in zip(lattice.shape, steps, strict=True))
        axes: list[F64] = [
            lattice.origin[a]
            + lattice.spacing[a] * steps[a] * np.arange(shape[a], dtype=np.float64)
            for a in range(3)
        ]
        points = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
        displacement = None
        if self.params.warp_mm > 0.0:
            coef = _control_coefficients(self.params.warp_seed, self.params.warp_mm)
            displacement = _displacement_on_axes(coef, axes[0], axes[1], axes[2]).reshape(-1, 3)
        return self.pullback(points, displacement).reshape(*shape, 3)


def _linear_weights(n_fine: int, n_coarse: int, step: int) -> F32:
    """(n_fine, n_coarse) linear interpolation from nodes every ``step`` fine voxels."""
    pos = np.arange(n_fine) / step
    i0 = np.minimum(np.floor(pos).astype(int), max(n_coarse - 2, 0))
    w = pos - i0
    weights = np.zeros((n_fine, n_coarse))
    weights[np.arange(n_fine), i0] += 1.0 - w
    weights[np.arange(n_fine), np.minimum(i0 + 1, n_coarse - 1)] += w
    return weights.astype(np.float32)


def upsample(coarse: F32, steps: tuple[int, int, int], shape: tuple[int, int, int]) -> F32:
    """Separable trilinear upsampling: (cx, cy, cz, C) nodes -> (X, Y, Z, C) voxels."""
    if steps == (1, 1, 1):
        return np.ascontiguousarray(coarse[: shape[0], : shape[1], : shape[2]], dtype=np.float32)
    cx, channels = coarse.shape[0], coarse.shape[3]
    wx, wy, wz = (_linear_weights(shape[a], coarse.shape[a], steps[a]) for a in range(3))
    along_z = np.ascontiguousarray(coarse.transpose(0, 1, 3, 2)) @ wz.T  # (cx, cy, C, Z)
    along_y = np.ascontiguousarray(along_z.transpose(0, 3, 2, 1)) @ wy.T  # (cx, Z, C, Y)
    nodes = np.ascontiguousarray(along_y.transpose(0, 3, 1, 2))  # (cx, Y, Z, C)
    return np.asarray((wx @ nodes.reshape(cx, -1)).reshape(*shape, channels), dtype=np.float32)


def sampling_grid(
    coarse_mm: F64, source: Lattice, steps: tuple[int, int, int], shape: tuple[int, int, int]
) -> F32:
    """(X, Y, Z, 3) ``grid_sample`` coordinates (normalised, (z, y, x) order) in ``source``."""
    norm = 2.0 * source.index(coarse_mm) / (np.asarray(source.shape) - 1.0) - 1.0
    return upsample(norm[..., ::-1].astype(np.float32), steps, shape)


def subject_lattice(
    deformation: Deformation,
    box_mm: tuple[tuple[float, float, float], tuple[float, float, float]],
    spacing: float,
    margin_mm: float,
    z_spacing: float = 0.0,
) -> Lattice:
    """The subject's grid: the template box mapped forward and padded, aligned with the template
    lattice in-plane (``z_spacing``, when set, is the slice spacing)."""
    lo, hi = np.asarray(box_mm[0]), np.asarray(box_mm[1])
    corners = np.array(
        [[a, b, c] for a in (lo[0], hi[0]) for b in (lo[1], hi[1]) for c in (lo[2], hi[2])]
    )
    mapped = deformation.shift + (corners - deformation.centre) @ deformation.forward_linear.T
    origin = np.asarray(tissue_maps(2).lattice.origin)
    step = np.array([spacing, spacing, z_spacing or spacing])
    start = np.floor((mapped.min(axis=0) - margin_mm - origin) / step)
    stop = np.ceil((mapped.max(axis=0) + margin_mm - origin) / step)
    world0 = origin + step * start
    shape = (stop - start + 1).astype(int)
    return Lattice(
        origin=(float(world0[0]), float(world0[1]), float(world0[2])),
        resolution=float(spacing),
        shape=(int(shape[0]), int(shape[1]), int(shape[2])),
        z_resolution=float(z_spacing) if z_spacing and z_spacing != spacing else 0.0,
    )


def warp(source: torch.Tensor, grid: F32, mask: npt.NDArray[np.bool_] | None = None) -> F32:
    """Resample ``source`` (1, C, X, Y, Z) at ``grid`` (X', Y', Z', 3) -> (C, X', Y', Z').

    Outside the source the channels read 0. With ``mask``, only masked voxels are sampled; the
    others are 0.
    """
    channels = source.shape[1]
    with torch.no_grad():
        if mask is None:
            points = torch.from_numpy(np.ascontiguousarray(grid))[None]
        else:
            points = torch.from_numpy(grid[mask]).view(1, 1, 1, -1, 3)
        out = F.grid_sample(
            source, points, mode="bilinear", padding_mode="zeros", align_corners=True
        )
    if mask is None:
        return np.ascontiguousarray(out[0].numpy())
    values = out[0, :, 0, 0].numpy()  # (C, P)
    result = np.zeros((channels, *grid.shape[:3]), dtype=np.float32)
    for c in range(channels):
        result[c][mask] = values[c]
    return result
