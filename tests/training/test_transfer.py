"""Transfer of a brain-age model to SDMT: ``head`` trains only the last layer, ``full`` all."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neurofed.models import TransferMode
from neurofed.training import (
    RUN_CONFIG,
    LocalTrainer,
    ModelFolderError,
    RunFolderError,
    TrainConfig,
    load_model,
    save_model,
    train_local,
    train_transfer,
)
from neurofed.training.model_folder import MODEL_WEIGHTS
from tests.training.tiny import tiny_config

#: The tiny SFCN every test here uses.
TINY_SFCN = {"width": 0.0625, "dropout": 0.0}
CPU = {"device": "cpu"}


def _brain_age(**changes: object) -> TrainConfig:
    return tiny_config("brain-age", **({"model_config": TINY_SFCN} | changes))


@pytest.fixture(scope="module")
def source_model(bids_site: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A brain-age model trained for 2 epochs on the tiny BIDS site (its ``model/`` folder)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    run = train_local(_brain_age(), bids_site, tmp_path_factory.mktemp("source") / "run")
    torch.set_num_threads(threads)
    yield run.model_dir


def _state(folder: Path) -> dict[str, torch.Tensor]:
    return load_model(folder).model.state_dict()


def _transfer(source: Path, site: Path, run: Path, mode: str, **changes: object) -> Path:
    settings = {"epochs": 2, "learning_rate": 1e-2} | CPU | changes
    return train_transfer(source, [site], run, mode=mode, changes=settings).model_dir


def test_transfer_config_round_trips_and_names_the_allowed_modes() -> None:
    # Prepare
    config = _brain_age(transfer="head")
    # Execute
    again = TrainConfig.from_json(json.loads(json.dumps(config.to_json())))
    # Assert
    assert config.transfer is TransferMode.HEAD and again == config
    assert _brain_age().transfer is None
    with pytest.raises(ValueError, match=r"TrainConfig.transfer = 'last' is invalid: use one of"):
        _brain_age(transfer="last")


def test_head_mode_optimises_only_the_head() -> None:
    # Execute
    head, full = (LocalTrainer(_brain_age(transfer=mode)) for mode in ("head", "full"))
    # Assert
    optimised = {id(p) for group in head.optimizer.param_groups for p in group["params"]}
    assert optimised == {id(head.model.head.weight), id(head.model.head.bias)}
    everything = {id(p) for group in full.optimizer.param_groups for p in group["params"]}
    assert everything == {id(p) for p in full.model.parameters()}


def test_head_transfer_changes_only_the_head_and_full_transfer_the_backbone(
    source_model: Path, bids_site: Path, tmp_path: Path
) -> None:
    # Execute
    head = _transfer(source_model, bids_site, tmp_path / "head", "head")
    full = _transfer(source_model, bids_site, tmp_path / "full", "full")
    # Assert: in head mode every backbone tensor, BN running statistics included, is the source's
    source, after_head, after_full = _state(source_model), _state(head), _state(full)
    backbone = [k for k in source if not k.startswith("head.")]
    assert any("running_mean" in k for k in backbone)
    for key in backbone:
        assert torch.equal(after_head[key], source[key]), key
    assert not torch.equal(after_head["head.weight"], source["head.weight"])
    changed = [k for k in backbone if not torch.equal(after_full[k], source[k])]
    assert "features.0.0.weight" in changed and any("running_var" in k for k in changed)


def test_transfer_run_records_the_source_the_new_target_and_the_score_before(
    source_model: Path, bids_site: Path, tmp_path: Path
) -> None:
    # Execute
    settings = {"epochs": 1} | CPU
    head = train_transfer(source_model, [bids_site], tmp_path / "h", mode="head", changes=settings)
    full = train_transfer(source_model, [bids_site], tmp_path / "f", mode="full", changes=settings)
    # Assert
    record = json.loads((head.run_dir / RUN_CONFIG).read_text())
    digest = hashlib.sha256((source_model / MODEL_WEIGHTS).read_bytes()).hexdigest()
    assert record["kind"] == "transfer"
    assert record["initial_model"] == {"path": str(source_model.resolve()), "sha256": digest}
    config = TrainConfig.from_json(record["train_config"])
    source = load_model(source_model).config
    assert config.transfer is TransferMode.HEAD and config.task_config.target.value == "sdmt"
    assert config.model_config == source.model_config and config.preprocess == source.preprocess
    assert 20 < config.task_config.target_mean < 65  # refitted on the SDMT of the training cases
    # epoch 0 scores the same source model on SDMT, whatever the mode
    assert head.untrained == full.untrained and head.untrained["num_examples"] == 3.0
    assert [r.epoch for r in head.history] == [0, 1]


def test_interrupted_head_transfer_resumes_to_the_same_weights_and_stays_frozen(
    source_model: Path, bids_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: interrupt right after the checkpoint of epoch 2 of 3
    original = LocalTrainer.save_checkpoint

    def interrupt_after_epoch_two(self: LocalTrainer) -> Path:
        path = original(self)
        if self.epoch == 2:
            raise KeyboardInterrupt
        return path

    monkeypatch.setattr(LocalTrainer, "save_checkpoint", interrupt_after_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        _transfer(source_model, bids_site, tmp_path / "a", "head", epochs=3)
    monkeypatch.undo()
    # Execute
    resumed = _transfer(source_model, bids_site, tmp_path / "a", "head", epochs=3)
    straight = _transfer(source_model, bids_site, tmp_path / "b", "head", epochs=3)
    # Assert
    assert (resumed / MODEL_WEIGHTS).read_bytes() == (straight / MODEL_WEIGHTS).read_bytes()
    source, after = _state(source_model), _state(resumed)
    assert all(torch.equal(after[k], source[k]) for k in source if not k.startswith("head."))
    metrics = json.loads((tmp_path / "a" / "metrics.json").read_text())
    assert [r["epoch"] for r in metrics["records"]] == [0, 1, 2, 3]


def test_a_model_of_another_task_or_network_is_refused(
    source_model: Path, bids_site: Path, tmp_path: Path
) -> None:
    # Prepare: a tumor-regions model folder, and a wider SFCN
    tumour = tiny_config("tumor-regions")
    task = tumour.build_task()
    tumour_dir = save_model(tmp_path / "tumour", task.build_model(tumour.model_config), tumour)
    wide = _brain_age(model_config={"width": 0.125, "dropout": 0.0})
    wide_dir = save_model(tmp_path / "wide", wide.build_task().build_model(wide.model_config), wide)
    trainer = LocalTrainer(_brain_age(transfer="head"))
    # Execute / Assert
    with pytest.raises(ModelFolderError, match="transfer is for brain-age models") as refused:
        _transfer(tumour_dir, bids_site, tmp_path / "run", "head")
    assert str(tumour_dir) in str(refused.value) and "'tumor-regions' model" in str(refused.value)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match=r"'residual-unet' network .* builds a 'sfcn' network"):
        trainer.load_initial_weights(load_model(tumour_dir))
    with pytest.raises(ValueError, match=r"config differs .*width: 0.125 vs 0.0625"):
        trainer.load_initial_weights(load_model(wide_dir))


def test_a_run_folder_made_from_another_source_is_refused(
    source_model: Path, bids_site: Path, tmp_path: Path
) -> None:
    # Prepare: a transfer run, and another model of the same network (other seed, untrained)
    run = tmp_path / "run"
    _transfer(source_model, bids_site, run, "head", epochs=1)
    other = load_model(source_model).config.with_changes(seed=7)
    other_dir = save_model(
        tmp_path / "other", other.build_task().build_model(other.model_config), other
    )
    # Execute / Assert
    with pytest.raises(RunFolderError, match="holds a transfer from another model") as refused:
        _transfer(other_dir, bids_site, run, "head", epochs=1)
    assert f"re-run with --from {source_model.resolve()}" in str(refused.value)
