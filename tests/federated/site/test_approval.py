"""The custodian's control at the site, without NVFlare: approvals, refusals, the audit log, and
parameters refused on load; and how the server records a refusal."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.site.audit import (
    AuditHead,
    AuditLog,
    line_digest,
    payload_digest,
    read_audit_log,
    verify_audit_log,
)
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.state import kept_audit_heads
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.study import Study
from tests.federated.conftest import tiny_study


def _meta(study: Study, round_number: int = 1) -> dict[str, Any]:
    return {
        MetaField.STUDY.value: study.to_dict(),
        MetaField.STUDY_HASH.value: study.content_hash,
        MetaField.ROUND.value: round_number,
    }


def _with(study: Study, **changes: Any) -> Study:
    return Study.from_dict(study.to_dict() | changes)


@pytest.fixture(scope="module")
def params(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """The initial global parameters of the tiny study's model."""
    run = FederatedRun(tiny_study(), tmp_path_factory.mktemp("run") / "run")
    run.start(["site-1"])
    return run.params


def _guarded(site: Path, tmp_path: Path, **fields: Any) -> tuple[SiteConfig, Path]:
    config = SiteConfig(
        site, device="cpu", require_approval=True, audit_log=tmp_path / "audit.jsonl", **fields
    )
    return config, config.write(tmp_path / "neurofed_site.json")


def _events(path: Path) -> list[str]:
    return [r["event"] for r in read_audit_log(path)]


