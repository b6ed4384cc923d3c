"""Per-site parameters: the scanner (contrast, bias, noise, slices, scale, FOV, orientation) and
the cohort (grade mix, age distribution, MS lesion load), sampled from the federation seed.

Sites differ on purpose (non-IID): this is what makes federated vs local-only comparisons mean
something. Everything sampled is recorded in ``phantom.json``.

Examples
--------
>>> from neurofed.phantom.config import PhantomConfig
>>> config = PhantomConfig(preset="ms", sites=2, cases=4, seed=3, spacing=4.0, broken_per_site=1)
>>> a, b = sample_site(config, 1), sample_site(config, 2)
>>> a.acquisition == b.acquisition, sample_site(config, 1) == a
(False, True)
>>> len(a.broken), a.labelled
(1, True)
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

import numpy as np

from neurofed.keys import ClinicalField, Modality, ProblemKind
from neurofed.phantom.config import PhantomConfig, PhantomPreset
from neurofed.phantom.physics import Sequence, Tissue, flair_null_ti, relaxation_at

__all__ = [
    "BROKEN_KINDS",
    "QC_PROBLEMS",
    "Acquisition",
    "Annotation",
    "Cohort",
    "Orientation",
    "QCProblem",
    "SiteParams",
    "bias_terms",
    "broken_schedule",
    "qc_schedule",
    "sample_site",
    "site_rng",
]

#: The order in which broken cases cycle through problem kinds (across the whole federation).
BROKEN_KINDS: tuple[ProblemKind, ...] = (
    ProblemKind.UNREADABLE,  # truncated gzip
    ProblemKind.NOT_NIFTI,  # text gzipped under a .nii.gz name
    ProblemKind.EMPTY_FILE,
    ProblemKind.WRONG_DIMENSIONS,  # 4-D image
    ProblemKind.NON_FINITE,  # NaN voxels
    ProblemKind.ALL_ZERO,
    ProblemKind.GRID_MISMATCH,  # one modality on another grid
    ProblemKind.LABEL_VALUES,  # 3 in a BraTS 2021 map, 2 in a binary mask
    ProblemKind.MISSING_MODALITY,
    ProblemKind.LABEL_GRID,  # label map on another grid
    ProblemKind.CLINICAL_RANGE,  # grade V, age -3
)
_LABEL_KINDS = (ProblemKind.LABEL_VALUES, ProblemKind.LABEL_GRID)


class QCProblem(StrEnum):
    """Quality problems planted in readable cases, for ``neurofed site qc`` to find."""

    LOW_SNR = "low-snr"  # heavy Rician noise in every modality
    MISREGISTERED = "misregistered"  # the last modality rotated 8° and shifted 9 mm
    CROPPED_FOV = "cropped-fov"  # the top 30 % of the slices removed
    THICK_SLICES = "thick-slices"  # slabs at least 8x the grid spacing thick


#: The order in which QC problems cycle (across the whole federation).
QC_PROBLEMS: tuple[QCProblem, ...] = tuple(QCProblem)


class Orientation(StrEnum):
    """Storage orientation of written arrays (where the first two axes point)."""

    RAS = "RAS"
    LAS = "LAS"  # x flipped, as many radiology exports
    LPS = "LPS"  # x and y flipped (DICOM patient axes)


@dataclass(frozen=True)
class Acquisition:
    """A site's scanner and protocol (times in ms, lengths in mm)."""

    field_t: float
    sequences: Mapping[Modality, Sequence]
    bias_coefficients: tuple[float, ...]  # log-bias polynomial, see :func:`bias_terms`
    bias_amplitude: float  # peak-to-peak of the bias over the head, as a fraction
    bias_gain: Mapping[Modality, float]  # per-sequence strength of the same coil profile
    noise_fraction: float  # Rician sigma as a fraction of the WM signal
    slice_thickness_mm: float  # axial
    intensity_scale: Mapping[Modality, float]  # arbitrary scanner units
    fov_cut_top_mm: float
    fov_cut_bottom_mm: float
    orientation: Orientation


@dataclass(frozen=True)
class Cohort:
    """Who a site scans. Glioma sites use ``grade_prevalence``; BIDS sites the rest."""

    grade_prevalence: tuple[float, float, float] = (0.0, 0.0, 0.0)  # P(II), P(III), P(IV)
    age_range: tuple[float, float] = (20.0, 90.0)
    age_shape: tuple[float, float] = (1.0, 1.0)  # Beta(a, b) stretched over age_range
    lesion_fraction: float = 0.0  # subjects with MS lesions
    lesion_mean: float = 0.0  # mean lesion count of those


@dataclass(frozen=True)
class Annotation:
    """How a site's annotators draw masks, the same way for every case of the site.

    ``boundary_mm`` moves the outer border of every mask (the whole tumour, or each MS lesion)
    outwards (> 0, looser) or inwards (< 0, tighter); a shift smaller than the voxel size
    changes nothing. ``missed_below_mm3`` leaves out MS lesions smaller than that volume.

    Ranges: between BraTS raters the whole-tumour Dice is about 0.85 (Menze et al., IEEE TMI
    2015), which a border moved by 1–2 mm on a 50 mL tumour reproduces; MS raters agree less
    (Dice about 0.63–0.73 between the ISBI 2015 raters, Carass et al., NeuroImage 2017), and
    most disagreements are small lesions, under about 20 mm³, that one rater did not mark.
    """

    boundary_mm: float = 0.0
    missed_below_mm3: float = 0.0


