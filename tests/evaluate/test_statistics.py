"""Intervals and paired tests, checked against hand computations and scipy's own tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from neurofed.evaluate.statistics import (
    holm,
    mean_with_ci,
    paired_comparison,
    smallest_p,
)


def test_paired_comparison_is_the_mean_difference_with_wilcoxons_exact_p() -> None:
    # Prepare: 6 cases, A better on every one → exact two-sided p = 2 / 2**6
    a = np.array([0.70, 0.62, 0.81, 0.77, 0.66, 0.74])
    b = np.array([0.60, 0.60, 0.75, 0.70, 0.65, 0.64])

    # Execute
    result = paired_comparison(a, b)

    # Assert
    assert result.n == 6
    assert result.difference == pytest.approx(float(np.mean(a - b)))
    assert result.p_value == pytest.approx(2 / 2**6) == pytest.approx(smallest_p(6))
    assert result.ci[0] <= result.difference <= result.ci[1]
    assert result.ci[0] > 0  # every difference is positive
    assert paired_comparison(b, a).difference == pytest.approx(-result.difference)


def test_paired_comparison_p_matches_scipy_on_mixed_differences() -> None:
    rng = np.random.default_rng(3)
    a = rng.normal(0.7, 0.05, 15)
    b = a + rng.normal(-0.01, 0.04, 15)

    result = paired_comparison(a, b, seed=1)

    assert result.p_value == pytest.approx(stats.wilcoxon(a, b).pvalue)
    assert result == paired_comparison(a, b, seed=1)  # same seed, same interval
    assert result.ci[0] <= result.difference <= result.ci[1]


def test_identical_models_differ_by_nothing() -> None:
    values = [0.5, 0.6, 0.7]
    result = paired_comparison(values, values)
    assert result.difference == 0.0 and result.ci == (0.0, 0.0) and result.p_value == 1.0
    assert not result.significant


@pytest.mark.parametrize(
    ("a", "b", "message"),
    [
        ([0.1, 0.2], [0.1], "same cases"),
        ([0.1, math.nan], [0.1, 0.2], "finite"),
    ],
    ids=["different-lengths", "nan"],
)
def test_unpaired_or_missing_values_are_refused(
    a: list[float], b: list[float], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        paired_comparison(a, b)


def test_the_mean_interval_covers_the_true_mean_about_95_times_in_100() -> None:
    # Prepare: 200 samples of 20 cases from a known skewed distribution (mean 0.6)
    rng = np.random.default_rng(0)
    samples = [0.6 + rng.exponential(0.1, 20) - 0.1 for _ in range(200)]

    # Execute
    covered = [mean_with_ci(s, seed=k).ci for k, s in enumerate(samples)]

    # Assert: the nominal 95 %, within what 200 trials allow
    rate = sum(low <= 0.6 <= high for low, high in covered) / len(covered)
    assert 0.88 <= rate <= 0.99, rate


def test_a_mean_of_equal_values_or_one_case_has_no_spread() -> None:
    assert mean_with_ci([0.4, 0.4, 0.4]).ci == pytest.approx((0.4, 0.4))
    one = mean_with_ci([0.4])
    assert one.mean == 0.4 and all(math.isnan(v) for v in one.ci)
    assert mean_with_ci([]).n == 0


def test_holm_by_hand() -> None:
    # sorted 0.01·3 = 0.03, 0.03·2 = 0.06, 0.04·1 = 0.04 → kept monotone: 0.06
    assert holm([0.01, 0.04, 0.03]) == [0.03, 0.06, 0.06]
    assert holm([0.5, 0.6]) == [1.0, 1.0]
    assert holm([]) == []
    adjusted = holm([0.02, math.nan])
    assert adjusted[0] == 0.02 and math.isnan(adjusted[1])


def test_smallest_p_is_what_the_exact_test_gives_when_every_case_agrees() -> None:
    for n in (3, 5, 8):
        assert stats.wilcoxon(np.arange(1, n + 1) * 0.01).pvalue == pytest.approx(smallest_p(n))
    assert smallest_p(5) > 0.05 > smallest_p(6)
