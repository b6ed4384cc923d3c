"""Contract over every registered task: validated inputs, finite losses, stable metric states,
and a few optimiser steps on one fixed batch reduce the loss."""

from __future__ import annotations

import math

import pytest
import torch

from neurofed.keys import ClinicalField, TaskId
from neurofed.models import model_names
from neurofed.tasks import Batch, ClinicalTarget, MetricState, get_task, task_ids
from tests.tasks.tiny import TINY_MODELS, tiny_batch


def test_every_registered_task_has_a_tiny_setup() -> None:
    assert set(task_ids()) == set(TINY_MODELS) == set(TaskId)


def test_unknown_task_suggests_the_closest() -> None:
    with pytest.raises(
        ValueError, match=r"unknown task 'tumour-regions' \(did you mean 'tumor-regions'\?\)"
    ):
        get_task("tumour-regions")


@pytest.mark.parametrize("task_id", list(TaskId))
def test_task_declares_a_registered_model_and_its_labels(task_id: TaskId) -> None:
    task = get_task(task_id)
    assert task.task_id is task_id
    assert task.model_name in model_names()
    assert task.default_model_config() == type(task.default_model_config())()
    assert task.modalities and len(set(task.modalities)) == len(task.modalities)
    assert all(isinstance(f, ClinicalField) for f in task.clinical_fields)
    assert type(task.config).from_json(task.config.to_json()) == task.config


@pytest.mark.parametrize("task_id", list(TaskId))
def test_loss_metrics_and_training_reduce_the_loss(task_id: TaskId) -> None:
    # Prepare
    torch.manual_seed(0)
    task = get_task(task_id)
    model = task.build_model(TINY_MODELS[task_id])
    batch = tiny_batch(task)
    optimiser = torch.optim.Adam(model.parameters(), lr=3e-3)
    # Execute
    model.train()
    losses = []
    for _ in range(8):
        optimiser.zero_grad()
        loss = task.loss(model(batch.image), batch)
        loss.backward()
        optimiser.step()
        losses.append(loss.item())
    model.eval()
    second = tiny_batch(task, batch_size=2, seed=1)
    with torch.no_grad():
        state = task.metric_state(model(batch.image), batch)
        other = task.metric_state(model(second.image), second)
    metrics = task.finalize(state.merge(other))
    # Assert
    assert all(math.isfinite(v) for v in losses)
    assert losses[-1] < losses[0], losses
    assert set(state.sums) == set(other.sums) and set(state.cases) == set(other.cases)
    assert metrics and all(isinstance(v, float) for v in metrics.values())
    assert task.finalize(MetricState.from_arrays(state.to_arrays())) == pytest.approx(
        task.finalize(state), nan_ok=True
    )


@pytest.mark.parametrize("task_id", list(TaskId))
def test_wrong_channel_count_is_named(task_id: TaskId) -> None:
    task = get_task(task_id)
    batch = tiny_batch(task)
    wrong = Batch(
        image=torch.cat([batch.image, batch.image[:, :1]], dim=1),
        label=batch.label,
        clinical=batch.clinical,
    )
    with pytest.raises(ValueError, match=f"expects {len(task.modalities)} image channels"):
        task.loss(torch.zeros(1), wrong)


@pytest.mark.parametrize("task_id", [t for t in TaskId if get_task(t).clinical_fields])
def test_missing_clinical_field_is_named(task_id: TaskId) -> None:
    task = get_task(task_id)
    batch = tiny_batch(task)
    field = task.clinical_fields[0]
    partial = {k: v for k, v in batch.clinical.items() if k is not field}
    with pytest.raises(ValueError, match=f"needs clinical fields \\['{field.value}'\\]"):
        task.loss(torch.zeros(1), Batch(batch.image, batch.label, clinical=partial))


def test_finalizing_nothing_is_an_error() -> None:
    with pytest.raises(ValueError, match="metric state is empty"):
        get_task(TaskId.BRAIN_AGE).finalize(MetricState.empty())


def test_unknown_helper_target_is_all_unknown() -> None:
    target = ClinicalTarget.unknown(3)
    assert target.known.tolist() == [False] * 3 and torch.isnan(target.values).all()
