"""A study's ``[plan]`` table: parsing, conflicts, the hash, and training under a plan."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.study import Study, StudyError, load_study
from neurofed.federated.study.plan import PlanSource, apply_plan
from neurofed.keys import TaskId
from neurofed.models import DynUNetConfig
from neurofed.preprocess.fingerprint import case_fingerprint, merge_fingerprints
from neurofed.preprocess.plan import Plan, PlanError, PlannerSettings, make_plan

EXAMPLES = Path(__file__).parents[3] / "examples" / "studies"

#: Hashes of the example studies without ``[plan]`` when plans arrived: a study that does not
#: use ``[plan]`` must keep its hash (custodians approved it by that hash).
PINNED = {
    "brain-age-fedbn": "45d516a4ece6089dc82ecf243c371117f8b2af392f526ab03d141f82c48e6559",
    "fets-fedavg": "e455d66f1daee0c3f649b938880d20fbc74b1c1af5b3f19c7cdbbd5d8e43b109",
    "glioma-multitask-masked": "0dde0abb7672422c5c3f0c80fff345f432bd589b5f3300b71b7e6c8747fcaca7",
    "tumor-regions-fedadam": "9e02940a5b839a38b35fbb6aa441e4cf0ac35e3223024c93611ac3950d886147",
}

BASE = """\
name = "planned"
rounds = 4
seed = 1

[task]
id = "{task}"

[strategy]
name = "fedavg"

[selection]
metric = "{metric}"
direction = "{direction}"

