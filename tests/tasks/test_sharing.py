"""What a site may send of a metric state: histograms and sums by default, never few cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurofed.keys import TaskId
from neurofed.tasks import MetricState, Task, get_task, merge_states
from neurofed.tasks.classification_metrics import auc_or_nan
from neurofed.tasks.sharing import (
    BINS,
    auc_from_histograms,
    binary_auc,
    case_mean,
    class_auc,
    share_state,
)
from tests.tasks.tiny import TINY_MODELS, tiny_batch


def _marker_state(seed: int, n: int = 40) -> MetricState:
    rng = np.random.default_rng(seed)
    targets = rng.integers(0, 2, n)
    scores = np.clip(0.3 * targets + rng.normal(0.35, 0.2, n), 0, 1)
    grades = rng.integers(0, 3, n)
    probabilities = rng.dirichlet([1, 1, 1], n)
    return MetricState(
        sums={"idh/tp": np.array(3)},
        cases={
            "idh/score": scores,
            "idh/target": targets,
            "grade/probabilities": probabilities,
            "grade/target": grades,
            "WT/dice": rng.uniform(0, 1, n),
            "WT/hd95": rng.uniform(0, 300, n),
        },
    )


@pytest.mark.parametrize("seed", range(5))
def test_means_are_exact_and_aucs_within_a_bin_of_the_per_case_values(seed: int) -> None:
    # Prepare
    state = _marker_state(seed)
    # Execute
    shared, withheld = share_state(state, min_cases=5)
    # Assert: no per-case value leaves, and the numbers agree
    assert shared.cases == {} and withheld == []
    assert "idh/target" not in shared.sums and shared.sums["idh/tp"] == 3
    for name in ("WT/dice", "WT/hd95"):
        assert case_mean(shared, name) == pytest.approx(case_mean(state, name), rel=1e-12)
    assert abs(binary_auc(shared, "idh") - binary_auc(state, "idh")) <= 1 / BINS["score"][2] * 2
    for k in range(3):
        assert abs(class_auc(shared, "grade", k) - class_auc(state, "grade", k)) <= 0.03


def test_histograms_merge_by_addition_as_the_cases_would() -> None:
    a, b = _marker_state(1), _marker_state(2)
    merged = merge_states([share_state(a, min_cases=5)[0], share_state(b, min_cases=5)[0]])
    both = merge_states([a, b])
    assert case_mean(merged, "WT/dice") == pytest.approx(case_mean(both, "WT/dice"))
    assert abs(binary_auc(merged, "idh") - binary_auc(both, "idh")) <= 0.02


def test_a_group_with_fewer_cases_than_the_minimum_sends_nothing_and_says_so() -> None:
    # Prepare: 3 markers known, 40 segmentations
    state = _marker_state(0)
    cases = dict(state.cases)
    cases["idh/score"], cases["idh/target"] = cases["idh/score"][:3], cases["idh/target"][:3]
    few = MetricState(sums=dict(state.sums), cases=cases)
    # Execute
    shared, withheld = share_state(few, min_cases=5, allow_cases=True)
    # Assert: idh's histogram is all zeros (its AUC undefined), WT still goes
    assert withheld == ["idh: 3 case(s), fewer than 5"]
    assert int(shared.sums["idh/score@hist"].sum()) == 0 and math.isnan(binary_auc(shared, "idh"))
    assert "idh/score" not in shared.cases  # not even when per-case values are allowed
    assert not math.isnan(case_mean(shared, "WT/dice")) and "WT/dice" in shared.cases


def test_allowed_per_case_values_are_shuffled_in_pairs_and_carry_no_identifier() -> None:
    state = _marker_state(3)
    shared, _ = share_state(state, min_cases=5, allow_cases=True, rng=np.random.default_rng(0))
    pairs = sorted(zip(shared.cases["idh/score"], shared.cases["idh/target"], strict=True))
    assert pairs == sorted(zip(state.cases["idh/score"], state.cases["idh/target"], strict=True))
    assert not np.array_equal(shared.cases["idh/score"], state.cases["idh/score"])  # shuffled
    assert binary_auc(shared, "idh") == pytest.approx(binary_auc(state, "idh"))
    assert all(v.dtype.kind in "iuf" for v in shared.cases.values())  # numbers only


def test_auc_from_histograms_by_hand() -> None:
    assert auc_from_histograms([0, 0, 2], [2, 0, 0]) == 1.0
    assert auc_from_histograms([2, 0, 0], [0, 0, 2]) == 0.0
    assert auc_from_histograms([1, 1], [1, 1]) == 0.5  # (1·0.5 + 1·1 + 1·0.5 + 0) / 4
    assert math.isnan(auc_from_histograms([0, 0], [1, 2]))
    rng = np.random.default_rng(0)
    scores, targets = rng.uniform(0, 1, 500), rng.integers(0, 2, 500)
    hist = np.zeros((2, 1000), np.int64)
    np.add.at(hist, (targets, np.minimum((scores * 1000).astype(int), 999)), 1)
    assert auc_from_histograms(hist[1], hist[0]) == pytest.approx(
        auc_or_nan(targets, scores), abs=1e-3
    )


def _real_state(task_id: TaskId, cases: int) -> tuple[Task, MetricState]:
    """The task and its metric state of a tiny untrained model on a batch of ``cases``."""
    task = get_task(task_id)
    batch = tiny_batch(task, batch_size=cases)
    model = task.build_model(TINY_MODELS[task_id]).eval()
    with torch.no_grad():
        return task, task.metric_state(model(batch.image), batch)


@pytest.mark.parametrize("task_id", list(TaskId))
def test_every_task_finalises_the_shared_state_as_it_would_the_cases(task_id: TaskId) -> None:
    # Prepare: a real metric state of the task on a small batch
    task, state = _real_state(task_id, 6)
    # Execute
    shared, _ = share_state(state, min_cases=1)
    # Assert: the same metrics as from the cases with scores put on the bins' grid (an AUC
    # from histograms counts a tie within one bin as a half)
    binned = MetricState(sums=dict(state.sums), cases=_on_bins(state.cases))
    exact, approx = task.finalize(binned), task.finalize(shared)
    assert exact.keys() == approx.keys()
    for name, value in exact.items():
        if math.isnan(value):
            assert math.isnan(approx[name]), name
        else:
            assert approx[name] == pytest.approx(value, abs=1e-9), name


@pytest.mark.parametrize("task_id", list(TaskId))
def test_a_state_withheld_entirely_claims_no_metric(task_id: TaskId) -> None:
    # Prepare: a real metric state of 3 cases (fewer where a target is unknown), at a site
    # whose minimum is 5
    task, state = _real_state(task_id, 3)
    # Execute
    shared, withheld = share_state(state, min_cases=5)
    metrics = task.finalize(shared)
    # Assert: zeros sent in place of the counts read as no case, not as two empty masks
    # (a pooled Dice of 1)
    assert len(withheld) == 1 and withheld[0].startswith("every metric:")
    counts = {n: v for n, v in metrics.items() if n.endswith(("num_examples", "num_positive"))}
    assert counts and all(v == 0 for v in counts.values())
    claimed = {n: v for n, v in metrics.items() if n not in counts and not math.isnan(v)}
    assert claimed == {}


def _on_bins(cases: dict[str, np.ndarray] | object) -> dict[str, np.ndarray]:
    out = {}
    for name, values in dict(cases).items():  # type: ignore[call-overload]
        key = name.rpartition("/")[2]
        if key in ("score", "probabilities"):
            low, high, bins = BINS[key]
            values = np.clip(np.floor((values - low) / (high - low) * bins), 0, bins - 1)
        out[name] = values
    return out


def test_allowed_per_case_values_are_shuffled_with_each_case_s_values_kept_together() -> None:
    # Prepare: case k has ET value k and WT value 10 k
    ids = np.arange(8, dtype=np.float64)
    state = MetricState(sums={}, cases={"ET/dice": ids, "WT/dice": 10 * ids})

    # Execute: the same seed twice (a site's secret order of one study)
    first, _ = share_state(state, min_cases=1, allow_cases=True, rng=np.random.default_rng(3))
    again, _ = share_state(state, min_cases=1, allow_cases=True, rng=np.random.default_rng(3))

    # Assert: shuffled, each case's values side by side, the same order for the same seed
    et, wt = first.cases["ET/dice"], first.cases["WT/dice"]
    assert not np.array_equal(et, ids) and np.array_equal(wt, 10 * et)
    assert np.array_equal(again.cases["ET/dice"], et)
