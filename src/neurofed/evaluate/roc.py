"""AUC with DeLong's interval, and DeLong's test between two models scored on the same cases.

No maintained package offers DeLong's method for Python, so it is written here, after the fast
algorithm of Sun & Xu (IEEE Signal Processing Letters 21, 2014), which gives DeLong, DeLong &
Clarke-Pearson's (Biometrics 44, 1988) structural components from midranks in
``O(N log N)`` instead of comparing every positive with every negative:

- with ``m`` positives and ``n`` negatives, ``Tz`` the midranks of all scores, ``Tx`` those of
  the positives among themselves and ``Ty`` of the negatives, the components are
  ``V10_i = (Tz_i − Tx_i) / n`` per positive and ``V01_j = 1 − (Tz_j − Ty_j) / m`` per
  negative; the AUC is the mean of either (ties count one half, as Mann–Whitney's U);
- for ``k`` models on the same cases, ``S = cov(V10) / m + cov(V01) / n`` (``k × k``) is the
  covariance of their AUCs;
- the interval is Wald's on the AUC scale (as pROC reports it), cut to [0, 1]; the test of two
  correlated AUCs is ``z = (A₁ − A₂) / √(S₁₁ + S₂₂ − 2 S₁₂)``, two-sided.

Examples
--------
>>> labels = [1, 1, 1, 1, 0, 0, 0, 0, 0]
>>> good = [0.9, 0.8, 0.7, 0.3, 0.4, 0.2, 0.2, 0.1, 0.05]
>>> result = auc_delong(good, labels)
>>> round(result.auc, 3), result.num_positive, result.n
(0.95, 4, 9)
>>> 0.5 < result.ci[0] < result.auc < result.ci[1] <= 1.0
True
>>> flat = [0.5, 0.6, 0.4, 0.5, 0.5, 0.6, 0.4, 0.5, 0.5]
>>> compared = delong_test(good, flat, labels)
>>> round(compared.difference, 3), compared.p_value < 0.05
(0.45, True)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import stats

from neurofed.evaluate.statistics import CONFIDENCE

__all__ = ["AucInterval", "DelongComparison", "auc_delong", "delong_test"]

F64 = npt.NDArray[np.float64]


@dataclass(frozen=True)
class AucInterval:
    """An AUC over ``n`` cases (``num_positive`` positive) with DeLong's ``CONFIDENCE`` interval
    and variance; ``nan`` where the cases hold one class only."""

    auc: float
    ci: tuple[float, float]
    variance: float
    n: int
    num_positive: int

    def to_json(self) -> dict[str, object]:
        return {
            "auc": _number(self.auc),
            "ci": [_number(v) for v in self.ci],
            "n": self.n,
            "num_positive": self.num_positive,
        }


@dataclass(frozen=True)
class DelongComparison:
    """AUC of model A minus AUC of model B on the same cases, with DeLong's interval and test."""

    auc_a: float
    auc_b: float
    difference: float
    ci: tuple[float, float]
    p_value: float
    n: int
    num_positive: int

    def to_json(self) -> dict[str, object]:
        return {
            "auc_a": _number(self.auc_a),
            "auc_b": _number(self.auc_b),
            "difference": _number(self.difference),
            "ci": [_number(v) for v in self.ci],
            "p": _number(self.p_value),
            "n": self.n,
            "num_positive": self.num_positive,
        }


def _number(value: float) -> float | None:
    return round(float(value), 6) if math.isfinite(value) else None


def _cases(
    scores: Sequence[Sequence[float]] | F64, labels: Sequence[int] | F64
) -> tuple[F64, npt.NDArray[np.bool_]]:
    """Scores as ``(k, N)`` and labels as booleans, checked."""
    matrix = np.atleast_2d(np.asarray(scores, dtype=np.float64))
    truth = np.asarray(labels).reshape(-1)
    if matrix.shape[1] != truth.size:
        raise ValueError(
            f"every model needs one score per case: {matrix.shape[1]} scores for "
            f"{truth.size} labels"
        )
    if not np.all(np.isfinite(matrix)):
        raise ValueError("scores must be finite numbers (a model that gave none is not scored)")
    if not np.all(np.isin(truth, (0, 1))):
        raise ValueError(f"labels must be 0 or 1; got {sorted(set(truth.tolist()))[:5]}")
    return matrix, truth.astype(bool)