[train]
learning_rate = 2e-3
samples_per_epoch = 8
{train}
"""


def _study(task: str = "ms-lesion", plan: str = "[plan]\n", train: str = "") -> Study:
    metric = "dice" if task == "ms-lesion" else "WT/dice" if task == "tumor-regions" else "mae"
    direction = "min" if metric == "mae" else "max"
    text = BASE.format(task=task, metric=metric, direction=direction, train=train)
    return Study.from_toml(text + plan if plan.startswith("[") else plan + text)


def _plan(modalities: tuple[str, ...], settings: PlannerSettings) -> Plan:
    image = np.zeros((len(modalities), 42, 50, 42), np.float32)
    image[:, 1:-1, 1:-1, 1:-1] = 1.0  # a brain of 40 x 48 x 40 voxels of 2 mm
    one = case_fingerprint(image, None, np.diag([2.0, 2.0, 2.0, 1.0]), modalities)
    return make_plan(merge_fingerprints([one]), settings)


@pytest.mark.parametrize("name", sorted(PINNED))
def test_a_study_without_plan_keeps_its_hash(name: str) -> None:
    study = load_study(EXAMPLES / f"{name}.toml")

    assert study.plan is None and "plan" not in study.to_dict()
    assert study.content_hash == PINNED[name]


def test_plan_defaults_are_filled_and_part_of_the_hash() -> None:
    # Execute
    planned = _study(plan='[plan]\nsource = "fingerprint"\n')
    tighter = _study(plan="[plan]\nmemory_budget_gb = 4\n")
    # Assert
    assert planned.plan is not None and planned.plan.source is PlanSource.FINGERPRINT
    table = planned.to_dict()["plan"]
    assert table == {
        "source": "fingerprint",
        "memory_budget_gb": 8.0,
        "base_filters": 32,
        "max_filters": 320,
        "min_feature_size": 4,
        "anisotropy_threshold": 3.0,
        "min_batch_size": 2,
        "max_dataset_fraction": 0.05,
        "volume_percentile": 95.0,
    }
    assert planned.plan.settings.out_channels == 2  # the task's, not the study's
    assert len({planned.content_hash, tighter.content_hash, _study(plan="").content_hash}) == 3
    assert Study.from_toml(planned.to_toml()).content_hash == planned.content_hash


def test_the_ms_lesion_example_is_planned_and_round_trips() -> None:
    study = load_study(EXAMPLES / "ms-lesion-fedprox.toml")

    assert study.plan is not None and study.plan.settings.memory_budget_gb == 8.0
    assert Study.from_toml(study.to_toml()).content_hash == study.content_hash
    assert "plan       from a federated fingerprint round" in study.describe()
    assert "patch_shape=(plan)" in study.describe()


@pytest.mark.parametrize(
    ("plan", "message"),
    [
        ("[plan]\nmemory_budget = 4\n", r"unknown key 'memory_budget' \(did you mean 'memory_b"),
        ("[plan]\nout_channels = 3\n", r"unknown key 'out_channels'.*allowed keys: source"),
        ('[plan]\nsource = "pooled"\n', r"source = 'pooled' is invalid: use one of 'fingerpr"),
        ("[plan]\nbase_filters = 0\n", r"\[plan\]: PlannerSettings.base_filters = 0 is invalid"),
        ('plan = "fingerprint"\n', r"plan = 'fingerprint' must be a table; write it as \[plan\]"),
    ],
)
def test_a_bad_plan_table_is_named_with_the_fix(plan: str, message: str) -> None:
    with pytest.raises(StudyError, match=message):
        _study(plan=plan)


@pytest.mark.parametrize(
    ("task", "train", "key"),
    [
        ("ms-lesion", "patch_shape = [32, 32, 32]\n", r"\[train\] patch_shape is set"),
        ("ms-lesion", "batch_size = 4\n", r"\[train\] batch_size is set"),
        ("tumor-regions", "[train.preprocess]\nspacing = [2, 2, 2]\n", r"preprocess\] spacing"),
        ("brain-age", "[train.preprocess]\nspatial_shape = [32, 32, 32]\n", "spatial_shape is"),
    ],
)
def test_a_setting_the_plan_decides_is_refused(task: str, train: str, key: str) -> None:
    with pytest.raises(StudyError, match=rf"{key}.*takes it from the federated plan"):
        _study(task, plan="[plan]\n", train=train)
    _study(task, plan="", train=train)  # without [plan] the same setting is fine


def test_a_model_network_is_refused_for_a_planned_ms_lesion_study() -> None:
    text = BASE.format(task="ms-lesion", metric="dice", direction="max", train="")
    with pytest.raises(StudyError, match=r"\[model\] plan is set"):
        Study.from_toml(text + "[model.plan]\npatch_size = [32, 32, 32]\n[plan]\n")


def test_ms_lesion_trains_the_plans_network_with_the_studys_other_settings() -> None:
    # Prepare
    study = _study(plan="[plan]\nmemory_budget_gb = 0.05\nbase_filters = 8\nmax_filters = 64\n")
    assert study.plan is not None
    plan = _plan(("FLAIR", "T1"), study.plan.settings)
    # Execute
    config = study.train_config(device="cpu", plan=plan)
    # Assert
    assert isinstance(config.model_config, DynUNetConfig)
    assert config.model_config.plan.filters == plan.filters and plan.filters[0] == 8
    assert config.patch_shape == plan.patch_size and config.batch_size == plan.batch_size
    assert config.preprocess.spacing == plan.spacing == (2.0, 2.0, 2.0)
    assert config.learning_rate == 2e-3 and config.samples_per_epoch == 8
    assert config.epochs == study.train.epochs and config.seed == 1 and config.device == "cpu"


def test_whole_volume_tasks_take_spacing_and_shape_and_tumor_regions_only_spacing() -> None:
    # Prepare
    age, tumor = _study("brain-age"), _study("tumor-regions")
    assert age.plan is not None and tumor.plan is not None
    age_plan = _plan(("T1",), age.plan.settings)
    tumor_plan = _plan(("T1", "T1CE", "T2", "FLAIR"), tumor.plan.settings)
    # Execute
    age_config = age.train_config(plan=age_plan)
    tumor_config = tumor.train_config(plan=tumor_plan)
    # Assert: a whole-volume shape on the study model's divisor; the tumor patch is the study's
    divisor = age.train.spatial_divisor()
    shape = age_config.preprocess.spatial_shape
    assert shape is not None and all(s % d == 0 for s, d in zip(shape, divisor, strict=True))
    assert all(s >= v for s, v in zip(shape, age_plan.volume_shape, strict=True))
    assert tumor_config.preprocess.spacing == tumor_plan.spacing
    assert tumor_config.patch_shape == tumor.train.patch_shape
    assert tumor_config.model_config == tumor.train.model_config


def test_a_planned_study_needs_its_plan_and_an_unplanned_one_refuses_one() -> None:
    planned, unplanned = _study(), _study(plan="")
    assert planned.plan is not None
    plan = _plan(("FLAIR", "T1"), planned.plan.settings)

    with pytest.raises(ValueError, match=r"pass the run's plan \(plan\.json"):
        planned.train_config()
    with pytest.raises(ValueError, match=r"has no \[plan\]"):
        unplanned.train_config(plan=plan)
    assert apply_plan(planned.train, plan).task is TaskId.MS_LESION


def test_a_plan_file_is_read_for_its_study_and_another_studys_is_refused(tmp_path: Path) -> None:
    # Prepare: the ms-lesion study's own plan, and a plan of another task's modalities
    study = _study()
    assert study.plan is not None
    own = _plan(("FLAIR", "T1"), study.plan.settings)
    other = _plan(("T1",), study.plan.settings)
    (tmp_path / "own.json").write_text(json.dumps(own.to_json()))
    (tmp_path / "other.json").write_text(json.dumps(other.to_json()))
    (tmp_path / "broken.json").write_text("{")
    # Execute / Assert
    assert study.read_plan(tmp_path / "own.json") == own
    with pytest.raises(PlanError, match=r"other\.json: plan .* it is a plan for another task"):
        study.read_plan(tmp_path / "other.json")
    with pytest.raises(PlanError, match=r"broken\.json: cannot read the plan"):
        study.read_plan(tmp_path / "broken.json")
    with pytest.raises(PlanError, match="has no \\[plan\\]"):
        _study(plan="").read_plan(tmp_path / "own.json")
