"""Intervals and paired tests for comparing models on the same cases.

Pure functions over per-case values (one number per case, the same cases in the same order for
every model); scipy does the statistics:

- :func:`mean_with_ci` — the mean and its bootstrap confidence interval (BCa, percentile where
  BCa is undefined, e.g. every value equal);
- :func:`paired_comparison` — model A against model B on the same cases: the mean difference
  with a paired bootstrap interval and the two-sided Wilcoxon signed-rank test (exact for small
  samples without ties, as scipy chooses);
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
    "Estimate",
    "PairedComparison",
    "holm",
    "mean_with_ci",
    "paired_comparison",
    "smallest_p",
]

#: Confidence level of every interval.
CONFIDENCE = 0.95
#: Bootstrap resamples (scipy's default).
RESAMPLES = 9999
#: Significance level the summaries speak of (after Holm's correction).
ALPHA = 0.05


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
