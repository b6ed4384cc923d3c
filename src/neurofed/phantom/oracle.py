"""The oracle: the best marker AUC any image model can reach on the glioma phantom.

The phantom draws each case's markers first and its tumour's appearance from them
(:mod:`neurofed.phantom.glioma`). An image model can at best recover that appearance, so a
classifier fitted on the appearance itself — the *latents* — bounds every image model from above.
This module draws many cases with the phantom's own sampling (:func:`~neurofed.phantom.sample_site`
and :func:`~neurofed.phantom.sample_case`, which never render) and fits two classifiers per marker
on one set of sites, scoring them on cases of other sites:

- logistic regression on standardised latents (categories one-hot), and
- gradient boosting (scikit-learn's histogram boosting), flexible enough for the tables' step
  functions and interactions;

the better of the two on the held-out draws is the ceiling, with a bootstrap interval.

What counts as a latent (:data:`LATENTS`): only what the renderer turns into voxels — the
tumour's enhancement, necrosis, T2-FLAIR mismatch, calcification foci, location, size, oedema
extent, margin, irregularity, texture, mass effect and the relaxation of its non-enhancing tissue
(relative to the subject's white matter, the contrast an image shows). Not the markers, and not
age or sex: the glioma preset renders neither (its tissues do not age), so an image carries no
trace of them even though they correlate with grade and IDH. Left out too, as they carry no
marker signal: the random seed of the tumour's shape, the subject's anatomy and the scanner.

Targets (:data:`ORACLE_TARGETS`) are those of ``glioma-multitask``: IDH-mutant, 1p/19q
co-deleted, MGMT methylated, and grade as WHO IV against II–III (the task's one-vs-rest
``grade/IV/auc``).

Examples
--------
>>> train, test = population_draws(seed=0, draws=400)
>>> train.latents.shape, len(test), sorted(set(train.sites.tolist()) & set(test.sites.tolist()))
((400, 22), 400, [])
>>> result = marker_ceiling(train, test, Marker.IDH, seed=0, resamples=100)
>>> 0.5 < result.auc <= 1.0, result.estimate.ci[0] <= result.auc <= result.estimate.ci[1]
(True, True)
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType

import numpy as np
import numpy.typing as npt
from scipy.stats import rankdata
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from neurofed.data.subject import Clinical
from neurofed.keys import Marker
from neurofed.phantom.case import CaseParams, sample_case
from neurofed.phantom.config import MAX_CASES, MAX_SITES, PhantomConfig, PhantomPreset
from neurofed.phantom.glioma import Enhancement
from neurofed.phantom.physics import Tissue
from neurofed.phantom.site import sample_site

__all__ = [
    "LATENTS",
    "ORACLE_TARGETS",
    "POPULATION_SITES",
    "AucEstimate",
    "LatentDraws",
    "OracleModel",
    "OracleResult",
    "auc_with_ci",
    "case_latents",
    "draw_latents",
    "fit_scores",
    "marker_ceiling",
    "marker_targets",
    "oracle_table",
    "population_draws",
]

F64 = npt.NDArray[np.float64]
I64 = npt.NDArray[np.int64]

#: What the oracle predicts, in the order of ``glioma-multitask``'s outputs.
ORACLE_TARGETS: tuple[Marker, ...] = (Marker.IDH, Marker.CODEL_1P19Q, Marker.MGMT, Marker.GRADE)

#: The tumour's rendered properties, one column each (see the module docstring).
LATENTS: tuple[str, ...] = (
    "enhancement_patchy",  # one-hot against "none"
    "enhancement_ring",
    "enhancing_fraction",  # share of the enhancing zone taking up contrast (0 without)
    "gd_mmol",  # gadolinium in enhancing tumour (0 without)
    "necrotic",
    "inner_ratio",  # necrotic / non-enhancing centre radius over core radius (0 without one)
    "mismatch",  # T2-FLAIR mismatch sign
    "calcifications",  # number of T2-dark foci
    "frontal",
    "left",
    "centre_x_mm",  # template space
    "centre_y_mm",
    "centre_z_mm",
    "radius_mm",  # tumour core, template mm
    "oedema_ratio",  # oedema envelope radius / core radius
    "margin_mm",  # width of the core boundary
    "irregularity",
    "texture",  # amplitude of the signal heterogeneity
    "mass_effect",
    "log_t1_vs_wm",  # non-enhancing tumour tissue relative to the subject's white matter
    "log_t2_vs_wm",
    "log_pd_vs_wm",
)

#: Sites per half of :func:`population_draws` (each site has its own grade mix).
POPULATION_SITES = 40
#: Confidence level of every interval.
CONFIDENCE = 0.95


class OracleModel(StrEnum):
    """Classifiers the oracle fits on the latents."""

    LOGISTIC = "logistic"
    BOOSTING = "boosting"


@dataclass(frozen=True)
class LatentDraws:
    """Latents and marker targets of ``len(self)`` phantom cases.

    Attributes
    ----------
    latents
        ``(N, len(LATENTS))`` float64.
    targets
        Per marker of :data:`ORACLE_TARGETS`, ``(N,)`` int64 in {0, 1}.
    sites
        ``(N,)`` the site each case was drawn at.
    """

    latents: F64
    targets: Mapping[Marker, I64]
    sites: I64

    def __len__(self) -> int:
        return int(self.latents.shape[0])


@dataclass(frozen=True)
class AucEstimate:
    """An AUC over ``n`` cases (``num_positive`` of them positive) with its bootstrap interval;
    ``nan`` where the cases hold one class only."""

    auc: float
    ci: tuple[float, float]
    n: int
    num_positive: int

    def to_json(self) -> dict[str, object]:
        def number(value: float) -> float | None:
            return None if math.isnan(value) else round(value, 4)

        return {
            "auc": number(self.auc),
            "ci": [number(v) for v in self.ci],
            "n": self.n,
            "num_positive": self.num_positive,
        }


@dataclass(frozen=True)
class OracleResult:
    """Both classifiers' held-out AUC for one marker; ``best`` is the ceiling."""

    marker: Marker
    aucs: Mapping[OracleModel, float]
    best: OracleModel
    estimate: AucEstimate  # of ``best``

    @property
    def auc(self) -> float:
        return self.estimate.auc

    def to_json(self) -> dict[str, object]:
        return {
            "marker": self.marker.value,
            "best": self.best.value,
            "aucs": {k.value: round(v, 4) for k, v in self.aucs.items()},
            **self.estimate.to_json(),
        }


