"""Study files: validation with named errors, the content hash, the examples."""

from __future__ import annotations

import dataclasses
import re
import tomllib
from pathlib import Path

import pytest

from neurofed.federated import NORM_PATTERNS, Direction, FedBN, StrategyName
from neurofed.federated.study import Study, StudyError, load_study
from neurofed.keys import TaskId

EXAMPLES = sorted((Path(__file__).parents[3] / "examples" / "studies").glob("*.toml"))

VALID = """\
name = "tiny-glioma"
rounds = 3
min_sites = 2
seed = 7

[task]
id = "glioma-multitask"
grade_weight = 0.5

[model]
base_filters = 4

[strategy]
name = "fedavg"
mask_heads = true

[selection]
metric = "WT/dice"
direction = "max"

[train]
batch_size = 1
learning_rate = 1e-3

[train.preprocess]
spacing = [2.0, 2.0, 2.0]
"""

# The same study: reordered keys and tables, comments, other whitespace, 1e-3 written otherwise,
# defaults spelled out.
REFORMATTED = """\
# a comment
[selection]
direction = "max"    # explicit
metric    = "WT/dice"

[strategy]
mask_heads = true
name = "fedavg"

[train.preprocess]
spacing = [ 2, 2, 2 ]

[train]
learning_rate = 0.001
batch_size = 1
epochs_are_not_here = "see local_epochs"
"""


def _write(tmp_path: Path, text: str, name: str = "study.toml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def _reformatted() -> str:
    text = REFORMATTED.replace('epochs_are_not_here = "see local_epochs"\n', "")
    top = (
        'seed = 7\nname = "tiny-glioma"\nlocal_epochs = 1\nrounds = 3\nmin_sites = 2\n\n'
        '[model]\nbase_filters = 4\n\n[task]\ngrade_weight = 0.50\nid = "glioma-multitask"\n\n'
    )
    return top + text


def test_valid_study_parses_into_frozen_validated_objects() -> None:
    # Execute
    study = Study.from_toml(VALID)
    # Assert
    assert study.name == "tiny-glioma" and study.rounds == 3 and study.seed == 7
    assert study.task is TaskId.GLIOMA_MULTITASK
    assert study.task_config.grade_weight == 0.5  # type: ignore[attr-defined]
    assert study.model.base_filters == 4  # type: ignore[attr-defined]
    assert study.strategy is StrategyName.FEDAVG and study.strategy_params.mask_heads
    assert study.selection.direction is Direction.MAX
    assert study.train.batch_size == 1 and study.train.seed == 7
    assert study.train.epochs == 3  # rounds × local_epochs: the lr schedule spans the run
    assert study.train.preprocess.spacing == (2.0, 2.0, 2.0)
    assert study.build_strategy().heads  # the multitask-unet head map
    with pytest.raises(AttributeError):
        study.rounds = 4  # type: ignore[misc]


def test_hash_is_stable_under_reformatting_reordering_and_comments() -> None:
    assert Study.from_toml(_reformatted()).content_hash == Study.from_toml(VALID).content_hash


def test_to_toml_reads_back_to_the_same_study() -> None:
    study = Study.from_toml(VALID)
    again = Study.from_toml(study.to_toml())
    assert again.content_hash == study.content_hash
    assert again.to_dict() == study.to_dict()


@pytest.mark.parametrize(
    ("old", "new"),
    [
        ("rounds = 3", "rounds = 4"),
        ("seed = 7", "seed = 8"),
        ("min_sites = 2", "min_sites = 3"),
        ("grade_weight = 0.5", "grade_weight = 0.25"),
        ("base_filters = 4", "base_filters = 8"),
        ("mask_heads = true", "mask_heads = false"),
        ('metric = "WT/dice"', 'metric = "WT/dice_pooled"'),
        ("learning_rate = 1e-3", "learning_rate = 2e-3"),
        ("spacing = [2.0, 2.0, 2.0]", "spacing = [2.0, 2.0, 1.0]"),
        ('name = "tiny-glioma"', 'name = "tiny-glioma-2"'),
        ("[train]\n", "[train]\naugment = false\n"),
        ("seed = 7\n", "seed = 7\nmax_update_norm = 10.0\n"),
        ("seed = 7\n", 'seed = 7\ndataset = "phantom"\n'),
    ],
)
def test_any_changed_value_changes_the_hash(old: str, new: str) -> None:
    assert old in VALID
    changed = Study.from_toml(VALID.replace(old, new, 1))
    assert changed.content_hash != Study.from_toml(VALID).content_hash


def test_defaults_written_out_do_not_change_the_hash() -> None:
    explicit = VALID.replace("seed = 7\n", "seed = 7\nlocal_epochs = 1\nround_timeout_s = 3600\n")
    assert Study.from_toml(explicit).content_hash == Study.from_toml(VALID).content_hash


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ("rounds = 3", "roundz = 3", r"unknown key 'roundz' \(did you mean 'rounds'\?\)"),
        (
            'direction = "max"',
            'direction = "max"\ndirecton = "max"',
            r"\[selection\]: unknown key 'directon' \(did you mean 'direction'\?\)",
        ),
        (
            "batch_size = 1",
            "batch_sise = 1",
            r"\[train\]: unknown key 'batch_sise' \(did you mean 'batch_size'\?\)",
        ),
        (
            "grade_weight = 0.5",
            "grade_wieght = 0.5",
            r"\[task\]: unknown key 'grade_wieght' \(did you mean 'grade_weight'\?\)",
        ),
        (
            "base_filters = 4",
            "base_filter = 4",
            r"\[model\] \(multitask-unet\): unknown key 'base_filter' \(did you mean",
        ),
        (
            "mask_heads = true",
            "mask_head = true",
            r"\[strategy\]: unknown key 'mask_head' \(did you mean 'mask_heads'\?\)",
        ),
        (
            "spacing = [2.0, 2.0, 2.0]",
            "spacnig = [2.0, 2.0, 2.0]",
            r"\[train\]: .*'spacnig'; did you mean 'spacing'\?",
        ),
    ],
)
def test_unknown_keys_are_named_with_a_suggestion(
    tmp_path: Path, old: str, new: str, message: str
) -> None:
    path = _write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(StudyError, match=re.escape(str(path)) + ": .*" + message):
        load_study(path)


