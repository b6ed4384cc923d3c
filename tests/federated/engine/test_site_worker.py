"""The site side without NVFlare: study check, training answer, validation answer, failures."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from neurofed.engine import LocalTrainer
from neurofed.federated.engine import MetaField, SiteConfig, SiteWorker, site_seed
from neurofed.federated.engine.coordinator import FederatedRun
from neurofed.tasks import MetricState
from tests.federated.engine.conftest import tiny_study


def _meta(run: FederatedRun, round_number: int = 1) -> dict[str, object]:
    return run.task_meta(round_number)


def test_train_and_validate_answer_with_arrays_and_counts_only(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    study = tiny_study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    worker = SiteWorker("site-1", SiteConfig(age_sites[0], device="cpu", audit_dir=tmp_path / "a"))
    # Execute
    trained = worker.handle("train", run.params, _meta(run))
    validated = worker.handle("validate", run.params, _meta(run))
    # Assert
    assert trained.error is None and validated.error is None
    assert trained.params.keys() == run.params.keys()
    assert any(not np.array_equal(trained.params[k], run.params[k]) for k in run.params)
    num_examples = worker.trainer(study).num_examples
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
    assert str(missing) not in no_data.error and "<site data>" in no_data.error
    assert no_data.params == {}
    assert wrong_hash.error is not None and "content hash" in wrong_hash.error
    assert unknown.error is not None and "unknown task 'predict'" in unknown.error


def test_each_site_trains_with_its_own_seed() -> None:
    study = tiny_study()
    seeds = {site_seed(study.seed, f"site-{k}") for k in range(1, 6)}
    assert len(seeds) == 5
    trainer = LocalTrainer(study.train_config(device="cpu").with_changes(seed=site_seed(3, "a")))
    assert trainer.config.seed == site_seed(3, "a")
