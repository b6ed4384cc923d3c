"""The site pipeline: cache + provenance + QC table, a broken case skipped, idempotent re-runs,
training reusing its arrays and respecting the custodian's QC exclusions."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

import numpy as np
import pytest

from neurofed.data.nifti import read_image, write_image
from neurofed.keys import Modality
from neurofed.preprocess import PreprocessParams
from neurofed.preprocess.pipeline import (
    OutcomeStatus,
    PipelineError,
    PipelineFile,
    PreprocessReport,
    load_qc_exclusions,
    preprocess_site,
    run_qc,
)
from neurofed.preprocess.qc import QCCheck, QCStatus
from neurofed.tasks import get_task
from neurofed.training import SiteData
from tests.training.sites import prepare_site, write_glioma_site

MODALITIES = (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)
PARAMS = PreprocessParams(spacing=(2.0, 2.0, 2.0), bias_correction=True, registration=True)
BROKEN, NOISY = "BraTS2021_00002", "BraTS2021_00003"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Five tiny glioma cases: one FLAIR very noisy (a QC failure), one file truncated after the
    check (a case that cannot be preprocessed)."""
    root = write_glioma_site(tmp_path_factory.mktemp("pipeline") / "glioma-1", 5)
    flair = root / NOISY / f"{NOISY}_flair.nii.gz"
    volume = read_image(flair)
    noise = np.random.default_rng(0).normal(0.0, 80.0, volume.array.shape)
    write_image(flair, np.where(volume.array > 0, np.abs(volume.array + noise), 0.0), volume.affine)
    prepare_site(root)
    t2 = root / BROKEN / f"{BROKEN}_t2.nii.gz"
    t2.write_bytes(t2.read_bytes()[:200])
    return root


@pytest.fixture(scope="module")
def first_run(site: Path) -> PreprocessReport:
    return preprocess_site(site, MODALITIES, PARAMS, workers=1)


def test_writes_arrays_provenance_and_qc_and_skips_the_broken_case(
    site: Path, first_run: PreprocessReport
) -> None:
    # Assert: four cases done, the broken one reported with its file, reason and fix
    report = first_run
    assert report.folder == site / "neurofed" / "preprocessed" / PARAMS.params_id
    assert [report.count(s) for s in OutcomeStatus] == [4, 0, 1, 0]
    broken = next(o for o in report.outcomes if o.status is OutcomeStatus.FAILED)
    assert broken.subject_id == BROKEN
    assert f"{BROKEN}_t2.nii.gz" in broken.reason
    assert "neurofed site check" in broken.fix
    assert report.exit_code == 1
    assert len(list(report.folder.glob("*.npz"))) == 4
    provenance = json.loads((report.folder / PipelineFile.PROVENANCE).read_text())
    assert provenance["params_id"] == PARAMS.params_id
    assert provenance["params"]["bias_correction"] is True
    assert {"numpy", "SimpleITK", "torch", "neurofed"} <= set(provenance["versions"])
    entry = provenance["cases"][f"BraTS2021_00001[{'+'.join(m.value for m in MODALITIES)}]"]
    assert entry["steps"][:4] == ["load", "reorient", "bias_correction", "registration"]
    assert entry["brain_mask_method"] == "nonzero"
    assert [b["applied"] for b in entry["bias_correction"]] == [True] * 4
    assert entry["registration"][0] is None and "metric_after" in entry["registration"][3]
    assert entry["inputs"][0]["path"].endswith("_t1.nii.gz")
    assert entry["inputs"][0]["size"] > 0


