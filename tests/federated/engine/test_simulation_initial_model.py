"""``neurofed simulate`` of a study with ``[initial_model]``: round 1 starts from the given
weights (one ~20 s simulation), and changed weights are refused before any process starts."""

from __future__ import annotations

import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from neurofed.artifacts import sha256_file
from neurofed.cli.main import app
from neurofed.federated.server import FederatedRun
from neurofed.keys import TaskId
from neurofed.training import LocalTrainer, save_model
from neurofed.training.config import TrainConfig
from neurofed.training.model_folder import MODEL_WEIGHTS
from tests.federated.conftest import tiny_study

#: A step so small that training leaves every float32 weight as it was (|Δw| ≈ 1e-12 per step).
NO_STEP = 1e-12


def _study_file(folder: Path, sha256: str) -> Path:
    """``folder/study.toml``: the tiny 2-site, 1-round study starting from ``models/public``."""
    folder.mkdir(parents=True, exist_ok=True)
    study = tiny_study(rounds=1, min_sites=2, train={"learning_rate": NO_STEP})
    text = f'{study.to_toml()}\n[initial_model]\npath = "models/public"\nsha256 = "{sha256}"\n'
    path = folder / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


def _public_model(folder: Path) -> tuple[Path, str]:
    """A tiny brain-age model folder initialised from another seed than the study's."""
    config = TrainConfig(
        task=TaskId.BRAIN_AGE, model_config={"width": 0.0625}, seed=99, device="cpu", epochs=1
    )
    save_model(folder, LocalTrainer(config).model, config)
    return folder, sha256_file(folder / MODEL_WEIGHTS)


def _simulate(study: Path, sites: list[Path], out: Path, *options: str) -> tuple[int, str]:
    args = ["simulate", str(study), "--out", str(out), *options]
    for site in sites:
        args += ["--site", str(site)]
    outcome = CliRunner().invoke(app, args)
    return outcome.exit_code, outcome.output


@pytest.mark.slow
def test_a_simulated_study_starts_round_one_from_the_initial_model(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: the model folder next to the study file, named by a relative path
    model, sha = _public_model(tmp_path / "lead" / "models" / "public")
    study = _study_file(tmp_path / "lead", sha)
    # Execute
    with warnings.catch_warnings(record=True) as warned:
        warnings.simplefilter("always")
        code, output = _simulate(study, age_sites, tmp_path / "run")
    # Assert: with a no-op step the round-1 global model is the initial model's weights
    assert code == 0, output
    assert not [w for w in warned if "secret" in str(w.message)]  # a weights hash is no secret
    initial = load_file(str(model / MODEL_WEIGHTS))
    round_one = load_file(str(tmp_path / "run/checkpoints/round-1/global.safetensors"))
    seeded = FederatedRun(tiny_study(), tmp_path / "seeded")
    seeded.start(["site-1"])
    network = LocalTrainer(seeded.train_config()).model
    trained = [name for name, _ in network.named_parameters()]  # not batch-norm statistics
    assert trained and round_one.keys() == initial.keys()
    for name in trained:
        np.testing.assert_allclose(round_one[name], initial[name], rtol=0, atol=1e-6)
    assert any(
        not np.allclose(seeded.params[name], initial[name].reshape(seeded.params[name].shape))
        for name in trained
    )  # a run from the study's seed would have started elsewhere
    kept = tomllib.loads((tmp_path / "run/study.toml").read_text())["initial_model"]
    assert kept == {"path": str(model), "sha256": sha}  # resolved from the study file's folder


def test_the_cli_refuses_other_weights_before_starting_with_both_hashes(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: the study names other weights than the folder's
    _, sha = _public_model(tmp_path / "lead" / "models" / "public")
    wrong = "f" * 64
    study = _study_file(tmp_path / "lead", wrong)
    # Execute
    code, output = _simulate(study, age_sites, tmp_path / "run")
    # Assert
    assert code == 1
    assert "[initial_model] path" in output and sha in output and wrong in output
    assert f'set sha256 = "{sha}"' in output
    assert not (tmp_path / "run").exists()  # no process started, no run folder made


def test_the_cli_refuses_a_missing_initial_model_before_starting(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    study = _study_file(tmp_path / "lead", "a" * 64)

    code, output = _simulate(study, age_sites, tmp_path / "run")

    assert code == 1
    assert str(tmp_path / "lead" / "models" / "public") in output
    assert "no such model folder" in output and not (tmp_path / "run").exists()
