"""DICOM in: series written here with pydicom → dcm2niix → a BIDS site neurofed reads, with
neutral ids, an editable mapping, and no patient identifier in any name, sidecar or message."""

from __future__ import annotations

import gzip
import json
import shutil
import stat
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.data.dicom_import import (
    IMPORT_RECORD,
    DicomImportError,
    SeriesStatus,
    import_dicom,
    write_mapping,
)
from neurofed.data.dicom_mapping import DicomMapping, MappingError
from neurofed.data.dicom_scan import DicomFolderError
from neurofed.data.layouts.detect import read_site
from neurofed.data.manifest import check_site
from neurofed.keys import Layout, Modality

pytestmark = pytest.mark.skipif(shutil.which("dcm2niix") is None, reason="needs dcm2niix")

runner = CliRunner()

#: (PatientName, PatientID, the folder the hospital's export put them in)
PATIENTS = (
    ("Doe^Jane", "MRN123456", "Doe_Jane_MRN123456"),
    ("Roe^Richard", "MRN654321", "ROE RICHARD MRN654321"),
)
IDENTIFIERS = ("doe", "jane", "mrn123456", "roe", "richard", "mrn654321", "acc77", "19700101")
STUDY_DATE = "20240102"
ROWS, COLUMNS, SLICES = 12, 16, 8  # rows ≠ columns, so a swapped axis would show
PIXEL_SPACING = (1.5, 1.25)  # (between rows, between columns) in mm
SLICE_GAP = 2.0


def write_series(
    folder: Path,
    description: str,
    *,
    patient: tuple[str, str, str] = PATIENTS[0],
    study_uid: str | None = None,
    number: int = 2,
    slices: int = SLICES,
) -> list[Path]:
    """An axial MR series, one file per slice, as a scanner exports it."""
    folder.mkdir(parents=True, exist_ok=True)
    study_uid = study_uid or generate_uid()
    series_uid = generate_uid()
    paths = []
    for index in range(slices):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = patient[0], patient[1]
        ds.PatientBirthDate = "19700101"
        ds.AccessionNumber = f"ACC77{patient[1][-4:]}"
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.StudyDate = ds.SeriesDate = ds.AcquisitionDate = STUDY_DATE
        ds.StudyTime, ds.AcquisitionTime = "101010", "101500"
        ds.Modality, ds.Manufacturer, ds.InstitutionName = "MR", "Siemens", "St Elsewhere"
        ds.SeriesDescription = ds.ProtocolName = description
        ds.SeriesNumber, ds.InstanceNumber, ds.AcquisitionNumber = number, index + 1, 1
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "ND"]
        ds.ImagePositionPatient = [0.0, 0.0, SLICE_GAP * index]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.PixelSpacing = list(PIXEL_SPACING)
        ds.SliceThickness = SLICE_GAP
        ds.Rows, ds.Columns = ROWS, COLUMNS
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.EchoTime, ds.RepetitionTime = 3.0, 2000.0
        pixels = np.arange(ROWS * COLUMNS, dtype=np.uint16).reshape(ROWS, COLUMNS) + 50 * index
        ds.PixelData = pixels.tobytes()
        path = folder / f"IM{index:04d}"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture
def dicom_dir(tmp_path: Path) -> Path:
    """2 patients × (T1w, FLAIR), in folders named after the patients."""
    root = tmp_path / "dicom"
    for patient in PATIENTS:
        study = generate_uid()
        write_series(root / patient[2] / "s2", "T1 MPRAGE", patient=patient, study_uid=study)
        flair = root / patient[2] / "s3"
        write_series(flair, "t2_flair_tra", patient=patient, study_uid=study, number=3)
    return root


def site_files(site: Path) -> list[Path]:
    """Every file in the site but the custodian-only record."""
    return sorted(p for p in site.rglob("*") if p.is_file() and p.name != IMPORT_RECORD)


def assert_no_identifier(text: str) -> None:
    found = [i for i in IDENTIFIERS if i in text.lower()]
    assert found == [], f"identifiers {found} in: {text}"


