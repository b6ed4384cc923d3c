"""Table layout: path columns, relative / `..` / absolute paths, conventions, clinical columns."""

from pathlib import Path, PurePosixPath

from neurofed.data.layouts import TableReader, manifest_tables
from neurofed.data.subject import ImageRef
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity


def test_columns_paths_and_clinical(tmp_path: Path) -> None:
    # Prepare
    root = tmp_path / "site"
    root.mkdir()
    outside = tmp_path / "other" / "t1.nii.gz"
    (root / "cases.tsv").write_text(
        "Subject ID\tT1_path\tFLAIR file\tT1ce\tlabel_path\tlabel_convention\tIDH\tage\n"
        "p1\tp1/t1.nii.gz\t./p1/flair.nii.gz\t\tp1/seg.nii.gz\tbrats-2021\tmutant\t44\n"
        f"p2\t{root / 'p2' / 't1.nii.gz'}\t../shared/p2_flair.nii.gz\t\t\t\tNA\t\n"
        f"p3\t{outside}\tp3/flair.nii.gz\tp3/t1c.nii.gz\tp3/seg.nii.gz\tBRATS_2023\t0\t130\n"
    )
    # Execute
    scan = TableReader().read(root)
    # Assert
    assert scan.layout is Layout.TABLE
    p1, p2, p3 = scan.subjects
    assert dict(p1.images) == {
        Modality.T1: ImageRef(PurePosixPath("p1/t1.nii.gz")),
        Modality.FLAIR: ImageRef(PurePosixPath("p1/flair.nii.gz")),
    }
    assert p1.label == ImageRef(PurePosixPath("p1/seg.nii.gz"))
    assert p1.label_convention is LabelConvention.BRATS_2021
    assert (p1.clinical.idh, p1.clinical.age) == (True, 44.0)
    # absolute inside root -> relative; `..` kept as given; absolute outside -> absolute
    assert str(p2.images[Modality.T1].path) == "p2/t1.nii.gz"
    assert str(p2.images[Modality.FLAIR].path) == "../shared/p2_flair.nii.gz"
    assert p2.images[Modality.T1].path.is_absolute() is False
    assert p2.label is None and p2.clinical.idh is None
    assert p3.images[Modality.T1].path == PurePosixPath(outside.as_posix())
    assert p3.label_convention is LabelConvention.BRATS_2023
    assert (p3.clinical.idh, p3.clinical.age) == (False, None)
    # age 130 -> a range warning for p3; the majority of subjects have T1 and FLAIR
    (problem,) = scan.problems
    assert (problem.kind, problem.subject_id, problem.path) == (
        ProblemKind.CLINICAL_RANGE,
        "p3",
        "cases.tsv",
    )
    assert scan.expected_modalities == (Modality.T1, Modality.FLAIR)


def test_missing_convention_assumes_brats_2023_with_one_warning(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        "case_id,flair,seg\nc1,c1/flair.nii.gz,c1/seg.nii.gz\nc2,c2/flair.nii.gz,c2/seg.nii.gz\n"
    )
    scan = TableReader().read(tmp_path)
    assert [s.label_convention for s in scan.subjects] == [LabelConvention.BRATS_2023] * 2
    (problem,) = scan.problems
    assert (problem.kind, problem.severity, problem.path) == (
        ProblemKind.LAYOUT,
        Severity.WARNING,
        "manifest.csv",
    )
    assert "assumed brats-2023" in problem.message and "label_convention" in problem.fix


def test_convention_argument_is_used_without_warning(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("case_id,flair,mask\nc1,c1/f.nii.gz,c1/m.nii.gz\n")
    scan = TableReader(label_convention=LabelConvention.BINARY_LESION).read(tmp_path)
    assert scan.subjects[0].label_convention is LabelConvention.BINARY_LESION
    assert scan.problems == ()


def test_bad_convention_value_drops_label_with_error(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text(
        "case_id,flair,mask,label_convention\nc1,c1/f.nii.gz,c1/m.nii.gz,fets\n"
    )
    scan = TableReader().read(tmp_path)
    assert scan.subjects[0].label is None
    (problem,) = scan.problems
    assert (problem.kind, problem.severity, problem.subject_id) == (
        ProblemKind.LAYOUT,
        Severity.ERROR,
        "c1",
    )
    assert "'fets'" in problem.message and "binary-lesion" in problem.fix


def test_duplicate_ids_are_all_kept(tmp_path: Path) -> None:
    (tmp_path / "manifest.csv").write_text("id;t1\na;a1.nii.gz\na;a2.nii.gz\nb;b.nii.gz\n")
    scan = TableReader().read(tmp_path)
    assert [s.subject_id for s in scan.subjects] == ["a", "a", "b"]
    assert [str(s.images[Modality.T1].path) for s in scan.subjects] == [
        "a1.nii.gz",
        "a2.nii.gz",
        "b.nii.gz",
    ]


def test_group_column_and_empty_id_row(tmp_path: Path) -> None:
    (tmp_path / "scans.csv").write_text(
        "subject_id,patient_id,t1\ns1,P7,s1.nii.gz\n,P8,x.nii.gz\ns2,P7,s2.nii.gz\n"
    )
    scan = TableReader().read(tmp_path)
    assert [(s.subject_id, s.group_id) for s in scan.subjects] == [("s1", "P7"), ("s2", "P7")]
    (problem,) = scan.problems
    assert problem.kind is ProblemKind.LAYOUT and "row 3" in problem.message


def test_only_tables_with_image_columns_are_manifests(tmp_path: Path) -> None:
    (tmp_path / "clinical.csv").write_text("subject_id,age,grade\nx,3,2\n")
    (tmp_path / "participants.tsv").write_text("participant_id\tT1w\nsub-01\tfoo\n")
    (tmp_path / "notes.csv").write_text("t1,flair\na,b\n")  # no id column
    assert manifest_tables(tmp_path) == ()
    assert not TableReader().matches(tmp_path)
    (tmp_path / "cases.csv").write_text("subject_id,t1\nx,x.nii.gz\n")
    assert manifest_tables(tmp_path) == (tmp_path / "cases.csv",)
