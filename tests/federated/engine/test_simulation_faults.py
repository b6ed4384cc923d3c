"""One Ditto study over four simulated sites, two of them at fault, in NVFlare's simulator.

``site-1`` and ``site-2`` train; ``site-3``'s manifest is damaged after its check (its tasks
fail); ``site-4`` requires approval and approved nothing (it refuses). The run must complete on
the two good sites, record the failure and the refusal apart, keep each good site's
personalised model at the site, and send nothing but metric states when validating. One
simulation (~30-40 s) serves every test of the module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from neurofed.federated.engine import SimulationResult, run_simulation
from neurofed.federated.site.audit import read_audit_log, verify_audit_log
from neurofed.federated.study import Study
from neurofed.training import load_model
from tests.federated.conftest import SCORED, scored, tiny_study, write_site

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class FaultyRun:
    study: Study
    result: SimulationResult
    sites: list[Path]
    audit_dir: Path
    refusal_log: Path

    def record(self, round_number: int) -> dict[str, Any]:
        path = self.result.run_dir / "rounds" / str(round_number) / "metrics.json"
        return dict(json.loads(path.read_text()))


@pytest.fixture(scope="module")
def faulty(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultyRun]:
    base = tmp_path_factory.mktemp("faulty")
    # fresh sites, so the good sites' state folders (inside the site folders) start empty
    sites = [write_site(base / f"hospital-{k}", seed=k) for k in (1, 2, 3, 4)]
    (sites[2] / "neurofed" / "manifest.json").write_text("{ not json", encoding="utf-8")
    study = tiny_study(rounds=2, min_sites=2, strategy="ditto", ditto_lambda=0.5)
    refusal_log = base / "site-4-audit.jsonl"
    result = run_simulation(
        study,
        sites,
        base / "run",
        audit_dir=base / "audit",
        site_settings=scored(4)
        | {"site-4": {"require_approval": True, "audit_log": refusal_log, **SCORED}},
    )
    yield FaultyRun(study, result, sites, base / "audit", refusal_log)


def _strings(value: Any) -> list[str]:
    if isinstance(value, dict):
        return [str(k) for k in value] + [s for v in value.values() for s in _strings(v)]
    if isinstance(value, list):
        return [s for v in value for s in _strings(v)]
    return [value] if isinstance(value, str) else []


def test_the_run_completes_on_the_good_sites(faulty: FaultyRun) -> None:
    assert faulty.result.summary.rounds_done == 2 and faulty.result.summary.dropped == ()
    for k in (1, 2):
        record = faulty.record(k)
        assert record["accepted"] == ["site-1", "site-2"] and record["aggregated"]
        assert record["dropped"] == []
    assert (faulty.result.model_dir / "model.json").is_file()


def test_a_failing_site_is_reported_with_a_reason_and_no_path(faulty: FaultyRun) -> None:
    for k in (1, 2):
        record = faulty.record(k)
        assert set(record["failed"]) == {"site-3"}  # a refusal is not a failure
        reason = record["failed"]["site-3"]
        assert "SiteDataError" in reason and str(faulty.sites[2]) not in reason


def test_a_site_that_has_not_approved_the_study_refuses_and_says_why(faulty: FaultyRun) -> None:
    study, result = faulty.study, faulty.result
    # the round recorded site-4's refusal, not a failure
    record = faulty.record(1)
    reason = record["refused"]["site-4"]
    assert reason.startswith(f"refused: study sha256:{study.content_hash} ('tiny-age') is not")
    assert "neurofed site approve" in reason
    assert result.summary.refused == {"site-4": reason}
    # site-4's audit log: each task refused, and what it sent back (the reason only)
    records = read_audit_log(faulty.refusal_log)
    assert [r["event"] for r in records] == ["study-refused", "payload-sent"] * (len(records) // 2)
    assert len(records) >= 2 and verify_audit_log(faulty.refusal_log).ok
    assert {r["study_hash"] for r in records} == {study.content_hash}
    assert {r["site"] for r in records} == {"site-4"}
    assert records[0]["reason"] == reason and records[0]["task"] == "train"


def test_ditto_validates_and_keeps_a_personalised_model_at_each_good_site(
    faulty: FaultyRun,
) -> None:
    study, result = faulty.study, faulty.result
    # a personalised validation next to the global one in every round and the summary
    for k in (1, 2):
        record = faulty.record(k)
        # sites whose validation split has a usable case (site-2's may have none)
        assert set(record["personalised_per_site"]) == set(record["validation_per_site"]) != set()
        assert record["personalised"]["num_examples"] == record["validation"]["num_examples"] >= 1
    assert result.summary.personalised is not None and result.summary.personalised.round == 2
    # each good site's final personalised model is a usable model folder in its state folder
    for name, site in zip(("site-1", "site-2"), faulty.sites, strict=False):
        folder = site / "neurofed" / "federated" / study.content_hash[:16] / "personalised-model"
        model = load_model(folder)
        assert model.epoch == 2 and model.task.task_id.value == "brain-age"
        # what the site sent when validating: the two metric states only
        validations = sorted((faulty.audit_dir / name).glob("*-validate-*.json"))
        assert len(validations) == 2
        for path in validations:
            sent = json.loads(path.read_text())
            assert sent["params"] == {}
            assert set(sent["meta"]) == {
                "metric_state",
                "personalised_metric_state",
                "validate_seconds",
            }
            assert not any("hospital" in text for text in _strings(sent))
