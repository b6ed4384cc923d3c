"""BIDS: sessions, ce- entity, runs, lesion derivatives, participants.tsv and sessions.tsv."""

from pathlib import Path, PurePosixPath

from neurofed.data.layouts import BidsReader
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity
from tests.helpers import write_tiny_image, write_tiny_label


def touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")


def test_phantom_layout_without_sessions(tmp_path: Path) -> None:
    # Prepare: exactly what the phantom generator writes
    for sub in ("sub-001", "sub-002"):
        write_tiny_image(tmp_path / sub / "anat" / f"{sub}_FLAIR.nii.gz")
        write_tiny_image(tmp_path / sub / "anat" / f"{sub}_T1w.nii.gz", seed=1)
        write_tiny_label(
            tmp_path / "derivatives" / "lesions" / sub / "anat" / f"{sub}_label-lesion_mask.nii.gz",
            values=(0, 1),
        )
    (tmp_path / "dataset_description.json").write_text(
        '{"Name": "phantom", "BIDSVersion": "1.9.0"}'
    )
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\tsdmt\nsub-001\t34.5\tF\t52\nsub-002\tn/a\tM\tn/a\n"
    )
    # Execute
    scan = BidsReader().read(tmp_path)
    # Assert
    assert scan.layout is Layout.BIDS
    first, second = scan.subjects
    assert (first.subject_id, first.group_id) == ("sub-001", "sub-001")
    assert str(first.images[Modality.FLAIR].path) == "sub-001/anat/sub-001_FLAIR.nii.gz"
    assert first.label is not None
    mask = "derivatives/lesions/sub-001/anat/sub-001_label-lesion_mask.nii.gz"
    assert str(first.label.path) == mask
    assert first.label_convention is LabelConvention.BINARY_LESION
    assert (first.clinical.age, first.clinical.sex, first.clinical.sdmt) == (34.5, "F", 52.0)
    assert (second.clinical.age, second.clinical.sex, second.clinical.sdmt) == (None, "M", None)
    assert scan.expected_modalities == (Modality.T1, Modality.FLAIR)
    assert scan.problems == ()


def test_sessions_are_subjects_grouped_by_participant(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-01/ses-01/anat/sub-01_ses-01_FLAIR.nii.gz",
        "sub-01/ses-02/anat/sub-01_ses-02_FLAIR.nii.gz",
        "derivatives/lesions/sub-01/ses-02/anat/sub-01_ses-02_label-lesion_mask.nii.gz",
    )
    (tmp_path / "participants.tsv").write_text("participant_id\tage\tsex\nsub-01\t40\tF\n")
    (tmp_path / "sub-01" / "sub-01_sessions.tsv").write_text("session_id\tage\nses-02\t42.5\n")
    scan = BidsReader().read(tmp_path)
    s1, s2 = scan.subjects
    assert (s1.subject_id, s1.group_id) == ("sub-01_ses-01", "sub-01")
    assert (s2.subject_id, s2.group_id) == ("sub-01_ses-02", "sub-01")
    assert s1.label is None
    assert s2.label is not None
    mask = "derivatives/lesions/sub-01/ses-02/anat/sub-01_ses-02_label-lesion_mask.nii.gz"
    assert str(s2.label.path) == mask
    # participants.tsv for both sessions, sessions.tsv overrides age per session
    assert (s1.clinical.age, s1.clinical.sex) == (40.0, "F")
    assert (s2.clinical.age, s2.clinical.sex) == (42.5, "F")
    assert scan.problems == ()


def test_ce_entity_is_t1ce(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/sub-01_ce-gadolinium_T1w.nii.gz",
        "sub-01/anat/sub-01_T2w.nii.gz",
    )
    (subject,) = BidsReader().read(tmp_path).subjects
    assert subject.images[Modality.T1CE].path.name == "sub-01_ce-gadolinium_T1w.nii.gz"
    assert subject.images[Modality.T1].path.name == "sub-01_T1w.nii.gz"
    assert subject.modalities == (Modality.T1, Modality.T1CE, Modality.T2)


def test_highest_run_is_used_with_a_warning(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-01/anat/sub-01_run-1_FLAIR.nii.gz",
        "sub-01/anat/sub-01_run-2_FLAIR.nii.gz",
        "sub-01/anat/sub-01_run-10_FLAIR.nii.gz",
    )
    scan = BidsReader().read(tmp_path)
    assert scan.subjects[0].images[Modality.FLAIR].path.name == "sub-01_run-10_FLAIR.nii.gz"
    (problem,) = scan.problems
    assert (problem.kind, problem.severity, problem.subject_id) == (
        ProblemKind.LAYOUT,
        Severity.WARNING,
        "sub-01",
    )
    assert "sub-01_run-1_FLAIR.nii.gz" in problem.message and "highest run" in problem.message


