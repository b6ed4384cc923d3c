"""Checkpoints: bit-exact round trip, resume equals an uninterrupted run, no pickle anywhere."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofed.training import CheckpointError, EpochRecord, LocalTrainer, latest_checkpoint
from neurofed.training.checkpoint import list_checkpoints
from tests.training.tiny import tiny_config

PICKLE_MAGIC = (b"\x80\x02", b"\x80\x03", b"\x80\x04", b"\x80\x05")


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def assert_no_pickle(folder: Path) -> None:
    """No file under ``folder`` is a pickle or a torch.save zip (which holds data.pkl)."""
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert files
    for path in files:
        assert path.suffix not in {".pt", ".pth", ".pkl", ".pickle", ".ckpt"}, path
        head = path.read_bytes()[:2]
        assert head not in PICKLE_MAGIC, path
        if zipfile.is_zipfile(path):
            names = zipfile.ZipFile(path).namelist()
            assert not any(n.endswith(".pkl") for n in names), path


def test_checkpoint_round_trip_is_bit_exact(glioma_site: Path, tmp_path: Path) -> None:
    # Prepare: a trained model with Adam state and a FedProx reference
    config = tiny_config("tumor-regions", epochs=1, fedprox_mu=0.01)
    trainer = LocalTrainer.from_sites(config, glioma_site, run_dir=tmp_path)
    trainer.set_parameters(trainer.get_parameters())
    trainer.fit()
    path = latest_checkpoint(tmp_path / "checkpoints")
    assert path is not None and path.name == "epoch-0001.json"
    # Execute
    restored = LocalTrainer(config, trainer.train_data, run_dir=tmp_path)
    restored.load_checkpoint(path)
    # Assert
    assert _same(restored.get_parameters(), trainer.get_parameters())
    mine, theirs = trainer.optimizer.state_dict(), restored.optimizer.state_dict()
    assert mine["param_groups"] == theirs["param_groups"]
    for index, entries in mine["state"].items():
        for key, value in entries.items():
            assert torch.equal(value, theirs["state"][index][key])
    assert (restored.epoch, restored.step) == (1, trainer.step)
    assert [r.to_json() for r in restored.history] == [r.to_json() for r in trainer.history]
    assert float(restored.proximal_term().detach()) == float(trainer.proximal_term().detach())
    record = json.loads(path.read_text())
    assert record["task"] == "tumor-regions" and record["model_name"] == "residual-unet"
    assert record["train_config"] == config.to_json()
    assert {"neurofed", "torch", "monai"} <= set(record["versions"])
    assert_no_pickle(tmp_path)


@pytest.mark.parametrize("task_id", ["tumor-regions", "brain-age"])
def test_resumed_fit_equals_an_uninterrupted_one(
    task_id: str, glioma_site: Path, bids_site: Path, tmp_path: Path
) -> None:
    # Prepare: augmentation and dropout on, so every random draw must be replayed
    site = glioma_site if task_id == "tumor-regions" else bids_site
    changes: dict[str, object] = {"epochs": 3, "augment": {}}
    if task_id == "brain-age":
        changes["model_config"] = {"width": 0.125, "dropout": 0.3}
    config = tiny_config(task_id, **changes)
    straight = LocalTrainer.from_sites(config, site)
    straight.fit()

    def stop_after_epoch_two(record: EpochRecord) -> None:
        if record.epoch == 2:
            raise KeyboardInterrupt

    interrupted = LocalTrainer.from_sites(config, site, run_dir=tmp_path)
    with pytest.raises(KeyboardInterrupt):
        interrupted.fit(on_epoch=stop_after_epoch_two)
    # Execute: a new process would build a fresh trainer on the same run folder
    resumed = LocalTrainer.from_sites(config, site, run_dir=tmp_path)
    records = resumed.fit()
    # Assert
    assert [r.epoch for r in records] == [1, 2, 3]
    assert _same(resumed.get_parameters(), straight.get_parameters())
    assert [r.train_loss for r in resumed.history] == [r.train_loss for r in straight.history]
    assert resumed.step == straight.step


def test_finished_run_is_not_trained_again(glioma_site: Path, tmp_path: Path) -> None:
    config = tiny_config("tumor-regions", epochs=1, validate_every=0)
    first = LocalTrainer.from_sites(config, glioma_site, run_dir=tmp_path)
    first.fit()
    again = LocalTrainer.from_sites(config, glioma_site, run_dir=tmp_path)
    records = again.fit()
    assert [r.epoch for r in records] == [1] and again.step == first.step
    assert _same(again.get_parameters(), first.get_parameters())


def test_damaged_newest_checkpoint_falls_back_to_the_previous(
    glioma_site: Path, tmp_path: Path
) -> None:
    # Prepare: two checkpoints, the newest tensor file damaged
    config = tiny_config("tumor-regions", epochs=2, validate_every=0)
    LocalTrainer.from_sites(config, glioma_site, run_dir=tmp_path).fit()
    folder = tmp_path / "checkpoints"
    newest = folder / "epoch-0002.safetensors"
    newest.write_bytes(newest.read_bytes()[:-8] + b"garbage!")
    # Execute / Assert
    assert latest_checkpoint(folder) == folder / "epoch-0001.json"
    with pytest.raises(CheckpointError, match="SHA-256"):
        LocalTrainer(config, run_dir=tmp_path).load_checkpoint(folder / "epoch-0002.json")


def test_checkpoint_of_other_settings_is_refused(glioma_site: Path, tmp_path: Path) -> None:
    config = tiny_config("tumor-regions", epochs=1, validate_every=0)
    LocalTrainer.from_sites(config, glioma_site, run_dir=tmp_path).fit()
    other = LocalTrainer.from_sites(
        config.with_changes(learning_rate=0.5, epochs=2), glioma_site, run_dir=tmp_path
    )
    with pytest.raises(CheckpointError, match=r"other settings \(learning_rate differ\)"):
        other.fit()


def test_only_the_newest_checkpoints_are_kept(glioma_site: Path, tmp_path: Path) -> None:
    config = tiny_config("tumor-regions", epochs=3, validate_every=0, samples_per_epoch=4)
    LocalTrainer.from_sites(config, glioma_site, run_dir=tmp_path, keep_checkpoints=2).fit()
    names = [p.name for p in list_checkpoints(tmp_path / "checkpoints")]
    assert names == ["epoch-0002.json", "epoch-0003.json"]
    assert sorted(p.name for p in (tmp_path / "checkpoints").glob("*.safetensors")) == [
        "epoch-0002.safetensors",
        "epoch-0003.safetensors",
    ]
