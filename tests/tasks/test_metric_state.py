"""Metric states merge exactly: sums add, per-case arrays concatenate."""

from __future__ import annotations

import numpy as np
import pytest

from neurofed.tasks import MetricState, merge_states


def _state(tp: int, dice: list[float]) -> MetricState:
    return MetricState(sums={"tp": np.array(tp)}, cases={"dice": np.array(dice)})


def test_merge_adds_sums_and_concatenates_cases() -> None:
    merged = _state(3, [0.5]).merge(_state(4, [1.0, 0.25]))
    assert merged.sums["tp"].dtype == np.int64 and int(merged.sums["tp"]) == 7
    assert merged.cases["dice"].tolist() == [0.5, 1.0, 0.25]


def test_merge_is_order_independent_for_sums() -> None:
    a = MetricState(sums={"s": np.array([0.1, 1e16])}, cases={})
    b = MetricState(sums={"s": np.array([0.2, 1.0])}, cases={})
    assert a.merge(b) == b.merge(a)


def test_empty_state_is_the_identity() -> None:
    a = _state(1, [0.5])
    assert MetricState.empty().merge(a) == a == a.merge(MetricState.empty())
    assert merge_states([]) == MetricState.empty()


def test_states_with_different_names_do_not_merge() -> None:
    other = MetricState(sums={"fp": np.array(1)}, cases={"dice": np.array([1.0])})
    with pytest.raises(
        ValueError, match=r"only in the first \['tp'\], only in the second \['fp'\]"
    ):
        _state(1, [0.5]).merge(other)


def test_sums_of_different_kinds_do_not_merge() -> None:
    floats = MetricState(sums={"tp": np.array(1.0)}, cases={"dice": np.array([1.0])})
    with pytest.raises(ValueError, match="cannot add sum 'tp'"):
        _state(1, [0.5]).merge(floats)


def test_transport_arrays_round_trip_and_are_read_only() -> None:
    state = _state(2, [0.1, 0.9])
    arrays = state.to_arrays()
    assert sorted(arrays) == ["case/dice", "sum/tp"]
    assert MetricState.from_arrays(arrays) == state
    with pytest.raises(ValueError, match="read-only"):
        state.cases["dice"][0] = 1.0


def test_per_case_arrays_need_a_case_axis() -> None:
    with pytest.raises(ValueError, match="must have a case axis"):
        MetricState(sums={}, cases={"dice": np.array(0.5)})