@dataclass(frozen=True)
class SiteParams:
    """Everything sampled for one site (``site`` is 1-based as in ``site-<k>``)."""

    site: int
    preset: PhantomPreset
    acquisition: Acquisition
    cohort: Cohort
    labelled: bool
    missing: tuple[ClinicalField, ...]
    broken: Mapping[int, ProblemKind]  # case number -> what is broken
    qc_problems: Mapping[int, QCProblem] = field(default_factory=lambda: MappingProxyType({}))
    annotation: Annotation = Annotation()
    cases: int = 0  # how many cases the site has (0: written before sizes were recorded)
    missing_modalities: tuple[Modality, ...] = ()  # never acquired at this site

    @property
    def name(self) -> str:
        return f"site-{self.site}"


def site_rng(seed: int, site: int) -> tuple[np.random.Generator, ...]:
    """Independent generators for acquisition, cohort, broken-case, QC-problem and annotation
    choice of one site (the first ones are those of earlier versions: a child depends only on
    its index)."""
    children = np.random.SeedSequence([seed, site]).spawn(5)
    return tuple(np.random.Generator(np.random.PCG64(c)) for c in children)


def bias_terms(u: np.ndarray, v: np.ndarray, w: np.ndarray) -> list[np.ndarray]:
    """The nine log-bias monomials of normalised coordinates (x, y, z, x², …, yz)."""
    return [u, v, w, u * u, v * v, w * w, u * v, u * w, v * w]


def _bias(rng: np.random.Generator) -> tuple[tuple[float, ...], float]:
    amplitude = float(rng.uniform(0.05, 0.30))
    coef = rng.standard_normal(9) * np.array([1, 1, 1, 0.6, 0.6, 0.6, 0.5, 0.5, 0.5])
    g = np.linspace(-0.9, 0.9, 9)
    u, v, w = np.meshgrid(g, g, g, indexing="ij")
    inside = u**2 + v**2 + w**2 <= 1.0
    log_bias = sum(c * t[inside] for c, t in zip(coef, bias_terms(u, v, w), strict=True))
    span = float(np.ptp(log_bias))
    coef = coef * np.log1p(amplitude) / max(span, 1e-9)
    return tuple(float(c) for c in coef), amplitude


def _sequences(
    rng: np.random.Generator, field_t: float, modalities: tuple[Modality, ...]
) -> dict[Modality, Sequence]:
    t1 = Sequence(tr=float(rng.uniform(400, 650)), te=float(rng.uniform(8, 15)))
    t2 = Sequence(tr=float(rng.uniform(3000, 6000)), te=float(rng.uniform(80, 120)))
    flair_tr = float(rng.uniform(8000, 11000))
    null = flair_null_ti(relaxation_at(Tissue.CSF, field_t).t1, flair_tr)
    flair = Sequence(
        tr=flair_tr, te=float(rng.uniform(100, 140)), ti=null * float(rng.uniform(0.93, 1.07))
    )
    table = {
        Modality.T1: t1,
        Modality.T1CE: Sequence(t1.tr, t1.te, contrast=True),
        Modality.T2: t2,
        Modality.FLAIR: flair,
    }
    return {m: table[m] for m in modalities}


def _acquisition(
    rng: np.random.Generator, preset: PhantomPreset, modalities: tuple[Modality, ...]
) -> Acquisition:
    field_t = 3.0 if rng.random() < 0.6 else 1.5
    sequences = _sequences(rng, field_t, modalities)
    coefficients, amplitude = _bias(rng)
    gain = {m: float(rng.uniform(0.7, 1.3)) for m in modalities}
    noise = float(rng.uniform(0.01, 0.06))
    if rng.random() < 0.35:
        thickness = float(rng.uniform(1.0, 1.5))  # 3-D acquisition
    else:
        thickness = float(np.round(rng.uniform(2.0, 6.0) * 2) / 2)
    base = 10 ** float(rng.uniform(2.8, 4.0))
    scale = {m: base * float(rng.uniform(0.6, 1.6)) for m in modalities}
    cut = rng.random() < 0.5
    top = float(rng.uniform(0.0, 15.0)) if cut else 0.0
    bottom = float(rng.uniform(0.0, 25.0)) if cut else 0.0
    if preset.is_bids:
        orientation = Orientation(rng.choice([o.value for o in Orientation], p=[0.5, 0.3, 0.2]))
    else:
        orientation = Orientation.RAS
    return Acquisition(
        field_t=field_t,
        sequences=MappingProxyType(sequences),
        bias_coefficients=coefficients,
        bias_amplitude=amplitude,
        bias_gain=MappingProxyType(gain),
        noise_fraction=noise,
        slice_thickness_mm=thickness,
        intensity_scale=MappingProxyType(scale),
        fov_cut_top_mm=top,
        fov_cut_bottom_mm=bottom,
        orientation=orientation,
    )


