"""End to end: a phantom federation with planted problems, read back by `neurofed site check`.

Every broken case the phantom records must be caught for the reason it was broken, every other
case must stay usable, and the splits must cover exactly the usable cases.
"""

from __future__ import annotations

import json

import pytest

from neurofed.data.manifest import check_site, load_manifest
from neurofed.data.splits import load_or_create_splits
from neurofed.keys import ClinicalField, Layout, ProblemKind, Severity, Split
from neurofed.phantom import BROKEN_KINDS, PhantomConfig, PhantomPreset, generate_federation

#: Kinds that drop a value but keep the case.
WARNING_KINDS = {ProblemKind.CLINICAL_RANGE}


@pytest.fixture(scope="module", params=[PhantomPreset.GLIOMA, PhantomPreset.MS])
def federation(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    preset = request.param
    out = tmp_path_factory.mktemp(f"phantom-{preset.value}")
    config = PhantomConfig(
        preset=preset,
        sites=2,
        cases=len(BROKEN_KINDS) + 2,
        seed=11,
        spacing=6.0,
        broken_per_site=len(BROKEN_KINDS),
        unlabelled_sites=(2,),
        missing_markers={2: (ClinicalField.AGE,)},
    )
    generate_federation(config, out)
    return preset, out, json.loads((out / "phantom.json").read_text())


def test_every_planted_problem_is_caught_for_its_reason(federation) -> None:
    # Prepare
    preset, out, truth = federation
    site = out / "site-1"
    site_one = {case["subject_id"] for case in truth["cases"] if case["site"] == 1}
    planted = {sid: ProblemKind(k) for sid, k in truth["broken"].items() if sid in site_one}
    assert set(planted.values()) == set(BROKEN_KINDS)
    # Execute
    report = check_site(site)
    # Assert: the excluded cases are exactly the planted errors, each for its own reason
    expected_layout = Layout.BRATS_2021 if preset is PhantomPreset.GLIOMA else Layout.BIDS
    assert report.manifest.layout is expected_layout
    expected_excluded = {sid for sid, kind in planted.items() if kind not in WARNING_KINDS}
    assert set(report.excluded_ids) == expected_excluded
    by_id = {case.subject_id: case for case in report.cases}
    for sid, kind in planted.items():
        kinds = {p.kind for p in by_id[sid].problems}
        assert kind in kinds, f"{sid}: planted {kind.value}, found {sorted(kinds)}"
        if kind in WARNING_KINDS:
            assert all(p.severity is Severity.WARNING for p in by_id[sid].problems)
    clean = [c for c in report.cases if c.subject_id not in planted]
    assert len(clean) == 2 and all(not c.problems for c in clean)
    assert report.exit_code == 1


def test_manifest_and_splits_cover_the_usable_cases(federation) -> None:
    _, out, _ = federation
    site = out / "site-1"
    report = check_site(site)
    manifest = load_manifest(site)
    usable = {s.subject_id for s in manifest.subjects}
    splits, _ = load_or_create_splits(site, manifest.subjects)
    in_splits = set().union(*(splits.subject_ids(s, usable) for s in Split))
    assert usable == in_splits
    assert usable.isdisjoint(report.excluded_ids)
    assert splits.subject_ids(Split.TRAIN, usable) and splits.subject_ids(Split.VALIDATION, usable)


def test_unlabelled_site_and_missing_values_read_as_unknown(federation) -> None:
    preset, out, _ = federation
    report = check_site(out / "site-2")
    subjects = report.manifest.subjects
    assert subjects, "site-2 should keep its clean cases"
    assert all(s.label is None for s in subjects)
    assert all(s.clinical.age is None for s in subjects)
    if preset is PhantomPreset.GLIOMA:
        assert any(s.clinical.grade is not None for s in subjects)
