"""Per-case parameters: who the subject is, their anatomy, pathology and scan gain.

Each case draws from its own generator, ``SeedSequence([seed, site, case])`` (site and case
1-based), so a case never depends on which other cases are generated, in which order, or by how
many workers.

Examples
--------
>>> from neurofed.phantom.config import PhantomConfig
>>> from neurofed.phantom.site import sample_site
>>> config = PhantomConfig(preset="brain-age", sites=1, cases=2, seed=0, spacing=4.0)
>>> site = sample_site(config, 1)
>>> case = sample_case(config, site, 2)
>>> case.subject_id, sample_case(config, site, 2) == case
('sub-s1c002', True)
>>> 20.0 <= case.clinical.age <= 90.0
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

import numpy as np

from neurofed.data.subject import Clinical
from neurofed.keys import Modality, ProblemKind, Sex
from neurofed.phantom.config import PhantomConfig, PhantomPreset
from neurofed.phantom.deformation import SpatialParams, sample_spatial
from neurofed.phantom.glioma import GliomaParams, sample_glioma, sample_glioma_clinical
from neurofed.phantom.physics import Relaxation, Tissue, relaxation_at
from neurofed.phantom.population import (
    Ageing,
    MSLesion,
    lesion_volume_ml,
    sample_ageing,
    sample_lesions,
    sdmt_score,
)
from neurofed.phantom.site import QCProblem, SiteParams

__all__ = ["CaseParams", "HeadParams", "case_rng", "sample_case", "subject_id"]


@dataclass(frozen=True)
class HeadParams:
    """Layers outside the brain mask (template mm from its surface)."""

    csf_mm: float  # extra-axial CSF and meninges
    skull_mm: float
    scalp_mm: float


@dataclass(frozen=True)
class CaseParams:
    """Everything sampled for one case; :func:`~neurofed.phantom.render.render_case` is a
    deterministic function of it and its :class:`~neurofed.phantom.site.SiteParams`."""

    subject_id: str
    site: int
    case: int
    clinical: Clinical  # ground truth (what is written may be masked or broken)
    spatial: SpatialParams
    tissues: Mapping[Tissue, Relaxation]  # this subject's relaxation at the site's field
    gain: Mapping[Modality, float]  # per-scan receiver gain
    noise_seed: int
    glioma: GliomaParams | None = None
    lesions: tuple[MSLesion, ...] = ()
    ageing: Ageing | None = None
    head: HeadParams | None = None
    broken: ProblemKind | None = None
    qc_problem: QCProblem | None = None


def subject_id(preset: PhantomPreset, site: int, case: int) -> str:
    """``BraTS2021_<site*1000+case:05d>`` for glioma, ``sub-s<site>c<case:03d>`` for BIDS.

    >>> subject_id(PhantomPreset.GLIOMA, 3, 7), subject_id(PhantomPreset.GLIOMA, 100, 1)
    ('BraTS2021_03007', 'BraTS2021_100001')
    """
    if preset is PhantomPreset.GLIOMA:
        return f"BraTS2021_{site * 1000 + case:05d}"
    return f"sub-s{site}c{case:03d}"


def case_rng(seed: int, site: int, case: int) -> np.random.Generator:
    """The generator of one case (``site`` and ``case`` are 1-based)."""
    return np.random.Generator(np.random.PCG64(np.random.SeedSequence([seed, site, case])))


def _tissues(
    rng: np.random.Generator, field_t: float, age: float | None
) -> dict[Tissue, Relaxation]:
    out = {}
    for tissue in Tissue:
        spread = 0.03 if tissue in (Tissue.WM, Tissue.GM, Tissue.CSF) else 0.06
        factors = np.exp(rng.normal(0.0, [spread, spread, spread / 2]))
        out[tissue] = relaxation_at(tissue, field_t).scaled(*(float(f) for f in factors))
    if age is not None:  # white and grey matter T1/T2 lengthen slowly with age
        ageing = 1.0 + 0.0008 * (age - 40.0)
        for tissue in (Tissue.WM, Tissue.GM):
            out[tissue] = out[tissue].scaled(t1=ageing, t2=ageing)
    return out


def _population(
    rng: np.random.Generator, site: SiteParams
) -> tuple[Clinical, tuple[MSLesion, ...], Ageing]:
    cohort = site.cohort
    a, b = cohort.age_shape
    lo, hi = cohort.age_range
    age = round(lo + (hi - lo) * float(rng.beta(a, b)), 1)
    sex = (
        Sex.FEMALE if rng.random() < (0.7 if site.preset is PhantomPreset.MS else 0.5) else Sex.MALE
    )
    has_lesions = rng.random() < cohort.lesion_fraction
    mean = max(cohort.lesion_mean, 0.1)
    count = int(rng.poisson(rng.gamma(2.0, mean / 2.0))) if has_lesions else 0
    lesions = sample_lesions(rng, count)
    load = lesion_volume_ml(lesions)
    ageing = sample_ageing(rng, age, load)
    sdmt = sdmt_score(age, load, float(rng.normal(0.0, 5.5)))
    clinical = Clinical(age=age, sex=sex, sdmt=sdmt)
    return clinical, lesions, ageing


def sample_case(config: PhantomConfig, site: SiteParams, case: int) -> CaseParams:
    """Sample case ``case`` (1-based) of ``site``."""
    rng = case_rng(config.seed, site.site, case)
    field_t = site.acquisition.field_t
    glioma: GliomaParams | None = None
    lesions: tuple[MSLesion, ...] = ()
    ageing: Ageing | None = None
    head: HeadParams | None = None
    if site.preset is PhantomPreset.GLIOMA:
        clinical = sample_glioma_clinical(rng, site.cohort)
        tissues = _tissues(rng, field_t, None)
        glioma = sample_glioma(rng, clinical, tissues[Tissue.TUMOUR], tissues[Tissue.CSF])
        spatial = sample_spatial(rng)
    else:
        clinical, lesions, ageing = _population(rng, site)
        tissues = _tissues(rng, field_t, clinical.age)
        spatial = sample_spatial(rng, ventricle_expansion_mm=ageing.ventricle_expansion_mm)
        csf = float(rng.uniform(1.0, 2.5))
        skull = float(rng.uniform(4.0, 7.5))
        head = HeadParams(csf, skull, float(rng.uniform(3.0, 6.5)))
    gain = {m: float(rng.uniform(0.9, 1.1)) for m in config.modalities}
    return CaseParams(
        subject_id=subject_id(config.preset, site.site, case),
        site=site.site,
        case=case,
        clinical=clinical,
        spatial=spatial,
        tissues=MappingProxyType(tissues),
        gain=MappingProxyType(gain),
        noise_seed=int(rng.integers(2**31)),
        glioma=glioma,
        lesions=lesions,
        ageing=ageing,
        head=head,
        broken=site.broken.get(case),
        qc_problem=site.qc_problems.get(case),
    )
