"""Intervals and paired tests, checked against hand computations and scipy's own tests."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from neurofed.evaluate.statistics import (
    correlation,
    holm,
    kruskal_wallis,
    mae_with_ci,
    mean_with_ci,
    paired_comparison,
    smallest_p,
    unpaired_comparison,
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


def test_mann_whitney_by_hand_when_every_a_beats_every_b() -> None:
    # Prepare: 4 vs 3 cases, no overlap → U = 12 and exact two-sided p = 2 / C(7, 3) = 2 / 35
    a, b = [0.9, 0.8, 0.85, 0.95], [0.5, 0.6, 0.55]

    # Execute
    result = unpaired_comparison(a, b)

    # Assert
    assert result.test == "mann-whitney" and result.sizes == (4, 3)
    assert result.statistic == 12.0
    assert result.p_value == pytest.approx(2 / 35)
    assert result.difference == pytest.approx(np.mean(a) - np.mean(b))
    assert 0 < result.ci[0] < result.difference < result.ci[1]


def test_kruskal_wallis_by_hand_and_its_degenerate_cases() -> None:
    # Prepare: three sites, ranks 1-3, 4-6, 7-9 → H = 12/(9·10) · (6²+15²+24²)/3 − 3·10 = 7.2
    groups = [[0.1, 0.2, 0.3], [0.4, 0.5, 0.6], [0.7, 0.8, 0.9]]

    # Execute
    result = kruskal_wallis(groups)

    # Assert
    assert result.statistic == pytest.approx(7.2)
    assert result.p_value == pytest.approx(math.exp(-7.2 / 2))  # chi-square, 2 degrees of freedom
    assert result.sizes == (3, 3, 3)
    assert math.isnan(kruskal_wallis([[0.5, 0.5], [0.5]]).p_value)
    assert math.isnan(kruskal_wallis([[0.1, 0.2], []]).p_value)


def test_mae_is_the_mean_absolute_error_with_an_interval() -> None:
    predicted, truth = [50.0, 62.0, 41.0, 70.0, 33.0], [52.0, 60.0, 45.0, 69.0, 30.0]
    result = mae_with_ci(predicted, truth)
    assert result.mean == pytest.approx((2 + 2 + 4 + 1 + 3) / 5)
    assert result.ci[0] <= result.mean <= result.ci[1]
    with pytest.raises(ValueError, match="4 predictions for 5"):
        mae_with_ci(predicted[:4], truth)


def test_pearson_with_fishers_interval_by_hand() -> None:
    # Prepare
    rng = np.random.default_rng(2)
    x = rng.normal(size=40)
    y = 0.6 * x + rng.normal(size=40)
    r = float(np.corrcoef(x, y)[0, 1])
    half = 1.959964 / math.sqrt(40 - 3)

    # Execute
    result = correlation(x, y)

    # Assert: r as numpy computes it; the interval is tanh(atanh(r) ± z / sqrt(n - 3))
    assert result.r == pytest.approx(r)
    assert result.ci == pytest.approx(
        (math.tanh(math.atanh(r) - half), math.tanh(math.atanh(r) + half))
    )
    assert result.p_value == pytest.approx(stats.pearsonr(x, y).pvalue)
    assert math.isnan(correlation([1, 2], [3, 4]).r)
    assert math.isnan(correlation([1, 1, 1], [3, 4, 5]).r)
