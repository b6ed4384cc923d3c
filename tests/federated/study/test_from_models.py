"""An evaluation study written from model folders, and the server's weights for each round."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurofed.artifacts import sha256_file
from neurofed.federated.server.run import FederatedRun
from neurofed.federated.study import Study, StudyError, StudyKind
from neurofed.federated.study.from_models import evaluation_study
from neurofed.federated.study.initial_model import InitialModelError
from neurofed.keys import Split
from neurofed.training import LocalTrainer, save_model
from neurofed.training.model_folder import MODEL_WEIGHTS
from tests.federated.conftest import tiny_study


def _model(folder: Path, seed: int, **changes: object) -> Path:
    """A tiny brain-age model folder (initialised from ``seed``) as the tiny study trains."""
    config = tiny_study().train_config(device="cpu").with_changes(seed=seed, **changes)
    save_model(folder, LocalTrainer(config).model, config)
    return folder


def _study(models: dict[str, Path]) -> Study:
    return evaluation_study(
        models, name="cross-site", selection=tiny_study().selection, split=Split.VALIDATION
    )


def test_the_study_names_each_model_by_its_weights_and_takes_its_settings(tmp_path: Path) -> None:
    # Prepare: two models of one network, trained with other learning rates
    a = _model(tmp_path / "a", 1)
    b = _model(tmp_path / "b", 2, learning_rate=0.5, samples_per_epoch=8)

    # Execute
    study = _study({"federated": a, "local": b})

    # Assert: one round per model, their hashes, the first model's settings, all checked
    assert study.kind is StudyKind.EVALUATE and study.rounds == 2
    assert [(m.name, m.model.sha256) for m in study.evaluated_models()] == [
        ("federated", sha256_file(a / MODEL_WEIGHTS)),
        ("local", sha256_file(b / MODEL_WEIGHTS)),
    ]
    assert study.evaluation_split is Split.VALIDATION
    assert study.load_initial_model() is not None  # every model fits the study


def test_models_of_different_networks_or_none_are_refused(tmp_path: Path) -> None:
    a = _model(tmp_path / "a", 1)
    wider = _model(tmp_path / "wide", 1, model_config={"width": 0.125})
    with pytest.raises(StudyError, match=r"wide \('b'\) differs from .*\[model\]"):
        _study({"a": a, "b": wider})
    with pytest.raises(StudyError, match="give at least one model folder"):
        _study({})


def test_each_round_sends_its_own_model_and_stops_when_one_changed_on_disk(
    tmp_path: Path,
) -> None:
    # Prepare: a run started (every model checked), then model b is replaced
    a, b = _model(tmp_path / "a", 1), _model(tmp_path / "b", 2)
    run = FederatedRun(_study({"a": a, "b": b}), tmp_path / "run")
    run.start(["site-1"])
    first = run.evaluated_parameters(1)
    _model(b, 7)

    # Execute / Assert: round 1 sends a's weights; round 2 refuses b's new weights by hash
    saved = _weights(a)
    assert set(first) == set(saved)
    assert all(np.array_equal(first[k], saved[k]) for k in saved)
    assert run.initial_parameters() == {}  # an evaluation has no initial global model
    with pytest.raises(InitialModelError, match="but the study expects"):
        run.evaluated_parameters(2)


def _weights(folder: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(folder / MODEL_WEIGHTS))