def test_import_writes_the_bids_names_shape_and_spacing(dicom_dir: Path, tmp_path: Path) -> None:
    # Execute
    report = import_dicom(dicom_dir, tmp_path / "site")
    # Assert
    site = tmp_path / "site"
    assert report.exit_code == 0
    assert [o.status for o in report.outcomes] == [SeriesStatus.CONVERTED] * 4
    assert report.subjects == ("sub-001", "sub-002")
    names = {p.relative_to(site).as_posix() for p in site_files(site)}
    expected = {
        f"{s}/anat/{s}_{suffix}" for s in report.subjects for suffix in
        ("T1w.nii.gz", "T1w.json", "FLAIR.nii.gz", "FLAIR.json")
    }  # fmt: skip
    assert names == expected | {"dataset_description.json"}
    for path in site.rglob("*.nii.gz"):
        image = nib.load(path)
        assert image.shape == (COLUMNS, ROWS, SLICES)
        zooms = image.header.get_zooms()
        assert zooms == pytest.approx((PIXEL_SPACING[1], PIXEL_SPACING[0], SLICE_GAP))
    modalities = {o.modality for o in report.outcomes}
    assert modalities == {Modality.T1, Modality.FLAIR}


def test_the_record_links_dicom_ids_to_neutral_ids_and_is_private(
    dicom_dir: Path, tmp_path: Path
) -> None:
    # Execute
    report = import_dicom(dicom_dir, tmp_path / "site")
    # Assert
    record = json.loads(report.record.read_text())
    assert report.record == tmp_path / "site" / "neurofed" / IMPORT_RECORD
    assert stat.S_IMODE(report.record.stat().st_mode) == 0o600
    linked = {s["patient_id"]: s["subject_id"] for s in record["subjects"]}
    assert set(linked) == {"MRN123456", "MRN654321"}
    assert sorted(linked.values()) == ["sub-001", "sub-002"]
    assert all(len(s["studies"]) == 1 and s["studies"][0]["session"] is None
               for s in record["subjects"])  # fmt: skip
    by_file = {s["path"]: s for s in record["series"]}
    t1 = by_file[f"{linked['MRN123456']}/anat/{linked['MRN123456']}_T1w.nii.gz"]
    assert (t1["description"], t1["files"], t1["status"]) == ("T1 MPRAGE", 8, "converted")
    assert t1["series_uid"].startswith("1.2.")


def test_no_identifier_in_names_sidecars_or_site_check(dicom_dir: Path, tmp_path: Path) -> None:
    # Prepare
    site = tmp_path / "site"
    import_dicom(dicom_dir, site)
    # Execute
    result = runner.invoke(app, ["site", "check", str(site)])
    # Assert
    assert result.exit_code == 0, result.output
    assert_no_identifier(result.output)
    for path in site_files(site):
        relative = path.relative_to(site).as_posix()
        assert_no_identifier(relative)
        assert STUDY_DATE not in relative
        data = path.read_bytes()
        text = gzip.decompress(data).decode("latin-1") if path.suffix == ".gz" else data.decode()
        assert_no_identifier(text)
        assert STUDY_DATE not in text and "St Elsewhere" not in text
    sidecar = json.loads((site / "sub-001" / "anat" / "sub-001_T1w.json").read_text())
    assert sidecar["SeriesDescription"] == "T1 MPRAGE" and sidecar["EchoTime"] == 0.003
    assert not [k for k in sidecar if k.endswith("UID") or "Date" in k or k == "AcquisitionTime"]


def test_reimport_reuses_ids_and_duplicates_nothing(dicom_dir: Path, tmp_path: Path) -> None:
    # Prepare
    site = tmp_path / "site"
    import_dicom(dicom_dir, site)
    before = {p: p.stat().st_mtime_ns for p in site_files(site)}
    subjects = json.loads((site / "neurofed" / IMPORT_RECORD).read_text())["subjects"]
    # Execute
    again = import_dicom(dicom_dir, site)
    # Assert
    assert [o.status for o in again.outcomes] == [SeriesStatus.UNCHANGED] * 4
    assert {p: p.stat().st_mtime_ns for p in site_files(site)} == before
    record = json.loads((site / "neurofed" / IMPORT_RECORD).read_text())
    assert record["subjects"] == subjects
    assert len(record["series"]) == 4 and len(record["imports"]) == 2


