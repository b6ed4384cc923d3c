"""Intervals and paired tests for comparing models on the same cases.

Pure functions over per-case values (one number per case, the same cases in the same order for
every model); scipy does the statistics:

- :func:`mean_with_ci` — the mean and its bootstrap confidence interval (BCa, percentile where
  BCa is undefined, e.g. every value equal);
- :func:`paired_comparison` — model A against model B on the same cases: the mean difference
  with a paired bootstrap interval and the two-sided Wilcoxon signed-rank test (exact for small
  samples without ties, as scipy chooses);
- :func:`unpaired_comparison` — two groups of different cases (two sites, two cohorts): the
  difference of means with a bootstrap interval and the two-sided Mann–Whitney U test;
- :func:`kruskal_wallis` — do three or more groups (e.g. a model's Dice at each site) share one
  distribution: Kruskal–Wallis H and its p-value;
- :func:`mae_with_ci` — the mean absolute error of predictions against truth, with its interval;
- :func:`correlation` — Pearson's r with its two-sided p-value and Fisher's z interval;
- :func:`bland_altman` — agreement of predictions with truth: the mean difference (bias) and
  the 95 % limits of agreement, bias ± 1.96 SD of the differences;
- :func:`holm` — Holm's step-down correction of several p-values (family-wise error), written
  here because scipy offers only Benjamini–Hochberg (:func:`scipy.stats.false_discovery_control`);
- :func:`smallest_p` — the smallest two-sided p-value the signed-rank test can give with ``n``
  non-zero differences: with 5 cases it is 0.0625, so no difference can be significant at 5 %.

Every resampling takes an explicit seed, so the same values give the same interval.

Examples
--------
>>> a = [0.71, 0.64, 0.80, 0.77, 0.69, 0.73, 0.66, 0.81, 0.75, 0.70, 0.68]
>>> b = [0.65, 0.60, 0.79, 0.70, 0.66, 0.70, 0.61, 0.78, 0.71, 0.69, 0.62]
>>> result = paired_comparison(a, b)
>>> round(result.difference, 3), result.n, result.p_value < 0.01
(0.039, 11, True)
>>> result.ci[0] > 0 < result.ci[1]
True
>>> unpaired_comparison(a, [0.55, 0.58, 0.61, 0.52, 0.60]).p_value < 0.01
True
>>> r = correlation([1, 2, 3, 4, 5, 6], [1.1, 1.9, 3.2, 3.9, 5.1, 6.2])
>>> round(r.r, 3), r.p_value < 0.001, r.ci[0] < r.r < r.ci[1]
(0.998, True, True)
>>> holm([0.01, 0.04, 0.03])
[0.03, 0.06, 0.06]
>>> smallest_p(5)
0.0625
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

__all__ = [
    "CONFIDENCE",
    "LIMITS_Z",
    "BlandAltman",
    "Correlation",
    "Estimate",
    "GroupTest",
    "PairedComparison",
    "bland_altman",
    "correlation",
    "holm",
    "kruskal_wallis",
    "mae_with_ci",
    "mean_with_ci",
    "paired_comparison",
    "smallest_p",
    "unpaired_comparison",
]

#: Confidence level of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples (scipy's default).
RESAMPLES = 9999
#: Significance level the summaries speak of (after Holm's correction).
ALPHA = 0.05
#: Standard deviations of the differences on either side of the bias in Bland–Altman's limits.
LIMITS_Z = 1.96


@dataclass(frozen=True)
class Estimate:
    """A mean over ``n`` cases with its ``CONFIDENCE`` interval (``nan`` bounds when ``n < 2``)."""

    mean: float
    ci: tuple[float, float]
    n: int

    def to_json(self) -> dict[str, object]:
        return {"mean": _number(self.mean), "ci": [_number(v) for v in self.ci], "n": self.n}


@dataclass(frozen=True)
class PairedComparison:
    """A − B on the same ``n`` cases.

    Attributes
    ----------
    difference
        Mean of the per-case differences A − B.
    ci
        Its paired bootstrap interval.
    p_value
        Two-sided Wilcoxon signed-rank p-value (1.0 when every difference is 0).
    p_holm
        ``p_value`` after Holm's correction over the comparisons it was reported with
        (equal to ``p_value`` until :func:`holm` is applied by the caller).
    """

    n: int
    difference: float
    ci: tuple[float, float]
    p_value: float
    p_holm: float

    @property
    def significant(self) -> bool:
        return self.p_holm < ALPHA

    def to_json(self) -> dict[str, object]:
        return {
            "n": self.n,
            "difference": _number(self.difference),
            "ci": [_number(v) for v in self.ci],
            "p": _number(self.p_value),
            "p_holm": _number(self.p_holm),
            "significant": self.significant,
        }


@dataclass(frozen=True)
class GroupTest:
    """A rank test over groups of different cases: its statistic (U or H), p-value, group sizes,
    and for two groups the difference of means A − B with its bootstrap interval."""

    test: str
    statistic: float
    p_value: float
    sizes: tuple[int, ...]
    difference: float = math.nan
    ci: tuple[float, float] = (math.nan, math.nan)

    def to_json(self) -> dict[str, object]:
        return {
            "test": self.test,
            "statistic": _number(self.statistic),
            "p": _number(self.p_value),
            "sizes": list(self.sizes),
            "difference": _number(self.difference),
            "ci": [_number(v) for v in self.ci],
        }


@dataclass(frozen=True)
class Correlation:
    """Pearson's ``r`` over ``n`` pairs, its two-sided p-value and Fisher's z interval."""

    r: float
    p_value: float
    ci: tuple[float, float]
    n: int

    def to_json(self) -> dict[str, object]:
        return {
            "r": _number(self.r),
            "p": _number(self.p_value),
            "ci": [_number(v) for v in self.ci],
            "n": self.n,
        }


@dataclass(frozen=True)
class BlandAltman:
    """Agreement of ``n`` predictions with the truth: the mean difference predicted − true
    (``bias``), the differences' sample standard deviation ``sd``, and the limits of agreement
    ``lower`` / ``upper`` = bias ∓ :data:`LIMITS_Z` · sd."""

    bias: float
    sd: float
    lower: float
    upper: float
    n: int

    def to_json(self) -> dict[str, object]:
        return {
            "bias": _number(self.bias),
            "sd": _number(self.sd),
            "limits": [_number(self.lower), _number(self.upper)],
            "n": self.n,
        }


def _number(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _values(values: Sequence[float] | npt.ArrayLike, what: str) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise ValueError(f"{what}: every per-case value must be a finite number")
    return array


def mean_with_ci(values: Sequence[float] | npt.ArrayLike, *, seed: int = 0) -> Estimate:
    """The mean of ``values`` with its bootstrap interval (BCa; percentile where BCa fails)."""
    array = _values(values, "mean_with_ci")
    n = int(array.size)
    if n == 0:
        return Estimate(math.nan, (math.nan, math.nan), 0)
    mean = float(array.mean())
    if n < 2 or np.all(array == array[0]):
        return Estimate(mean, (mean, mean) if n >= 2 else (math.nan, math.nan), n)
    return Estimate(mean, _bootstrap((array,), seed=seed, paired=False), n)


def _bootstrap(
    data: tuple[npt.NDArray[np.float64], ...], *, seed: int, paired: bool
) -> tuple[float, float]:
    def statistic(*samples: npt.NDArray[np.float64], axis: int = -1) -> npt.NDArray[np.float64]:
        values = samples[0] - samples[1] if paired else samples[0]
        return np.asarray(np.mean(values, axis=axis), dtype=np.float64)

    for method in ("BCa", "percentile"):
        result = stats.bootstrap(
            data,
            statistic,
            paired=paired,
            vectorized=True,
            confidence_level=CONFIDENCE,
            n_resamples=RESAMPLES,
            method=method,
            rng=np.random.default_rng(seed),
        )
        low, high = float(result.confidence_interval.low), float(result.confidence_interval.high)
        if math.isfinite(low) and math.isfinite(high):
            return low, high
    return math.nan, math.nan


def paired_comparison(
    a: Sequence[float] | npt.ArrayLike, b: Sequence[float] | npt.ArrayLike, *, seed: int = 0
) -> PairedComparison:
    """Model A against model B on the same cases (``a[i]`` and ``b[i]`` are one case).

    Raises
    ------
    ValueError
        The two do not hold the same number of cases, or a value is not finite.
    """
    first, second = _values(a, "paired_comparison (A)"), _values(b, "paired_comparison (B)")
    if first.shape != second.shape:
        raise ValueError(
            f"paired_comparison needs the same cases for both models: {first.size} vs "
            f"{second.size} values"
        )
    n = int(first.size)
    differences = first - second
    if n == 0:
        return PairedComparison(0, math.nan, (math.nan, math.nan), math.nan, math.nan)
    difference = float(differences.mean())
    if n < 2 or np.all(differences == differences[0]):
        ci = (difference, difference) if n >= 2 else (math.nan, math.nan)
    else:
        ci = _bootstrap((first, second), seed=seed, paired=True)
    if np.all(differences == 0):
        p_value = 1.0
    else:
        p_value = float(stats.wilcoxon(first, second, alternative="two-sided").pvalue)
    return PairedComparison(n, difference, ci, p_value, p_value)


def unpaired_comparison(
    a: Sequence[float] | npt.ArrayLike, b: Sequence[float] | npt.ArrayLike, *, seed: int = 0
) -> GroupTest:
    """Group A against group B of *different* cases: mean A − mean B with a bootstrap interval
    (each group resampled on its own) and the two-sided Mann–Whitney U test (exact for small
    groups without ties, as scipy chooses)."""
    first, second = _values(a, "unpaired_comparison (A)"), _values(b, "unpaired_comparison (B)")
    sizes = (int(first.size), int(second.size))
    if min(sizes) == 0:
        return GroupTest("mann-whitney", math.nan, math.nan, sizes)
    difference = float(first.mean() - second.mean())
    result = stats.mannwhitneyu(first, second, alternative="two-sided")
    ci: tuple[float, float] = (math.nan, math.nan)
    if min(sizes) >= 2:
        ci = _difference_interval(first, second, seed=seed)
    return GroupTest(
        "mann-whitney", float(result.statistic), float(result.pvalue), sizes, difference, ci
    )


def _difference_interval(
    first: npt.NDArray[np.float64], second: npt.NDArray[np.float64], *, seed: int
) -> tuple[float, float]:
    def statistic(
        x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], axis: int = -1
    ) -> npt.NDArray[np.float64]:
        return np.asarray(np.mean(x, axis=axis) - np.mean(y, axis=axis), dtype=np.float64)

    result = stats.bootstrap(
        (first, second),
        statistic,
        vectorized=True,
        confidence_level=CONFIDENCE,
        n_resamples=RESAMPLES,
        method="percentile",
        rng=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def kruskal_wallis(groups: Sequence[Sequence[float] | npt.ArrayLike]) -> GroupTest:
    """Kruskal–Wallis H over two or more groups of different cases (e.g. one per site); NaN
    when fewer than two groups hold a case or every value is equal."""
    arrays = [_values(g, f"kruskal_wallis (group {k + 1})") for k, g in enumerate(groups)]
    sizes = tuple(int(a.size) for a in arrays)
    present = [a for a in arrays if a.size]
    values = np.concatenate(present) if present else np.empty(0)
    if len(present) < 2 or np.all(values == values[0]):
        return GroupTest("kruskal-wallis", math.nan, math.nan, sizes)
    result = stats.kruskal(*present)
    return GroupTest("kruskal-wallis", float(result.statistic), float(result.pvalue), sizes)


def mae_with_ci(
    predicted: Sequence[float] | npt.ArrayLike,
    truth: Sequence[float] | npt.ArrayLike,
    *,
    seed: int = 0,
) -> Estimate:
    """Mean absolute error of ``predicted`` against ``truth`` (same cases) with its interval."""
    guess, real = _values(predicted, "mae_with_ci (predicted)"), _values(truth, "mae_with_ci")
    if guess.shape != real.shape:
        raise ValueError(f"mae_with_ci: {guess.size} predictions for {real.size} true values")
    return mean_with_ci(np.abs(guess - real), seed=seed)


def correlation(
    x: Sequence[float] | npt.ArrayLike, y: Sequence[float] | npt.ArrayLike
) -> Correlation:
    """Pearson's r of paired values with its p-value and Fisher's z interval (NaN with fewer
    than 3 pairs or a constant variable)."""
    first, second = _values(x, "correlation (x)"), _values(y, "correlation (y)")
    if first.shape != second.shape:
        raise ValueError(f"correlation needs pairs: {first.size} vs {second.size} values")
    n = int(first.size)
    if n < 3 or np.all(first == first[0]) or np.all(second == second[0]):
        return Correlation(math.nan, math.nan, (math.nan, math.nan), n)
    result = stats.pearsonr(first, second)
    interval = result.confidence_interval(confidence_level=CONFIDENCE)
    return Correlation(
        float(result.statistic),
        float(result.pvalue),
        (float(interval.low), float(interval.high)),
        n,
    )


def bland_altman(
    predicted: Sequence[float] | npt.ArrayLike, truth: Sequence[float] | npt.ArrayLike
) -> BlandAltman:
    """Bland–Altman agreement of ``predicted`` with ``truth`` (same cases, same order).

    Raises
    ------
    ValueError
        Fewer than two cases (no standard deviation), different numbers of values, or a value
        that is not finite.

    Examples
    --------
    >>> result = bland_altman([52.0, 61.0, 70.0, 45.0], [50.0, 60.0, 65.0, 47.0])
    >>> result.bias, round(result.sd, 4), result.n   # differences 2, 1, 5, -2
    (1.5, 2.8868, 4)
    >>> round(result.lower, 3), round(result.upper, 3)
    (-4.158, 7.158)
    """
    guess = _values(predicted, "bland_altman (predicted)")
    real = _values(truth, "bland_altman (true)")
    if guess.shape != real.shape:
        raise ValueError(f"bland_altman: {guess.size} predictions for {real.size} true values")
    if guess.size < 2:
        raise ValueError(
            f"bland_altman needs at least 2 cases for limits of agreement; got {guess.size}"
        )
    differences = guess - real
    bias = float(differences.mean())
    sd = float(differences.std(ddof=1))
    return BlandAltman(bias, sd, bias - LIMITS_Z * sd, bias + LIMITS_Z * sd, int(guess.size))


def holm(p_values: Sequence[float]) -> list[float]:
    """Holm's step-down adjusted p-values, in the order given (``nan`` stays ``nan``)."""
    known = sorted((p, k) for k, p in enumerate(p_values) if math.isfinite(p))
    adjusted = [math.nan] * len(p_values)
    running = 0.0
    for rank, (p, k) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        adjusted[k] = round(running, 12)
    return adjusted


def smallest_p(n: int) -> float:
    """The smallest two-sided exact signed-rank p-value with ``n`` non-zero differences."""
    return 1.0 if n <= 0 else min(1.0, 2.0 / 2.0**n)