def marker_targets(clinical: Clinical) -> dict[Marker, int]:
    """The oracle's targets of one case: each marker as 0/1, grade as IV (1) vs II–III (0)."""
    idh, codel, mgmt, grade = clinical.idh, clinical.codel_1p19q, clinical.mgmt, clinical.grade
    if idh is None or codel is None or mgmt is None or grade is None:
        raise ValueError(f"clinical {clinical}: the oracle needs every marker and the grade known")
    return {
        Marker.IDH: int(idh),
        Marker.CODEL_1P19Q: int(codel),
        Marker.MGMT: int(mgmt),
        Marker.GRADE: int(grade == 4),
    }


def case_latents(case: CaseParams) -> F64:
    """The ``(len(LATENTS),)`` latents of one sampled glioma case.

    Examples
    --------
    >>> config = PhantomConfig(preset="glioma", sites=1, cases=1, seed=0)
    >>> case = sample_case(config, sample_site(config, 1), 1)
    >>> case_latents(case).shape == (len(LATENTS),)
    True
    """
    g = case.glioma
    if g is None:
        raise ValueError(f"case {case.subject_id}: no glioma; the oracle is for the glioma preset")
    inner = g.necrotic or g.enhancement is Enhancement.RING  # drawn only then (draw_glioma)
    wm = case.tissues[Tissue.WM]
    values = (
        g.enhancement is Enhancement.PATCHY,
        g.enhancement is Enhancement.RING,
        g.enhancing_fraction,
        g.gd_mmol,
        g.necrotic,
        g.inner_ratio if inner else 0.0,
        g.mismatch,
        g.calcifications,
        g.frontal,
        g.left,
        *g.centre_mm,
        g.radius_mm,
        g.oedema_ratio,
        g.margin_mm,
        g.irregularity,
        g.texture,
        g.mass_effect,
        math.log(g.tumour.t1 / wm.t1),
        math.log(g.tumour.t2 / wm.t2),
        math.log(g.tumour.pd / wm.pd),
    )
    return np.asarray(values, dtype=np.float64)