def test_a_second_study_of_a_patient_becomes_sessions(dicom_dir: Path, tmp_path: Path) -> None:
    # Prepare
    site = tmp_path / "site"
    import_dicom(dicom_dir, site)
    record = json.loads((site / "neurofed" / IMPORT_RECORD).read_text())
    jane = next(s["subject_id"] for s in record["subjects"] if s["patient_id"] == "MRN123456")
    other = "sub-002" if jane == "sub-001" else "sub-001"
    write_series(dicom_dir / "later" / "s9", "T1 MPRAGE", number=9)  # Jane's follow-up
    # Execute
    report = import_dicom(dicom_dir, site)
    # Assert
    names = {p.relative_to(site).as_posix() for p in site.rglob("*.nii.gz")}
    assert names == {
        f"{jane}/ses-01/anat/{jane}_ses-01_T1w.nii.gz",
        f"{jane}/ses-01/anat/{jane}_ses-01_FLAIR.nii.gz",
        f"{jane}/ses-02/anat/{jane}_ses-02_T1w.nii.gz",
        f"{other}/anat/{other}_T1w.nii.gz",
        f"{other}/anat/{other}_FLAIR.nii.gz",
    }
    assert not (site / jane / "anat").exists()
    assert len(report.notes) == 2 and all("moved" in n for n in report.notes)
    assert sorted(o.status for o in report.outcomes).count(SeriesStatus.CONVERTED) == 1
    groups = {s.subject_id: s.group_id for s in read_site(site).subjects}
    assert groups == {f"{jane}_ses-01": jane, f"{jane}_ses-02": jane, other: other}


def test_an_edited_mapping_changes_the_modality(dicom_dir: Path, tmp_path: Path) -> None:
    # Prepare: the default mapping, written with the series found, then edited so that the
    # MPRAGE series (given contrast at this hospital, say) are T1CE
    site = tmp_path / "site"
    import_dicom(dicom_dir, site)
    mapping_file = write_mapping(tmp_path / "dicom-mapping.toml", dicom_dir)
    text = mapping_file.read_text()
    assert "#   'T1 MPRAGE' | 'T1 MPRAGE': 2 series, 16 files -> T1" in text
    assert "#   't2_flair_tra' | 't2_flair_tra': 2 series, 16 files -> FLAIR" in text
    assert_no_identifier(text)
    edited = text.replace(
        'name = "T1CE"\nmatch = [\n', "name = \"T1CE\"\nmatch = [\n    'mprage',\n"
    )
    assert edited != text
    mapping_file.write_text(edited)
    # Execute
    report = import_dicom(dicom_dir, site, mapping=DicomMapping.load(mapping_file))
    # Assert
    t1ce = sorted(o.path for o in report.outcomes if o.modality is Modality.T1CE)
    assert t1ce == [f"{s}/anat/{s}_ce-gadolinium_T1w.nii.gz" for s in ("sub-001", "sub-002")]
    assert [o.status for o in report.outcomes].count(SeriesStatus.UPDATED) == 2
    assert sorted(p.name for p in site.rglob("sub-001_*.nii.gz")) == [
        "sub-001_FLAIR.nii.gz",
        "sub-001_ce-gadolinium_T1w.nii.gz",
    ]
    assert check_site(site).manifest.expected_modalities == (Modality.T1CE, Modality.FLAIR)


def test_an_unmatched_series_is_skipped_and_reported(dicom_dir: Path, tmp_path: Path) -> None:
    # Prepare
    write_series(dicom_dir / PATIENTS[0][2] / "s7", "Mystery sequence 7", number=7)
    site = tmp_path / "site"
    # Execute
    report = import_dicom(dicom_dir, site)
    # Assert
    skipped = [o for o in report.outcomes if o.status is SeriesStatus.SKIPPED]
    assert len(skipped) == 1 and skipped[0].path is None
    assert "no mapping rule matches" in skipped[0].message
    assert "--mapping FILE" in skipped[0].fix
    assert report.count(SeriesStatus.CONVERTED) == 4 and report.exit_code == 0
    assert len(list(site.rglob("*.nii.gz"))) == 4
    record = json.loads((site / "neurofed" / IMPORT_RECORD).read_text())
    mystery = [s for s in record["series"] if s["description"] == "Mystery sequence 7"]
    assert mystery[0]["status"] == "skipped" and mystery[0]["path"] is None


