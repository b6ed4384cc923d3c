"""A site that has not approved the study, in NVFlare's simulator: it refuses, says why in its
audit log and in the run's record, and the run completes on the other site (~30-50 s)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurofed.federated.engine import run_simulation
from neurofed.federated.site.audit import read_audit_log, verify_audit_log
from tests.federated.conftest import tiny_study

pytestmark = pytest.mark.slow


def test_a_site_that_has_not_approved_the_study_refuses_and_the_run_goes_on(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: site-2 requires approval and approved nothing; site-1 runs anything
    study = tiny_study(rounds=1, min_sites=1)
    audit = tmp_path / "site-2-audit.jsonl"
    # Execute
    result = run_simulation(
        study,
        age_sites,
        tmp_path / "run",
        site_settings={"site-2": {"require_approval": True, "audit_log": audit}},
    )
    # Assert: the round aggregated site-1 only and recorded site-2's refusal, not a failure
    record = json.loads((result.run_dir / "rounds/1/metrics.json").read_text())
    assert record["accepted"] == ["site-1"] and record["aggregated"]
    assert record["failed"] == {} and record["dropped"] == []
    reason = record["refused"]["site-2"]
    assert reason.startswith(f"refused: study sha256:{study.content_hash} ('tiny-age') is not")
    assert "neurofed site approve" in reason
    assert result.summary.rounds_done == 1 and result.summary.refused == {"site-2": reason}
    assert (result.model_dir / "model.json").is_file()
    # site-2's audit log: each task refused, and what it sent back (the reason only)
    records = read_audit_log(audit)
    assert [r["event"] for r in records] == ["study-refused", "payload-sent"] * (len(records) // 2)
    assert len(records) >= 2 and verify_audit_log(audit).ok
    assert {r["study_hash"] for r in records} == {study.content_hash}
    assert {r["site"] for r in records} == {"site-2"}
    assert records[0]["reason"] == reason and records[0]["task"] == "train"
