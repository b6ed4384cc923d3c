"""BraTS 2021 / 2023 folders become subjects with the right modalities, labels and problems."""

from pathlib import Path, PurePosixPath

import pytest

from neurofed.data.layouts import BRATS_MODALITIES, BratsReader
from neurofed.data.subject import ImageRef
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity
from tests.helpers import write_tiny_image, write_tiny_label

BRATS21_PARTS = ("t1", "t1ce", "t2", "flair", "seg")
BRATS23_PARTS = ("t1n", "t1c", "t2w", "t2f", "seg")


def touch(root: Path, *paths: str) -> None:
    """Empty files: readers look at names only."""
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")


def brats21_case(
    root: Path, case: str, parts: tuple[str, ...] = BRATS21_PARTS, folder: str = ""
) -> None:
    base = f"{folder}/{case}" if folder else case
    touch(root, *(f"{base}/{case}_{part}.nii.gz" for part in parts))


def test_brats_2021_case_has_four_modalities_and_2021_labels(tmp_path: Path) -> None:
    # Prepare: real tiny files for one case
    case = tmp_path / "BraTS2021_00001"
    for seed, part in enumerate(BRATS21_PARTS[:-1]):
        write_tiny_image(case / f"BraTS2021_00001_{part}.nii.gz", seed=seed)
    write_tiny_label(case / "BraTS2021_00001_seg.nii.gz")
    # Execute
    scan = BratsReader(Layout.BRATS_2021).read(tmp_path)
    # Assert
    assert scan.layout is Layout.BRATS_2021
    assert scan.expected_modalities == BRATS_MODALITIES
    (subject,) = scan.subjects
    assert subject.subject_id == "BraTS2021_00001"
    assert subject.images[Modality.T1CE] == ImageRef(
        PurePosixPath("BraTS2021_00001/BraTS2021_00001_t1ce.nii.gz")
    )
    assert subject.images[Modality.FLAIR].path.name == "BraTS2021_00001_flair.nii.gz"
    assert subject.label == ImageRef(PurePosixPath("BraTS2021_00001/BraTS2021_00001_seg.nii.gz"))
    assert subject.label_convention is LabelConvention.BRATS_2021
    assert scan.problems == ()


def test_brats_2023_prefixes_and_2023_labels(tmp_path: Path) -> None:
    for case in ("BraTS-GLI-00002-000", "BraTS-MEN-00010-001", "BraTS-SSA-00003-000"):
        touch(tmp_path, *(f"{case}/{case}-{part}.nii.gz" for part in BRATS23_PARTS))
    scan = BratsReader(Layout.BRATS_2023).read(tmp_path)
    assert [s.subject_id for s in scan.subjects] == [
        "BraTS-GLI-00002-000",
        "BraTS-MEN-00010-001",
        "BraTS-SSA-00003-000",
    ]
    first = scan.subjects[0]
    assert first.images[Modality.T1].path.name == "BraTS-GLI-00002-000-t1n.nii.gz"
    assert first.images[Modality.FLAIR].path.name == "BraTS-GLI-00002-000-t2f.nii.gz"
    assert {s.label_convention for s in scan.subjects} == {LabelConvention.BRATS_2023}


def test_cases_one_level_deeper_are_found_and_sorted(tmp_path: Path) -> None:
    brats21_case(tmp_path, "BraTS2021_00009", folder="TrainingData")
    brats21_case(tmp_path, "BraTS2021_00002", folder="TrainingData")
    reader = BratsReader(Layout.BRATS_2021)
    assert reader.matches(tmp_path)
    scan = reader.read(tmp_path)
    assert [s.subject_id for s in scan.subjects] == ["BraTS2021_00002", "BraTS2021_00009"]
    assert str(scan.subjects[0].images[Modality.T2].path) == (
        "TrainingData/BraTS2021_00002/BraTS2021_00002_t2.nii.gz"
    )


def test_duplicate_case_folders_are_both_kept(tmp_path: Path) -> None:
    brats21_case(tmp_path, "BraTS2021_00005")
    brats21_case(tmp_path, "BraTS2021_00005", folder="copy")
    scan = BratsReader().read(tmp_path)
    assert [s.subject_id for s in scan.subjects] == ["BraTS2021_00005", "BraTS2021_00005"]
    assert {str(s.images[Modality.T1].path.parent) for s in scan.subjects} == {
        "BraTS2021_00005",
        "copy/BraTS2021_00005",
    }


def test_missing_modality_is_absent_not_a_reader_problem(tmp_path: Path) -> None:
    brats21_case(tmp_path, "BraTS2021_00003", parts=("t1", "t2", "flair"))
    scan = BratsReader().read(tmp_path)
    (subject,) = scan.subjects
    assert subject.modalities == (Modality.T1, Modality.T2, Modality.FLAIR)
    assert subject.label is None and subject.label_convention is None
    assert scan.problems == ()