def test_corrupt_and_non_dicom_files_are_reported_and_the_rest_goes_on(
    dicom_dir: Path, tmp_path: Path
) -> None:
    # Prepare: a note, a DICOM whose header breaks off, and a T2 series with a truncated slice
    jane = dicom_dir / PATIENTS[0][2]
    (jane / "notes.txt").write_text("scanned on the old magnet")
    header = (jane / "s2" / "IM0000").read_bytes()
    (jane / "broken.dcm").write_bytes(header[:400])
    t2 = write_series(jane / "s4", "T2 TSE axial", number=4)
    t2[3].write_bytes(t2[3].read_bytes()[:-100])
    # Execute
    report = import_dicom(dicom_dir, tmp_path / "site")
    # Assert
    assert report.exit_code == 1
    assert report.count(SeriesStatus.CONVERTED) == 4
    failed = [o for o in report.outcomes if o.status is SeriesStatus.FAILED]
    assert len(failed) == 1 and failed[0].modality is Modality.T2
    assert "s4/IM0003" in failed[0].message and "truncated" in failed[0].message
    assert "re-export" in failed[0].fix
    problems = {p.path.rsplit("/", 1)[-1]: p for p in report.file_problems}
    assert not problems["notes.txt"].error and "not a DICOM file" in problems["notes.txt"].message
    assert problems["broken.dcm"].error and "damaged DICOM" in problems["broken.dcm"].message
    assert problems["broken.dcm"].path == "[redacted]_[redacted]_[redacted]/broken.dcm"
    for line in [o.line() for o in report.outcomes] + [p.line() for p in report.file_problems]:
        assert_no_identifier(line)


def test_a_series_dcm2niix_cannot_convert_fails_alone(dicom_dir: Path, tmp_path: Path) -> None:
    # Prepare: a dcm2niix that refuses the FLAIR series and quotes the patient, as a tool might
    fake = tmp_path / "fake-dcm2niix"
    real = shutil.which("dcm2niix")
    fake.write_text(
        "#!/bin/sh\n"
        'if [ "$1" = "-v" ]; then echo v1.0.test; exit 3; fi\n'
        "for last; do :; done\n"
        'if grep -Rqa flair "$last"; then '
        'echo "Error: unsupported slice order for Doe^Jane MRN123456" >&2; exit 1; fi\n'
        f'exec "{real}" "$@"\n'
    )
    fake.chmod(0o755)
    # Execute
    report = import_dicom(dicom_dir, tmp_path / "site", dcm2niix=str(fake))
    # Assert
    failed = [o for o in report.outcomes if o.status is SeriesStatus.FAILED]
    assert [o.modality for o in failed] == [Modality.FLAIR, Modality.FLAIR]
    assert "dcm2niix could not convert it (exit 1)" in failed[0].message
    assert "unsupported slice order" in failed[0].message
    assert_no_identifier(failed[0].line())
    assert report.count(SeriesStatus.CONVERTED) == 2 and report.exit_code == 1


