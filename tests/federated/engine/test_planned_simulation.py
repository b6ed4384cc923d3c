"""A planned study in NVFlare's simulator: fingerprint round, plan.json, the planned model.

One simulation (~30 s): a 2-site, 1-round ``ms-lesion`` study whose network is planned from the
sites' merged fingerprints; every site payload is recorded under ``audit/``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from neurofed.data.manifest import load_manifest
from neurofed.federated.engine import run_simulation
from neurofed.federated.protocol import MetaField
from neurofed.models import DynUNetConfig
from neurofed.preprocess.fingerprint import DEFAULT_SPEC, Fingerprint
from neurofed.preprocess.plan import Plan
from neurofed.training import load_model
from tests.federated.conftest import planned_study

pytestmark = pytest.mark.slow


def _lists(value: Any) -> list[list[Any]]:
    if isinstance(value, dict):
        return [x for v in value.values() for x in _lists(v)]
    if isinstance(value, list):
        return [value] + [x for v in value for x in _lists(v)]
    return []


def test_a_planned_study_plans_from_the_sites_fingerprints_and_ships_the_plan_with_its_model(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    study = planned_study("ms-lesion", rounds=1, min_sites=2)
    # Execute
    result = run_simulation(study, age_sites, tmp_path / "run", audit_dir=tmp_path / "audit")
    # Assert: the plan, from both sites' 3 training cases, in the run folder and the summary
    run = result.run_dir
    plan = Plan.from_json(json.loads((run / "plan.json").read_text()))
    merged = Fingerprint.from_json(json.loads((run / "fingerprint.json").read_text()))
    assert plan.num_cases == merged.num_cases == 6 and plan.fingerprint_id == merged.fingerprint_id
    assert result.summary.plan is not None and result.summary.plan.plan_id == plan.plan_id
    assert result.summary.plan.sites == ("site-1", "site-2")
    assert json.loads((run / "run.json").read_text())["plan"]["sites"] == ["site-1", "site-2"]
    assert result.summary.rounds_done == 1
    record = json.loads((run / "rounds/1/metrics.json").read_text())
    assert record["accepted"] == ["site-1", "site-2"] and record["aggregated"]
    # the model folder carries the plan and trained under it: planned spacing and network
    for folder in (result.model_dir, run / "last_model"):
        assert (folder / "plan.json").read_text() == (run / "plan.json").read_text()
        assert (folder / "fingerprint.json").is_file()
        model = load_model(folder)
        assert model.preprocess.spacing == plan.spacing == (2.0, 2.0, 2.0)
        assert isinstance(model.config.model_config, DynUNetConfig)
        assert model.config.model_config.plan.filters == plan.filters == (4, 8, 16)
        assert model.config.patch_shape == plan.patch_size
        assert json.loads((folder / "model.json").read_text())["provenance"]["plan_id"] == (
            plan.plan_id
        )
    # what left each site: first the fingerprint (aggregates only), then train and validate
    subject_ids = {s.subject_id for site in age_sites for s in load_manifest(site).subjects}
    bins = {DEFAULT_SPEC.spacing.size, DEFAULT_SPEC.shape.size, DEFAULT_SPEC.intensity.size}
    for site in ("site-1", "site-2"):
        names = [p.name for p in sorted((tmp_path / "audit" / site).glob("*.json"))]
        assert names == [
            "0001-fingerprint-round-0.json",
            "0002-train-round-1.json",
            "0003-validate-round-1.json",
        ]
        sent = json.loads((tmp_path / "audit" / site / names[0]).read_text())
        assert sent["params"] == {} and set(sent["meta"]) == {MetaField.FINGERPRINT.value}
        text = sent["meta"][MetaField.FINGERPRINT.value]
        payload = json.loads(text)
        assert payload["num_cases"] == 3
        assert all(len(values) in bins | {2, 3} for values in _lists(payload))
        assert not any(s in text for s in subject_ids) and "hospital" not in text
        assert "/" not in text
