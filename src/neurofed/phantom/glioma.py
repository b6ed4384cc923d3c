"""Gliomas: markers sampled from grade, imaging features sampled from markers, then drawn.

The ties between imaging and clinical labels are noisy on purpose, so that grade and markers
are learnable but not trivially (see :data:`P_IDH_MUTANT` and the other tables):

- grade II rarely enhances and is never necrotic; grade III enhances faintly and patchily, rarely
  necrotic; grade IV mostly has ring enhancement around necrosis and more oedema;
- IDH-mutant, non-co-deleted tumours often show the T2-FLAIR mismatch sign (core as bright as
  fluid on T2w but suppressed on FLAIR, with a thin FLAIR-bright rim);
- 1p/19q co-deletion (only with IDH mutation) brings calcification-like T2-dark foci, an
  ill-defined margin and a frontal location;
- MGMT methylation has the weakest signal: a little less oedema and a smoother texture.

Examples
--------
>>> import numpy as np
>>> from neurofed.phantom.site import Cohort
>>> clinical = sample_glioma_clinical(np.random.default_rng(1), Cohort(grade_prevalence=(0, 0, 1)))
>>> clinical.grade, clinical.codel_1p19q in (False, None) or clinical.idh
(4, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from scipy.special import expit, ndtri

from neurofed.data.subject import Clinical
from neurofed.keys import Sex
from neurofed.phantom.anatomy import Lattice, glioma_candidates
from neurofed.phantom.fields import Box, Inclusion, smooth_noise
from neurofed.phantom.physics import Relaxation, Tissue
from neurofed.phantom.site import Cohort

__all__ = [
    "P_CODEL_GIVEN_IDH",
    "P_ENHANCEMENT",
    "P_IDH_MUTANT",
    "P_MGMT_METHYLATED",
    "Enhancement",
    "GliomaParams",
    "TumourDrawing",
    "draw_glioma",
    "sample_glioma",
    "sample_glioma_clinical",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]


class Enhancement(StrEnum):
    NONE = "none"
    PATCHY = "patchy"  # faint, patchy (typical of grade III)
    RING = "ring"  # rim around a necrotic / non-enhancing centre (typical of grade IV)


#: P(IDH-mutant | WHO grade)
P_IDH_MUTANT: Mapping[int, float] = MappingProxyType({2: 0.8, 3: 0.6, 4: 0.1})
#: P(1p/19q co-deleted | IDH-mutant, grade); always False for IDH-wildtype
P_CODEL_GIVEN_IDH: Mapping[int, float] = MappingProxyType({2: 0.45, 3: 0.4, 4: 0.05})
#: P(MGMT promoter methylated | IDH-mutant?)
P_MGMT_METHYLATED: Mapping[bool, float] = MappingProxyType({True: 0.85, False: 0.4})
#: P(none, patchy, ring enhancement | grade), before the IDH-wildtype shift
P_ENHANCEMENT: Mapping[int, tuple[float, float, float]] = MappingProxyType(
    {2: (0.9, 0.1, 0.0), 3: (0.35, 0.5, 0.15), 4: (0.05, 0.15, 0.8)}
)
_AGE = MappingProxyType({2: (38.0, 11.0), 3: (46.0, 13.0), 4: (61.0, 11.0)})


@dataclass(frozen=True)
class GliomaParams:
    """Sampled appearance of one glioma (template-space centre, sizes in template mm)."""

    centre_mm: tuple[float, float, float]
    left: bool
    frontal: bool
    radius_mm: float  # tumour core
    oedema_ratio: float  # oedema envelope radius / core radius
    inner_ratio: float  # necrotic (or non-enhancing) centre radius / core radius
    necrotic: bool
    enhancement: Enhancement
    enhancing_fraction: float  # share of the enhancing zone that takes up contrast
    gd_mmol: float  # gadolinium concentration in enhancing tumour
    mismatch: bool  # T2-FLAIR mismatch sign
    calcifications: int
    margin_mm: float  # width of the core boundary (ill-defined when large)
    irregularity: float  # relative amplitude of the radius perturbation
    texture: float  # relative amplitude of signal heterogeneity
    mass_effect: float  # strength of the radial push (0..0.5)
    tumour: Relaxation  # non-enhancing tumour tissue of this case
    shape_seed: int


def sample_glioma_clinical(rng: np.random.Generator, cohort: Cohort) -> Clinical:
    """Grade from the site's mix, then IDH, 1p/19q, MGMT, age and sex conditional on it."""
    grade = int(
        rng.choice([2, 3, 4], p=np.asarray(cohort.grade_prevalence) / sum(cohort.grade_prevalence))
    )
    idh = bool(rng.random() < P_IDH_MUTANT[grade])
    codel = bool(idh and rng.random() < P_CODEL_GIVEN_IDH[grade])
    mgmt = bool(rng.random() < P_MGMT_METHYLATED[idh])
    mean, sd = _AGE[grade]
    age = float(np.clip(rng.normal(mean - (6.0 if idh else 0.0), sd), 18.0, 89.0))
    sex = Sex.MALE if rng.random() < (0.6 if grade == 4 else 0.55) else Sex.FEMALE
    return Clinical(idh=idh, codel_1p19q=codel, mgmt=mgmt, grade=grade, age=round(age, 1), sex=sex)


