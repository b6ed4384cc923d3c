"""brain-age: L1 on the normalised target, MAE / Pearson from sums, SDMT transfer target."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from scipy.stats import pearsonr

from neurofed.keys import ClinicalField
from neurofed.tasks import Batch, BrainAgeTask, ClinicalTarget, merge_states


def _batch(values: list[float | None], field: ClinicalField = ClinicalField.AGE) -> Batch:
    n = len(values)
    return Batch(torch.zeros(n, 1, 2, 2, 2), clinical={field: ClinicalTarget.from_values(values)})


def test_l1_loss_by_hand_on_the_normalised_target() -> None:
    task = BrainAgeTask({"target_mean": 50.0, "target_std": 10.0})
    prediction = torch.tensor([[0.5], [9.0], [-1.0]])
    # z = (60 - 50) / 10 = 1 and (30 - 50) / 10 = -2; case 2 unknown.
    loss = task.loss(prediction, _batch([60.0, None, 30.0]))
    assert loss.item() == pytest.approx((0.5 + 1.0) / 2)


def test_all_unknown_targets_give_zero_loss() -> None:
    prediction = torch.randn(2, 1, requires_grad=True)
    loss = BrainAgeTask().loss(prediction, _batch([None, None]))
    loss.backward()
    assert loss.item() == 0.0


def test_mae_and_pearson_match_numpy_and_scipy_in_original_units() -> None:
    # Prepare
    rng = np.random.default_rng(0)
    age = rng.uniform(20, 90, size=30)
    normalised = (age - 55) / 15 + rng.normal(0, 0.4, size=30)
    task = BrainAgeTask({"target_mean": 55.0, "target_std": 15.0})
    values: list[float | None] = list(age)
    values[3] = None
    outputs = torch.tensor(normalised, dtype=torch.float32)[:, None]
    # Execute
    metrics = task.finalize(task.metric_state(outputs, _batch(values)))
    # Assert
    known = np.arange(30) != 3
    predicted = outputs.double().numpy()[known, 0] * 15.0 + 55.0  # original units
    target = np.array(age, dtype=np.float32).astype(np.float64)[known]
    assert metrics["mae"] == pytest.approx(np.mean(np.abs(predicted - target)), rel=1e-9)
    assert metrics["pearson_r"] == pytest.approx(pearsonr(predicted, target).statistic, rel=1e-9)
    assert metrics["num_examples"] == 29


def test_merged_sums_give_the_metrics_of_all_cases_at_once() -> None:
    rng = np.random.default_rng(1)
    age = list(rng.uniform(20, 90, size=10))
    outputs = torch.tensor(rng.normal(size=(10, 1)), dtype=torch.float32)
    task = BrainAgeTask()
    whole = task.finalize(task.metric_state(outputs, _batch(age)))
    parts = [task.metric_state(outputs[s], _batch(age[s])) for s in (slice(0, 4), slice(4, 10))]
    for order in (parts, parts[::-1]):
        merged = task.finalize(merge_states(order))
        assert merged["num_examples"] == whole["num_examples"]
        assert merged["mae"] == pytest.approx(whole["mae"], rel=1e-12)
        assert merged["pearson_r"] == pytest.approx(whole["pearson_r"], rel=1e-12)


def test_pearson_is_nan_with_fewer_than_two_cases() -> None:
    task = BrainAgeTask()
    metrics = task.finalize(task.metric_state(torch.zeros(2, 1), _batch([40.0, None])))
    assert math.isnan(metrics["pearson_r"]) and metrics["mae"] == pytest.approx(10.0)


def test_sdmt_target_for_transfer() -> None:
    task = BrainAgeTask({"target": "sdmt", "target_mean": 45.0, "target_std": 12.0})
    assert task.clinical_fields == (ClinicalField.SDMT,)
    assert task.postprocess(torch.tensor([[1.0]])).tolist() == [57.0]
    loss = task.loss(torch.tensor([[0.0]]), _batch([57.0], ClinicalField.SDMT))
    assert loss.item() == pytest.approx(1.0)
    with pytest.raises(ValueError, match=r"needs clinical fields \['sdmt'\]"):
        task.loss(torch.tensor([[0.0]]), _batch([57.0], ClinicalField.AGE))


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"target": "sex"}, "BrainAgeConfig.target = <ClinicalField.SEX: 'sex'> is invalid"),
        ({"target_std": 0}, "BrainAgeConfig.target_std = 0 is invalid"),
        ({"target_mean": float("nan")}, "BrainAgeConfig.target_mean = nan is invalid"),
    ],
)
def test_bad_configs_are_named(config: dict[str, object], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        BrainAgeTask(config)
