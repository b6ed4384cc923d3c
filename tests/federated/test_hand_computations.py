"""Each strategy against numbers worked out by hand on tiny dicts."""

from __future__ import annotations

import math

import numpy as np
import pytest

from neurofed.federated import FedAdam, FedAvg, FedYogi, Median, SiteUpdate, TrimmedMean


def _updates(values: list[list[float]], examples: list[int]) -> list[SiteUpdate]:
    return [
        SiteUpdate(f"site-{i}", {"w": np.array(v, dtype=np.float32)}, n)
        for i, (v, n) in enumerate(zip(values, examples, strict=True))
    ]


def test_fedavg_weights_by_examples() -> None:
    # Prepare: (1·[1, 2] + 3·[5, -2]) / 4 = [4, -1]
    updates = _updates([[1.0, 2.0], [5.0, -2.0]], [1, 3])
    # Execute
    new, _ = FedAvg().aggregate({"w": np.zeros(2, np.float32)}, updates)
    # Assert
    assert new["w"].tolist() == [4.0, -1.0]
    assert new["w"].dtype == np.float32


def test_integer_buffers_take_the_largest_site_value() -> None:
    # Prepare
    g = {"n": np.array(3, np.int64), "w": np.zeros(1, np.float32)}
    updates = [
        SiteUpdate("a", {"n": np.array(10, np.int64), "w": np.ones(1, np.float32)}, 1),
        SiteUpdate("b", {"n": np.array(7, np.int64), "w": np.ones(1, np.float32)}, 100),
    ]
    # Execute
    new, _ = FedAvg().aggregate(g, updates)
    # Assert: not the weighted mean 7.03 rounded, but the maximum, still int64
    assert int(new["n"]) == 10
    assert new["n"].dtype == np.int64


def test_median_ignores_weights_and_outliers() -> None:
    # Prepare: per coordinate medians of {1, 2, 1000} and {-5, 0, 3}
    updates = _updates([[1.0, -5.0], [2.0, 3.0], [1000.0, 0.0]], [1, 1, 1000])
    # Execute
    new, _ = Median().aggregate({"w": np.zeros(2, np.float32)}, updates)
    # Assert
    assert new["w"].tolist() == [2.0, 0.0]


def test_median_of_an_even_number_of_sites_averages_the_middle_two() -> None:
    updates = _updates([[1.0], [2.0], [4.0], [100.0]], [1, 1, 1, 1])
    new, _ = Median().aggregate({"w": np.zeros(1, np.float32)}, updates)
    assert new["w"].tolist() == [3.0]


def test_trimmed_mean_cuts_floor_fraction_at_each_end() -> None:
    # Prepare: 5 sites, trim_fraction 0.2 → cut 1 per end;
    # sorted [-100, 1, 2, 6, 500] → mean(1, 2, 6) = 3
    updates = _updates([[6.0], [500.0], [1.0], [-100.0], [2.0]], [1, 1, 1, 1, 1])
    # Execute
    new, _ = TrimmedMean({"trim_fraction": 0.2}).aggregate({"w": np.zeros(1, np.float32)}, updates)
    # Assert
    assert new["w"].tolist() == [3.0]


def test_trimmed_mean_with_too_few_sites_to_trim_is_the_mean() -> None:
    # floor(0.2 · 4) = 0: nothing is cut
    updates = _updates([[1.0], [2.0], [3.0], [10.0]], [1, 1, 1, 1])
    new, _ = TrimmedMean({"trim_fraction": 0.2}).aggregate({"w": np.zeros(1, np.float32)}, updates)
    assert new["w"].tolist() == [4.0]


