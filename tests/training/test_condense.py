"""Condensation for the ``distill`` strategy: class statistics with n_min suppression, volumes
condensed from noise that lower their matching loss and copy no real case, the similarity gate's
measure, and the server's head training."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.condensed import HEAD_CLASSES, PayloadSpec, check_payload
from neurofed.keys import TaskId
from neurofed.models.multitask_unet import MultitaskUNet
from neurofed.training import LocalTrainer
from neurofed.training.condense import (
    case_class,
    class_statistics,
    condense,
    matching_loss,
    nearest_similarity,
    train_heads,
)
from tests.training.tiny import tiny_config

SETTINGS = dict(
    anchor="idh",
    images_per_class=2,
    steps=40,
    lr=0.1,
    perturbation=0.05,
    soft_weight=1.0,
    temperature=2.0,
)


@pytest.fixture(scope="module")
def trainer(glioma_site: Path) -> LocalTrainer:
    config = tiny_config(TaskId.GLIOMA_MULTITASK, preprocess={"spatial_shape": [24, 24, 24]})
    return LocalTrainer.from_sites(config, glioma_site)


def _model(trainer: LocalTrainer) -> MultitaskUNet:
    model = trainer.model
    assert isinstance(model, MultitaskUNet)
    return model


def test_class_statistics_suppress_classes_of_fewer_than_n_min_cases(
    trainer: LocalTrainer,
) -> None:
    cases = list(trainer.train_data)
    labels = [case_class(c.clinical, "idh") for c in cases]
    counts = {k: labels.count(k) for k in (0, 1)}
    n_min = max(counts.values())  # only the larger class passes
    arrays, probabilities = class_statistics(_model(trainer), cases, n_min, 2.0)

    big = max(counts, key=lambda k: counts[k])
    got = arrays["class_counts/idh"]
    assert got[big] == counts[big] and got[1 - big] == 0
    assert not np.any(arrays["class_logits/idh"][1 - big]) and np.any(
        arrays["class_logits/idh"][big]
    )
    assert probabilities["grade"].shape == (len(cases), 3)
    np.testing.assert_allclose(probabilities["idh"].sum(axis=1), 1.0, atol=1e-6)
    spec = PayloadSpec(4, (24, 24, 24), "idh", 2, n_min)
    check_payload(arrays, spec)  # a logits-only payload is valid
    leaky = dict(arrays) | {"class_counts/idh": np.array([1, counts[big]])}
    with pytest.raises(ValueError, match="must be suppressed"):
        check_payload(leaky, spec)


def test_condensed_volumes_start_from_noise_lower_their_loss_and_copy_no_case(
    trainer: LocalTrainer,
) -> None:
    model = _model(trainer)
    cases = list(trainer.train_data)
    _, probabilities = class_statistics(model, cases, 2, 2.0)
    made = condense(model, cases, n_min=2, probabilities=probabilities, seed=3, **SETTINGS)

    assert made is not None
    assert made.volumes.shape == (4, 4, 24, 24, 24) and made.classes.tolist() == [0, 0, 1, 1]
    before = matching_loss(model, made.initial, made.classes, cases, "idh")
    after = matching_loss(model, made.volumes, made.classes, cases, "idh")
    assert after < 0.5 * before, (before, after)
    # initialised from noise: the start correlates with no real case; nor does the result
    start = nearest_similarity(made.initial, cases)
    end = nearest_similarity(made.volumes, cases)
    assert max(ncc for ncc, _ in start) < 0.1
    assert max(ncc for ncc, _ in end) < 0.5
    for head, classes in HEAD_CLASSES.items():
        assert made.soft[head].shape == (4, classes)
        np.testing.assert_allclose(made.soft[head].sum(axis=1), 1.0, atol=1e-5)
    # the same seed gives the same volumes; too high an n_min gives none
    again = condense(model, cases, n_min=2, probabilities=probabilities, seed=3, **SETTINGS)
    assert again is not None and np.array_equal(again.volumes, made.volumes)
    assert condense(model, cases, n_min=100, probabilities=probabilities, **SETTINGS) is None


def test_a_copy_of_a_real_case_is_recognised_as_one(trainer: LocalTrainer) -> None:
    cases = list(trainer.train_data)
    copy = cases[2].image[None] + np.float32(0.01)
    ((ncc, ssim),) = nearest_similarity(copy, cases)
    assert ncc > 0.99 and ssim > 0.9


def test_the_server_trains_the_heads_on_condensed_volumes(trainer: LocalTrainer) -> None:
    model = _model(trainer)
    cases = list(trainer.train_data)
    _, probabilities = class_statistics(model, cases, 2, 2.0)
    made = condense(model, cases, n_min=2, probabilities=probabilities, seed=1, **SETTINGS)
    assert made is not None
    encoder = {k: v.clone() for k, v in model.state_dict().items() if k.startswith("encoder")}

    losses = train_heads(
        model,
        made.volumes,
        made.classes,
        made.soft,
        anchor="idh",
        temperature=2.0,
        kl_weight=1.0,
        epochs=30,
        lr=1e-2,
    )

    assert losses[-1] < losses[0]
    after = model.state_dict()
    assert all(np.array_equal(after[k].numpy(), v.numpy()) for k, v in encoder.items())
