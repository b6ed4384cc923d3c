"""Training batches: fixed by (seed, epoch), padded to what the model accepts, unknowns masked."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from neurofed.data.subject import Clinical
from neurofed.tasks import get_task
from neurofed.training import CaseDataset, TrainingCase, collate, epoch_batches, steps_per_epoch
from tests.training.tiny import tiny_config


def _cases(n: int = 3, shape: tuple[int, int, int] = (20, 20, 20)) -> CaseDataset:
    rng = np.random.default_rng(0)
    cases = []
    for i in range(n):
        label = np.zeros(shape, np.uint8)
        label[5:9, 5:9, 5:9] = i % 4
        image = rng.standard_normal((4, *shape)).astype(np.float32)
        cases.append(TrainingCase(f"c{i}", "site", image, label, Clinical()))
    return CaseDataset(cases)


def _arrays(batches: list[object]) -> list[np.ndarray]:
    return [b.image.numpy() for b in batches]  # type: ignore[attr-defined]


def test_batches_are_fixed_by_seed_and_epoch() -> None:
    # Prepare
    dataset = _cases()
    config = tiny_config("tumor-regions", augment={}, samples_per_epoch=5, batch_size=2)
    # Execute
    first = _arrays(list(epoch_batches(dataset, config, epoch=1)))
    again = _arrays(list(epoch_batches(dataset, config, epoch=1)))
    later = _arrays(list(epoch_batches(dataset, config, epoch=2)))
    other_seed = _arrays(list(epoch_batches(dataset, config.with_changes(seed=9), epoch=1)))
    # Assert
    assert [a.shape for a in first] == [(2, 4, 16, 16, 16)] * 2 + [(1, 4, 16, 16, 16)]
    assert steps_per_epoch(config, dataset) == 3
    assert all(np.array_equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, later, strict=True))
    assert not all(np.array_equal(a, b) for a, b in zip(first, other_seed, strict=True))


def test_cases_smaller_than_the_patch_are_padded() -> None:
    dataset = _cases(1, shape=(10, 20, 12))
    config = tiny_config("tumor-regions", samples_per_epoch=2, batch_size=2)
    (batch,) = epoch_batches(dataset, config, epoch=1)
    assert tuple(batch.image.shape) == (2, 4, 16, 16, 16)
    assert batch.label is not None and tuple(batch.label.shape) == (2, 16, 16, 16)


def test_collate_pads_whole_volumes_and_masks_what_is_unknown() -> None:
    # Prepare: two volumes of different shapes, one without a mask, one with unknown markers
    task = get_task("glioma-multitask")
    a = (np.ones((4, 5, 9, 10), np.float32), np.ones((5, 9, 10), np.uint8), Clinical(idh=True))
    b = (np.ones((4, 6, 7, 8), np.float32), None, Clinical(grade=3))
    # Execute
    batch = collate([a, b], task, (1, 8, 8))
    # Assert
    assert tuple(batch.image.shape) == (2, 4, 6, 16, 16)
    assert float(batch.image[0, :, 5:].abs().sum()) == 0.0  # zero padding at the end
    assert batch.labelled.tolist() == [True, False]
    idh, grade = batch.clinical["idh"], batch.clinical["grade"]
    assert idh.known.tolist() == [True, False] and idh.values[0] == 1.0
    assert grade.known.tolist() == [False, True] and grade.values[1] == 3.0
    assert math.isnan(float(idh.values[1]))
    assert batch.label is not None and batch.label.dtype == torch.long


def test_fill_single_adds_the_next_sample_of_the_order_to_a_lone_last_batch() -> None:
    # Prepare: 3 cases in batches of 2 would end with a batch of one
    dataset = _cases()
    config = tiny_config("tumor-regions", augment={}, samples_per_epoch=None, batch_size=2)
    # Execute
    plain = _arrays(list(epoch_batches(dataset, config, epoch=1)))
    filled = _arrays(list(epoch_batches(dataset, config, epoch=1, fill_single=True)))
    again = _arrays(list(epoch_batches(dataset, config, epoch=1, fill_single=True)))
    four = _arrays(list(epoch_batches(dataset, config.with_changes(samples_per_epoch=4), epoch=1)))
    # Assert: same steps, same first samples, the extra one is sample k=3 of a 4-sample epoch
    assert [a.shape[0] for a in plain] == [2, 1]
    assert [a.shape[0] for a in filled] == [2, 2]
    assert len(filled) == steps_per_epoch(config, dataset) == 2
    assert np.array_equal(filled[0], plain[0]) and np.array_equal(filled[1][:1], plain[1])
    assert all(np.array_equal(a, b) for a, b in zip(filled, four, strict=True))
    assert all(np.array_equal(a, b) for a, b in zip(filled, again, strict=True))


def test_fill_single_samples_a_single_case_twice() -> None:
    dataset = _cases(1)
    config = tiny_config("tumor-regions", augment={}, samples_per_epoch=None, batch_size=4)
    (batch,) = epoch_batches(dataset, config, epoch=1, fill_single=True)
    assert tuple(batch.image.shape) == (2, 4, 16, 16, 16)
    assert not np.array_equal(batch.image[0].numpy(), batch.image[1].numpy())  # own patches
    assert steps_per_epoch(config, dataset) == 1


def _two_sites() -> CaseDataset:
    """Three cases of site-a (images of 1s) and three of site-b (2s), interleaved."""
    cases = []
    for i in range(6):
        site, value = ("site-a", 1.0) if i % 2 == 0 else ("site-b", 2.0)
        image = np.full((4, 20, 20, 20), value, np.float32)
        cases.append(TrainingCase(f"c{i}", site, image, None, Clinical()))
    return CaseDataset(cases)


def _sites_per_batch(dataset: CaseDataset, config: object, epochs: int) -> list[set[float]]:
    return [
        set(np.unique(b.image.numpy()).tolist())
        for epoch in range(1, epochs + 1)
        for b in epoch_batches(dataset, config, epoch=epoch)  # type: ignore[arg-type]
    ]


def test_batches_by_site_draw_every_batch_from_one_site_in_turn() -> None:
    # Prepare
    dataset = _two_sites()
    mixed = tiny_config("tumor-regions", augment=None, samples_per_epoch=8, batch_size=2)
    by_site = mixed.with_changes(batches_by_site=True)

    # Execute
    default_batches = _sites_per_batch(dataset, mixed, epochs=5)
    site_batches = _sites_per_batch(dataset, by_site, epochs=5)

    # Assert: one site per batch, the sites taking turns; mixing is the default
    assert site_batches == [{1.0}, {2.0}, {1.0}, {2.0}] * 5
    assert any(len(values) == 2 for values in default_batches)


def test_batches_by_site_is_written_only_when_on_and_checked() -> None:
    config = tiny_config("tumor-regions")
    assert "batches_by_site" not in config.to_json()  # configs written before it stay equal
    on = config.with_changes(batches_by_site=True)
    assert on.to_json()["batches_by_site"] is True
    assert type(config).from_json(on.to_json()) == on
    with pytest.raises(ValueError, match="batches_by_site"):
        config.with_changes(batches_by_site="yes")
