"""TrainConfig: validated on construction, JSON round-trip, per-task defaults that fit together."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurofed.keys import TaskId
from neurofed.models import ResidualUNetConfig, SFCNConfig
from neurofed.preprocess import AugmentConfig, PreprocessParams
from neurofed.training import (
    RUN_CONFIG,
    Optimizer,
    TrainConfig,
    build_train_config,
    default_train_config,
    read_train_config,
)
from tests.training.tiny import tiny_config


@pytest.mark.parametrize("task_id", list(TaskId))
def test_defaults_and_tiny_configs_round_trip_through_json(task_id: TaskId) -> None:
    for config in (default_train_config(task_id), tiny_config(task_id)):
        text = json.dumps(config.to_json(), allow_nan=False)
        again = TrainConfig.from_json(json.loads(text))
        assert again == config
        assert again.to_json() == config.to_json()


def test_mappings_are_parsed_into_frozen_configs() -> None:
    config = TrainConfig(
        task="tumor-regions",
        model_config={"base_filters": 4, "depth": 3},
        preprocess={"spacing": [2, 2, 2]},
        augment={"gamma_probability": 0.0},
        optimizer="sgd",
        patch_shape=[16, 16, 16],
        local_parameters=["*norm*"],
    )
    assert config.task is TaskId.TUMOR_REGIONS
    assert config.model_config == ResidualUNetConfig(base_filters=4, depth=3)
    assert config.preprocess == PreprocessParams(spacing=(2.0, 2.0, 2.0))
    assert isinstance(config.augment, AugmentConfig) and config.augment.gamma_probability == 0.0
    assert config.optimizer is Optimizer.SGD
    assert config.patch_shape == (16, 16, 16) and config.local_parameters == ("*norm*",)
    # HD95 is measured on the preprocessed grid
    assert config.task_config.spacing == (2.0, 2.0, 2.0)


def test_task_default_model_config_when_none_given() -> None:
    config = TrainConfig(task="brain-age")
    assert config.model_config == SFCNConfig()
    assert config.model_name == "sfcn"


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        (
            {"batch_size": 0},
            r"TrainConfig.batch_size = 0 is invalid: use a whole number in 1..4096",
        ),
        ({"learning_rate": -1.0}, r"TrainConfig.learning_rate = -1.0 is invalid"),
        ({"optimizer": "adamw"}, r"TrainConfig.optimizer = 'adamw' is invalid: use one of"),
        ({"patch_shape": (16, 16)}, r"TrainConfig.patch_shape = \(16, 16\) is invalid"),
        (
            {"patch_shape": (14, 16, 16)},
            r"patch_shape = \(14, 16, 16\) is invalid: use multiples of the model's spatial "
            r"divisor \(4, 4, 4\)",
        ),
        ({"sliding_window_overlap": 1.0}, r"sliding_window_overlap = 1.0 is invalid"),
        ({"device": "gpu"}, r"TrainConfig.device = 'gpu' is invalid: use auto, cpu, cuda"),
        ({"fedprox_mu": -0.1}, r"fedprox_mu = -0.1 is invalid"),
        ({"model_config": {"base_filter": 4}}, r"unknown field 'base_filter' \(did you mean"),
        ({"task": "tumour-regions"}, r"did you mean 'tumor-regions'"),
    ],
)
def test_invalid_values_name_the_field_the_value_and_the_fix(
    changes: dict[str, object], message: str
) -> None:
    base: dict[str, object] = {
        "task": "tumor-regions",
        "model_config": {"base_filters": 4, "depth": 3},
        "patch_shape": (16, 16, 16),
    }
    with pytest.raises(ValueError, match=message):
        TrainConfig(**(base | changes))


def test_whole_volume_task_refuses_a_patch_shape() -> None:
    with pytest.raises(ValueError, match=r"task 'brain-age' trains on whole volumes"):
        TrainConfig(task="brain-age", patch_shape=(32, 32, 32))


def test_from_json_refuses_unknown_fields_with_a_suggestion() -> None:
    data = TrainConfig(task="brain-age").to_json() | {"epoch": 3}
    with pytest.raises(ValueError, match=r"unknown field 'epoch' \(did you mean 'epochs'\?\)"):
        TrainConfig.from_json(data)


def test_default_ms_lesion_plan_matches_the_patch_and_spacing() -> None:
    config = default_train_config("ms-lesion", spacing=3.0, patch_shape=(32, 32, 32))
    plan = config.model_config.plan
    assert plan.patch_size == config.patch_shape == (32, 32, 32)
    assert plan.spacing == config.preprocess.spacing == (3.0, 3.0, 3.0)


def test_default_changes_to_nested_configs_keep_the_other_fields() -> None:
    config = default_train_config("tumor-regions", model_config={"dropout": 0.1}, epochs=3)
    assert config.model_config.dropout == 0.1
    assert config.model_config.base_filters == 8 and config.epochs == 3


def test_settings_left_out_take_the_task_defaults() -> None:
    # Execute: what `train local --task glioma-multitask` / `--epochs 3 --spacing 3` resolve to
    plain = build_train_config(TaskId.GLIOMA_MULTITASK, None, {}, None, None, None)
    changed = build_train_config(TaskId.GLIOMA_MULTITASK, None, {"epochs": 3}, 3.0, None, 4)
    # Assert
    assert plain == default_train_config("glioma-multitask")
    assert plain.preprocess.spacing == (4.0, 4.0, 4.0)
    assert changed.preprocess.spacing == (3.0, 3.0, 3.0) and changed.epochs == 3
    assert changed.model_config.base_filters == 4


def test_a_saved_config_or_run_folder_is_read_back_and_misuse_is_named(tmp_path: Path) -> None:
    # Prepare: a run folder's config.json and a bare TrainConfig file
    config = default_train_config("brain-age", epochs=4)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / RUN_CONFIG).write_text(json.dumps({"train_config": config.to_json()}))
    (tmp_path / "bare.json").write_text(json.dumps(config.to_json()))
    # Execute / Assert
    assert (
        read_train_config(tmp_path / "run") == config == read_train_config(tmp_path / "bare.json")
    )
    again = build_train_config(None, tmp_path / "run", {"epochs": 9}, None, None, None)
    assert again.epochs == 9 and again.model_config == config.model_config
    with pytest.raises(ValueError, match="differs from"):
        build_train_config(TaskId.MS_LESION, tmp_path / "run", {}, None, None, None)
    with pytest.raises(ValueError, match="give --task"):
        build_train_config(None, None, {}, None, None, None)
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="not a TrainConfig"):
        read_train_config(tmp_path / "list.json")
