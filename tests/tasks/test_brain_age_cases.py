"""brain-age per-case predictions and targets: what they hold, how they merge, when they leave."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from neurofed.keys import ClinicalField
from neurofed.tasks import Batch, BrainAgeTask, ClinicalTarget, MetricState, merge_states
from neurofed.tasks.brain_age import regression_pairs
from neurofed.tasks.sharing import share_state


def _batch(values: list[float | None], field: ClinicalField = ClinicalField.AGE) -> Batch:
    n = len(values)
    return Batch(torch.zeros(n, 1, 2, 2, 2), clinical={field: ClinicalTarget.from_values(values)})


def _cases(n: int, seed: int = 0) -> tuple[torch.Tensor, list[float | None]]:
    """Network outputs ``(n, 1)`` and ages of ``n`` cases."""
    rng = np.random.default_rng(seed)
    outputs = torch.tensor(rng.normal(size=(n, 1)), dtype=torch.float32)
    return outputs, list(rng.uniform(20, 90, n))


def _state(n: int) -> tuple[BrainAgeTask, MetricState]:
    task = BrainAgeTask({"target_mean": 55.0, "target_std": 15.0})
    outputs, ages = _cases(n)
    return task, task.metric_state(outputs, _batch(ages))


def test_each_known_case_has_its_prediction_and_target_in_original_units() -> None:
    # Prepare: case 2's age is unknown
    task = BrainAgeTask({"target_mean": 50.0, "target_std": 10.0})
    outputs = torch.tensor([[0.5], [9.0], [-1.0]])

    # Execute
    state = task.metric_state(outputs, _batch([60.0, None, 30.0]))

    # Assert
    assert set(state.cases) == {"age/prediction", "age/target"}
    assert state.cases["age/prediction"].tolist() == pytest.approx([55.0, 40.0])
    assert state.cases["age/target"].tolist() == pytest.approx([60.0, 30.0])
    assert state.cases["age/prediction"].dtype == np.float64
    expected = task.postprocess(outputs)[[0, 2]].double().numpy()
    assert state.cases["age/prediction"] == pytest.approx(expected)
    predicted, truth = regression_pairs(state.cases)[ClinicalField.AGE]
    assert predicted.tolist() == pytest.approx([55.0, 40.0]) and truth.tolist() == [60.0, 30.0]


def test_the_transfer_target_names_its_arrays() -> None:
    task = BrainAgeTask({"target": "sdmt", "target_mean": 45.0, "target_std": 12.0})
    state = task.metric_state(torch.tensor([[1.0]]), _batch([50.0], ClinicalField.SDMT))
    assert state.cases["sdmt/prediction"].tolist() == [57.0]
    assert state.cases["sdmt/target"].tolist() == [50.0]
    assert list(regression_pairs(state.cases)) == [ClinicalField.SDMT]


def test_merging_concatenates_the_cases_and_leaves_the_metrics_as_the_sums_give_them() -> None:
    # Prepare
    task, whole = _state(10)
    outputs, ages = _cases(10)
    parts = [task.metric_state(outputs[s], _batch(ages[s])) for s in (slice(0, 4), slice(4, 10))]

    # Execute
    merged = merge_states(parts)
    metrics = task.finalize(merged)

    # Assert: the cases in order, and MAE and r equal to the cases' own
    assert merged.cases["age/prediction"].tolist() == whole.cases["age/prediction"].tolist()
    predicted, truth = merged.cases["age/prediction"], merged.cases["age/target"]
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(predicted - truth)), rel=1e-12)
    assert metrics["pearson_r"] == pytest.approx(np.corrcoef(predicted, truth)[0, 1], rel=1e-9)
    assert metrics == task.finalize(MetricState(sums=dict(merged.sums), cases={}))


def test_per_case_values_are_withheld_unless_the_custodian_allows_them() -> None:
    # Prepare
    task, state = _state(8)

    # Execute
    by_default, withheld = share_state(state, min_cases=5)
    allowed, _ = share_state(state, min_cases=5, allow_cases=True, rng=np.random.default_rng(0))

    # Assert: sums only by default (nothing derived from the cases), the pairs when allowed
    assert by_default.cases == {} and withheld == []
    assert set(by_default.sums) == set(state.sums)
    assert set(allowed.cases) == {"age/prediction", "age/target"}
    pairs = sorted(zip(allowed.cases["age/prediction"], allowed.cases["age/target"], strict=True))
    original = zip(state.cases["age/prediction"], state.cases["age/target"], strict=True)
    assert pairs == sorted(original)  # shuffled together, pairs intact
    assert task.finalize(by_default) == task.finalize(allowed) == task.finalize(state)


def test_nothing_of_too_few_cases_leaves_not_even_their_sums() -> None:
    # Prepare: 3 validation cases (a sum over one case would be that patient's age)
    _, state = _state(3)
    # Execute
    shared, withheld = share_state(state, min_cases=5, allow_cases=True)
    plain, named = share_state(state, min_cases=5)
    # Assert: every sum is zero, no case leaves, and the site says why
    for each in (shared, plain):
        assert each.cases == {} and set(each.sums) == set(state.sums)
        assert all(not np.any(np.asarray(v)) for v in each.sums.values())
    assert withheld == named == ["every metric: 3 case(s), fewer than 5"]
    assert share_state(state, min_cases=3)[1] == []  # enough cases: the sums leave
