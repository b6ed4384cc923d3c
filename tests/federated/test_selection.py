"""Best round by a metric and an explicit direction."""

from __future__ import annotations

import math

import pytest

from neurofed.federated import Direction, Selection, best_round, metric_direction

NAN = math.nan
HISTORY = {
    1: {"WT/dice": 0.50, "mae": 9.0},
    2: {"WT/dice": 0.80, "mae": 6.0},
    3: {"WT/dice": NAN, "mae": NAN},
    4: {"WT/dice": 0.80, "mae": 6.0},
    5: {"WT/dice": 0.70, "mae": 7.0},
}


def test_max_picks_the_highest_and_the_earliest_on_ties() -> None:
    assert best_round(HISTORY, "WT/dice", "max") == (2, 0.80)


def test_min_picks_the_lowest_and_the_earliest_on_ties() -> None:
    assert best_round(HISTORY, "mae", Direction.MIN) == (2, 6.0)


def test_direction_matters() -> None:
    assert best_round(HISTORY, "mae", "max") == (1, 9.0)
    assert best_round(HISTORY, "WT/dice", "min") == (1, 0.50)


def test_nan_never_wins_even_first() -> None:
    history = {0: {"mae": NAN}, 1: {"mae": 3.0}, 2: {"mae": -math.inf}}
    assert best_round(history, "mae", "min") == (1, 3.0)
    assert best_round({0: {"x": NAN}, 1: {"x": 0.1}}, "x", "max") == (1, 0.1)


def test_rounds_are_taken_in_round_order_not_insertion_order() -> None:
    history = {7: {"dice": 0.9}, 3: {"dice": 0.9}, 5: {"dice": 0.1}}
    assert best_round(history, "dice", "max") == (3, 0.9)


def test_no_finite_value_is_an_error() -> None:
    with pytest.raises(ValueError, match="no round has a finite value of 'WT/dice'"):
        best_round({1: {"WT/dice": NAN}, 2: {"mae": 1.0}}, "WT/dice", "max")


def test_bad_direction_is_an_error() -> None:
    with pytest.raises(ValueError, match="direction = 'up' is invalid"):
        best_round(HISTORY, "mae", "up")


def test_selection_checks_metric_and_direction() -> None:
    assert Selection("WT/dice", "max").best(HISTORY) == (2, 0.8)
    assert metric_direction("grade/II/auc") is Direction.MAX
    with pytest.raises(ValueError, match='which is better when lower: use direction = "min"'):
        Selection("loss", "max")
    with pytest.raises(ValueError, match=r"unknown metric 'dcie' \(did you mean 'dice'\?\)"):
        Selection("WT/dcie", "max")
    with pytest.raises(ValueError, match="is a count, not a score"):
        Selection("WT/num_examples", "max")