def test_lesion_derivative_variants(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-01/anat/sub-01_FLAIR.nii.gz",
        "sub-02/anat/sub-02_FLAIR.nii.gz",
        "sub-03/anat/sub-03_FLAIR.nii.gz",
        "derivatives/expert/sub-01/anat/sub-01_desc-lesion_roi.nii.gz",
        "derivatives/seg/sub-02/anat/sub-02_space-orig_label-lesion_dseg.nii.gz",
        "derivatives/fmriprep/sub-03/anat/sub-03_desc-preproc_T1w.nii.gz",  # not a label
    )
    s1, s2, s3 = BidsReader().read(tmp_path).subjects
    assert s1.label is not None and s2.label is not None
    assert s1.label.path.name == "sub-01_desc-lesion_roi.nii.gz"
    assert s2.label.path.name == "sub-02_space-orig_label-lesion_dseg.nii.gz"
    assert s3.label is None


def test_unplaceable_files_warn_other_datatypes_do_not(tmp_path: Path) -> None:
    touch(
        tmp_path,
        "sub-01/anat/sub-01_T1w.nii.gz",
        "sub-01/anat/sub-01_T1w.json",
        "sub-01/func/sub-01_task-rest_bold.nii.gz",
        "sub-01/anat/scan 3.nii.gz",
        "sub-01/anat/sub-02_T2w.nii.gz",
        "derivatives/lesions/sub-09/anat/sub-09_label-lesion_mask.nii.gz",
        "loose.nii.gz",
        "sub-01/anat/._sub-01_T1w.nii.gz",
    )
    scan = BidsReader().read(tmp_path)
    assert [s.subject_id for s in scan.subjects] == ["sub-01"]
    unknown = sorted(p.path or "" for p in scan.problems if p.kind is ProblemKind.UNKNOWN_FILE)
    assert unknown == [
        "derivatives/lesions/sub-09/anat/sub-09_label-lesion_mask.nii.gz",
        "loose.nii.gz",
        "sub-01/anat/scan 3.nii.gz",
        "sub-01/anat/sub-02_T2w.nii.gz",
    ]
    assert len(scan.problems) == 4


def test_participant_ids_without_prefix_join(tmp_path: Path) -> None:
    touch(tmp_path, "sub-001/anat/sub-001_T1w.nii.gz")
    (tmp_path / "participants.tsv").write_text("participant_id\tage\n001\t61\n")
    (subject,) = BidsReader().read(tmp_path).subjects
    assert subject.clinical.age == 61.0


def test_matches_with_and_without_description(tmp_path: Path) -> None:
    touch(tmp_path / "a", "sub-01/ses-1/anat/sub-01_ses-1_T1w.nii.gz")
    touch(tmp_path / "b", "dataset_description.json")
    touch(tmp_path / "c", "sub-01/notes.txt")
    reader = BidsReader()
    assert [reader.matches(tmp_path / x) for x in "abc"] == [True, True, False]


def test_images_are_relative_posix_paths(tmp_path: Path) -> None:
    touch(tmp_path, "sub-01/anat/sub-01_T1w.nii.gz")
    (subject,) = BidsReader().read(tmp_path).subjects
    assert subject.images[Modality.T1].path == PurePosixPath("sub-01/anat/sub-01_T1w.nii.gz")


def test_participants_tsv_problems(tmp_path: Path) -> None:
    touch(tmp_path, "sub-01/anat/sub-01_T1w.nii.gz")
    (tmp_path / "participants.tsv").write_text(
        "participant_id\tage\tsex\nsub-01\t150\tX\nsub-02\t30\tF\n"
    )
    scan = BidsReader().read(tmp_path)
    kinds = sorted((p.kind.value, p.subject_id) for p in scan.problems)
    assert kinds == [
        ("clinical-range", "sub-01"),
        ("clinical-unparseable", "sub-01"),
        ("layout", None),  # sub-02 has no images
    ]
    assert scan.subjects[0].clinical.known() == ()


def test_participants_tsv_without_id_column_is_a_layout_error(tmp_path: Path) -> None:
    touch(tmp_path, "sub-01/anat/sub-01_T1w.nii.gz")
    (tmp_path / "participants.tsv").write_text("name\tage\nsub-01\t30\n")
    scan = BidsReader().read(tmp_path)
    (problem,) = scan.problems
    assert (problem.kind, problem.severity, problem.path) == (
        ProblemKind.LAYOUT,
        Severity.ERROR,
        "participants.tsv",
    )
    assert "no subject id column" in problem.message and "participant_id" in problem.fix
    assert scan.subjects[0].clinical.age is None