def _cohort(rng: np.random.Generator, preset: PhantomPreset) -> Cohort:
    if preset is PhantomPreset.GLIOMA:
        high = 0.08 + 0.84 * float(rng.beta(0.6, 0.6))  # bimodal: mostly-IV or mostly-lower
        low_split = float(rng.beta(2.0, 2.0))
        prevalence = ((1 - high) * low_split, (1 - high) * (1 - low_split), high)
        return Cohort(grade_prevalence=prevalence)
    if preset is PhantomPreset.MS:
        lo, hi = 18.0, 70.0
        mean = (float(rng.uniform(30.0, 50.0)) - lo) / (hi - lo)
        kappa = float(rng.uniform(6.0, 12.0))
        return Cohort(
            age_range=(lo, hi),
            age_shape=(mean * kappa, (1 - mean) * kappa),
            lesion_fraction=float(rng.uniform(0.85, 1.0)),
            lesion_mean=float(rng.uniform(4.0, 25.0)),
        )
    return Cohort(
        age_range=(20.0, 90.0),
        age_shape=(float(rng.uniform(0.8, 3.5)), float(rng.uniform(0.8, 3.5))),
        lesion_fraction=float(rng.uniform(0.0, 0.35)),
        lesion_mean=float(rng.uniform(2.0, 12.0)),
    )


def broken_schedule(config: PhantomConfig) -> dict[int, list[ProblemKind]]:
    """Problem kinds of every site's broken cases: one cycle through :data:`BROKEN_KINDS` over
    the whole federation; a label kind that falls on an unlabelled site waits for the next
    labelled one, so every kind appears once there are enough broken cases."""
    schedule: dict[int, list[ProblemKind]] = {}
    pending: list[ProblemKind] = []
    position = 0
    for site in range(1, config.sites + 1):
        labelled = site not in config.unlabelled_sites
        kinds: list[ProblemKind] = []
        while len(kinds) < config.broken_per_site:
            if labelled and pending:
                kinds.append(pending.pop(0))
                continue
            kind = BROKEN_KINDS[position % len(BROKEN_KINDS)]
            position += 1
            if labelled or kind not in _LABEL_KINDS:
                kinds.append(kind)
            else:
                pending.append(kind)
        schedule[site] = kinds
    return schedule


def _broken(config: PhantomConfig, site: int, rng: np.random.Generator) -> dict[int, ProblemKind]:
    count = config.broken_per_site
    if count == 0:
        return {}
    pool = np.arange(1, config.cases_at(site) + 1)
    cases = sorted(int(c) for c in rng.choice(pool, count, False))
    return dict(zip(cases, broken_schedule(config)[site], strict=True))


def qc_schedule(config: PhantomConfig) -> dict[int, list[QCProblem]]:
    """QC problems of every site: one cycle through :data:`QC_PROBLEMS` over the federation."""
    count = config.qc_problems_per_site
    return {
        site: [QC_PROBLEMS[((site - 1) * count + k) % len(QC_PROBLEMS)] for k in range(count)]
        for site in range(1, config.sites + 1)
    }


def _qc_problems(
    config: PhantomConfig, site: int, rng: np.random.Generator, broken: Mapping[int, ProblemKind]
) -> dict[int, QCProblem]:
    count = config.qc_problems_per_site
    if count == 0:
        return {}
    readable = np.array([c for c in range(1, config.cases_at(site) + 1) if c not in broken])
    cases = sorted(int(c) for c in rng.choice(readable, count, False))
    return dict(zip(cases, qc_schedule(config)[site], strict=True))


def _annotation(rng: np.random.Generator, preset: PhantomPreset) -> Annotation:
    if preset is PhantomPreset.GLIOMA:
        return Annotation(boundary_mm=round(float(rng.uniform(-2.0, 2.0)), 2))
    return Annotation(
        boundary_mm=round(float(rng.uniform(-1.0, 1.0)), 2),
        missed_below_mm3=round(float(rng.uniform(0.0, 20.0)), 1),
    )


def sample_site(config: PhantomConfig, site: int) -> SiteParams:
    """Sample site ``site`` (1-based) of ``config``; independent of the other sites."""
    acquisition_rng, cohort_rng, broken_rng, qc_rng, annotation_rng = site_rng(config.seed, site)
    labelled = site not in config.unlabelled_sites
    broken = _broken(config, site, broken_rng)
    return SiteParams(
        site=site,
        preset=config.preset,
        acquisition=_acquisition(acquisition_rng, config.preset, config.modalities),
        cohort=_cohort(cohort_rng, config.preset),
        labelled=labelled,
        missing=tuple(config.missing_markers.get(site, ())),
        broken=MappingProxyType(broken),
        qc_problems=MappingProxyType(_qc_problems(config, site, qc_rng, broken)),
        cases=config.cases_at(site),
        missing_modalities=tuple(config.missing_modalities.get(site, ())),
        annotation=(
            _annotation(annotation_rng, config.preset)
            if config.annotation_styles and labelled
            else Annotation()
        ),
    )