@pytest.mark.parametrize(
    ("old", "new", "message"),
    [
        ('direction = "max"', 'direction = "up"', r"selection.direction = 'up' is invalid"),
        ('direction = "max"', 'direction = "min"', r"which is better when higher: use direction"),
        ('direction = "max"\n', "", r"\[selection\]: the key 'direction' is required"),
        ('id = "glioma-multitask"', 'id = "glioma-multitusk"', r"did you mean 'glioma-multitask'"),
        ('name = "fedavg"', 'name = "fedavgg"', r"\[strategy\] name: .*did you mean 'fedavg'"),
        ("rounds = 3", "rounds = 0", r"rounds = 0 is invalid: use a whole number in 1..10000"),
        ("seed = 7", "seed = -1", r"seed = -1 is invalid"),
        ("min_sites = 2", "min_sites = 2.5", r"min_sites = 2.5 is invalid"),
        ("batch_size = 1", "batch_size = 0", r"\[train\]: TrainConfig.batch_size = 0 is invalid"),
        ('name = "tiny-glioma"', 'name = "tiny glioma/1"', r"name = 'tiny glioma/1' is invalid"),
        ("seed = 7", "seed = 7\nmax_update_norm = -1", r"max_update_norm = -1 is invalid"),
        ("[train]\n", "[train]\naugment = true\n", r"augment = true is ambiguous"),
        ("[train]\n", "[train]\ndevice = 'cuda'\n", r"unknown key 'device'"),
        ("[train]\n", "[train]\nepochs = 2\n", r"unknown key 'epochs'"),
        # bounds checked at load time (a study is hostile input too)
        ("rounds = 3", "rounds = 10001", r"rounds = 10001 is invalid: use a whole number in 1"),
        ("seed = 7", "seed = 9223372036854775807", None),
        ("rounds = 3", "rounds = 1000\nlocal_epochs = 1000", r"1000000 epochs of training"),
        ("min_sites = 2", "min_sites = 10001", r"min_sites = 10001 is invalid"),
        ("seed = 7", "seed = 7\nround_timeout_s = 1e9", r"round_timeout_s = 1000000000.0 is inv"),
        ("batch_size = 1", "batch_size = 100000", r"batch_size = 100000 is invalid: use a wh"),
    ],
)
def test_invalid_values_are_named(old: str, new: str, message: str | None) -> None:
    assert old in VALID
    if message is None:  # the bound itself is allowed
        Study.from_toml(VALID.replace(old, new, 1))
        return
    with pytest.raises(StudyError, match=message):
        Study.from_toml(VALID.replace(old, new, 1))


