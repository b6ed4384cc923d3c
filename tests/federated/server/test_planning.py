"""The fingerprint round without NVFlare: site answers, plan checks, the run's plan and resume."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurofed.data.manifest import load_manifest
from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName, encode_plan
from neurofed.federated.server.planning import PlanningError
from neurofed.federated.server.run import FederatedRun
from neurofed.federated.server.run_folder import RoundRecord
from neurofed.federated.site import SiteConfig, SiteWorker
from neurofed.federated.study.plan import FINGERPRINT_FILE, PLAN_FILE
from neurofed.models import DynUNetConfig
from neurofed.preprocess.fingerprint import DEFAULT_SPEC, Fingerprint
from neurofed.preprocess.plan import Plan
from neurofed.preprocess.plan_preprocessing import PlanPreprocessing
from neurofed.training import LocalTrainer, RunFolderError
from tests.federated.conftest import planned_study, tiny_study

SITES = ["site-1", "site-2"]


def _workers(sites: Sequence[Path], tmp_path: Path) -> list[SiteWorker]:
    return [
        SiteWorker(name, SiteConfig(root, device="cpu", audit_dir=tmp_path / "audit" / name))
        for name, root in zip(SITES, sites, strict=False)  # the first len(sites) sites
    ]


def _fingerprint_round(run: FederatedRun, workers: Sequence[SiteWorker]) -> list[SiteAnswer]:
    """Each worker's answer as the server decodes it from the wire."""
    answers = []
    for worker in workers:
        answer = worker.handle("fingerprint", {}, run.task_request(0).encode())
        params, meta = answer.encode()
        answers.append(SiteAnswer.decode(TaskName.FINGERPRINT, worker.site_id, params, meta))
    return answers


def _planned_run(
    tmp_path: Path, sites: Sequence[Path], task: str = "ms-lesion", min_sites: int = 2
) -> FederatedRun:
    run = FederatedRun(planned_study(task, min_sites=min_sites), tmp_path / "run")
    run.start(SITES)
    run.record_fingerprints(SITES, _fingerprint_round(run, _workers(sites, tmp_path)))
    return run


# -- the site's fingerprint answer ---------------------------------------------------------------


def _numbers_and_strings(value: Any) -> Iterator[Any]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _numbers_and_strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers_and_strings(v)
    else:
        yield value


def _lists(value: Any) -> Iterator[list[Any]]:
    if isinstance(value, dict):
        for v in value.values():
            yield from _lists(v)
    elif isinstance(value, list):
        yield value
        for v in value:
            yield from _lists(v)