def test_an_unapproved_study_is_refused_with_a_reason_and_nothing_trained(
    age_sites: list[Path],
    tmp_path: Path,
    params: dict[str, np.ndarray],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare
    study = tiny_study()
    config, path = _guarded(age_sites[0], tmp_path)
    worker = SiteWorker("site-1", config, config_path=path)
    # Execute
    with caplog.at_level(logging.WARNING):
        answer = worker.handle("train", params, _meta(study))
    # Assert
    assert answer.refused and answer.params == {}
    assert answer.error == config.refusal(study.content_hash, study.name, None)
    assert answer.error is not None and answer.error.startswith(
        f"refused: study sha256:{study.content_hash} ('tiny-age') is not approved at this site"
    )
    # the reason, and the head of the site's audit log after recording the refusal; nothing else
    assert set(answer.meta) == {
        MetaField.ERROR.value,
        MetaField.REFUSED.value,
        MetaField.AUDIT_HEAD.value,
    }
    assert worker.training is None  # no case was even loaded
    assert "is not approved at this site" in caplog.text
    refused, sent = read_audit_log(config.audit_log)  # type: ignore[arg-type]
    assert refused["event"] == "study-refused" and refused["reason"] == answer.error
    assert (refused["study_hash"], refused["round"], refused["task"]) == (
        study.content_hash,
        1,
        "train",
    )
    assert sent["event"] == "payload-sent"
    assert (sent["bytes"], sent["sha256"]) == payload_digest({}, answer.meta)


def test_approving_takes_effect_without_a_restart_and_revoking_from_the_next_task(
    age_sites: list[Path],
    tmp_path: Path,
    params: dict[str, np.ndarray],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: count how often the worker reads its config file
    study = tiny_study()
    config, path = _guarded(age_sites[0], tmp_path)
    worker = SiteWorker("site-1", config, config_path=path)
    reads: list[Path] = []
    load = SiteConfig.load

    def counting(cls: type[SiteConfig], file: Path) -> SiteConfig:
        reads.append(file)
        return load(file)

    monkeypatch.setattr(SiteConfig, "load", classmethod(counting))
    # Execute
    before = worker.handle("validate", params, _meta(study, 1))
    config.with_approval(study.content_hash, study.name).write(path)  # the custodian approves
    first = worker.handle("validate", params, _meta(study, 1))
    reads_after_approval = len(reads)
    second = worker.handle("validate", params, _meta(study, 2))  # same study, file unchanged
    reads_per_round = len(reads) - reads_after_approval
    config.write(path)  # the custodian revokes
    after = worker.handle("validate", params, _meta(study, 3))
    # Assert
    assert before.refused and first.error is None and second.error is None
    assert reads_per_round == 0  # not re-read for every round of the same study
    assert after.refused and after.error is not None and "not approved" in after.error
    assert _events(tmp_path / "audit.jsonl") == [
        "study-refused",
        "payload-sent",
        "study-accepted",
        "round-validate",
        "payload-sent",
        "round-validate",
        "payload-sent",
        "study-refused",
        "payload-sent",
    ]


def test_a_study_edited_after_approval_is_refused(
    age_sites: list[Path], tmp_path: Path, params: dict[str, np.ndarray]
) -> None:
    study = tiny_study()
    edited = _with(study, rounds=study.rounds + 5)
    config, path = _guarded(age_sites[0], tmp_path)
    config.with_approval(study.content_hash, study.name).write(path)
    worker = SiteWorker("site-1", SiteConfig.load(path), config_path=path)

    answer = worker.handle("train", params, _meta(edited))

    assert edited.content_hash != study.content_hash
    assert answer.refused and answer.error is not None
    assert f"sha256:{edited.content_hash}" in answer.error and "not approved" in answer.error


def test_a_study_on_a_dataset_not_allowed_is_refused(
    age_sites: list[Path], tmp_path: Path, params: dict[str, np.ndarray]
) -> None:
    study = _with(tiny_study(), dataset="brats-2021")
    config = SiteConfig(age_sites[0], device="cpu", allowed_datasets=("phantom-age",))
    worker = SiteWorker("site-1", config)

    answer = worker.handle("train", params, _meta(study))

    assert answer.refused and answer.error is not None
    assert "names dataset 'brats-2021'; this site allows phantom-age only" in answer.error


def test_the_audit_log_records_rounds_and_every_payload_and_shows_tampering(
    age_sites: list[Path], tmp_path: Path, params: dict[str, np.ndarray]
) -> None:
    # Prepare
    study = tiny_study()
    config, _ = _guarded(age_sites[0], tmp_path)
    config = config.with_approval(study.content_hash, study.name)
    worker = SiteWorker("site-1", config)
    # Execute
    trained = worker.handle("train", params, _meta(study, 1))
    validated = worker.handle("validate", params, _meta(study, 1))
    # Assert
    log = tmp_path / "audit.jsonl"
    records = read_audit_log(log)
    assert [r["event"] for r in records] == [
        "study-accepted",
        "round-train",
        "payload-sent",
        "round-validate",
        "payload-sent",
    ]
    assert {r["study_hash"] for r in records} == {study.content_hash}
    assert records[0]["study"] == "tiny-age" and records[1]["round"] == 1
    for record, answer in ((records[2], trained), (records[4], validated)):
        assert answer.error is None
        assert (record["bytes"], record["sha256"]) == payload_digest(answer.params, answer.meta)
    assert records[2]["bytes"] > sum(v.nbytes for v in trained.params.values())
    assert verify_audit_log(log).ok
    lines = log.read_text().splitlines()
    lines[2] = lines[2].replace(f'"bytes":{records[2]["bytes"]}', '"bytes":10')
    log.write_text("\n".join(lines) + "\n")
    tampered = verify_audit_log(log)
    assert tampered.broken_at == 4 and "line 3 was edited" in str(tampered.problem)


def test_the_log_tail_is_anchored_in_the_answer_the_state_folder_and_the_run(
    age_sites: list[Path], tmp_path: Path, params: dict[str, np.ndarray]
) -> None:
    # Prepare: an approving site that keeps an audit log, and the server's run
    study = tiny_study()
    config, _ = _guarded(age_sites[0], tmp_path, state_dir=tmp_path / "state")
    worker = SiteWorker("site-1", config.with_approval(study.content_hash, study.name))
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    # Execute: one round, its answers decoded as the server receives them
    record = RoundRecord(round=1)
    sent = worker.handle("train", run.params, run.task_request(1).encode())
    params_, meta = sent.encode()
    run.record_training(record, ["site-1"], [SiteAnswer.decode("train", "site-1", params_, meta)])
    run.end_round(record)
    # Assert: the answer carries the head after its round line; the site and the run keep it
    log = tmp_path / "audit.jsonl"
    lines = log.read_text().splitlines()
    assert sent.audit_head is not None
    seq, digest = sent.audit_head
    assert seq == 2 and digest == line_digest(lines[1])  # study-accepted, round-train
    assert kept_audit_heads(tmp_path / "state") == [AuditHead(seq, digest)]
    written = json.loads((tmp_path / "run" / "rounds" / "1" / "metrics.json").read_text())
    assert written["audit_heads"] == {"site-1": {"train": {"seq": 2, "sha256": digest}}}
    # an edit that keeps the chain (the log rewritten whole from line 2 on) is caught by the kept
    # head, which the editor of the log alone cannot change
    forged = AuditLog(tmp_path / "forged.jsonl", "site-1")
    for record_line in read_audit_log(log)[:1]:
        forged.append(record_line["event"], study_hash=record_line["study_hash"])
    forged.append("round-train", study_hash=study.content_hash, round=7)
    (tmp_path / "forged.jsonl").replace(log)
    assert verify_audit_log(log).ok  # the chain alone is satisfied
    check = verify_audit_log(log, kept_audit_heads(tmp_path / "state"))
    assert not check.ok and "noted earlier is not in the log" in str(check.problem)


def test_parameters_with_an_unexpected_name_shape_or_dtype_are_refused_on_load(
    age_sites: list[Path], params: dict[str, np.ndarray]
) -> None:
    # Prepare
    study = tiny_study()
    worker = SiteWorker("site-1", SiteConfig(age_sites[0], device="cpu"))
    name = next(k for k, v in params.items() if v.ndim >= 2)

    class Pickled:  # what an unpickled object would be
        pass

    payloads: dict[str, Mapping[str, Any]] = {
        "unexpected parameter name(s) 'extra.weight'": params
        | {"extra.weight": np.zeros(3, np.float32)},
        f"parameter {name!r} has shape": params | {name: params[name].reshape(-1)},
        f"parameter {name!r} has dtype object": params
        | {name: np.full(params[name].shape, Pickled(), dtype=object)},
    }
    # Execute
    answers = {m: worker.handle("train", p, _meta(study)) for m, p in payloads.items()}
    good = worker.handle("validate", params, _meta(study))
    # Assert
    for message, answer in answers.items():
        assert answer.error is not None and message in answer.error, answer.error
        assert answer.params == {} and not answer.refused
    assert good.error is None  # the site keeps working


# -- the server's record -------------------------------------------------------------------------


def test_a_refusal_is_recorded_apart_from_failures_and_the_round_goes_on(tmp_path: Path) -> None:
    # Prepare
    run = FederatedRun(tiny_study(rounds=1, min_sites=1), tmp_path / "run")
    run.start(["site-1", "site-2", "site-3"])
    reason = "refused: study sha256:… is not approved at this site"
    refused = {MetaField.ERROR.value: reason, MetaField.REFUSED.value: True}
    good = SiteAnswer.decode(
        TaskName.TRAIN,
        "site-1",
        {k: v.copy() for k, v in run.params.items()},
        {MetaField.NUM_EXAMPLES.value: 2, MetaField.LABEL_COUNTS.value: {}},
    )
    record = RoundRecord(round=1)
    targets = ["site-1", "site-2", "site-3"]
    # Execute
    changed = run.record_training(
        record,
        targets,
        [
            good,
            SiteAnswer.decode(TaskName.TRAIN, "site-2", {}, refused),
            SiteAnswer.decode(
                TaskName.TRAIN, "site-3", {}, {MetaField.ERROR.value: "OSError: disk"}
            ),
        ],
    )
    run.record_validation(
        record, ["site-2"], [SiteAnswer.decode(TaskName.VALIDATE, "site-2", {}, refused)]
    )
    run.end_round(record)
    summary = run.finish()
    # Assert
    assert changed and record.accepted == ["site-1"]
    written = json.loads((tmp_path / "run/rounds/1/metrics.json").read_text())
    assert written["refused"] == {"site-2": reason}
    assert written["failed"] == {"site-3": "OSError: disk"}
    assert RoundRecord.from_json(written).refused == {"site-2": reason}
    assert run.live == targets  # a refusing site is asked again (it may approve mid-run)
    assert summary.refused == {"site-2": reason}