def test_fedadam_two_rounds_by_hand() -> None:
    # Prepare: x0 = 1, η = 0.1, β1 = 0.5, β2 = 0.75, τ = 0.5 (so τ² = 0.25 starts v)
    strategy = FedAdam({"eta": 0.1, "beta1": 0.5, "beta2": 0.75, "tau": 0.5})
    g = {"w": np.array([1.0])}
    # round 1: sites 3 (1 example) and 5 (3 examples) → average 4.5, Δ = 3.5
    m1 = 0.5 * 0 + 0.5 * 3.5  # 1.75
    v1 = 0.75 * 0.25 + 0.25 * 3.5**2  # 3.25
    x1 = 1.0 + 0.1 * m1 / (math.sqrt(v1) + 0.5)
    # round 2: both sites return 2 → Δ = 2 - x1
    d2 = 2.0 - x1
    m2 = 0.5 * m1 + 0.5 * d2
    v2 = 0.75 * v1 + 0.25 * d2**2
    x2 = x1 + 0.1 * m2 / (math.sqrt(v2) + 0.5)
    # Execute
    r1, state = strategy.aggregate(
        g, [SiteUpdate("a", {"w": np.array([3.0])}, 1), SiteUpdate("b", {"w": np.array([5.0])}, 3)]
    )
    r2, state = strategy.aggregate(
        r1,
        [SiteUpdate("a", {"w": np.array([2.0])}, 1), SiteUpdate("b", {"w": np.array([2.0])}, 3)],
        state,
    )
    # Assert
    assert r1["w"][0] == pytest.approx(x1, rel=1e-12)
    assert r2["w"][0] == pytest.approx(x2, rel=1e-12)
    assert state.arrays["m/w"][0] == pytest.approx(m2, rel=1e-12)
    assert state.arrays["v/w"][0] == pytest.approx(v2, rel=1e-12)
    assert state.scalars["step"] == 2


def test_fedyogi_second_moment_by_hand() -> None:
    # Prepare: x0 = [0, 0]; one site sends [2, 0.1]; τ = 1 → v starts at 1; β1 = 0, β2 = 0.5, η = 1
    strategy = FedYogi({"eta": 1.0, "beta1": 0.0, "beta2": 0.5, "tau": 1.0})
    # Δ = [2, 0.1]; Δ² = [4, 0.01]; sign(v - Δ²) = [-1, +1]
    # v = 1 - 0.5·4·(-1) = 3 ;  v = 1 - 0.5·0.01·(+1) = 0.995
    v = np.array([3.0, 0.995])
    x = np.array([2.0, 0.1]) / (np.sqrt(v) + 1.0)  # m = Δ with β1 = 0
    # Execute
    new, state = strategy.aggregate(
        {"w": np.zeros(2)}, [SiteUpdate("a", {"w": np.array([2.0, 0.1])}, 7)]
    )
    # Assert
    np.testing.assert_allclose(state.arrays["v/w"], v, rtol=1e-12)
    np.testing.assert_allclose(new["w"], x, rtol=1e-12)


def test_fedyogi_and_fedadam_differ_after_the_first_round() -> None:
    # Adam's v decays multiplicatively, Yogi's additively: same inputs, different v.
    params = {"eta": 0.1, "beta1": 0.9, "beta2": 0.9, "tau": 1e-3}
    u = [SiteUpdate("a", {"w": np.array([1.0])}, 1)]
    _, adam = FedAdam(params).aggregate({"w": np.zeros(1)}, u)
    _, yogi = FedYogi(params).aggregate({"w": np.zeros(1)}, u)
    assert adam.arrays["v/w"][0] == pytest.approx(0.9 * 1e-6 + 0.1)
    assert yogi.arrays["v/w"][0] == pytest.approx(1e-6 + 0.1)


def test_fedopt_keeps_float32_and_integer_entries() -> None:
    # Prepare
    g = {"w": np.zeros(3, np.float32), "n": np.array(1, np.int64)}
    u = [SiteUpdate("a", {"w": np.ones(3, np.float32), "n": np.array(5, np.int64)}, 2)]
    # Execute
    new, state = FedAdam().aggregate(g, u)
    # Assert: float32 stepped, int64 taken from the sites (no moments for it)
    assert new["w"].dtype == np.float32 and new["n"].dtype == np.int64
    assert int(new["n"]) == 5
    assert set(state.arrays) == {"m/w", "v/w"}