def test_missing_required_key_and_table_are_named() -> None:
    with pytest.raises(StudyError, match=r"the key 'selection' is required"):
        Study.from_toml(VALID.split("[selection]")[0] + VALID.split('direction = "max"\n')[1])
    as_string = 'strategy = "fedavg"\n' + VALID.replace(
        '[strategy]\nname = "fedavg"\nmask_heads = true\n', ""
    )
    with pytest.raises(StudyError, match=r"strategy = 'fedavg' must be a table"):
        Study.from_toml(as_string)


def test_mask_heads_needs_a_model_with_heads() -> None:
    text = VALID.replace('id = "glioma-multitask"\ngrade_weight = 0.5', 'id = "brain-age"')
    text = text.replace("base_filters = 4", "width = 0.0625").replace("WT/dice", "pearson_r")
    with pytest.raises(StudyError, match=r"\[strategy\]: .*mask_heads = true needs a model"):
        Study.from_toml(text)


def test_fedbn_on_a_model_without_norm_parameters_is_refused() -> None:
    text = VALID.replace("mask_heads = true", "").replace('name = "fedavg"', 'name = "fedbn"')
    with pytest.raises(
        StudyError, match=r"local_parameters .* match no parameter of multitask-unet"
    ):
        Study.from_toml(text)
    study = Study.from_toml(text.replace("base_filters = 4", 'base_filters = 4\nnorm = "batch"'))
    assert study.train.local_parameters == NORM_PATTERNS
    assert study.client_settings() == FedBN().client_settings()


def test_fedprox_reaches_the_training_config() -> None:
    text = VALID.replace("mask_heads = true", "mu = 0.05").replace('"fedavg"', '"fedprox"')
    study = Study.from_toml(text)
    assert study.train.fedprox_mu == 0.05
    assert study.train_config(device="cpu").device == "cpu"


def test_task_setting_that_training_overrides_is_refused() -> None:
    text = VALID.replace(
        'id = "glioma-multitask"\ngrade_weight = 0.5',
        'id = "tumor-regions"\nspacing = [1.0, 1.0, 1.0]',
    )
    with pytest.raises(StudyError, match=r"\[task\] spacing = \[1.0, 1.0, 1.0\] conflicts with"):
        Study.from_toml(text.replace("mask_heads = true", "").replace("base_filters = 4", ""))


def test_augment_false_switches_augmentation_off_and_round_trips() -> None:
    study = Study.from_toml(VALID.replace("[train]\n", "[train]\naugment = false\n"))
    assert study.train.augment is None
    assert Study.from_toml(study.to_toml()).train.augment is None


def test_load_study_names_the_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope.toml"
    with pytest.raises(StudyError, match=re.escape(f"{missing}: no such study file")):
        load_study(missing)
    broken = _write(tmp_path, "name = \n", "broken.toml")
    with pytest.raises(StudyError, match=re.escape(f"{broken}: not valid TOML")):
        load_study(broken)


def test_describe_is_readable_for_a_custodian() -> None:
    text = Study.from_toml(VALID).describe()
    assert "tiny-glioma" in text and "glioma-multitask" in text and "multitask-unet" in text
    assert "WT/dice (higher is better)" in text
    assert "a round needs 2 valid site update(s)" in text
    assert "no norm bound" in text and "none travels" in text
    assert Study.from_toml(VALID).content_hash in text


def test_every_example_study_is_covered() -> None:
    assert len(EXAMPLES) >= 4
    assert {load_study(p).task for p in EXAMPLES} == set(TaskId)


@pytest.mark.parametrize("path", EXAMPLES, ids=[p.stem for p in EXAMPLES])
def test_example_study_loads_and_round_trips(path: Path) -> None:
    # Execute
    study = load_study(path)
    # Assert: its name is its file name, it reads back to the same hash, TOML is valid
    assert study.name == path.stem
    again = Study.from_toml(study.to_toml())
    assert again.content_hash == study.content_hash
    assert tomllib.loads(study.to_toml())["name"] == study.name


def test_a_baseline_trains_for_the_whole_federations_budget() -> None:
    # Prepare: 2 rounds of 3 local epochs, 4 samples per site and epoch
    from tests.federated.conftest import tiny_study

    study = tiny_study(rounds=2, local_epochs=3)
    assert study.train.samples_per_epoch == 4

    # Execute
    pooled = study.baseline_config(3, device="cpu")
    whole = dataclasses.replace(study, train=study.train.with_changes(samples_per_epoch=None))
    unsampled = whole.baseline_config(3, device="cpu")

    # Assert
    assert (pooled.epochs, pooled.validate_every, pooled.samples_per_epoch) == (6, 6, 12)
    assert pooled.seed == study.seed and pooled.model_config == study.train.model_config
    assert unsampled.samples_per_epoch is None  # one pass over the pooled cases per epoch
