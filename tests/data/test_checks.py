"""Every failure class a site check must catch: kind, path, a distinctive message, and a fix."""

import gzip
import os
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

import neurofed.data.file_checks as file_checks
from neurofed.data.checks import CaseStatus, CheckSettings, check_case, find_duplicates
from neurofed.data.nifti import read_header, write_image, write_label
from neurofed.data.subject import ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity
from tests.helpers import AFFINE, SHAPE, tiny_image, write_tiny_image, write_tiny_label

ALL = tuple(Modality)


def make_case(
    root: Path,
    sid: str = "c1",
    modalities: tuple[Modality, ...] = ALL,
    label: bool = True,
    convention: LabelConvention = LabelConvention.BRATS_2021,
) -> Subject:
    """A BraTS-2021-like case: <sid>/<sid>_<modality>.nii.gz and <sid>/<sid>_seg.nii.gz."""
    images = {}
    for i, modality in enumerate(modalities):
        rel = f"{sid}/{sid}_{modality.value.lower()}.nii.gz"
        write_tiny_image(root / rel, seed=i)
        images[modality] = ImageRef(PurePosixPath(rel))
    seg = None
    if label:
        seg = ImageRef(PurePosixPath(f"{sid}/{sid}_seg.nii.gz"))
        write_tiny_label(root / str(seg.path), values=(0, 1, 2, 4))
    return Subject(sid, images, label=seg, label_convention=convention if label else None)


def only(problems: tuple[Problem, ...]) -> Problem:
    assert len(problems) == 1, [p.line() for p in problems]
    problem = problems[0]
    assert problem.severity is Severity.ERROR
    assert problem.fix  # every problem says how to fix it
    return problem


def test_good_case_is_ok(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    report = check_case(tmp_path, case, CheckSettings(require_label=True), ALL)
    assert report.problems == ()
    assert report.status is CaseStatus.OK
    assert report.subject_id == "c1"


def test_truncated_gzip_is_unreadable_although_its_header_reads(tmp_path: Path) -> None:
    # Prepare: a volume large enough that the header survives the truncation
    case = make_case(tmp_path)
    path = tmp_path / "c1/c1_t1.nii.gz"
    write_image(path, np.random.default_rng(0).random((30, 30, 30)), AFFINE)
    path.write_bytes(path.read_bytes()[: path.stat().st_size * 2 // 3])
    assert read_header(path)[0] == (30, 30, 30)  # a header-only check would pass it
    # Execute
    report = check_case(tmp_path, case)
    # Assert
    problem = only(report.problems)
    assert (problem.kind, problem.path) == (ProblemKind.UNREADABLE, "c1/c1_t1.nii.gz")
    assert "voxel data unreadable" in problem.message
    assert str(tmp_path) not in problem.message  # paths stay relative to the site root
    assert report.status is CaseStatus.EXCLUDED


@pytest.mark.parametrize(
    ("content", "looks_like", "fix"),
    [
        (gzip.compress(b"radiology report: no scan here\n" * 20), "text", "NIfTI"),
        (b"patient list\nname,id\n" * 30, "text", "NIfTI"),
        (bytes(128) + b"DICM" + bytes(600), "DICOM", "dcm2niix"),
    ],
    ids=["gzipped-text", "text", "dicom"],  # the gzip header holds a time: not an id
)
def test_file_that_is_not_nifti(tmp_path: Path, content: bytes, looks_like: str, fix: str) -> None:
    case = make_case(tmp_path)
    (tmp_path / "c1/c1_flair.nii.gz").write_bytes(content)
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.NOT_NIFTI, "c1/c1_flair.nii.gz")
    assert looks_like in problem.message
    assert fix in problem.fix


def test_uncompressed_nifti_named_nii_gz_says_rename(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    write_tiny_image(tmp_path / "plain.nii")
    os.replace(tmp_path / "plain.nii", tmp_path / "c1/c1_t2.nii.gz")
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.UNREADABLE, "c1/c1_t2.nii.gz")
    assert "not gzip-compressed" in problem.message
    assert "rename it to c1_t2.nii" in problem.fix


def test_empty_file(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    (tmp_path / "c1/c1_t1ce.nii.gz").write_bytes(b"")
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.EMPTY_FILE, "c1/c1_t1ce.nii.gz")
    assert "0 bytes" in problem.message


def test_4d_file_where_3d_is_expected(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    write_image(tmp_path / "c1/c1_t2.nii.gz", tiny_image(shape=(*SHAPE, 3)), AFFINE)
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.WRONG_DIMENSIONS, "c1/c1_t2.nii.gz")
    assert "T2: file is 4-D (shape 6×7×5×3)" in problem.message


def test_nan_and_inf_voxels_are_counted(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    data = tiny_image(seed=9)
    data.reshape(-1)[:5] = np.nan
    data.reshape(-1)[10:12] = np.inf
    write_image(tmp_path / "c1/c1_flair.nii.gz", data, AFFINE)
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.NON_FINITE, "c1/c1_flair.nii.gz")
    assert f"FLAIR: 7 of {data.size} voxels are NaN or infinite" in problem.message


def test_all_zero_image(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    write_image(tmp_path / "c1/c1_t1.nii.gz", np.zeros(SHAPE), AFFINE)
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.ALL_ZERO, "c1/c1_t1.nii.gz")
    assert "every voxel is 0" in problem.message


def test_modality_off_the_grid_by_more_than_the_tolerance(tmp_path: Path) -> None:
    # Prepare: T2 shifted 0.5 mm, FLAIR 0.05 mm (within the 0.1 mm tolerance)
    case = make_case(tmp_path)
    for name, shift in (("t2", 0.5), ("flair", 0.05)):
        moved = AFFINE.copy()
        moved[0, 3] += shift
        write_tiny_image(tmp_path / f"c1/c1_{name}.nii.gz", affine=moved)
    # Execute
    problem = only(check_case(tmp_path, case).problems)
    # Assert: the odd one out is reported, by how far it is off
    assert (problem.kind, problem.path) == (ProblemKind.GRID_MISMATCH, "c1/c1_t2.nii.gz")
    assert "T2 lies 0.50 mm off the T1 grid (tolerance 0.1 mm)" in problem.message
    loose = check_case(tmp_path, case, CheckSettings(affine_tolerance_mm=1.0))
    assert loose.status is CaseStatus.OK


def test_modality_with_another_shape_and_odd_reference(tmp_path: Path) -> None:
    # T1 (first in order) is the odd one: three modalities agree on another shape
    case = make_case(tmp_path, label=False)
    for name in ("t1ce", "t2", "flair"):
        write_tiny_image(tmp_path / f"c1/c1_{name}.nii.gz", shape=(6, 7, 6))
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.GRID_MISMATCH, "c1/c1_t1.nii.gz")
    assert "T1 has shape 6×7×5 but T1CE has 6×7×6" in problem.message


def test_label_values_outside_the_convention(tmp_path: Path) -> None:
    case = make_case(tmp_path)  # declared BraTS 2021 {0, 1, 2, 4}
    write_tiny_label(tmp_path / "c1/c1_seg.nii.gz", values=(0, 1, 2, 3))  # BraTS 2023 numbering
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.LABEL_VALUES, "c1/c1_seg.nii.gz")
    assert "label values [3] are not part of the brats-2021 convention" in problem.message
    assert "(allowed: [0, 1, 2, 4])" in problem.message
    assert "brats-2023 fits these values" in problem.fix


