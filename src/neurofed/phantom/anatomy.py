"""The template anatomy: MNI152 tissue maps shipped with nilearn, and maps derived from them.

Everything here is deterministic and cached per process: the grey/white matter probability maps
and brain mask (nilearn package data, no network), CSF as brain minus GM minus WM, the lateral
ventricles, a signed distance to the brain surface (the scalp and skull are built from it: the
nilearn template is skull-stripped), the depth below the pial surface (for cortical thinning), a
ventricle-expansion field (for atrophy) and candidate centres for lesions.

Maps are held on the template lattice of 1 mm or 2 mm (``resolution``); world coordinates are
MNI millimetres. Array axes are (x, y, z) = (left→right, posterior→anterior, inferior→superior).

Examples
--------
>>> maps = tissue_maps(2)
>>> maps.gm.shape, maps.lattice.resolution
((99, 117, 95), 2.0)
>>> bool(maps.csf.min() >= 0.0)
True
"""

from __future__ import annotations

import functools
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = [
    "ATROPHY_DECAY_MM",
    "BRAIN_CENTRE_MM",
    "Lattice",
    "TissueMaps",
    "atrophy_field",
    "brain_box_mm",
    "glioma_candidates",
    "head_distance",
    "ms_candidates",
    "pial_depth",
    "tissue_maps",
    "ventricle_distance",
    "ventricle_roi",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
Bool = npt.NDArray[np.bool_]

#: Centre of rotation and scaling of subject transforms (MNI mm, roughly the brain's centre).
BRAIN_CENTRE_MM = (0.0, -18.0, 8.0)
#: How far (mm) ventricular expansion reaches into the surrounding tissue (e-folding length).
ATROPHY_DECAY_MM = 8.0
#: Depth (mm) below the brain surface beyond which CSF inside the central box is ventricular.
_VENTRICLE_DEPTH_MM = 14.0


@dataclass(frozen=True)
class Lattice:
    """A regular axis-aligned grid: voxel ``i`` sits at ``origin + spacing * i`` (mm).

    ``resolution`` is the in-plane (x, y) voxel size; ``z_resolution`` the slice spacing when it
    differs (0 = same as ``resolution``).
    """

    origin: tuple[float, float, float]
    resolution: float
    shape: tuple[int, int, int]
    z_resolution: float = 0.0

    @property
    def spacing(self) -> tuple[float, float, float]:
        return (self.resolution, self.resolution, self.z_resolution or self.resolution)

    def world(self, index: F64) -> F64:
        """(..., 3) voxel indices -> (..., 3) world mm."""
        return np.asarray(np.asarray(self.origin) + np.asarray(self.spacing) * index, np.float64)

    def index(self, world: F64) -> F64:
        """(..., 3) world mm -> (..., 3) fractional voxel indices."""
        return np.asarray((world - np.asarray(self.origin)) / np.asarray(self.spacing), np.float64)

    def axes(self) -> tuple[F64, F64, F64]:
        """World coordinates (mm) of the voxel centres along x, y and z."""
        x, y, z = (
            self.origin[a] + self.spacing[a] * np.arange(self.shape[a], dtype=np.float64)
            for a in range(3)
        )
        return x, y, z

    def affine(self) -> F64:
        affine = np.diag([*self.spacing, 1.0])
        affine[:3, 3] = self.origin
        return affine


@dataclass(frozen=True)
class TissueMaps:
    """GM, WM, CSF fractions (0..1, summing to the brain mask) on a template lattice."""

    lattice: Lattice
    gm: F32
    wm: F32
    csf: F32
    brain: Bool


#: nilearn's package data (MNI152 2009c, skull-stripped), as ``load_mni152_*`` read it.
_NILEARN_FILES = {
    "t1": "mni_icbm152_t1_tal_nlin_sym_09a_converted.nii.gz",
    "gm": "mni_icbm152_gm_tal_nlin_sym_09a_converted.nii.gz",
    "wm": "mni_icbm152_wm_tal_nlin_sym_09a_converted.nii.gz",
}
_NILEARN_MASK_THRESHOLD = 0.2  # load_mni152_brain_mask's default


def _nilearn_data() -> Path | None:
    spec = importlib.util.find_spec("nilearn")
    if spec is None or not spec.submodule_search_locations:
        return None
    folder = Path(next(iter(spec.submodule_search_locations))) / "datasets" / "data"
    return folder if all((folder / f).is_file() for f in _NILEARN_FILES.values()) else None


@functools.lru_cache(maxsize=1)
def _mni_1mm() -> tuple[F32, F32, Bool, F64]:
    """GM, WM, brain mask and affine of nilearn's 1 mm MNI152 (2009c) package data.

    Reads the files exactly as ``nilearn.datasets.load_mni152_{gm,wm}_template`` and
    ``load_mni152_brain_mask`` do at ``resolution=1`` (scaled to max 1; mask = T1 > 0.2), without
    importing ``nilearn.datasets`` (2-3 s, it pulls in scikit-learn); falls back to that API.
    """
    folder = _nilearn_data()
    if folder is None:  # pragma: no cover - a nilearn without the files at the usual place
        from nilearn import datasets

        images = {
            "t1": datasets.load_mni152_template(resolution=1),
            "gm": datasets.load_mni152_gm_template(resolution=1),
            "wm": datasets.load_mni152_wm_template(resolution=1),
        }
    else:
        images = {key: nib.load(folder / name) for key, name in _NILEARN_FILES.items()}
    data = {}
    for key, image in images.items():
        array = np.asarray(image.dataobj).astype(np.float32)
        data[key] = array / array.max()
    brain = data["t1"] > _NILEARN_MASK_THRESHOLD
    affine = np.asarray(images["t1"].affine, dtype=np.float64)
    return data["gm"], data["wm"], brain, affine


def _decimate(array: F32) -> F32:
    """1 mm -> 2 mm on the same origin: [1/4, 1/2, 1/4] anti-aliasing, every other voxel."""
    out = array
    for axis in range(3):
        n = out.shape[axis]
        centre = np.arange(0, n, 2)
        below, above = np.maximum(centre - 1, 0), np.minimum(centre + 1, n - 1)
        out = 0.5 * np.take(out, centre, axis) + 0.25 * (
            np.take(out, below, axis) + np.take(out, above, axis)
        )
    return np.ascontiguousarray(out, dtype=np.float32)


@functools.lru_cache(maxsize=2)
def tissue_maps(resolution: int) -> TissueMaps:
    """MNI152 (2009c) tissue maps at 1 or 2 mm from nilearn's package data (no network).

    The 2 mm maps are decimated from the 1 mm ones (same origin as nilearn's 2 mm templates),
    which is several seconds faster than nilearn's spline resampling.
    """
    if resolution not in (1, 2):
        raise ValueError(f"resolution = {resolution}: the phantom uses templates at 1 or 2 mm")
    gm, wm, brain, affine = _mni_1mm()
    if resolution == 2:
        gm, wm, brain = _decimate(gm), _decimate(wm), brain[::2, ::2, ::2].copy()
        affine = affine @ np.diag([2.0, 2.0, 2.0, 1.0])
    gm = np.where(brain, np.clip(gm, 0.0, 1.0), 0.0).astype(np.float32)
    wm = np.where(brain, np.clip(wm, 0.0, 1.0), 0.0).astype(np.float32)
    total = gm + wm
    over = total > 1.0
    gm[over] /= total[over]
    wm[over] /= total[over]
    csf = np.where(brain, 1.0 - gm - wm, 0.0).clip(0.0, 1.0).astype(np.float32)
    lattice = Lattice(
        origin=(float(affine[0, 3]), float(affine[1, 3]), float(affine[2, 3])),
        resolution=float(affine[0, 0]),
        shape=(int(brain.shape[0]), int(brain.shape[1]), int(brain.shape[2])),
    )
    for array in (gm, wm, csf, brain):
        array.flags.writeable = False
    return TissueMaps(lattice, gm, wm, csf, brain)


def _world_grid(lattice: Lattice) -> tuple[F64, F64, F64]:
    x, y, z = lattice.axes()
    return x[:, None, None], y[None, :, None], z[None, None, :]


@functools.lru_cache(maxsize=2)
def brain_box_mm(resolution: int = 2) -> tuple[tuple[float, float, float], ...]:
    """((x0, y0, z0), (x1, y1, z1)): world bounding box of the template brain mask."""
    maps = tissue_maps(resolution)
    idx = np.argwhere(maps.brain)
    lo = maps.lattice.world(idx.min(axis=0).astype(np.float64))
    hi = maps.lattice.world(idx.max(axis=0).astype(np.float64))
    return (
        (float(lo[0]), float(lo[1]), float(lo[2])),
        (float(hi[0]), float(hi[1]), float(hi[2])),
    )


@functools.lru_cache(maxsize=2)
def ventricle_roi(resolution: int) -> Bool:
    """Lateral ventricles (deep CSF in a central box) at ``resolution``; defined at 2 mm."""
    maps = tissue_maps(2)
    x, y, z = _world_grid(maps.lattice)
    box = (np.abs(x) < 32) & (y > -50) & (y < 35) & (z > -15) & (z < 35)
    depth = ndimage.distance_transform_edt(maps.brain) * maps.lattice.resolution
    candidates = (maps.csf > 0.5) & box & (depth > _VENTRICLE_DEPTH_MM)
    labels, count = ndimage.label(candidates)
    sizes = ndimage.sum_labels(candidates, labels, np.arange(1, count + 1))
    keep = 1 + np.flatnonzero(sizes >= 0.05 * sizes.max())
    roi = np.isin(labels, keep)
    if resolution == 2:
        return roi
    fine = tissue_maps(resolution).lattice
    index = np.indices(fine.shape, dtype=np.float64) * (fine.resolution / 2.0)
    up = ndimage.map_coordinates(roi.astype(np.uint8), index, order=0, mode="nearest")
    return np.asarray(up, dtype=bool)


@functools.lru_cache(maxsize=1)
def ventricle_distance() -> F32:
    """Signed distance (mm) to the ventricle surface at 2 mm: negative inside."""
    roi = ventricle_roi(2)
    outside = np.asarray(ndimage.distance_transform_edt(~roi), np.float64)
    inside = np.asarray(ndimage.distance_transform_edt(roi), np.float64)
    return ((outside - inside) * 2.0).astype(np.float32)


@functools.lru_cache(maxsize=1)
def atrophy_field() -> F32:
    """(3, X, Y, Z) pull-back field at 2 mm for 1 mm of ventricular expansion.

    Sampling the template at ``y + e * field(y)`` moves tissue ``e`` mm away from the ventricles
    at their surface, decaying with distance (``ATROPHY_DECAY_MM``), so the ventricles grow.
    """
    phi = ventricle_distance().astype(np.float64)
    grad = np.stack([np.asarray(g, np.float64) for g in np.gradient(phi, 2.0)])  # (3, X, Y, Z)
    norm = np.sqrt((grad**2).sum(axis=0)) + 1e-6
    weight = np.exp(-np.maximum(phi, 0.0) / ATROPHY_DECAY_MM)
    return np.asarray(-weight * grad / norm, dtype=np.float32)


def _upsample_2_to_1(coarse: F32, shape: tuple[int, int, int]) -> F32:
    """Separable linear interpolation of a 2 mm map onto the 1 mm lattice (same origin)."""
    out = coarse
    for axis in range(3):
        pos = np.arange(shape[axis]) / 2.0
        i0 = np.clip(np.floor(pos).astype(np.intp), 0, out.shape[axis] - 2)
        w = (
            np.clip(pos - i0, 0.0, 1.0)
            .astype(np.float32)
            .reshape([-1 if a == axis else 1 for a in range(3)])
        )
        out = np.take(out, i0, axis=axis) * (1 - w) + np.take(out, i0 + 1, axis=axis) * w
    return out.astype(np.float32)


@functools.lru_cache(maxsize=2)
def head_distance(resolution: int) -> F32:
    """Signed distance (mm) to the brain-mask surface: positive outside (scalp, skull).

    Computed at 2 mm (and interpolated to 1 mm): it only places the skull and scalp.
    """
    maps = tissue_maps(2)
    outside = np.asarray(ndimage.distance_transform_edt(~maps.brain), np.float64)
    inside = np.asarray(ndimage.distance_transform_edt(maps.brain), np.float64)
    coarse = ((outside - inside) * maps.lattice.resolution).astype(np.float32)
    if resolution == 2:
        return coarse
    return _upsample_2_to_1(coarse, tissue_maps(resolution).lattice.shape)


@functools.lru_cache(maxsize=2)
def pial_depth(resolution: int) -> F32:
    """Depth (mm) of parenchyma below the outer CSF / brain surface (0 outside parenchyma)."""
    maps = tissue_maps(resolution)
    parenchyma = (maps.gm + maps.wm) >= 0.5
    inner = parenchyma | ndimage.binary_dilation(ventricle_roi(resolution), iterations=2)
    box = tuple(slice(max(int(a.min()) - 2, 0), int(a.max()) + 3) for a in np.nonzero(inner))
    depth = np.zeros(inner.shape, dtype=np.float32)
    depth[box] = ndimage.distance_transform_edt(inner[box]) * maps.lattice.resolution
    return np.where(parenchyma, depth, 0.0).astype(np.float32)


def _points(mask: Bool) -> F64:
    maps = tissue_maps(2)
    return maps.lattice.world(np.argwhere(mask).astype(np.float64))


@functools.lru_cache(maxsize=1)
def glioma_candidates() -> dict[tuple[bool, bool], F64]:
    """Deep supratentorial white matter, by (left hemisphere, frontal): (N, 3) MNI mm."""
    maps = tissue_maps(2)
    x, y, z = _world_grid(maps.lattice)
    deep = -head_distance(2) >= 12.0
    base = (maps.wm >= 0.75) & deep & (z > -20) & (y > -80) & (np.abs(x) >= 10)
    return {
        (left, frontal): _points(base & ((x < 0) == left) & ((y >= 0) == frontal))
        for left in (True, False)
        for frontal in (True, False)
    }


@functools.lru_cache(maxsize=1)
def ms_candidates() -> dict[str, F64]:
    """Centres for MS lesions at 2 mm: periventricular, juxtacortical, deep white matter."""
    maps = tissue_maps(2)
    _, _, z = _world_grid(maps.lattice)
    phi = ventricle_distance()
    depth = pial_depth(2)
    supra = z > -30
    return {
        "periventricular": _points((maps.wm >= 0.5) & (phi > 0) & (phi <= 8) & supra),
        "juxtacortical": _points(
            (maps.wm >= 0.4) & (maps.gm >= 0.15) & (depth <= 4) & (phi > 10) & supra
        ),
        "deep": _points((maps.wm >= 0.85) & (phi > 10) & supra),
    }