def sample_glioma(
    rng: np.random.Generator, clinical: Clinical, tumour: Relaxation, fluid: Relaxation
) -> GliomaParams:
    """Imaging features of a glioma given its markers (``tumour``/``fluid``: base tissues)."""
    grade, idh, codel, mgmt = clinical.grade, clinical.idh, clinical.codel_1p19q, clinical.mgmt
    assert grade is not None and idh is not None and codel is not None and mgmt is not None
    probs = np.asarray(P_ENHANCEMENT[grade])
    if not idh and grade < 4:  # IDH-wildtype lower-grade gliomas behave more like grade IV
        probs = probs + np.array([-0.15, 0.1, 0.05])
    enhancement = Enhancement(rng.choice([e.value for e in Enhancement], p=probs))
    p_necrosis = {2: 0.0, 3: 0.1, 4: 0.85 if enhancement is Enhancement.RING else 0.3}[grade]
    necrotic = bool(enhancement is not Enhancement.NONE and rng.random() < p_necrosis)
    if codel:
        p_mismatch = 0.05
    elif idh:
        p_mismatch = 0.5 if grade < 4 else 0.15
    else:
        p_mismatch = 0.0
    mismatch = bool(enhancement is not Enhancement.RING and rng.random() < p_mismatch)
    lo, hi = {2: (1.05, 1.35), 3: (1.2, 1.7), 4: (1.5, 2.3)}[grade]
    oedema = float(rng.uniform(lo, hi))
    if mismatch:
        oedema = float(rng.uniform(1.04, 1.12))  # thin FLAIR-bright rim
    oedema = 1.0 + (oedema - 1.0) * (0.85 if mgmt else 1.0) * (0.9 if idh else 1.0)
    gd = {
        Enhancement.NONE: 0.0,
        Enhancement.PATCHY: float(rng.uniform(0.08, 0.3) if grade < 4 else rng.uniform(0.2, 0.5)),
        Enhancement.RING: float(rng.uniform(0.4, 0.9)),
    }[enhancement]
    fraction = {
        Enhancement.NONE: 0.0,
        Enhancement.PATCHY: float(rng.uniform(0.15, 0.45)),
        Enhancement.RING: float(rng.uniform(0.85, 0.98)),
    }[enhancement]
    p_calc = 0.6 if codel else (0.1 if idh else 0.05)
    calcifications = int(rng.integers(1, 7)) if rng.random() < p_calc else 0
    p_frontal = 0.75 if codel else (0.5 if idh else 0.35)
    frontal = bool(rng.random() < p_frontal)
    left = bool(rng.random() < 0.5)
    points = glioma_candidates()[(left, frontal)]
    centre = points[int(rng.integers(len(points)))] + rng.uniform(-1.0, 1.0, 3)
    if mismatch:
        case_tumour = fluid.scaled(
            t1=float(rng.uniform(0.62, 0.75)), t2=float(rng.uniform(0.18, 0.26)), pd=0.95
        )
    else:
        case_tumour = tumour.scaled(
            t1=float(np.exp(rng.normal(0.0, 0.08))),
            t2=float(np.exp(rng.normal(0.1 if grade == 2 else 0.0, 0.1))),
        )
    return GliomaParams(
        centre_mm=(float(centre[0]), float(centre[1]), float(centre[2])),
        left=left,
        frontal=frontal,
        radius_mm=float(rng.uniform(10.0, 22.0) if grade == 4 else rng.uniform(12.0, 24.0)),
        oedema_ratio=oedema,
        inner_ratio=float(rng.uniform(0.4, 0.75)),
        necrotic=necrotic,
        enhancement=enhancement,
        enhancing_fraction=fraction,
        gd_mmol=gd,
        mismatch=mismatch,
        calcifications=calcifications,
        margin_mm=float(rng.uniform(2.5, 4.5) if codel else rng.uniform(0.7, 1.8)),
        irregularity=float(rng.uniform(0.08, 0.25) if grade == 4 else rng.uniform(0.05, 0.18)),
        texture=float(rng.uniform(0.05, 0.10) if mgmt else rng.uniform(0.07, 0.12)),
        mass_effect=float(rng.uniform(*{2: (0.0, 0.2), 3: (0.05, 0.3), 4: (0.15, 0.45)}[grade])),
        tumour=case_tumour,
        shape_seed=int(rng.integers(2**31)),
    )


