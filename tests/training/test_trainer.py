"""LocalTrainer: determinism, global RNG untouched, parameters in and out, local names, FedProx."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from neurofed.data.subject import Clinical
from neurofed.keys import Split
from neurofed.training import (
    CaseDataset,
    LocalTrainer,
    ParameterError,
    TrainConfig,
    TrainingCase,
    steps_per_epoch,
)
from neurofed.training import trainer as trainer_module
from neurofed.training.sampling import epoch_batches
from tests.training.tiny import tiny_config


def _trainer(site: Path, **changes: object) -> LocalTrainer:
    return LocalTrainer.from_sites(tiny_config("tumor-regions", **changes), site)


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def test_same_seed_same_weights_other_seed_other_weights(glioma_site: Path) -> None:
    # Prepare
    runs = [_trainer(glioma_site, seed=s, epochs=1) for s in (3, 3, 4)]
    # Execute
    for trainer in runs:
        trainer.fit()
    # Assert
    first, again, other = (t.get_parameters() for t in runs)
    assert _same(first, again)
    assert not _same(first, other)
    assert runs[0].history[-1].train_loss == runs[1].history[-1].train_loss


def test_training_leaves_the_global_random_state_untouched(glioma_site: Path) -> None:
    # Prepare
    torch.manual_seed(123)
    np.random.seed(123)
    torch_before, numpy_before = torch.get_rng_state(), np.random.get_state()
    # Execute
    trainer = _trainer(glioma_site, epochs=1, augment={})
    trainer.fit()
    # Assert
    assert torch.equal(torch.get_rng_state(), torch_before)
    numpy_after = np.random.get_state()
    assert np.array_equal(numpy_after[1], numpy_before[1]) and numpy_after[2] == numpy_before[2]


def test_fit_records_loss_and_validation_and_counts_examples(glioma_site: Path) -> None:
    trainer = _trainer(glioma_site, epochs=2, validate_every=2)
    records = trainer.fit()
    assert [r.epoch for r in records] == [1, 2]
    assert records[0].validation == {}  # validated every 2 epochs
    assert records[1].validation["num_examples"] == 3.0
    assert all(r.steps == 2 and r.train_loss is not None for r in records)
    assert trainer.num_examples == 9 and trainer.epoch == 2 and trainer.step == 4
    assert trainer.fit(0) == [] and trainer.epoch == 2


def test_evaluate_takes_a_split_or_a_dataset(glioma_site: Path) -> None:
    trainer = _trainer(glioma_site)
    by_split = trainer.evaluate(Split.VALIDATION)
    by_default = trainer.evaluate()
    by_dataset = trainer.evaluate(CaseDataset(list(trainer.train_data)[:2]))
    assert by_split == by_default
    assert int(by_split.sums["num_examples"]) == 3 and int(by_dataset.sums["num_examples"]) == 2
    assert by_split.cases["WT/dice"].shape == (3,)  # per-case values travel too


def test_set_parameters_round_trip_and_becomes_the_fedprox_reference(glioma_site: Path) -> None:
    # Prepare: parameters of a model trained elsewhere
    source, target = _trainer(glioma_site, seed=1), _trainer(glioma_site, seed=2, fedprox_mu=0.1)
    source.fit(1)
    update = source.get_parameters()
    # Execute
    target.set_parameters(update)
    # Assert
    assert _same(target.get_parameters(), update)
    assert float(target.proximal_term().detach()) == 0.0


@pytest.mark.parametrize(
    ("spoil", "message"),
    [
        (lambda p: p.update({"model.bogus.weight": np.zeros(1, np.float32)}), "unexpected"),
        (lambda p: p.pop(next(iter(p))), "missing parameter"),
        (lambda p: p.update({k: np.zeros((1, 2), v.dtype) for k, v in _first(p)}), "has shape"),
        (lambda p: p.update({k: v.astype(np.float64) for k, v in _first(p)}), "has dtype"),
        (lambda p: p.update({k: np.full_like(v, np.nan) for k, v in _first(p)}), "NaN/Inf"),
        (lambda p: p.update({k: np.full_like(v, np.inf) for k, v in _last(p)}), "NaN/Inf"),
    ],
)
def test_set_parameters_refuses_bad_updates_and_leaves_the_model_unchanged(
    glioma_site: Path, spoil: object, message: str
) -> None:
    # Prepare: a valid update made of other values, then spoilt
    trainer = _trainer(glioma_site)
    before = trainer.get_parameters()
    update = {k: v + 1 if v.dtype.kind == "f" else v for k, v in before.items()}
    spoil(update)  # type: ignore[operator]
    # Execute / Assert
    with pytest.raises(ParameterError, match=message):
        trainer.set_parameters(update)
    assert _same(trainer.get_parameters(), before)


def _first(params: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    return [next(iter(params.items()))]


def _last(params: dict[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    floats = [(k, v) for k, v in params.items() if v.dtype.kind == "f"]
    return floats[-1:]


def test_local_parameters_are_neither_sent_nor_overwritten(glioma_site: Path) -> None:
    # Prepare: every bias stays local
    trainer = _trainer(glioma_site, local_parameters=("*.bias",))
    local = trainer.local_names()
    everything = trainer.get_parameters(include_local=True)
    sent = trainer.get_parameters()
    # Execute: a global update that changes every entry (local ones included)
    update = {k: v + 1 for k, v in everything.items()}
    trainer.set_parameters(update)
    after = trainer.get_parameters(include_local=True)
    # Assert
    assert local and all(name.endswith(".bias") for name in local)
    assert set(sent) == set(everything) - set(local)
    assert all(np.array_equal(after[k], everything[k]) for k in local)
    assert all(np.array_equal(after[k], update[k]) for k in sent)


def test_fedprox_term_is_zero_at_the_reference_and_pulls_weights_towards_it(
    glioma_site: Path,
) -> None:
    # Prepare: the same start, trained with and without the proximal term
    reference = _trainer(glioma_site, seed=5).get_parameters()
    plain = _trainer(glioma_site, seed=5, epochs=2, learning_rate=3e-2)
    prox = _trainer(glioma_site, seed=5, epochs=2, learning_rate=3e-2, fedprox_mu=50.0)
    for trainer in (plain, prox):
        trainer.set_parameters(reference)
    assert float(prox.proximal_term().detach()) == 0.0
    # Execute
    plain.fit()
    prox.fit()
    # Assert: the term is positive once weights moved, and mu keeps them closer to w_global

    def distance(trainer: LocalTrainer) -> float:
        current = trainer.get_parameters()
        names = [n for n, p in trainer.model.named_parameters()]
        return sum(float(((current[n] - reference[n]) ** 2).sum()) for n in names)

    assert float(prox.proximal_term().detach()) > 0.0
    assert float(plain.proximal_term().detach()) == 0.0  # mu = 0: no term
    assert distance(prox) < 0.5 * distance(plain)
    expected = 0.5 * 50.0 * distance(prox)
    assert float(prox.proximal_term().detach()) == pytest.approx(expected, rel=1e-4)


def test_poly_schedule_sets_each_epochs_learning_rate(glioma_site: Path) -> None:
    trainer = _trainer(
        glioma_site, epochs=3, lr_schedule="poly", validate_every=0, samples_per_epoch=4
    )
    rates: list[float] = []
    trainer.fit(on_epoch=lambda _: rates.append(trainer.optimizer.param_groups[0]["lr"]))
    expected = [1e-2 * f for f in (1.0, (2 / 3) ** 0.9, (1 / 3) ** 0.9)]
    assert rates == pytest.approx(expected, rel=1e-12)


def _brain_age_cases(n: int) -> CaseDataset:
    rng = np.random.default_rng(0)
    return CaseDataset(
        [
            TrainingCase(
                f"c{i}",
                "site",
                rng.standard_normal((1, 32, 32, 32)).astype(np.float32),
                None,
                Clinical(age=40.0 + 10 * i),
            )
            for i in range(n)
        ]
    )


@pytest.mark.parametrize("num_cases", [1, 3])
def test_batch_norm_model_trains_when_the_last_batch_would_hold_one_sample(
    num_cases: int,
) -> None:
    # Prepare: SFCN has batch norm down to a 1³ map; 3 (or 1) cases in batches of 2
    config = tiny_config(
        "brain-age", model_config={"width": 0.0625}, batch_size=2, samples_per_epoch=None
    )
    trainer = LocalTrainer(config, _brain_age_cases(num_cases))
    # Execute
    records = trainer.fit(epochs=1)
    # Assert
    steps = steps_per_epoch(config, trainer.train_data)
    assert steps == (num_cases + 1) // 2
    assert records[0].steps == steps and trainer.step == steps
    assert np.isfinite(records[0].train_loss)


def _tiny_sfcn(**changes: Any) -> TrainConfig:
    """A tiny brain-age SFCN (with batch norm, without dropout) in batches of 2."""
    model = {"width": 0.0625, "dropout": 0.0}
    return tiny_config("brain-age", model_config=model, batch_size=2, **changes)


def test_after_fit_batch_norm_holds_the_last_epochs_statistics_at_the_final_weights() -> None:
    # Prepare: a tiny SFCN whose weights move a lot in each epoch of 4 steps
    config = _tiny_sfcn(samples_per_epoch=8, learning_rate=0.1)
    trainer = LocalTrainer(config, _brain_age_cases(6))
    # Execute
    trainer.fit(epochs=2)
    # Assert: the first batch norm's running statistics are the plain average, over the last
    # epoch's own batches, of what the final weights feed it (an exponential average of the steps'
    # statistics, momentum 0.1 from zero, would hold about a third of the mean)
    bn = next(m for m in trainer.model.modules() if isinstance(m, torch.nn.BatchNorm3d))
    replay = copy.deepcopy(trainer.model).eval()
    inputs: list[torch.Tensor] = []
    layer = next(m for m in replay.modules() if isinstance(m, torch.nn.BatchNorm3d))
    layer.register_forward_hook(lambda _m, args, _out: inputs.append(args[0]))
    with torch.no_grad():
        for batch in epoch_batches(trainer.train_data, config, 2, fill_single=True):
            replay(batch.image)
    assert len(inputs) == 4
    means = torch.stack([x.mean(dim=(0, 2, 3, 4)) for x in inputs]).mean(dim=0)
    variances = torch.stack([x.transpose(0, 1).flatten(1).var(dim=1) for x in inputs]).mean(0)
    assert means.abs().max() > 1e-3
    assert torch.allclose(bn.running_mean, means, rtol=1e-4, atol=1e-6)
    assert torch.allclose(bn.running_var, variances, rtol=1e-4, atol=1e-6)
    assert bn.momentum == 0.1


def test_batch_norm_is_replayed_only_where_the_model_is_validated_or_handed_back(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: 5 epochs validated every 2nd; count the replays
    config = _tiny_sfcn(samples_per_epoch=4, validate_every=2)
    trainer = LocalTrainer(config, _brain_age_cases(4), _brain_age_cases(2))
    replayed: list[int] = []
    refresh = trainer_module.refresh_batch_norm

    def counting(model: torch.nn.Module, images: Any) -> bool:
        replayed.append(trainer.epoch + 1)
        return refresh(model, images)

    monkeypatch.setattr(trainer_module, "refresh_batch_norm", counting)
    # Execute
    records = trainer.fit(epochs=5)
    # Assert: epochs 2 and 4 (validated) and 5 (the last)
    assert replayed == [2, 4, 5]
    assert [r.epoch for r in records if r.validation] == [2, 4, 5]