def _components(matrix: F64, positive: npt.NDArray[np.bool_]) -> tuple[F64, F64, F64]:
    """AUCs ``(k,)`` and the structural components ``V10 (k, m)`` and ``V01 (k, n)``."""
    x, y = matrix[:, positive], matrix[:, ~positive]  # (k, m), (k, n)
    m, n = x.shape[1], y.shape[1]
    tz = stats.rankdata(np.concatenate([x, y], axis=1), axis=1)  # (k, m + n) midranks
    tx = stats.rankdata(x, axis=1)
    ty = stats.rankdata(y, axis=1)
    v10 = (tz[:, :m] - tx) / n
    v01 = 1.0 - (tz[:, m:] - ty) / m
    return v10.mean(axis=1), v10, v01


def _covariance(v10: F64, v01: F64) -> F64:
    """DeLong's covariance of the ``k`` AUCs (``k × k``)."""
    m, n = v10.shape[1], v01.shape[1]
    s10 = np.atleast_2d(np.cov(v10)) if m > 1 else np.zeros((len(v10), len(v10)))
    s01 = np.atleast_2d(np.cov(v01)) if n > 1 else np.zeros((len(v01), len(v01)))
    return np.asarray(s10 / m + s01 / n, dtype=np.float64)


def _wald(centre: float, variance: float, low: float, high: float) -> tuple[float, float]:
    if not math.isfinite(variance):
        return math.nan, math.nan
    half = float(stats.norm.ppf(0.5 + CONFIDENCE / 2)) * math.sqrt(max(variance, 0.0))
    return max(low, centre - half), min(high, centre + half)


def auc_delong(scores: Sequence[float] | F64, labels: Sequence[int] | F64) -> AucInterval:
    """The AUC of ``scores`` for ``labels`` (1 positive) with DeLong's interval.

    Raises
    ------
    ValueError
        Scores and labels differ in length, a score is not finite or a label is not 0/1.
    """
    matrix, positive = _cases(np.asarray(scores, dtype=np.float64).reshape(1, -1), labels)
    n, m = int(positive.size), int(positive.sum())
    if m == 0 or m == n:
        return AucInterval(math.nan, (math.nan, math.nan), math.nan, n, m)
    aucs, v10, v01 = _components(matrix, positive)
    variance = float(_covariance(v10, v01)[0, 0])
    auc = float(aucs[0])
    return AucInterval(auc, _wald(auc, variance, 0.0, 1.0), variance, n, m)


def delong_test(
    scores_a: Sequence[float] | F64,
    scores_b: Sequence[float] | F64,
    labels: Sequence[int] | F64,
) -> DelongComparison:
    """Two models' AUCs on the same cases: their difference, its interval and DeLong's
    two-sided p-value (1.0 when the two rank every case alike).

    Raises
    ------
    ValueError
        As :func:`auc_delong`, or the two models were not scored on the same cases.
    """
    a = np.asarray(scores_a, dtype=np.float64).reshape(-1)
    b = np.asarray(scores_b, dtype=np.float64).reshape(-1)
    if a.shape != b.shape:
        raise ValueError(f"DeLong's test needs the same cases for both: {a.size} vs {b.size}")
    matrix, positive = _cases(np.stack([a, b]), labels)
    n, m = int(positive.size), int(positive.sum())
    if m == 0 or m == n:
        nan = math.nan
        return DelongComparison(nan, nan, nan, (nan, nan), nan, n, m)
    aucs, v10, v01 = _components(matrix, positive)
    s = _covariance(v10, v01)
    difference = float(aucs[0] - aucs[1])
    variance = float(s[0, 0] + s[1, 1] - 2.0 * s[0, 1])
    if variance <= 1e-15:
        p_value = 1.0 if abs(difference) < 1e-12 else 0.0
    else:
        p_value = float(2.0 * stats.norm.sf(abs(difference) / math.sqrt(variance)))
    ci = _wald(difference, variance, -1.0, 1.0)
    return DelongComparison(float(aucs[0]), float(aucs[1]), difference, ci, p_value, n, m)