def draw_latents(config: PhantomConfig, sites: Iterable[int] | None = None) -> LatentDraws:
    """Sample (never render) every case of ``sites`` (1-based; default all) of ``config``.

    The cases are exactly those :func:`~neurofed.phantom.generate_federation` would render.
    """
    if config.preset is not PhantomPreset.GLIOMA:
        raise ValueError(f"preset {config.preset.value!r}: the oracle needs the glioma preset")
    rows, targets, where = [], [], []
    for k in range(1, config.sites + 1) if sites is None else sites:
        site = sample_site(config, k)
        for number in range(1, site.cases + 1):
            case = sample_case(config, site, number)
            rows.append(case_latents(case))
            targets.append(marker_targets(case.clinical))
            where.append(k)
    return LatentDraws(
        latents=np.stack(rows),
        targets=MappingProxyType(
            {m: np.array([t[m] for t in targets], dtype=np.int64) for m in ORACLE_TARGETS}
        ),
        sites=np.asarray(where, dtype=np.int64),
    )


def population_draws(seed: int, draws: int) -> tuple[LatentDraws, LatentDraws]:
    """``draws`` training and ``draws`` test cases from two disjoint sets of sites.

    Each half spreads over :data:`POPULATION_SITES` sites (fewer if ``draws`` is smaller), so
    the cases follow the phantom's population: a site's grade mix, then its cases. The result is
    cut to exactly ``draws`` per half.
    """
    sites = min(POPULATION_SITES, draws)
    cases = math.ceil(draws / max(sites, 1))
    if draws < 1 or cases > MAX_CASES or 2 * sites > MAX_SITES:
        raise ValueError(
            f"draws = {draws}: must lie in 1..{POPULATION_SITES * MAX_CASES} "
            f"({POPULATION_SITES} sites of at most {MAX_CASES} cases per half)"
        )
    config = PhantomConfig(preset=PhantomPreset.GLIOMA, sites=2 * sites, cases=cases, seed=seed)
    train = draw_latents(config, range(1, sites + 1))
    test = draw_latents(config, range(sites + 1, 2 * sites + 1))
    return _head(train, draws), _head(test, draws)


def _head(draws: LatentDraws, n: int) -> LatentDraws:
    return LatentDraws(
        draws.latents[:n],
        MappingProxyType({m: t[:n] for m, t in draws.targets.items()}),
        draws.sites[:n],
    )


def _auc_rows(target: npt.NDArray[np.bool_], score: F64) -> F64:
    """AUC of each row (Mann–Whitney with mid-ranks for ties); ``nan`` for a one-class row."""
    ranks = rankdata(score, axis=1)  # (R, n)
    positives = target.sum(axis=1)
    negatives = target.shape[1] - positives
    rank_sum = (ranks * target).sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        auc = (rank_sum - positives * (positives + 1) / 2.0) / (positives * negatives)
    return np.where((positives > 0) & (negatives > 0), auc, np.nan)