@dataclass(frozen=True)
class TumourDrawing:
    """The rendered tumour: its tissues and its BraTS 2021 labels inside ``box``."""

    box: Box
    inclusions: tuple[Inclusion, ...]
    labels: U8  # (X, Y, Z) of the box, values {0, 1, 2, 4}


def draw_glioma(
    params: GliomaParams,
    centre: F64,
    scale: float,
    lattice: Lattice,
    gm: F32,
    wm: F32,
    tissues: Mapping[Tissue, Relaxation],
) -> TumourDrawing:
    """Draw the tumour around subject point ``centre``; GM and WM lose what it replaces.

    ``gm`` and ``wm`` (subject lattice) are modified in place inside the tumour's box.
    """
    core_r = params.radius_mm * scale
    oedema_r = core_r * params.oedema_ratio
    reach = oedema_r * (1.0 + 2.0 * params.irregularity) * 1.25 + 3.0 * params.margin_mm
    box = Box.around(lattice, centre, reach + 2.0 * lattice.resolution)
    rng = np.random.default_rng(params.shape_seed)
    shape_noise = smooth_noise(rng, box, (core_r, 3.0 * core_r))
    oedema_noise = smooth_noise(rng, box, (oedema_r, 3.0 * oedema_r))
    patch_noise = smooth_noise(rng, box, (5.0, 12.0))
    texture = smooth_noise(rng, box, (4.0, 16.0), waves=32)
    r = box.radius()
    gm_b, wm_b = gm[box.slices], wm[box.slices]
    parenchyma = gm_b + wm_b
    white = wm_b / np.maximum(parenchyma, 1e-3)

    level = r / (core_r * np.maximum(1.0 + params.irregularity * shape_noise, 0.3))
    core = expit((1.0 - level) * core_r / params.margin_mm).astype(np.float32)
    spread = np.maximum(1.0 + params.irregularity * oedema_noise, 0.3) * (0.85 + 0.3 * white)
    oedema_level = r / (oedema_r * spread)
    envelope = np.maximum(expit((1.0 - oedema_level) * oedema_r / (1.5 * params.margin_mm)), core)
    use_inner = params.necrotic or params.enhancement is Enhancement.RING
    inner = np.zeros_like(core)
    if use_inner:
        inner = np.minimum(expit((params.inner_ratio - level) * core_r / 0.8), core)
    zone = core - inner if use_inner else core  # where enhancement can occur
    if params.enhancement is Enhancement.NONE:
        uptake = np.zeros_like(core)
    else:
        threshold = float(ndtri(1.0 - params.enhancing_fraction))
        uptake = np.clip((patch_noise - threshold) * 3.0, 0.0, 1.0)
    f_enh = (zone * uptake * parenchyma).astype(np.float32)
    f_nec = (inner * parenchyma).astype(np.float32) if params.necrotic else np.zeros_like(core)
    f_tum = np.maximum(core * parenchyma - f_enh - f_nec, 0.0).astype(np.float32)
    f_oed = ((envelope - core) * parenchyma).astype(np.float32)
    f_calc = np.zeros_like(core)
    for _ in range(params.calcifications):
        direction = rng.standard_normal(3)
        offset = direction / np.linalg.norm(direction) * rng.uniform(0.0, 0.55) * core_r
        radius = rng.uniform(1.0, 2.5)
        d2 = (
            ((box.dx - offset[0]) ** 2)[:, None, None]
            + ((box.dy - offset[1]) ** 2)[None, :, None]
            + ((box.dz - offset[2]) ** 2)[None, None, :]
        )
        f_calc = np.maximum(f_calc, expit((radius - np.sqrt(d2)) / 0.5).astype(np.float32))
    f_calc = np.minimum(f_calc * f_tum, f_tum)
    f_tum = f_tum - f_calc
    gm_b *= 1.0 - envelope
    wm_b *= 1.0 - envelope

    labels = np.zeros(box.shape, dtype=np.uint8)
    labels[envelope * parenchyma >= 0.5] = 2
    core_frac = core * parenchyma
    tumour_core = core_frac >= 0.5
    labels[tumour_core] = 1
    labels[tumour_core & (f_enh >= 0.5 * core_frac)] = 4
    tex = (1.0 + params.texture * texture).astype(np.float32)
    inclusions = (
        Inclusion(box, f_tum, params.tumour, texture=tex),
        Inclusion(box, f_enh, tissues[Tissue.ENHANCING], gd_mmol=params.gd_mmol, texture=tex),
        Inclusion(box, f_nec, tissues[Tissue.NECROSIS]),
        Inclusion(box, f_oed, tissues[Tissue.OEDEMA], texture=(1.0 + 0.5 * (tex - 1.0))),
        Inclusion(box, f_calc, tissues[Tissue.CALCIFICATION]),
    )
    return TumourDrawing(box, inclusions, labels)
