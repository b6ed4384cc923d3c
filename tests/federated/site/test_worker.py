"""The site side without NVFlare: study check, training and validation answers, failures, Ditto."""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurofed.config import is_local
from neurofed.data.manifest import load_manifest
from neurofed.federated.protocol import MetaField
from neurofed.federated.server.run import FederatedRun
from neurofed.federated.site import (
    SiteConfig,
    SiteWorker,
    StudyTraining,
    describe_payload,
    site_seed,
)
from neurofed.federated.site.progress import PROGRESS_FILE
from neurofed.tasks import MetricState
from neurofed.training import LocalTrainer, load_model
from tests.federated.conftest import tiny_study


def _training(worker: SiteWorker) -> StudyTraining:
    """The site's training of the study it last ran."""
    assert worker.training is not None
    return worker.training


def _meta(run: FederatedRun, round_number: int = 1) -> dict[str, object]:
    return run.task_request(round_number).encode()


def test_train_and_validate_answer_with_arrays_and_counts_only(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    study = tiny_study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    config = SiteConfig(
        age_sites[0], device="cpu", audit_dir=tmp_path / "a", min_cases_per_metric=1
    )
    worker = SiteWorker("site-1", config)
    # Execute
    trained = worker.handle("train", run.params, _meta(run))
    validated = worker.handle("validate", run.params, _meta(run))
    # Assert
    assert trained.error is None and validated.error is None
    assert trained.params.keys() == run.params.keys()
    assert any(not np.array_equal(trained.params[k], run.params[k]) for k in run.params)
    num_examples = _training(worker).trainer.num_examples
    assert num_examples >= 1 and trained.meta[MetaField.NUM_EXAMPLES.value] == num_examples
    assert trained.meta[MetaField.LABEL_COUNTS.value]["segmentation"] == 0
    state = MetricState.from_arrays(validated.meta[MetaField.METRIC_STATE.value])
    assert int(state.sums["num_examples"]) == 1
    records = sorted((tmp_path / "a").glob("*.json"))
    assert [p.name for p in records] == ["0001-train-round-1.json", "0002-validate-round-1.json"]
    sent = json.loads(records[0].read_text())
    assert sent["meta"][MetaField.NUM_EXAMPLES.value] == num_examples
    assert sent["params"].keys() == run.params.keys()


def test_the_same_round_gives_the_same_update_in_a_fresh_process(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    study = tiny_study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    config = SiteConfig(age_sites[0], device="cpu")
    warm = SiteWorker("site-1", config)
    warm.handle("train", run.params, _meta(run, 1))
    second = warm.handle("train", run.params, _meta(run, 2))

    fresh = SiteWorker("site-1", config).handle("train", run.params, _meta(run, 2))

    assert all(np.array_equal(second.params[k], fresh.params[k]) for k in run.params)


def test_failures_become_answers_with_a_reason_and_no_path(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    run = FederatedRun(tiny_study(), tmp_path / "run")
    run.start(["site-1"])
    missing = tmp_path / "secret-hospital-folder"
    worker = SiteWorker("site-1", SiteConfig(missing, device="cpu"))
    good = SiteWorker("site-1", SiteConfig(age_sites[0], device="cpu"))
    tampered = _meta(run) | {MetaField.STUDY_HASH.value: "0" * 64}

    no_data = worker.handle("train", run.params, _meta(run))
    wrong_hash = good.handle("train", run.params, tampered)
    unknown = good.handle("predict", run.params, _meta(run))

    assert no_data.error is not None and "SiteDataError" in no_data.error
    assert str(missing) not in no_data.error and "secret-hospital" not in no_data.error
    assert "the site cannot serve" in no_data.error and "details in its log" in no_data.error
    assert no_data.params == {}
    assert wrong_hash.error is not None and "content hash" in wrong_hash.error
    assert unknown.error is not None and "unknown task 'predict'" in unknown.error


def test_each_site_trains_with_its_own_seed() -> None:
    study = tiny_study()
    seeds = {site_seed(study.seed, f"site-{k}") for k in range(1, 6)}
    assert len(seeds) == 5
    trainer = LocalTrainer(study.train_config(device="cpu").with_changes(seed=site_seed(3, "a")))
    assert trainer.config.seed == site_seed(3, "a")


# -- Ditto: the personalised model ---------------------------------------------------------------


def _trainable(worker: SiteWorker) -> list[str]:
    """Names of the trained weights (not the running statistics, which no penalty moves)."""
    assert worker.training is not None
    return [n for n, p in worker.training.trainer.model.named_parameters() if p.requires_grad]


def _distance(a: Mapping[str, np.ndarray], b: Mapping[str, np.ndarray], names: list[str]) -> float:
    return math.sqrt(sum(float(np.sum((a[k].astype(float) - b[k]) ** 2)) for k in names))


def test_ditto_personalised_model_differs_from_the_global_one_and_follows_lambda(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: one round (12 steps) from the same global model, a weak and a strong pull. Adam
    # moves every weight by about the learning rate per step whatever the pull, so only over
    # enough steps does a strong pull keep v measurably closer (with 4 steps and lambda 10 the
    # ratio below reached 0.52-0.86 for some study seeds; here at most 0.44 for seeds 0-9)
    distances = {}
    for ditto_lambda in (0.01, 100.0):
        study = tiny_study(strategy="ditto", ditto_lambda=ditto_lambda, local_epochs=6)
        run = FederatedRun(study, tmp_path / f"run-{ditto_lambda}")
        run.start(["site-1"])
        config = SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "state")
        worker = SiteWorker("site-1", config)
        # Execute
        answer = worker.handle("train", run.params, _meta(run))
        # Assert
        assert answer.error is None
        personalised = _training(worker).personalised_parameters()
        assert personalised is not None and personalised.keys() == run.params.keys()
        names = _trainable(worker)
        assert _distance(personalised, answer.params, names) > 1e-4  # not the global model
        distances[ditto_lambda] = _distance(personalised, run.params, names)
        loss = answer.meta[MetaField.TRAIN_METRICS.value]["personalised_train_loss"]
        assert math.isfinite(loss)
    assert distances[100.0] < 0.5 * distances[0.01]  # a larger lambda keeps v closer to w_global


def _strings(value: Any) -> list[str]:
    described = describe_payload(value)
    found: list[str] = []

    def walk(item: Any) -> None:
        if isinstance(item, dict):
            for k, v in item.items():
                found.append(str(k))
                walk(v)
        elif isinstance(item, list):
            for v in item:
                walk(v)
        elif isinstance(item, str):
            found.append(item)

    walk(described)
    return found


def test_a_ditto_validation_answer_carries_both_metric_states_and_nothing_else(
    tmp_path: Path, age_sites: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a one-round study, so training also saves the final personalised model
    study = tiny_study(strategy="ditto", ditto_lambda=0.5, rounds=1)
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    state_root = tmp_path / "state"
    config = SiteConfig(age_sites[0], device="cpu", state_dir=state_root, min_cases_per_metric=1)
    worker = SiteWorker("site-1", config)
    # Execute
    with caplog.at_level(logging.INFO, logger="neurofed.federated.site"):
        trained = worker.handle("train", run.params, _meta(run))
        validated = worker.handle("validate", run.params, _meta(run))
    # Assert: two metric states of sums and counts, no parameter, no other field
    assert trained.error is None and validated.error is None
    assert validated.params == {}
    assert set(validated.meta) == {
        MetaField.METRIC_STATE.value,
        MetaField.PERSONALISED_METRIC_STATE.value,
        MetaField.VALIDATE_SECONDS.value,
    }
    sent = validated.meta
    assert isinstance(sent.pop(MetaField.VALIDATE_SECONDS.value), float)
    states = {}
    for key, arrays in sent.items():
        assert all(name.startswith(("sum/", "case/")) for name in arrays)
        for value in arrays.values():
            assert isinstance(value, np.ndarray) and value.dtype.kind in "iuf"
            assert value.ndim <= 2 and value.size <= 16
        states[key] = MetricState.from_arrays(arrays)
    shared = states[MetaField.METRIC_STATE.value]
    own = states[MetaField.PERSONALISED_METRIC_STATE.value]
    assert int(own.sums["num_examples"]) == int(shared.sums["num_examples"]) == 1
    assert own != shared  # the trained personalised model, not the (untrained) global one
    # no subject id, no path in anything the site sent
    subjects = {s.subject_id for s in load_manifest(age_sites[0]).subjects}
    for text in _strings(trained.meta) + _strings(validated.meta) + list(trained.params):
        assert not any(s in text for s in subjects)
        assert "/" not in text.replace("sum/", "").replace("case/", "")
    # the final personalised model is a model folder at the site; its path is only logged
    folder = state_root / study.content_hash[:16] / "personalised-model"
    loaded = load_model(folder)
    personalised = _training(worker).personalised_parameters()
    assert personalised is not None
    state = loaded.model.state_dict()
    assert all(np.array_equal(state[k].numpy(), v) for k, v in personalised.items())
    assert loaded.epoch == 1 and str(folder) in caplog.text


def test_a_fedbn_site_saves_the_final_model_it_validated_with_its_own_norm_layers(
    tmp_path: Path, age_sites: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: two rounds; the server's model after round 2 differs from every site's weights
    study = tiny_study(strategy="fedbn", rounds=2)
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    state_root = tmp_path / "state"
    config = SiteConfig(age_sites[0], device="cpu", state_dir=state_root, min_cases_per_metric=1)
    worker = SiteWorker("site-1", config)
    folder = state_root / study.content_hash[:16] / "site-model"
    # Execute: round 1 (not the last), then round 2
    worker.handle("train", run.params, _meta(run, 1))
    worker.handle("validate", run.params, _meta(run, 1))
    saved_early = folder.exists()
    trained = worker.handle("train", run.params, _meta(run, 2))
    final = {k: v + np.asarray(0.5, v.dtype) for k, v in trained.params.items()}
    with caplog.at_level(logging.INFO, logger="neurofed.federated.site"):
        validated = worker.handle("validate", final, _meta(run, 2))
    # Assert: only the last round's model is saved, and it is what the site scored: the global
    # entries as sent, the norm layers the site kept (which never left it)
    assert validated.error is None and not saved_early
    local = _training(worker).trainer.get_parameters(include_local=True)
    norms = set(local) - set(trained.params)
    assert norms and all(is_local(k, study.train.local_parameters) for k in norms)
    state = load_model(folder).model.state_dict()
    assert all(np.array_equal(state[k].numpy(), v) for k, v in final.items())
    assert all(np.array_equal(state[k].numpy(), local[k]) for k in norms)
    assert load_model(folder).epoch == 2 and str(folder) in caplog.text
    assert str(folder) not in str(validated.meta)  # its path stays in the site's log


def test_answers_of_other_strategies_are_unchanged_and_keep_no_state(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    study = tiny_study(rounds=1)
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    state_root = tmp_path / "state"
    config = SiteConfig(age_sites[0], device="cpu", state_dir=state_root, min_cases_per_metric=1)
    worker = SiteWorker("site-1", config)

    trained = worker.handle("train", run.params, _meta(run))
    validated = worker.handle("validate", run.params, _meta(run))

    assert set(trained.meta) == {
        MetaField.NUM_EXAMPLES.value,
        MetaField.LABEL_COUNTS.value,
        MetaField.TRAIN_METRICS.value,
    }
    assert set(trained.meta[MetaField.TRAIN_METRICS.value]) == {"train_loss", "steps", "seconds"}
    assert validated.params == {}
    assert set(validated.meta) == {MetaField.METRIC_STATE.value, MetaField.VALIDATE_SECONDS.value}
    assert _training(worker).personalised is None
    assert _training(worker).personalised_parameters() is None
    # FedAvg keeps no weights at the site: only the study's progress for its custodian
    assert [p.name for p in state_root.rglob("*") if p.is_file()] == [PROGRESS_FILE]


@pytest.mark.parametrize(
    ("settings", "cases_sent", "withheld"),
    [
        ({}, False, True),  # the default: histograms and sums only, nothing from 1 case
        ({"min_cases_per_metric": 1}, False, False),
        ({"min_cases_per_metric": 1, "share_case_values": ("tiny-ms",)}, True, False),
        ({"share_case_values": ("tiny-ms",)}, False, True),  # allowed, but too few cases
    ],
    ids=["default", "min-1", "cases-allowed", "allowed-too-few"],
)
def test_per_case_values_leave_only_as_the_custodian_allows(
    settings: dict[str, Any],
    cases_sent: bool,
    withheld: bool,
    age_sites: list[Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: a study on dataset tiny-ms whose validation gives a Dice per case (one case)
    from neurofed.federated.study import Study

    study = Study.from_toml('dataset = "tiny-ms"\n' + tiny_study().to_toml())
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    one_case = MetricState(sums={"tp": np.array(4)}, cases={"dice": np.array([0.8])})
    monkeypatch.setattr(LocalTrainer, "evaluate", lambda self, *a, **k: one_case)
    config = SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "state", **settings)
    # Execute
    answer = SiteWorker("site-1", config).handle("validate", run.params, _meta(run))
    # Assert
    assert answer.error is None, answer.error
    sent = answer.meta
    state = sent[MetaField.METRIC_STATE.value]
    assert any(name.startswith("case/") for name in state) is cases_sent
    assert {"sum/dice@sum", "sum/dice@count", "sum/dice@hist", "sum/tp"} <= set(state)
    assert (MetaField.WITHHELD.value in sent) is withheld
    if withheld:  # nothing over one case leaves: not its Dice, not its voxel counts
        assert sent[MetaField.WITHHELD.value] == ["every metric: 1 case(s), fewer than 5"]
        assert int(state["sum/dice@count"]) == 0 and int(state["sum/dice@hist"].sum()) == 0
        assert int(state["sum/tp"]) == 0
    else:
        assert int(state["sum/dice@count"]) == 1 and int(state["sum/tp"]) == 4