def auc_with_ci(
    target: npt.ArrayLike, score: npt.ArrayLike, *, seed: int = 0, resamples: int = 1000
) -> AucEstimate:
    """ROC AUC (:func:`sklearn.metrics.roc_auc_score`) with a percentile bootstrap interval
    over cases (resamples holding one class only are skipped).

    Examples
    --------
    >>> estimate = auc_with_ci([0, 0, 1, 1, 0, 1], [0.1, 0.4, 0.35, 0.8, 0.2, 0.9], resamples=200)
    >>> round(estimate.auc, 4), estimate.n, estimate.num_positive
    (0.8889, 6, 3)
    >>> math.isnan(auc_with_ci([1, 1], [0.2, 0.3]).auc)
    True
    """
    y = np.asarray(target).astype(np.int64).ravel()
    s = np.asarray(score, dtype=np.float64).ravel()
    if y.shape != s.shape:
        raise ValueError(f"{y.size} targets but {s.size} scores; give one score per case")
    n, positives = int(y.size), int(y.sum())
    if positives in (0, n):
        return AucEstimate(math.nan, (math.nan, math.nan), n, positives)
    auc = float(roc_auc_score(y, s))
    rng = np.random.default_rng(seed)
    chunk = max(1, min(resamples, 2_000_000 // n))
    values = []
    for start in range(0, resamples, chunk):
        index = rng.integers(0, n, size=(min(chunk, resamples - start), n))  # (R, n)
        values.append(_auc_rows(y[index].astype(bool), s[index]))
    boot = np.concatenate(values) if values else np.array([])
    boot = boot[np.isfinite(boot)]
    if boot.size == 0:
        return AucEstimate(auc, (math.nan, math.nan), n, positives)
    tail = 100.0 * (1.0 - CONFIDENCE) / 2.0
    low, high = np.percentile(boot, [tail, 100.0 - tail])
    return AucEstimate(auc, (float(low), float(high)), n, positives)


def _classifier(model: OracleModel, seed: int) -> Pipeline | HistGradientBoostingClassifier:
    if model is OracleModel.LOGISTIC:
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    return HistGradientBoostingClassifier(
        learning_rate=0.05, max_iter=400, max_leaf_nodes=15, random_state=seed
    )


def fit_scores(
    model: OracleModel, train_x: F64, train_y: I64, test_x: F64, *, seed: int = 0
) -> F64:
    """Fit ``model`` on the training latents and return its positive-class scores on the test."""
    classifier = _classifier(model, seed)
    # one OpenMP thread: these problems are small, and boosting's spinning threads slow down
    # tenfold on a machine whose cores are busy
    with threadpool_limits(limits=1, user_api="openmp"):
        classifier.fit(train_x, train_y)
        probabilities = classifier.predict_proba(test_x)  # (N, 2)
    return np.asarray(probabilities[:, 1], dtype=np.float64)


def marker_ceiling(
    train: LatentDraws,
    test: LatentDraws,
    marker: Marker,
    *,
    seed: int = 0,
    resamples: int = 1000,
) -> OracleResult:
    """Fit both classifiers for ``marker`` on ``train``; the better AUC on ``test`` is the
    ceiling, reported with its bootstrap interval."""
    aucs: dict[OracleModel, float] = {}
    scores: dict[OracleModel, F64] = {}
    y_train, y_test = train.targets[marker], test.targets[marker]
    for model in OracleModel:
        scores[model] = fit_scores(model, train.latents, y_train, test.latents, seed=seed)
        aucs[model] = float(roc_auc_score(y_test, scores[model]))
    best = max(aucs, key=lambda m: aucs[m])
    estimate = auc_with_ci(y_test, scores[best], seed=seed, resamples=resamples)
    return OracleResult(Marker(marker), MappingProxyType(aucs), best, estimate)


def oracle_table(
    train: LatentDraws, test: LatentDraws, *, seed: int = 0, resamples: int = 1000
) -> dict[Marker, OracleResult]:
    """:func:`marker_ceiling` for every marker of :data:`ORACLE_TARGETS`."""
    return {
        m: marker_ceiling(train, test, m, seed=seed, resamples=resamples) for m in ORACLE_TARGETS
    }
