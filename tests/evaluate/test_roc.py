"""DeLong's AUC interval and test: against the definition, scikit-learn and a bootstrap."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from neurofed.evaluate.roc import auc_delong, delong_test


def _by_definition(scores: np.ndarray, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's structural components from every positive–negative pair (O(m·n))."""
    x, y = scores[..., labels == 1], scores[..., labels == 0]
    psi = (x[..., :, None] > y[..., None, :]) + 0.5 * (x[..., :, None] == y[..., None, :])
    return psi.mean(axis=-1), psi.mean(axis=-2)  # V10 (…, m), V01 (…, n)


def _correlated_models(seed: int, n: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = (rng.random(n) < 0.4).astype(int)
    shared = rng.normal(size=n)
    a = 1.2 * labels + shared + 0.5 * rng.normal(size=n)
    b = 0.6 * labels + shared + 0.5 * rng.normal(size=n)
    return np.round(a, 1), np.round(b, 1), labels  # rounding makes ties


def test_the_auc_and_its_variance_match_the_definition_with_ties() -> None:
    # Prepare
    a, _, labels = _correlated_models(seed=3, n=40)
    v10, v01 = _by_definition(a, labels)
    m, n = len(v10), len(v01)

    # Execute
    result = auc_delong(a, labels)

    # Assert: the AUC is scikit-learn's; the variance is DeLong's from the pairs
    assert result.auc == pytest.approx(roc_auc_score(labels, a), abs=1e-12)
    expected = v10.var(ddof=1) / m + v01.var(ddof=1) / n
    assert result.variance == pytest.approx(expected, rel=1e-10)
    assert (result.n, result.num_positive) == (40, int(labels.sum()))


def test_the_test_of_two_models_matches_the_definition() -> None:
    # Prepare
    a, b, labels = _correlated_models(seed=5, n=60)
    v10, v01 = _by_definition(np.stack([a, b]), labels)
    m, n = v10.shape[1], v01.shape[1]
    s = np.cov(v10) / m + np.cov(v01) / n
    z = (v10[0].mean() - v10[1].mean()) / math.sqrt(s[0, 0] + s[1, 1] - 2 * s[0, 1])

    # Execute
    result = delong_test(a, b, labels)

    # Assert
    assert result.difference == pytest.approx(
        roc_auc_score(labels, a) - roc_auc_score(labels, b), abs=1e-12
    )
    assert result.p_value == pytest.approx(math.erfc(abs(z) / math.sqrt(2)), rel=1e-9)
    assert result.ci[0] < result.difference < result.ci[1]


def test_the_delong_standard_error_agrees_with_a_bootstrap() -> None:
    # Prepare: 300 cases; the bootstrap resamples positives and negatives separately
    a, b, labels = _correlated_models(seed=11, n=300)
    rng = np.random.default_rng(0)
    pos, neg = np.flatnonzero(labels == 1), np.flatnonzero(labels == 0)
    single, paired = [], []
    for _ in range(2000):
        take = np.concatenate([rng.choice(pos, pos.size), rng.choice(neg, neg.size)])
        auc_a = roc_auc_score(labels[take], a[take])
        single.append(auc_a)
        paired.append(auc_a - roc_auc_score(labels[take], b[take]))

    # Execute
    one = auc_delong(a, labels)
    two = delong_test(a, b, labels)

    # Assert: standard errors within 10 % of the bootstrap's
    assert math.sqrt(one.variance) == pytest.approx(np.std(single, ddof=1), rel=0.10)
    width = (two.ci[1] - two.ci[0]) / (2 * 1.959964)
    assert width == pytest.approx(np.std(paired, ddof=1), rel=0.10)


def test_a_model_against_itself_is_not_different_and_one_class_gives_nan() -> None:
    a, _, labels = _correlated_models(seed=1, n=30)
    same = delong_test(a, a, labels)
    assert same.difference == 0.0 and same.p_value == 1.0

    one_class = auc_delong(a, np.ones_like(labels))
    assert math.isnan(one_class.auc) and math.isnan(one_class.ci[0])
    assert one_class.to_json()["auc"] is None


def test_the_intervals_stay_inside_their_ranges() -> None:
    labels = np.array([1, 1, 1, 0, 0, 0])
    perfect = auc_delong([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], labels)
    assert perfect.auc == 1.0 and perfect.ci[1] <= 1.0
    reversed_ = delong_test([0.9, 0.8, 0.7, 0.3, 0.2, 0.1], [0.1, 0.2, 0.3, 0.7, 0.8, 0.9], labels)
    assert reversed_.difference == 1.0 and -1.0 <= reversed_.ci[0] <= reversed_.ci[1] <= 1.0


@pytest.mark.parametrize(
    ("scores", "labels", "message"),
    [
        ([0.1, 0.2], [0, 1, 1], "one score per case"),
        ([0.1, math.nan, 0.3], [0, 1, 1], "finite"),
        ([0.1, 0.2, 0.3], [0, 2, 1], "0 or 1"),
    ],
)
def test_bad_inputs_are_refused_with_what_is_wrong(
    scores: list[float], labels: list[int], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        auc_delong(scores, labels)


def test_models_scored_on_different_cases_are_refused() -> None:
    with pytest.raises(ValueError, match="same cases"):
        delong_test([0.1, 0.2, 0.3], [0.1, 0.2], [0, 1, 1])