def test_bad_input_stops_with_the_fix(dicom_dir: Path, tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    (tmp_path / "text").mkdir()
    (tmp_path / "text" / "a.txt").write_text("hello")
    with pytest.raises(DicomImportError, match=r"dcm2niix not found.*pip install dcm2niix"):
        import_dicom(dicom_dir, tmp_path / "site", dcm2niix="no-such-dcm2niix")
    with pytest.raises(DicomFolderError, match="the folder is empty"):
        import_dicom(tmp_path / "empty", tmp_path / "site")
    with pytest.raises(DicomFolderError, match="no such folder"):
        import_dicom(tmp_path / "missing", tmp_path / "site")
    with pytest.raises(DicomImportError, match=r"no DICOM series found.*a\.txt"):
        import_dicom(tmp_path / "text", tmp_path / "site")
    (tmp_path / "other" / "BraTS2021_00001").mkdir(parents=True)
    with pytest.raises(DicomImportError, match="holds files an import did not make"):
        import_dicom(dicom_dir, tmp_path / "other")
    assert not (tmp_path / "site").exists()


@pytest.mark.parametrize(
    ("description", "modality"),
    [
        ("T1 MPRAGE", Modality.T1),
        ("t1_mprage_sag_p2_iso", Modality.T1),
        ("T1 pre contrast", Modality.T1),
        ("T1 MPRAGE +C", Modality.T1CE),
        ("t1_post_gd", Modality.T1CE),
        ("T1Gd", Modality.T1CE),
        ("AX T1c", Modality.T1CE),
        ("Post Gd T1 SE", Modality.T1CE),
        ("T2 TSE ax", Modality.T2),
        ("t2w_tse_tra", Modality.T2),
        ("T2 FLAIR", Modality.FLAIR),
        ("3D_FLAIR_sag", Modality.FLAIR),
        ("T2*", None),
        ("DTI 30 dir", None),
        ("localizer", None),
        ("Mystery sequence", None),
    ],
)
def test_default_mapping(description: str, modality: Modality | None) -> None:
    assert DicomMapping.default().classify(description).modality is modality


def test_protocol_name_decides_when_the_description_does_not() -> None:
    mapping = DicomMapping.default()
    assert mapping.classify("Series 5", "t2_flair_tra").modality is Modality.FLAIR
    assert mapping.classify("AAHScout", "t1_mprage").skipped
    assert mapping.classify("T1 MPRAGE", "", ["DERIVED", "SECONDARY", "MPR"]).skipped


def test_mapping_file_round_trips_and_errors_name_the_field(tmp_path: Path) -> None:
    path = tmp_path / "mapping.toml"
    path.write_text(DicomMapping.default().to_toml())
    loaded = DicomMapping.load(path)
    assert loaded.rules == DicomMapping.default().rules and loaded.source == str(path)
    path.write_text('[[modality]]\nname = "PD"\nmatch = ["pd"]\n')
    with pytest.raises(MappingError, match=r"mapping.toml: \[\[modality\]\] #1 name = 'PD'"):
        DicomMapping.load(path)
    path.write_text('[[modality]]\nname = "t1w"\nmatch = ["t1("]\n')
    with pytest.raises(MappingError, match="not a regular expression"):
        DicomMapping.load(path)


def test_cli_imports_writes_the_mapping_and_exits_2_on_bad_input(
    dicom_dir: Path, tmp_path: Path
) -> None:
    # Execute
    site = tmp_path / "site"
    mapping = tmp_path / "dicom-mapping.toml"
    wrote = runner.invoke(
        app, ["site", "import-dicom", str(dicom_dir), "--write-mapping", str(mapping)]
    )
    done = runner.invoke(app, ["site", "import-dicom", str(dicom_dir), "--out", str(site)])
    again = runner.invoke(
        app,
        ["site", "import-dicom", str(dicom_dir), "--out", str(site), "--mapping", str(mapping)],
    )
    (tmp_path / "empty").mkdir()
    empty = runner.invoke(app, ["site", "import-dicom", str(tmp_path / "empty"), "--out", "x"])
    # Assert
    assert wrote.exit_code == 0 and "T1 MPRAGE" in mapping.read_text(), wrote.output
    assert done.exit_code == 0, done.output
    assert "4 converted" in done.output and "next: neurofed site check" in done.output
    assert "sub-001/anat/sub-001_T1w.nii.gz" in done.output
    assert again.exit_code == 0 and "4 unchanged" in again.output, again.output
    assert empty.exit_code == 2 and "the folder is empty" in empty.output
    for output in (wrote.output, done.output, again.output):
        assert_no_identifier(output)
    assert check_site(site).manifest.layout is Layout.BIDS