def test_a_site_answers_with_its_training_split_fingerprint_and_nothing_else(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    run = FederatedRun(planned_study(), tmp_path / "run")
    run.start(SITES)
    worker = _workers(age_sites[:1], tmp_path)[0]
    # Execute
    answer = worker.handle("fingerprint", {}, run.task_request(0).encode())
    # Assert: one field, the text of a fingerprint of the 3 training cases (FLAIR + T1)
    assert answer.error is None and answer.params == {}
    assert set(answer.meta) == {MetaField.FINGERPRINT.value}
    fingerprint = Fingerprint.from_json(json.loads(answer.meta[MetaField.FINGERPRINT.value]))
    assert fingerprint.num_cases == 3 and [m.value for m in fingerprint.modalities] == [
        "FLAIR",
        "T1",
    ]
    recorded = json.loads((tmp_path / "audit/site-1/0001-fingerprint-round-0.json").read_text())
    assert recorded["meta"] == answer.meta  # what left the site, as it left


def test_the_fingerprint_payload_holds_fixed_length_histograms_counts_and_sums_only(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: the payloads of two sites with different cases
    run = FederatedRun(planned_study(), tmp_path / "run")
    run.start(SITES)
    for worker in _workers(age_sites, tmp_path):
        worker.handle("fingerprint", {}, run.task_request(0).encode())
    recorded = [tmp_path / f"audit/{site}/0001-fingerprint-round-0.json" for site in SITES]
    payloads = [
        json.loads(json.loads(path.read_text())["meta"][MetaField.FINGERPRINT.value])
        for path in recorded
    ]
    subjects = {s.subject_id for site in age_sites for s in load_manifest(site).subjects}
    bins = {DEFAULT_SPEC.spacing.size, DEFAULT_SPEC.shape.size, DEFAULT_SPEC.intensity.size}
    keys = {"format_version", "modalities", "num_cases", "num_failed", "num_label_foreground"}
    keys |= {"spacing", "shape", "extent", "intensity"}
    for payload in payloads:
        # Assert: the same keys, every list as long as the spec or the axes/modalities, no
        # list with one entry per case, no string but names of fields and modalities
        assert set(payload) == keys
        for values in _lists(payload):
            assert len(values) in bins | {2, 3}, len(values)
        for histogram in payload["spacing"] + payload["shape"] + payload["extent"]:
            assert all(isinstance(c, int) for c in histogram["counts"])
        for stats in payload["intensity"]:
            names = ("num_cases", "num_voxels", "sum_mean", "sum_mean_square")
            assert all(isinstance(stats[k], int) for k in names)
        for item in _numbers_and_strings(payload):
            assert isinstance(item, int | float | str)
            if isinstance(item, str):
                assert item not in subjects and not any(s in item for s in subjects)
                assert "/" not in item and "hospital" not in item
    assert payloads[0] != payloads[1]
    assert [len(p["spacing"][0]["counts"]) for p in payloads] == [DEFAULT_SPEC.spacing.size] * 2


def test_a_study_without_plan_gets_no_fingerprint(tmp_path: Path, age_sites: list[Path]) -> None:
    run = FederatedRun(tiny_study(), tmp_path / "run")
    run.start(SITES)

    answer = _workers(age_sites[:1], tmp_path)[0].handle(
        "fingerprint", {}, run.task_request(0).encode()
    )

    assert answer.error is not None and "no [plan]" in answer.error
    assert MetaField.FINGERPRINT.value not in answer.meta


# -- the server: plan.json, fingerprint.json, the initial model, resume ----------------------------


def test_the_fingerprint_round_writes_the_plan_and_builds_the_planned_network(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    study = planned_study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(SITES)
    assert run.needs_fingerprint() and run.params == {}
    replies = _fingerprint_round(run, _workers(age_sites, tmp_path))
    # Execute
    plan = run.record_fingerprints(SITES, replies)
    # Assert: the files, the record of who contributed, the plan sent with every task
    folder = tmp_path / "run"
    written = json.loads((folder / PLAN_FILE).read_text())
    assert Plan.from_json(written) == plan
    # the plan says how the study's cases are preprocessed, and where that is not nnU-Net's
    assert written["preprocessing"] == PlanPreprocessing.of(study.train.preprocess, 2).to_json()
    assert written["preprocessing"]["normalization_mask"] == "brain"
    assert [d.split(":")[0] for d in written["departures_from_nnunet"]][:3] == [
        "crop",
        "normalisation",
        "resampling",
    ]
    merged = Fingerprint.from_json(json.loads((folder / FINGERPRINT_FILE).read_text()))
    assert merged.num_cases == plan.num_cases == 6 and merged.fingerprint_id == plan.fingerprint_id
    record = json.loads((folder / "run.json").read_text())["plan"]
    assert record["sites"] == SITES and record["failed"] == {} and record["plan_id"] == plan.plan_id
    meta = run.task_request(1).encode()
    assert (
        meta[MetaField.PLAN_ID.value] == plan.plan_id
        and Plan.from_json(meta[MetaField.PLAN.value]) == plan
    )
    # the initial global model is the seeded planned network: 3 levels of 4, 8, 16 filters
    config = run.train_config()
    assert isinstance(config.model_config, DynUNetConfig)
    assert config.model_config.plan.filters == plan.filters == (4, 8, 16)
    assert config.patch_shape == plan.patch_size and config.batch_size == plan.batch_size
    assert config.preprocess.spacing == plan.spacing == (2.0, 2.0, 2.0)
    assert config.learning_rate == study.train.learning_rate  # the study's settings still apply
    expected = LocalTrainer(config).get_parameters(include_local=True)
    assert run.params.keys() == expected.keys()
    assert all(np.array_equal(run.params[k], v) for k, v in expected.items())
    assert not run.needs_fingerprint()


def test_a_resumed_run_reads_the_plan_back_and_skips_the_round(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    first = _planned_run(tmp_path, age_sites)
    # Execute
    again = FederatedRun(planned_study(), tmp_path / "run")
    next_round = again.start(SITES)
    # Assert
    assert next_round == 1 and not again.needs_fingerprint()
    assert again.plan == first.plan and again.planning["sites"] == SITES
    assert again.params.keys() == first.params.keys()
    assert all(np.array_equal(again.params[k], v) for k, v in first.params.items())


def test_a_site_that_cannot_fingerprint_is_left_out_while_the_quorum_holds(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: site-2's folder is missing; the quorum is 1
    run = FederatedRun(planned_study(min_sites=1), tmp_path / "run")
    run.start(SITES)
    good, _ = _workers(age_sites, tmp_path)
    broken = SiteWorker("site-2", SiteConfig(tmp_path / "secret-hospital", device="cpu"))
    replies = _fingerprint_round(run, [good, broken])
    # Execute
    plan = run.record_fingerprints(SITES, replies)
    # Assert: planned from site-1's 3 cases; site-2's reason kept (its path masked)
    assert plan.num_cases == 3
    record = json.loads((tmp_path / "run/run.json").read_text())["plan"]
    assert record["sites"] == ["site-1"] and list(record["failed"]) == ["site-2"]
    assert "secret-hospital" not in record["failed"]["site-2"]
    assert run.live == SITES  # it may still train; only the plan is made without it


def test_a_missed_quorum_is_a_clear_error_and_writes_no_plan(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    run = FederatedRun(planned_study(min_sites=2), tmp_path / "run")
    run.start(SITES)
    good, _ = _workers(age_sites, tmp_path)
    broken = SiteWorker("site-2", SiteConfig(tmp_path / "missing", device="cpu"))
    replies = _fingerprint_round(run, [good, broken])

    with pytest.raises(PlanningError, match=r"needs 2 site\(s\).*1 sent a fingerprint.*site-2"):
        run.record_fingerprints(SITES, replies)
    assert not (tmp_path / "run" / PLAN_FILE).exists() and run.needs_fingerprint()
    with pytest.raises(PlanningError, match=r"no answer in time from \['site-2'\]"):
        run.record_fingerprints(SITES, replies[:1])


def test_a_resumed_planned_run_without_its_plan_is_refused(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    run = _planned_run(tmp_path, age_sites)
    run.end_round(RoundRecord(round=1))
    (tmp_path / "run" / PLAN_FILE).unlink()

    with pytest.raises(RunFolderError, match=r"no plan\.json"):
        FederatedRun(planned_study(), tmp_path / "run").start(SITES)


# -- the site checks the plan it is sent ---------------------------------------------------------


def test_a_site_trains_under_the_plan_and_refuses_a_forged_or_foreign_one(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: an ms-lesion run with its plan, and a brain-age plan of the same sites
    run = _planned_run(tmp_path / "lesion", age_sites)
    assert run.plan is not None
    other = _planned_run(tmp_path / "age", age_sites, task="brain-age")
    worker = _workers(age_sites, tmp_path)[0]
    forged = run.task_request(1).encode() | {MetaField.PLAN_ID.value: "0" * 12}
    foreign = run.task_request(1).encode() | encode_plan(other.plan)
    missing = {k: v for k, v in run.task_request(1).encode().items() if k != MetaField.PLAN.value}
    missing.pop(MetaField.PLAN_ID.value)
    # Execute
    wrong_id = worker.handle("train", run.params, forged)
    wrong_task = worker.handle("train", run.params, foreign)
    no_plan = worker.handle("validate", run.params, missing)
    trained = worker.handle("train", run.params, run.task_request(1).encode())
    # Assert
    assert wrong_id.error is not None and "not the claimed 000000000000" in wrong_id.error
    assert wrong_task.error is not None and "plan for another task" in wrong_task.error
    assert no_plan.error is not None and "carries no plan" in no_plan.error
    assert trained.error is None and trained.params.keys() == run.params.keys()
    assert worker.training is not None
    config = worker.training.trainer.config
    assert config.model_config == run.train_config().model_config
    assert config.preprocess.spacing == run.plan.spacing


def test_a_site_keeps_the_plan_it_accepts_for_preprocessing(
    tmp_path: Path, age_sites: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    run = _planned_run(tmp_path, age_sites, task="brain-age")
    assert run.plan is not None
    worker = _workers(age_sites, tmp_path)[0]
    kept = worker.config.study_state_dir(run.study.content_hash) / PLAN_FILE
    forged = run.task_request(1).encode() | {MetaField.PLAN_ID.value: "0" * 12}
    # Execute
    refused = worker.handle("train", run.params, forged)
    assert refused.error is not None and not kept.exists()  # a refused plan is not kept
    with caplog.at_level(logging.INFO, logger="neurofed"):
        trained = worker.handle("train", run.params, run.task_request(1).encode())
    # Assert
    assert trained.error is None
    assert Plan.from_json(json.loads(kept.read_text())) == run.plan
    assert json.loads(kept.read_text()) == run.task_request(1).encode()[MetaField.PLAN.value]
    assert str(kept) in caplog.text and "neurofed site preprocess" in caplog.text
    assert [p.name for p in kept.parent.iterdir() if p.name.endswith(".tmp")] == []


def test_a_plan_for_a_study_without_plan_is_refused(tmp_path: Path, age_sites: list[Path]) -> None:
    planned = _planned_run(tmp_path / "planned", age_sites)
    run = FederatedRun(tiny_study(), tmp_path / "run")
    run.start(SITES)

    answer = _workers(age_sites, tmp_path)[0].handle(
        "train", run.params, run.task_request(1).encode() | encode_plan(planned.plan)
    )

    assert answer.error is not None and "has no [plan]" in answer.error
