"""check_site: one broken case never costs the site; results are cached, written and reloadable."""

import json
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

import neurofed.data.check_runner as check_runner
from neurofed.data.checks import CaseStatus, CheckSettings
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.manifest import Manifest, ManifestError, check_site, load_manifest
from neurofed.data.nifti import write_image
from neurofed.data.subject import Clinical, ImageRef, Problem, Subject
from neurofed.keys import Layout, Modality, ProblemKind, Severity, SiteFile
from tests.helpers import AFFINE, SHAPE, write_tiny_image

MODALITIES = (Modality.T1, Modality.FLAIR)


def make_case(root: Path, sid: str, age: float | None = None) -> Subject:
    images = {}
    for i, modality in enumerate(MODALITIES):
        rel = f"{sid}/{sid}_{modality.value.lower()}.nii.gz"
        write_tiny_image(root / rel, seed=i)
        images[modality] = ImageRef(PurePosixPath(rel))
    return Subject(sid, images, clinical=Clinical(age=age))


def make_scan(root: Path, ids=("c1", "c2", "c3"), problems=()) -> LayoutScan:
    subjects = tuple(make_case(root, sid, age=50.0) for sid in ids)
    return LayoutScan(Layout.BRATS_2021, subjects, tuple(problems), MODALITIES)


def truncate(path: Path) -> None:
    write_image(path, np.random.default_rng(0).random((24, 24, 24)), AFFINE)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])


