"""Model folder: enough to rebuild and run the model alone; damaged folders fail clearly."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from neurofed.models import OutputKey
from neurofed.training import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    LocalTrainer,
    ModelFolderError,
    finalize_metrics,
    load_model,
    save_model,
)
from neurofed.training.model_folder import FINGERPRINT_FILE, PLAN_FILE, seal_model
from tests.training.test_checkpoint import assert_no_pickle
from tests.training.tiny import tiny_config


@pytest.mark.parametrize("task_id", ["tumor-regions", "glioma-multitask"])
def test_saved_model_loads_and_predicts_like_the_trainer(
    task_id: str, glioma_site: Path, tmp_path: Path
) -> None:
    # Prepare
    config = tiny_config(task_id, epochs=1)
    trainer = LocalTrainer.from_sites(config, glioma_site)
    trainer.fit()
    metrics = finalize_metrics(trainer.task, trainer.evaluate())
    # Execute
    folder = save_model(tmp_path / "model", trainer.model, config, metrics=metrics, epoch=1)
    loaded = load_model(folder)
    # Assert: same weights, same scores, predictions in the task's output form
    assert sorted(p.name for p in folder.iterdir()) == [MODEL_JSON, MODEL_WEIGHTS]
    assert loaded.task.task_id.value == task_id and loaded.epoch == 1
    assert loaded.metrics.keys() == metrics.keys()
    assert loaded.evaluate(trainer.validation_data) == trainer.evaluate()
    case = trainer.validation_data[0]
    prediction = loaded.predict(case.image)
    mask = prediction[OutputKey.SEGMENTATION] if isinstance(prediction, dict) else prediction
    assert isinstance(mask, torch.Tensor) and mask.dtype == torch.uint8
    assert tuple(mask.shape[2:]) == case.spatial_shape
    record = json.loads((folder / MODEL_JSON).read_text())
    assert record["modalities"] == ["T1", "T1CE", "T2", "FLAIR"]
    assert record["preprocess"] == config.preprocess.to_json()
    assert record["model_config"] == config.model_config.to_json()
    assert_no_pickle(folder)


def test_brain_age_model_predicts_years(bids_site: Path, tmp_path: Path) -> None:
    config = tiny_config("brain-age", epochs=1)
    trainer = LocalTrainer.from_sites(config, bids_site)
    loaded = load_model(save_model(tmp_path / "model", trainer.model, config))
    age = loaded.predict(np.zeros((1, 32, 32, 32), np.float32))
    assert isinstance(age, torch.Tensor) and age.shape == (1,)
    assert 0.0 < float(age[0]) < 200.0  # target_mean 50, target_std 20, untrained


def test_missing_or_damaged_model_folder_is_a_clear_error(tmp_path: Path) -> None:
    config = tiny_config("brain-age")
    model = config.build_task().build_model(config.model_config)
    folder = save_model(tmp_path / "run" / "model", model, config)
    with pytest.raises(ModelFolderError, match=r"pass RUN/model, not the run folder"):
        load_model(tmp_path / "run")
    weights = folder / MODEL_WEIGHTS
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ModelFolderError, match=r"SHA-256 differs"):
        load_model(folder)


def _sealed(tmp_path: Path) -> Path:
    config = tiny_config("brain-age")
    model = config.build_task().build_model(config.model_config)
    return save_model(tmp_path / "model", model, config)


def test_every_part_that_changes_how_a_model_runs_is_under_one_seal(tmp_path: Path) -> None:
    # Prepare: a sealed folder, then a plan file added and sealed in (as a planned run does)
    folder = _sealed(tmp_path)
    (folder / PLAN_FILE).write_text('{"plan": 1}')
    seal_model(folder)
    assert load_model(folder).task.task_id.value == "brain-age"
    record = json.loads((folder / MODEL_JSON).read_text())
    assert record["seal"]["files"] == [MODEL_JSON, MODEL_WEIGHTS, PLAN_FILE]
    # Execute / Assert: an edited preprocessing, plan, or an added companion is refused
    edited = dict(record)
    edited["preprocess"] = record["preprocess"] | {"spacing": [1.0, 1.0, 1.0]}
    (folder / MODEL_JSON).write_text(json.dumps(edited))
    with pytest.raises(ModelFolderError, match="seal does not match"):
        load_model(folder)
    (folder / MODEL_JSON).write_text(json.dumps(record))
    (folder / PLAN_FILE).write_text('{"plan": 2}')
    with pytest.raises(ModelFolderError, match="seal does not match"):
        load_model(folder)
    (folder / PLAN_FILE).write_text('{"plan": 1}')
    (folder / FINGERPRINT_FILE).write_text("{}")
    with pytest.raises(ModelFolderError, match="sealed with"):
        load_model(folder)


def test_weights_named_outside_the_folder_and_a_task_mismatch_are_refused(tmp_path: Path) -> None:
    folder = _sealed(tmp_path)
    record = json.loads((folder / MODEL_JSON).read_text())
    outside = record | {"weights": record["weights"] | {"file": "../../etc/weights.safetensors"}}
    (folder / MODEL_JSON).write_text(json.dumps(outside))
    with pytest.raises(ModelFolderError, match="never a path elsewhere"):
        load_model(folder)
    (folder / MODEL_JSON).write_text(json.dumps(record))
    with pytest.raises(ModelFolderError, match="holds a 'brain-age' model, not a 'ms-lesion' one"):
        load_model(folder, task="ms-lesion")
