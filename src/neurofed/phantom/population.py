"""MS lesions, ageing and SDMT for the ``ms`` and ``brain-age`` presets.

- Lesions are ovoids in white matter: periventricular ones with their long axis along the
  ventricle-surface normal (Dawson's fingers), juxtacortical and deep ones in random directions.
  They are FLAIR/T2-bright and T1-dark (darker with ``severity``: "black holes").
- Age drives atrophy: ventricular expansion and cortical thinning, each with per-subject noise;
  lesion load adds a little of both.
- SDMT falls with age and lesion load, plus noise, clipped to 0..110.

Examples
--------
>>> sdmt_score(20.0, 0.0, noise=0.0), sdmt_score(80.0, 10.0, noise=0.0)
(65.0, 27.0)
>>> round(lesion_volume_ml((MSLesion(LesionSite.DEEP, (0, 0, 0), (1, 0, 0), (5.0, 2.0), 0.0),)), 3)
0.084
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.phantom.anatomy import Lattice, ms_candidates, tissue_maps, ventricle_distance
from neurofed.phantom.deformation import Deformation
from neurofed.phantom.fields import Box, Inclusion
from neurofed.phantom.physics import Relaxation, Tissue

__all__ = [
    "Ageing",
    "LesionSite",
    "MSLesion",
    "draw_lesions",
    "lesion_volume_ml",
    "sample_ageing",
    "sample_lesions",
    "sdmt_score",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]

MAX_LESIONS = 40


class LesionSite(StrEnum):
    PERIVENTRICULAR = "periventricular"
    JUXTACORTICAL = "juxtacortical"
    DEEP = "deep"


_SITE_P = {LesionSite.PERIVENTRICULAR: 0.55, LesionSite.JUXTACORTICAL: 0.25, LesionSite.DEEP: 0.2}


@dataclass(frozen=True)
class MSLesion:
    """One ovoid lesion in template space (mm); ``axis`` is the unit long axis."""

    site: LesionSite
    centre_mm: tuple[float, float, float]
    axis: tuple[float, float, float]
    semi_axes_mm: tuple[float, float]  # long, short
    severity: float  # 0..1: T1 hypointensity ("black hole")


@dataclass(frozen=True)
class Ageing:
    """Age-driven atrophy of one subject (mm)."""

    ventricle_expansion_mm: float
    cortical_thinning_mm: float


def _unit(v: F64) -> tuple[float, float, float]:
    v = v / max(float(np.linalg.norm(v)), 1e-9)
    return float(v[0]), float(v[1]), float(v[2])


def _ventricle_normal(point: F64) -> F64:
    """Outward normal of the ventricle distance field at a template point (mm)."""
    lattice = tissue_maps(2).lattice
    phi = ventricle_distance()
    offsets = np.eye(3) * 2.0
    idx = lattice.index(np.concatenate([point + offsets, point - offsets])).T
    values = ndimage.map_coordinates(phi, idx, order=1, mode="nearest")
    return np.asarray(values[:3] - values[3:], dtype=np.float64)


def sample_lesions(rng: np.random.Generator, count: int) -> tuple[MSLesion, ...]:
    """``count`` lesions (at most 40) placed on the 2 mm template's candidate centres."""
    candidates = ms_candidates()
    sites = list(_SITE_P)
    lesions = []
    for _ in range(min(count, MAX_LESIONS)):
        site = sites[int(rng.choice(len(sites), p=list(_SITE_P.values())))]
        points = candidates[site.value]
        centre = points[int(rng.integers(len(points)))] + rng.uniform(-1.0, 1.0, 3)
        if site is LesionSite.PERIVENTRICULAR:
            axis = _ventricle_normal(centre) + 0.25 * rng.standard_normal(3)
            long = float(rng.uniform(3.5, 10.0))
        else:
            axis = rng.standard_normal(3)
            long = float(rng.uniform(2.5, 7.0))
        lesions.append(
            MSLesion(
                site=site,
                centre_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
                axis=_unit(axis),
                semi_axes_mm=(long, long * float(rng.uniform(0.35, 0.7))),
                severity=float(rng.beta(1.5, 3.0)),
            )
        )
    return tuple(lesions)


def lesion_volume_ml(lesions: tuple[MSLesion, ...]) -> float:
    """Nominal (template-space) lesion load: sum of ellipsoid volumes in mL."""
    volumes = (4.0 / 3.0 * math.pi * a * b * b for a, b in (x.semi_axes_mm for x in lesions))
    return sum(volumes) / 1e3


def sample_ageing(rng: np.random.Generator, age: float, load_ml: float) -> Ageing:
    """Ventricles grow ~0.045 mm/year after 20 and the cortex thins ~0.012 mm/year, with noise."""
    years = max(age - 20.0, 0.0)
    expansion = 0.045 * years + 0.25 * math.log1p(load_ml) + rng.normal(0.0, 0.4)
    thinning = 0.012 * years + 0.05 * math.log1p(load_ml) + rng.normal(0.0, 0.1)
    return Ageing(float(np.clip(expansion, 0.0, 5.5)), float(np.clip(thinning, 0.0, 1.2)))


def sdmt_score(age: float, load_ml: float, noise: float) -> float:
    """SDMT = 65 - 0.4 (age - 20) - 6 ln(1 + load) + noise, rounded, clipped to 0..110."""
    raw = 65.0 - 0.4 * (age - 20.0) - 6.0 * math.log1p(load_ml) + noise
    return float(np.clip(round(raw), 0.0, 110.0))


def draw_lesions(
    lesions: tuple[MSLesion, ...],
    deformation: Deformation,
    lattice: Lattice,
    gm: F32,
    wm: F32,
    tissues: Mapping[Tissue, Relaxation],
) -> tuple[tuple[Inclusion, ...], F32]:
    """Draw lesions in subject space; returns inclusions and the (X, Y, Z) lesion fraction.

    ``gm`` and ``wm`` are modified in place: a lesion replaces the parenchyma it covers.
    """
    total = np.zeros(lattice.shape, dtype=np.float32)
    inclusions = []
    if not lesions:
        return (), total
    centres = deformation.forward(np.array([lesion.centre_mm for lesion in lesions]))
    base = tissues[Tissue.MS_LESION]
    for lesion, centre in zip(lesions, centres, strict=True):
        long, short = (s * deformation.params.scale for s in lesion.semi_axes_mm)
        box = Box.around(lattice, centre, long + 2.0 * max(lattice.spacing))
        if box.empty:
            continue
        t = box.along(deformation.direction(np.asarray(lesion.axis)))
        r2 = box.radius() ** 2
        q = np.sqrt(t**2 / long**2 + np.maximum(r2 - t**2, 0.0) / short**2)
        shape = np.clip(0.5 + (1.0 - q) * short / lattice.resolution, 0.0, 1.0)
        gm_b, wm_b = gm[box.slices], wm[box.slices]
        fraction = (shape * (gm_b + wm_b)).astype(np.float32)
        gm_b *= 1.0 - shape
        wm_b *= 1.0 - shape
        total[box.slices] += fraction
        s = lesion.severity
        relax = base.scaled(t1=1.0 + 0.6 * s, t2=1.0 + 0.25 * s, pd=1.0 + 0.05 * s)
        inclusions.append(Inclusion(box, fraction, relax))
    return tuple(inclusions), total