def test_unknown_nifti_warns_and_junk_is_ignored(tmp_path: Path) -> None:
    brats21_case(tmp_path, "BraTS2021_00001")
    touch(
        tmp_path,
        "BraTS2021_00001/._BraTS2021_00001_t1.nii.gz",
        "BraTS2021_00001/.DS_Store",
        "BraTS2021_00001/BraTS2021_00001_dwi.nii.gz",
        "notes.txt",
    )
    scan = BratsReader().read(tmp_path)
    assert len(scan.subjects) == 1
    (problem,) = scan.problems
    assert problem.kind is ProblemKind.UNKNOWN_FILE
    assert problem.severity is Severity.WARNING
    assert problem.path == "BraTS2021_00001/BraTS2021_00001_dwi.nii.gz"
    assert "BraTS2021_00000_{t1,t1ce,t2,flair,seg}" in problem.fix


def test_symlinked_file_keeps_its_in_root_path(tmp_path: Path) -> None:
    # Prepare: the T1 is a link to a file outside the site root
    outside = tmp_path / "elsewhere" / "scan.nii.gz"
    touch(tmp_path, "elsewhere/scan.nii.gz")
    root = tmp_path / "site"
    brats21_case(root, "BraTS2021_00001", parts=("t1ce", "t2", "flair"))
    (root / "BraTS2021_00001" / "BraTS2021_00001_t1.nii.gz").symlink_to(outside)
    # Execute
    subject = BratsReader().read(root).subjects[0]
    # Assert: not resolved
    assert str(subject.images[Modality.T1].path) == "BraTS2021_00001/BraTS2021_00001_t1.nii.gz"


def test_2021_and_2023_do_not_match_each_other(tmp_path: Path) -> None:
    brats21_case(tmp_path / "a", "BraTS2021_00001")
    case = "BraTS-GLI-00001-000"
    touch(tmp_path / "b", *(f"{case}/{case}-{p}.nii.gz" for p in BRATS23_PARTS))
    r21, r23 = BratsReader(Layout.BRATS_2021), BratsReader(Layout.BRATS_2023)
    assert (r21.matches(tmp_path / "a"), r23.matches(tmp_path / "a")) == (True, False)
    assert (r21.matches(tmp_path / "b"), r23.matches(tmp_path / "b")) == (False, True)


def test_clinical_csv_at_root_is_joined(tmp_path: Path) -> None:
    # Prepare: the phantom's clinical.csv format
    brats21_case(tmp_path, "BraTS2021_00003")
    brats21_case(tmp_path, "BraTS2021_00004")
    (tmp_path / "clinical.csv").write_text(
        "subject_id,age,sex,grade,idh,codel_1p19q,mgmt\n"
        "BraTS2021_00003,54.2,F,IV,wildtype,intact,methylated\n"
        "BraTS2021_00004,,,,,,\n"
    )
    # Execute
    scan = BratsReader().read(tmp_path)
    # Assert
    known, unknown = (s.clinical for s in scan.subjects)
    assert (known.age, known.sex, known.grade) == (54.2, "F", 4)
    assert (known.idh, known.codel_1p19q, known.mgmt) == (False, False, True)
    assert unknown.known() == ()
    assert unknown.idh is None and unknown.mgmt is None
    assert scan.problems == ()


def test_reader_rejects_other_layouts() -> None:
    with pytest.raises(ValueError, match="BratsReader reads"):
        BratsReader(Layout.BIDS)


def test_symlinked_folders_are_followed_once_and_output_folder_skipped(tmp_path: Path) -> None:
    # Prepare: a case folder linked in from storage, a link loop, neurofed's own output
    storage = tmp_path / "storage"
    brats21_case(storage, "BraTS2021_00007")
    root = tmp_path / "site"
    brats21_case(root, "BraTS2021_00001")
    (root / "BraTS2021_00007").symlink_to(storage / "BraTS2021_00007")
    (root / "loop").symlink_to(root)
    touch(root, "neurofed/preprocessed/BraTS2021_00001_t1.nii.gz")
    # Execute
    scan = BratsReader().read(root)
    # Assert: every case once, in-root paths, nothing from neurofed/
    assert [s.subject_id for s in scan.subjects] == ["BraTS2021_00001", "BraTS2021_00007"]
    assert str(scan.subjects[1].images[Modality.T1].path) == (
        "BraTS2021_00007/BraTS2021_00007_t1.nii.gz"
    )
    assert scan.problems == ()


def test_case_folder_linked_twice_gives_two_subjects(tmp_path: Path) -> None:
    brats21_case(tmp_path, "BraTS2021_00001")
    (tmp_path / "again").mkdir()
    (tmp_path / "again" / "BraTS2021_00001").symlink_to(tmp_path / "BraTS2021_00001")
    scan = BratsReader().read(tmp_path)
    assert [str(s.images[Modality.T1].path) for s in scan.subjects] == [
        "BraTS2021_00001/BraTS2021_00001_t1.nii.gz",
        "again/BraTS2021_00001/BraTS2021_00001_t1.nii.gz",
    ]