def test_label_map_not_on_the_image_grid(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    write_tiny_label(tmp_path / "c1/c1_seg.nii.gz", shape=(6, 7, 4))
    problem = only(check_case(tmp_path, case).problems)
    assert (problem.kind, problem.path) == (ProblemKind.LABEL_GRID, "c1/c1_seg.nii.gz")
    assert "label map has shape 6×7×4 but T1 has 6×7×5" in problem.message
    assert "nearest-neighbour" in problem.fix


def test_missing_required_modality_says_what_the_layout_calls_it(tmp_path: Path) -> None:
    case = make_case(tmp_path, modalities=(Modality.T1, Modality.T1CE, Modality.T2))
    report = check_case(tmp_path, case, expected=ALL, layout=Layout.BRATS_2021)
    problem = only(report.problems)
    assert problem.kind is ProblemKind.MISSING_MODALITY
    assert "required modality FLAIR is missing (case has T1, T1CE, T2)" in problem.message
    assert "expects it as `c1/c1_flair.nii.gz`" in problem.message
    settings = CheckSettings(required_modalities=(Modality.T1,))
    assert check_case(tmp_path, case, settings, expected=ALL).status is CaseStatus.OK


def test_missing_file_and_missing_label(tmp_path: Path) -> None:
    case = make_case(tmp_path, label=False)
    (tmp_path / "c1/c1_t2.nii.gz").unlink()
    problems = check_case(tmp_path, case, CheckSettings(require_label=True)).problems
    kinds = {(p.kind, p.path) for p in problems}
    assert kinds == {
        (ProblemKind.MISSING_FILE, "c1/c1_t2.nii.gz"),
        (ProblemKind.MISSING_FILE, None),
    }
    assert any("file not found" in p.message for p in problems)
    assert any("no label map" in p.message for p in problems)


@pytest.mark.parametrize("how", ["dotdot", "symlink"])
def test_path_escaping_the_site_root_is_never_opened(
    tmp_path: Path, how: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a readable scan outside the site root, reached by '..' or by a symlink
    root = tmp_path / "site"
    case = make_case(root, label=False)
    write_tiny_image(tmp_path / "elsewhere.nii.gz")
    if how == "dotdot":
        rel = "../elsewhere.nii.gz"
    else:
        rel = "c1/c1_t1.nii.gz"
        (root / rel).unlink()
        (root / rel).symlink_to(tmp_path / "elsewhere.nii.gz")
    images = dict(case.images) | {Modality.T1: ImageRef(PurePosixPath(rel))}
    opened: list[Path] = []
    real_read = file_checks.read_image
    monkeypatch.setattr(
        file_checks,
        "read_image",
        lambda p, *a, **k: opened.append(Path(p)) or real_read(p, *a, **k),
    )
    # Execute
    problem = only(check_case(root, Subject("c1", images)).problems)
    # Assert
    assert (problem.kind, problem.path) == (ProblemKind.PATH_ESCAPE, rel)
    assert "outside the site root" in problem.message
    assert tmp_path / "elsewhere.nii.gz" not in opened
    assert len(opened) == 3  # the three other modalities


def test_4d_file_is_decompressed_once_for_all_its_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: an MSD case, one 4-D image holding four channels, and a label map
    data = np.stack([tiny_image(seed=c) for c in range(4)], axis=-1)
    write_image(tmp_path / "imagesTr/BRATS_001.nii.gz", data, AFFINE)
    write_label(tmp_path / "labelsTr/BRATS_001.nii.gz", np.zeros(SHAPE), AFFINE)
    path = PurePosixPath("imagesTr/BRATS_001.nii.gz")
    images = {m: ImageRef(path, channel=c) for c, m in enumerate((Modality.FLAIR, *ALL[:3]))}
    case = Subject(
        "BRATS_001",
        images,
        label=ImageRef(PurePosixPath("labelsTr/BRATS_001.nii.gz")),
        label_convention=LabelConvention.MSD_BRAIN_TUMOUR,
    )
    reads: list[str] = []
    real_read = file_checks.read_image
    monkeypatch.setattr(
        file_checks,
        "read_image",
        lambda p, *a, **k: reads.append(Path(p).name) or real_read(p, *a, **k),
    )
    # Execute
    report = check_case(tmp_path, case, expected=ALL)
    # Assert
    assert report.status is CaseStatus.OK, [p.line() for p in report.problems]
    assert sorted(reads) == ["BRATS_001.nii.gz", "BRATS_001.nii.gz"]  # image once, label once
    wrong = Subject("BRATS_001", {Modality.T1: ImageRef(path, channel=4)})
    problem = only(check_case(tmp_path, wrong).problems)
    assert problem.kind is ProblemKind.WRONG_DIMENSIONS
    assert "channel 4 of a 4-D file, but the file has shape 6×7×5×4" in problem.message


def test_several_problems_in_one_case_are_all_reported(tmp_path: Path) -> None:
    case = make_case(tmp_path)
    (tmp_path / "c1/c1_t1.nii.gz").write_bytes(b"")
    write_image(tmp_path / "c1/c1_t2.nii.gz", np.zeros(SHAPE), AFFINE)
    write_tiny_label(tmp_path / "c1/c1_seg.nii.gz", values=(0, 7))
    kinds = [p.kind for p in check_case(tmp_path, case).problems]
    assert kinds == [ProblemKind.EMPTY_FILE, ProblemKind.ALL_ZERO, ProblemKind.LABEL_VALUES]


def test_duplicates_name_the_other_paths(tmp_path: Path) -> None:
    a = make_case(tmp_path / "a", label=False)
    b = make_case(tmp_path / "b", modalities=(Modality.T1,), label=False)
    other = Subject("c2", {Modality.T1: ImageRef(PurePosixPath("x.nii.gz"))})
    problems = find_duplicates([a, other, b])
    assert [(p.kind, p.subject_id, p.path) for p in problems] == [
        (ProblemKind.DUPLICATE_SUBJECT, "c1", "c1/c1_t1.nii.gz"),
        (ProblemKind.DUPLICATE_SUBJECT, "c1", "c1/c1_t1.nii.gz"),
    ]
    assert "occurs 2 times; the other copies use c1/c1_t1.nii.gz" in problems[1].message
    assert "c1/c1_flair.nii.gz" in problems[1].message  # b's message names a's files
    assert find_duplicates([a, other]) == ()


def test_settings_are_validated() -> None:
    with pytest.raises(ValueError, match=r"affine_tolerance_mm=-1.*at least 0"):
        CheckSettings(affine_tolerance_mm=-1)
    with pytest.raises(ValueError, match=r"'DWI' is not a modality; use one of T1"):
        CheckSettings(required_modalities=("DWI",))  # type: ignore[arg-type]
    settings = CheckSettings(required_modalities=(Modality.T2,), require_label=True)
    assert CheckSettings.from_json(settings.to_json()) == settings