@pytest.fixture
def checked(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Ids of the cases whose files were actually read, run by run."""
    calls: list[str] = []
    real = check_runner.check_case

    def spy(root, subject, *args, **kwargs):
        calls.append(subject.subject_id)
        return real(root, subject, *args, **kwargs)

    monkeypatch.setattr(check_runner, "check_case", spy)
    return calls


def test_broken_case_among_good_ones_leaves_the_good_ones_in_the_manifest(tmp_path: Path) -> None:
    # Prepare
    scan = make_scan(tmp_path, ids=("c1", "c2", "c3", "c4"))
    truncate(tmp_path / "c3/c3_flair.nii.gz")
    # Execute
    report = check_site(tmp_path, scan=scan)
    # Assert
    assert [s.subject_id for s in report.manifest.subjects] == ["c1", "c2", "c4"]
    assert report.manifest.excluded == ("c3",) == report.excluded_ids
    assert report.exit_code == 1
    assert [c.status for c in report.cases] == [CaseStatus.OK] * 2 + [
        CaseStatus.EXCLUDED,
        CaseStatus.OK,
    ]
    assert load_manifest(tmp_path) == report.manifest
    on_disk = json.loads((tmp_path / "neurofed" / SiteFile.CHECK_REPORT).read_text())
    assert on_disk["excluded"] == ["c3"]
    assert on_disk["cases"][2]["problems"][0]["path"] == "c3/c3_flair.nii.gz"


def test_clean_site_exits_zero_and_manifest_round_trips(tmp_path: Path) -> None:
    report = check_site(tmp_path, scan=make_scan(tmp_path))
    assert report.exit_code == 0
    assert report.excluded_ids == ()
    assert Manifest.from_json(json.loads(json.dumps(report.manifest.to_json()))) == report.manifest
    assert report.manifest.subject("c2").clinical.age == 50.0
    with pytest.raises(KeyError, match="'c9' is not at this site"):
        report.manifest.subject("c9")


def test_reader_errors_exclude_reader_warnings_keep(tmp_path: Path) -> None:
    # Prepare: the reader already saw c1's missing FLAIR and c2's odd age; and a broken table
    scan = make_scan(tmp_path)
    (tmp_path / "c1/c1_flair.nii.gz").unlink()
    c1 = Subject("c1", {Modality.T1: scan.subjects[0].images[Modality.T1]})
    reader = (
        Problem(ProblemKind.MISSING_MODALITY, "no flair file", "add it", subject_id="c1"),
        Problem(
            ProblemKind.CLINICAL_RANGE,
            "age 230 out of range; dropped",
            "fix the table",
            subject_id="c2",
            severity=Severity.WARNING,
        ),
        Problem(ProblemKind.UNKNOWN_FILE, "notes.txt not placed", "move it", path="notes.txt"),
    )
    scan = LayoutScan(scan.layout, (c1, *scan.subjects[1:]), reader, scan.expected_modalities)
    # Execute
    report = check_site(tmp_path, scan=scan)
    # Assert
    c1_report, c2_report, c3_report = report.cases
    assert c1_report.problems == (reader[0],)  # the check's own "FLAIR missing" is not repeated
    assert c2_report.status is CaseStatus.WARNING and c2_report.problems == (reader[1],)
    assert c3_report.status is CaseStatus.OK
    assert report.site_problems == (reader[2],)
    assert report.warnings == (reader[1],)
    assert [s.subject_id for s in report.manifest.subjects] == ["c2", "c3"]


def test_rerun_rechecks_only_changed_cases(tmp_path: Path, checked: list[str]) -> None:
    # Prepare
    scan = make_scan(tmp_path)
    first = check_site(tmp_path, scan=scan)
    assert checked == ["c1", "c2", "c3"]
    # Execute: nothing changed
    checked.clear()
    second = check_site(tmp_path, scan=scan)
    assert checked == []
    assert [c.cached for c in second.cases] == [True, True, True]
    assert [c.problems for c in second.cases] == [c.problems for c in first.cases]
    # Execute: touch one file of c2
    path = tmp_path / "c2/c2_t1.nii.gz"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))
    third = check_site(tmp_path, scan=scan)
    assert checked == ["c2"]
    assert [c.cached for c in third.cases] == [True, False, True]
    # Execute: force, then other settings
    checked.clear()
    check_site(tmp_path, scan=scan, force=True)
    assert checked == ["c1", "c2", "c3"]
    checked.clear()
    check_site(tmp_path, scan=scan, settings=CheckSettings(affine_tolerance_mm=0.5))
    assert checked == ["c1", "c2", "c3"]


def test_cached_result_of_a_broken_case_is_kept_until_it_is_fixed(
    tmp_path: Path, checked: list[str]
) -> None:
    scan = make_scan(tmp_path)
    truncate(tmp_path / "c1/c1_t1.nii.gz")
    check_site(tmp_path, scan=scan)
    checked.clear()
    again = check_site(tmp_path, scan=scan)
    assert checked == [] and again.excluded_ids == ("c1",)
    write_tiny_image(tmp_path / "c1/c1_t1.nii.gz")  # the custodian re-copies the file
    fixed = check_site(tmp_path, scan=scan)
    assert checked == ["c1"] and fixed.exit_code == 0


def test_two_workers_give_the_same_report(tmp_path: Path, checked: list[str]) -> None:
    scan = make_scan(tmp_path, ids=("c1", "c2", "c3", "c4"))
    truncate(tmp_path / "c2/c2_t1.nii.gz")
    write_image(tmp_path / "c4/c4_flair.nii.gz", np.zeros(SHAPE), AFFINE)

    def summary(report):
        return [(c.subject_id, c.status, c.problems) for c in report.cases]

    serial = check_site(tmp_path, scan=scan, workers=1, force=True)
    parallel = check_site(tmp_path, scan=scan, workers=2, force=True)
    assert checked == ["c1", "c2", "c3", "c4"]  # the parallel run checked in other processes
    assert summary(parallel) == summary(serial)
    assert parallel.manifest.subjects == serial.manifest.subjects
    assert parallel.excluded_ids == ("c2", "c4")


def test_duplicate_ids_exclude_every_copy(tmp_path: Path) -> None:
    copies = []
    for folder in ("a", "b"):
        case = make_case(tmp_path / folder, "c1")
        copies.append(Subject("c1", {m: ImageRef(folder / r.path) for m, r in case.images.items()}))
    scan = LayoutScan(Layout.BRATS_2021, tuple(copies), (), MODALITIES)
    report = check_site(tmp_path, scan=scan)
    assert report.excluded_ids == ("c1",)
    assert report.manifest.subjects == ()
    assert [c.problems[-1].kind for c in report.cases] == [ProblemKind.DUPLICATE_SUBJECT] * 2
    assert "b/c1/c1_t1.nii.gz" in report.cases[0].problems[-1].message


def test_report_holds_no_voxel_values_and_no_absolute_paths(tmp_path: Path) -> None:
    # Prepare: a NaN-spoilt image whose voxels carry a recognisable value
    scan = make_scan(tmp_path)
    data = np.full(SHAPE, 4321.875, dtype=np.float32)
    data[0, 0, 0] = np.nan
    write_image(tmp_path / "c1/c1_t1.nii.gz", data, AFFINE)
    # Execute
    report = check_site(tmp_path, scan=scan)
    # Assert
    texts = [
        json.dumps(report.to_json()),
        (tmp_path / "neurofed/check-report.json").read_text(),
        (tmp_path / "neurofed/manifest.json").read_text(),
    ]
    assert report.cases[0].problems[0].kind is ProblemKind.NON_FINITE
    for text in texts:
        assert "4321" not in text
        assert str(tmp_path) not in text


def test_progress_is_reported_per_case(tmp_path: Path) -> None:
    calls: list[tuple[int, int, str]] = []
    check_site(tmp_path, scan=make_scan(tmp_path), progress=lambda *a: calls.append(a))
    assert calls == [(1, 3, "c1"), (2, 3, "c2"), (3, 3, "c3")]


def test_site_without_cases_is_an_error(tmp_path: Path) -> None:
    report = check_site(tmp_path, scan=LayoutScan(Layout.BIDS, (), (), ()))
    assert report.exit_code == 1
    assert [p.kind for p in report.site_problems] == [ProblemKind.LAYOUT]
    assert "no cases found" in report.site_problems[0].message


def test_load_manifest_says_how_to_make_or_repair_it(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"manifest\.json: not found; run `neurofed site check"):
        load_manifest(tmp_path)
    (tmp_path / "neurofed").mkdir()
    (tmp_path / "neurofed/manifest.json").write_text('{"format_version": 1, "layout": "brats')
    with pytest.raises(ManifestError, match=r"unusable \(JSONDecodeError.*--force"):
        load_manifest(tmp_path)


def test_missing_root_is_named(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match=r"nowhere: no such folder"):
        check_site(tmp_path / "nowhere", scan=LayoutScan(Layout.BIDS, (), (), ()))


def test_case_with_only_a_clinical_warning_is_kept(tmp_path: Path) -> None:
    scan = make_scan(tmp_path, ids=("c1",))
    warning = Problem(
        ProblemKind.CLINICAL_UNPARSEABLE,
        "idh 'maybe' is not yes/no; treated as unknown",
        "write true/false",
        subject_id="c1",
        severity=Severity.WARNING,
    )
    scan = LayoutScan(scan.layout, scan.subjects, (warning,), scan.expected_modalities)
    report = check_site(tmp_path, scan=scan)
    assert report.exit_code == 0
    assert report.to_json()["summary"] == {
        "cases": 1,
        "ok": 0,
        "warning": 1,
        "excluded": 0,
        "cached": 0,
    }
