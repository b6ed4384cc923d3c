"""DP-SGD at a site: the accountant agrees with Opacus's, each case's influence on a step is
bounded by the clip norm, the noise has the stated scale, and a private epoch trains; networks
with batch normalisation are refused."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from neurofed.keys import TaskId
from neurofed.models.sfcn import SFCNConfig
from neurofed.tasks.batch import Batch
from neurofed.training import LocalTrainer
from neurofed.training.private import (
    PrivateSGD,
    check_private_network,
    epsilon,
    noise_for_epsilon,
)
from tests.training.tiny import TINY_SFCN_CHANNELS, tiny_config


@pytest.mark.parametrize("accountant", ["rdp", "prv"])
def test_the_ledgers_epsilon_is_opacus_accountant_stepped_through_the_same_rounds(
    accountant: str,
) -> None:
    # Prepare: three rounds of different noise and sampling, as a ledger holds them
    from opacus.accountants import PRVAccountant, RDPAccountant

    rounds = [(1.1, 0.05, 40), (1.1, 0.05, 40), (0.9, 0.1, 25)]
    reference = RDPAccountant() if accountant == "rdp" else PRVAccountant()
    for sigma, rate, steps in rounds:
        for _ in range(steps):
            reference.step(noise_multiplier=sigma, sample_rate=rate)

    # Execute / Assert
    mine = epsilon(rounds, 1e-5, accountant)
    assert mine == pytest.approx(reference.get_epsilon(1e-5), rel=1e-3)
    assert epsilon(rounds[:1], 1e-5, accountant) < mine  # rounds compose


def test_the_noise_for_a_target_spends_at_most_it() -> None:
    sigma = noise_for_epsilon(3.0, 1e-5, 0.1, 200, "rdp")

    spent = epsilon([(sigma, 0.1, 200)], 1e-5, "rdp")

    assert 2.8 < spent <= 3.0
    assert epsilon([(sigma * 0.9, 0.1, 200)], 1e-5, "rdp") > 3.0  # less noise spends more


def _model_and_cases(count: int) -> tuple[torch.nn.Module, LocalTrainer, list[Batch]]:
    config = tiny_config(TaskId.MS_LESION)
    trainer = LocalTrainer(config)
    rng = torch.Generator().manual_seed(0)
    cases = [
        Batch(
            image=torch.randn((1, 2, 16, 16, 16), generator=rng) * (10.0 if k == 0 else 1.0),
            label=(torch.rand((1, 16, 16, 16), generator=rng) > 0.8).long(),
        )
        for k in range(count)
    ]
    return trainer.model, trainer, cases


def test_a_step_without_noise_moves_each_case_at_most_the_clip_norm() -> None:
    # Prepare: SGD of rate 1, so the step is the gradient handed to the optimiser
    model, trainer, cases = _model_and_cases(3)
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    private = PrivateSGD(clip_norm=0.01, noise_multiplier=0.0, sample_rate=0.5, cases=6, seed=1)
    before = [p.detach().clone() for p in model.parameters()]

    # Execute
    loss = private.step(model, trainer.task, optimiser, cases, torch.device("cpu"))

    # Assert: the step is a sum of 3 clipped gradients over the expected batch of 3
    with torch.no_grad():
        pairs = zip(model.parameters(), before, strict=True)
        moved = torch.sqrt(sum(((p - b) ** 2).sum() for p, b in pairs))
    assert loss is not None and torch.isfinite(loss)
    assert 0 < float(moved) <= 0.01 * 3 / 3 + 1e-7
    # while the first case's own gradient alone is far larger than the clip
    for p, b in zip(model.parameters(), before, strict=True):
        p.data.copy_(b)
    model.zero_grad()
    trainer.task.loss(model(cases[0].image), cases[0]).backward()
    raw = torch.sqrt(sum((p.grad**2).sum() for p in model.parameters() if p.grad is not None))
    assert float(raw) > 10 * 0.01


def test_an_empty_draw_still_adds_noise_of_the_stated_scale() -> None:
    # Prepare
    model, trainer, _ = _model_and_cases(0)
    optimiser = torch.optim.SGD(model.parameters(), lr=1.0)
    private = PrivateSGD(clip_norm=2.0, noise_multiplier=1.5, sample_rate=0.25, cases=8, seed=3)
    before = torch.cat([p.detach().flatten().clone() for p in model.parameters()])

    # Execute
    assert private.step(model, trainer.task, optimiser, [], torch.device("cpu")) is None

    # Assert: pure noise of std σ·C / (q·N) = 1.5 · 2 / 2 = 1.5 on every parameter
    moved = torch.cat([p.detach().flatten() for p in model.parameters()]) - before
    assert moved.numel() > 1000
    assert float(moved.std()) == pytest.approx(1.5, rel=0.1)
    assert abs(float(moved.mean())) < 0.1


def test_a_private_epoch_trains_with_poisson_draws(lesion_site: Path) -> None:
    # Prepare
    config = tiny_config(TaskId.MS_LESION).with_changes(samples_per_epoch=8, batch_size=2)
    trainer = LocalTrainer.from_sites(config, lesion_site)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    cases = len(trainer.train_data)
    trainer.private = PrivateSGD(1.0, 1.0, 2 / cases, cases, seed=11)

    # Execute
    record = trainer.fit(1, resume=False)[0]

    # Assert: 4 steps (samples / batch), the weights moved, the loss is the drawn cases'
    assert record.steps == 4
    assert any(not torch.equal(v, trainer.model.state_dict()[k]) for k, v in start.items())
    assert np.isnan(record.train_loss) or np.isfinite(record.train_loss)


def test_batch_normalisation_is_refused() -> None:
    config = tiny_config(TaskId.BRAIN_AGE)
    model = config.build_task().build_model(config.model_config)

    with pytest.raises(ValueError, match="batch normalisation mixes the cases"):
        check_private_network(model, "sfcn")
    lesion = tiny_config(TaskId.MS_LESION)
    check_private_network(lesion.build_task().build_model(lesion.model_config), "dynunet")


def test_a_group_norm_sfcn_trains_privately_for_brain_age(bids_site: Path) -> None:
    # Prepare: the SFCN with group norm (its batch norms replaced), batch 1 allowed
    grouped = SFCNConfig(channels=TINY_SFCN_CHANNELS, width=0.125, dropout=0.0, norm="group")
    config = tiny_config(TaskId.BRAIN_AGE, model_config=grouped, samples_per_epoch=8, batch_size=2)
    trainer = LocalTrainer.from_sites(config, bids_site)
    check_private_network(trainer.model, "sfcn")  # no batch statistics left
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    cases = len(trainer.train_data)
    trainer.private = PrivateSGD(1.0, 1.0, 2 / cases, cases, seed=5)

    # Execute
    record = trainer.fit(1, resume=False)[0]

    # Assert: trained; the config keeps "batch" out of its JSON (existing hashes unchanged)
    assert record.steps == 4
    assert any(not torch.equal(v, trainer.model.state_dict()[k]) for k, v in start.items())
    assert grouped.to_json()["norm"] == "group" and "norm" not in SFCNConfig().to_json()
    assert SFCNConfig.from_json(grouped.to_json()) == grouped
    with pytest.raises(
        ValueError, match=r'SFCNConfig\.norm .* this network takes "batch", "group"'
    ):
        SFCNConfig(norm="instance")
