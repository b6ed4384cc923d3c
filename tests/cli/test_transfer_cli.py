"""``neurofed train transfer``: a brain-age model moved to SDMT, end to end from the CLI."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.training import save_model
from neurofed.training.baselines import RUN_CONFIG, RUN_METRICS
from neurofed.training.model_folder import MODEL_WEIGHTS
from tests.training.sites import prepare_site, write_bids_site
from tests.training.tiny import TINY_SFCN_CHANNELS, tiny_config

runner = CliRunner()

#: Learning rates that make SDMT clearly better after transfer than before on the tiny site, for
#: every seed of source model and transfer tried (0-4, 1 or 2 threads; full: MAE 7.3-8.7 →
#: 2.7-4.4, head → 1.4-3.3): the head alone needs a larger step to turn an age regressor into an
#: SDMT one.
TRANSFER = {"head": ["--lr", "0.02"], "full": ["--lr", "0.002"]}
COMMON = ["--epochs", "10", "--device", "cpu", "--threads", "1"]


@pytest.fixture(autouse=True)
def restore_torch_threads() -> Iterator[None]:
    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """24 BIDS cases of 32³ voxels with age and SDMT: 18 train, 6 validation."""
    return prepare_site(write_bids_site(tmp_path_factory.mktemp("sites") / "bids", 24))


@pytest.fixture(scope="module")
def source(site: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A brain-age run on ``site`` (8 epochs of a tiny SFCN), trained from the CLI."""
    root = tmp_path_factory.mktemp("source")
    config = tiny_config(
        "brain-age",
        # four pooling blocks (see TINY_SFCN_CHANNELS): with five, full transfer retrains batch
        # norms over 4 values and gains only ~1 year of MAE for some seeds
        model_config={"channels": list(TINY_SFCN_CHANNELS), "width": 0.0625, "dropout": 0.0},
        epochs=8,
        samples_per_epoch=None,
    )
    (root / "config.json").write_text(json.dumps(config.to_json()))
    args = ["--site", str(site), "--out", str(root / "run"), "--config", str(root / "config.json")]
    result = runner.invoke(app, ["train", "local", *args, "--threads", "1"])
    assert result.exit_code == 0, result.output
    return root / "run"


@pytest.mark.parametrize("mode", ["head", "full"])
def test_transfer_to_sdmt_beats_the_source_model(
    mode: str, source: Path, site: Path, tmp_path: Path
) -> None:
    # Execute
    out = tmp_path / mode
    args = ["--from", str(source / "model"), "--site", str(site), "--out", str(out)]
    result = runner.invoke(
        app, ["train", "transfer", *args, "--mode", mode, *TRANSFER[mode], *COMMON]
    )
    # Assert: a run folder like the baselines', and SDMT better after transfer than before
    assert result.exit_code == 0, result.output
    assert {p.name for p in out.iterdir()} == {RUN_CONFIG, RUN_METRICS, "checkpoints", "model"}
    assert (out / "model" / MODEL_WEIGHTS).is_file()
    config = json.loads((out / RUN_CONFIG).read_text())
    assert config["kind"] == "transfer" and config["sites"] == ["bids"]
    assert config["train_config"]["transfer"] == mode
    assert config["train_config"]["task_config"]["target"] == "sdmt"
    assert config["initial_model"]["path"] == str((source / "model").resolve())
    records = json.loads((out / RUN_METRICS).read_text())["records"]
    assert [r["epoch"] for r in records] == list(range(11))
    before, after = records[0]["validation"], records[-1]["validation"]
    assert after["mae"] < before["mae"] - 1.0, (before, after)
    assert "(transfer, " in result.output and "epoch 10/10" in result.output
    assert "source" in result.output and "transferred" in result.output


def test_errors_exit_2_with_a_clear_message(source: Path, site: Path, tmp_path: Path) -> None:
    # Prepare: an empty folder, a run folder instead of its model, a raw site, a tumour model
    raw = write_bids_site(tmp_path / "raw", 2)
    tumour = tiny_config("tumor-regions")
    tumour_model = tumour.build_task().build_model(tumour.model_config)
    tumour_dir = save_model(tmp_path / "tumour", tumour_model, tumour)
    (tmp_path / "empty").mkdir()
    cases = [
        (tmp_path / "empty", site, "model.json: not found"),
        (source, site, "pass RUN/model, not the run folder"),
        (source / "model", raw, f"run `neurofed site check {raw}` first"),
        (tumour_dir, site, "transfer is for brain-age models"),
    ]
    for model, data, message in cases:
        # Execute
        out = tmp_path / "run"
        args = ["--from", str(model), "--site", str(data), "--out", str(out), "--mode", "head"]
        result = runner.invoke(app, ["train", "transfer", *args, *COMMON])
        # Assert
        assert result.exit_code == 2, result.output
        assert message in result.output
        assert not out.exists()


def test_local_training_refuses_a_transfer_config(site: Path, tmp_path: Path) -> None:
    # Prepare: the config of a head transfer, as a transfer run's config.json holds it
    config = tiny_config("brain-age", transfer="head")
    (tmp_path / "config.json").write_text(json.dumps({"train_config": config.to_json()}))
    # Execute
    args = ["--site", str(site), "--out", str(tmp_path / "run"), "--config", str(tmp_path)]
    result = runner.invoke(app, ["train", "local", *args])
    # Assert
    assert result.exit_code == 2
    assert "use `neurofed train transfer --from MODEL`" in result.output