def test_qc_table_names_the_failures_in_json_and_csv(first_run: PreprocessReport) -> None:
    status = first_run.table.case_status()
    assert status[BROKEN] is QCStatus.FAIL and status[NOISY] is QCStatus.FAIL
    assert status["BraTS2021_00001"] is not QCStatus.FAIL
    noisy = first_run.table.failures()[NOISY]
    assert any(r.check is QCCheck.SNR and r.modality is Modality.FLAIR for r in noisy)
    saved = json.loads((first_run.folder / PipelineFile.QC_JSON).read_text())
    group = saved["channels"]["T1+T1CE+T2+FLAIR"]
    assert group["cases"][NOISY] == "fail" and group["summary"]["fail"] == 2
    with open(first_run.folder / PipelineFile.QC_CSV, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert {r["check"] for r in rows if r["subject_id"] == BROKEN} == {"preprocess"}
    assert any(r["status"] == "fail" and r["modality"] == "FLAIR" for r in rows)


def test_a_second_run_skips_cached_cases_and_redoes_changed_ones(
    site: Path, first_run: PreprocessReport
) -> None:
    # Prepare: one case's file touched (new modification time)
    stamps = {p.name: p.stat().st_mtime_ns for p in first_run.folder.glob("*.npz")}
    touched = site / "BraTS2021_00004" / "BraTS2021_00004_t1.nii.gz"
    os.utime(touched, ns=(touched.stat().st_atime_ns, touched.stat().st_mtime_ns + 10**9))
    # Execute
    again = preprocess_site(site, MODALITIES, PARAMS, workers=1)
    # Assert
    by_case = {o.subject_id: o.status for o in again.outcomes}
    assert by_case["BraTS2021_00004"] is OutcomeStatus.DONE
    assert by_case[BROKEN] is OutcomeStatus.FAILED
    assert [again.count(s) for s in OutcomeStatus] == [1, 3, 1, 0]
    unchanged = {p.name: p.stat().st_mtime_ns for p in again.folder.glob("*.npz")}
    assert sum(unchanged[name] == stamp for name, stamp in stamps.items()) == 3


def test_training_reuses_the_arrays_the_pipeline_cached(
    site: Path, first_run: PreprocessReport, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: training may not compute anything itself
    def refuse(*args: object, **kwargs: object) -> None:
        raise AssertionError("training recomputed a case the pipeline had cached")

    monkeypatch.setattr("neurofed.training.site_data.preprocess_case", refuse)
    # Execute
    dataset = SiteData(site, get_task("tumor-regions"), PARAMS).split(None)
    # Assert: the four good cases come from the cache, the broken one is skipped
    assert sorted(dataset.subject_ids) == sorted(
        o.subject_id for o in first_run.outcomes if o.status is OutcomeStatus.DONE
    )
    assert [s.subject_id for s in dataset.skipped] == [BROKEN]


def test_custodian_exclusions_reach_training_only_for_tasks_reading_the_failed_modality(
    site: Path, first_run: PreprocessReport
) -> None:
    # Execute
    report = run_qc(site, exclude_failures=True)
    exclusions = load_qc_exclusions(site)
    segmentation = SiteData(site, get_task("tumor-regions"), PARAMS).split(None)
    brain_age = SiteData(site, get_task("brain-age"), PreprocessParams()).split(None)
    # Assert: the noisy FLAIR excludes its case from a FLAIR task, not from a T1-only one
    assert report.exclusions is not None and report.exit_code == 1
    assert exclusions[NOISY].modalities == (Modality.FLAIR,)
    assert exclusions[BROKEN].modalities == ()
    skipped = {s.subject_id: s.reason for s in segmentation.skipped}
    assert "excluded by the custodian after QC: snr" in skipped[NOISY]
    assert NOISY in brain_age.subject_ids
    assert BROKEN not in brain_age.subject_ids


def test_site_without_manifest_or_preprocessing_says_what_to_run(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"run `neurofed site check"):
        preprocess_site(tmp_path, MODALITIES, PARAMS)
    with pytest.raises(PipelineError, match=r"nothing preprocessed yet; run `neurofed site"):
        run_qc(tmp_path)


def test_the_qc_csv_cannot_run_as_a_spreadsheet_formula() -> None:
    # Prepare: a case id a hostile or careless site could carry
    from neurofed.preprocess.pipeline import _table_csv
    from neurofed.preprocess.qc import QCConfig, QCRow, QCTable

    row = QCRow(
        '=HYPERLINK("http://x")', Modality.T1, QCCheck.SNR, QCStatus.FAIL, -1.5, "<5", "@low"
    )
    # Execute
    text = _table_csv({"T1": QCTable(QCConfig(), (row,))})
    # Assert: text cells are quoted for spreadsheets, numbers stay numbers
    cells = list(csv.reader(text.splitlines()))[1]
    assert cells[1] == '\'=HYPERLINK("http://x")' and cells[-1] == "'@low"
    assert cells[5] == "-1.5"
