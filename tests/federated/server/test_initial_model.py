"""The server starts a study from its ``[initial_model]``: the weights sent in round 1, and the
refusals (changed weights, missing or damaged folder, another task, another network, a plan
whose network the weights do not fit)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file

from neurofed.artifacts import sha256_file
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.server.planning import PlanningError
from neurofed.federated.study import Study
from neurofed.federated.study.initial_model import InitialModelError
from neurofed.federated.study.plan import PLAN_FILE
from neurofed.keys import TaskId
from neurofed.training import LocalTrainer, save_model
from neurofed.training.config import TrainConfig
from neurofed.training.model_folder import MODEL_JSON, MODEL_WEIGHTS
from tests.federated.conftest import planned_study, tiny_study
from tests.federated.server.test_planning import SITES, _fingerprint_round, _workers

TINY_SFCN = {"width": 0.0625}  # the tiny studies' [model]


def _model_folder(folder: Path, config: TrainConfig) -> tuple[Path, str]:
    """A model folder of ``config``'s network, initialised from its seed; and its weights' hash."""
    save_model(folder, LocalTrainer(config).model, config)
    return folder, sha256_file(folder / MODEL_WEIGHTS)


def _age_model(folder: Path, **model: Any) -> tuple[Path, str]:
    config = TrainConfig(
        task=TaskId.BRAIN_AGE, model_config=TINY_SFCN | model, seed=99, device="cpu", epochs=1
    )
    return _model_folder(folder, config)


def _starting_from(study: Study, folder: Path, sha256: str, target: str = "age") -> Study:
    """``study`` with ``[initial_model]`` (and for brain-age, another ``target``)."""
    text = study.to_toml().replace('target = "age"', f'target = "{target}"')
    return Study.from_toml(f'{text}\n[initial_model]\npath = "{folder}"\nsha256 = "{sha256}"\n')


def _equal(params: dict[str, np.ndarray], expected: dict[str, np.ndarray]) -> bool:
    return params.keys() == expected.keys() and all(
        np.array_equal(params[k], v.reshape(params[k].shape)) for k, v in expected.items()
    )


def test_round_one_sends_the_initial_models_weights(tmp_path: Path) -> None:
    # Prepare
    folder, sha = _age_model(tmp_path / "public-initial")
    study = _starting_from(tiny_study(), folder, sha)
    seeded = FederatedRun(tiny_study(), tmp_path / "seeded")
    seeded.start(SITES)
    # Execute
    run = FederatedRun(study, tmp_path / "run")
    run.start(SITES)
    # Assert: exactly the file's weights (buffers included), not the study seed's
    weights = load_file(str(folder / MODEL_WEIGHTS))
    assert _equal(run.params, weights)
    assert not _equal(seeded.params, weights)
    assert run.task_request(1).study["initial_model"] == {"path": str(folder), "sha256": sha}


def test_a_brain_age_model_starts_a_study_of_another_target(tmp_path: Path) -> None:
    # Prepare: the transfer case, an age model for an SDMT study (same network, other target)
    folder, sha = _age_model(tmp_path / "age-model")
    study = _starting_from(tiny_study(), folder, sha, target="sdmt")
    # Execute
    run = FederatedRun(study, tmp_path / "run")
    run.start(SITES)
    # Assert
    assert study.task_config.target.value == "sdmt"  # type: ignore[attr-defined]
    assert _equal(run.params, load_file(str(folder / MODEL_WEIGHTS)))


def test_other_weights_are_refused_naming_both_hashes_and_the_fix(tmp_path: Path) -> None:
    folder, sha = _age_model(tmp_path / "model")
    wrong = "0" * 64
    run = FederatedRun(_starting_from(tiny_study(), folder, wrong), tmp_path / "run")

    with pytest.raises(InitialModelError) as caught:
        run.start(SITES)

    message = str(caught.value)
    assert str(folder) in message and sha in message and wrong in message
    assert f'set sha256 = "{sha}"' in message and "approve it again" in message
    assert not (tmp_path / "run").exists()  # the fixed study (another hash) can use it


def test_a_missing_folder_is_refused_naming_the_path_and_the_fix(tmp_path: Path) -> None:
    study = _starting_from(tiny_study(), tmp_path / "nowhere", "ab" * 32)

    with pytest.raises(InitialModelError, match=r"nowhere'?: no such model folder; copy"):
        FederatedRun(study, tmp_path / "run").start(SITES)


def test_a_folder_changed_after_sealing_is_refused(tmp_path: Path) -> None:
    # Prepare: the weights are the study's, but model.json was edited after the model was saved
    folder, sha = _age_model(tmp_path / "model")
    record = json.loads((folder / MODEL_JSON).read_text())
    record["metrics"] = {"mae": 1.0}
    (folder / MODEL_JSON).write_text(json.dumps(record))
    run = FederatedRun(_starting_from(tiny_study(), folder, sha), tmp_path / "run")

    with pytest.raises(InitialModelError, match=r"unusable model folder.*seal does not match"):
        run.start(SITES)


def test_a_model_of_another_task_is_refused(tmp_path: Path) -> None:
    config = TrainConfig(
        task=TaskId.TUMOR_REGIONS,
        model_config={"base_filters": 4, "depth": 3, "num_res_units": 1},
        device="cpu",
    )
    folder, sha = _model_folder(tmp_path / "tumour-model", config)
    run = FederatedRun(_starting_from(tiny_study(), folder, sha), tmp_path / "run")

    with pytest.raises(
        InitialModelError, match=r"holds a 'tumor-regions' model, not a 'brain-age'"
    ):
        run.start(SITES)


def test_a_model_of_another_network_is_refused_naming_the_difference(tmp_path: Path) -> None:
    folder, sha = _age_model(tmp_path / "wider", width=0.125)
    run = FederatedRun(_starting_from(tiny_study(), folder, sha), tmp_path / "run")

    with pytest.raises(InitialModelError, match=r"width: 0\.125 vs 0\.0625.*make the study's"):
        run.start(SITES)


def test_a_resumed_run_does_not_need_the_initial_model_again(tmp_path: Path) -> None:
    # Prepare: round 1 done, then the initial model moved away
    folder, sha = _age_model(tmp_path / "model")
    study = _starting_from(tiny_study(), folder, sha)
    run = FederatedRun(study, tmp_path / "run")
    run.start(SITES)
    run.end_round(RoundRecord(round=1))
    shutil.rmtree(folder)
    # Execute
    again = FederatedRun(study, tmp_path / "run")
    # Assert
    assert again.start(SITES) == 2 and _equal(again.params, run.params)


def test_a_planned_study_refuses_another_network_before_its_fingerprint_round(
    tmp_path: Path,
) -> None:
    # brain-age: the plan decides spacing and shape, not the network, so it is checked at once
    folder, sha = _age_model(tmp_path / "wider", width=0.125)
    study = _starting_from(planned_study("brain-age"), folder, sha)

    with pytest.raises(InitialModelError, match=r"width: 0\.125 vs 0\.0625"):
        FederatedRun(study, tmp_path / "run").start(SITES)


def test_a_planned_network_is_checked_against_the_initial_model_after_planning(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: the network an ms-lesion plan builds from these sites, initialised from another
    # seed; and the same network with residual blocks
    workers = _workers(age_sites, tmp_path)
    first = FederatedRun(planned_study(), tmp_path / "first")
    first.start(SITES)
    first.record_fingerprints(SITES, _fingerprint_round(first, workers))
    planned = first.train_config().with_changes(seed=99)
    fits, fits_sha = _model_folder(tmp_path / "fits", planned)
    residual = planned.with_changes(
        model_config=dataclasses.replace(planned.model_config, res_block=True)
    )
    other, other_sha = _model_folder(tmp_path / "other", residual)
    good = FederatedRun(_starting_from(planned_study(), fits, fits_sha), tmp_path / "good")
    bad = FederatedRun(_starting_from(planned_study(), other, other_sha), tmp_path / "bad")
    # Execute: the weights are checked at the start, the network only once the plan is made
    good.start(SITES)
    bad.start(SITES)
    good.record_fingerprints(SITES, _fingerprint_round(good, workers))
    with pytest.raises(PlanningError) as caught:
        bad.record_fingerprints(SITES, _fingerprint_round(bad, workers))
    # Assert
    assert good.plan == first.plan and _equal(good.params, load_file(str(fits / MODEL_WEIGHTS)))
    message = str(caught.value)
    assert "was not kept" in message and str(other) in message and "res_block" in message
    assert "remove [plan]" in message
    assert not (tmp_path / "bad" / PLAN_FILE).exists() and bad.needs_fingerprint()
