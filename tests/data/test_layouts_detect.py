"""Layout detection from names alone: each layout, none, several, a missing root."""

import json
from pathlib import Path

import pytest

from neurofed.data.layouts import LayoutError, detect_layout, read_site, reader_for
from neurofed.keys import LabelConvention, Layout


def touch(root: Path, *paths: str) -> None:
    for path in paths:
        (root / path).parent.mkdir(parents=True, exist_ok=True)
        (root / path).write_bytes(b"")


def make_brats21(root: Path) -> None:
    parts = ("t1", "t1ce", "t2", "flair", "seg")
    touch(root, *(f"TrainingData/BraTS2021_00001/BraTS2021_00001_{p}.nii.gz" for p in parts))
    (root / "clinical.csv").write_text("BraTS21ID,MGMT_value\n1,1\n")  # not a table layout


def make_brats23(root: Path) -> None:
    case = "BraTS-MEN-00004-000"
    touch(root, *(f"{case}/{case}-{p}.nii.gz" for p in ("t1n", "t1c", "t2w", "t2f", "seg")))


def make_msd(root: Path) -> None:
    touch(root, "imagesTr/BRATS_001.nii.gz", "labelsTr/BRATS_001.nii.gz")
    data = {
        "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
        "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing"},
        "training": [
            {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}
        ],
    }
    (root / "dataset.json").write_text(json.dumps(data))


def make_nnunet(root: Path) -> None:
    touch(root, "imagesTr/c1_0000.nii.gz", "labelsTr/c1.nii.gz")
    data = {
        "channel_names": {"0": "FLAIR"},
        "labels": {"background": 0, "lesion": 1},
        "file_ending": ".nii.gz",
    }
    (root / "dataset.json").write_text(json.dumps(data))


def make_bids(root: Path) -> None:
    touch(root, "sub-01/anat/sub-01_T1w.nii.gz")
    (root / "participants.tsv").write_text("participant_id\tT1w\nsub-01\tx\n")


def make_table(root: Path) -> None:
    (root).mkdir(parents=True, exist_ok=True)
    (root / "cases.csv").write_text("subject_id,t1\nx,x/t1.nii.gz\n")


MAKERS = {
    Layout.BRATS_2021: make_brats21,
    Layout.BRATS_2023: make_brats23,
    Layout.MSD: make_msd,
    Layout.NNUNET_V2: make_nnunet,
    Layout.BIDS: make_bids,
    Layout.TABLE: make_table,
}


@pytest.mark.parametrize("layout", list(Layout))
def test_each_layout_is_detected_and_read(tmp_path: Path, layout: Layout) -> None:
    # Prepare
    MAKERS[layout](tmp_path)
    # Execute
    reader = detect_layout(tmp_path)
    scan = read_site(tmp_path)
    # Assert
    assert reader.layout is layout
    assert scan.layout is layout
    assert len(scan.subjects) == 1


def test_nothing_recognisable_lists_every_layout(tmp_path: Path) -> None:
    touch(tmp_path, "scans/patient1.nii.gz")
    with pytest.raises(LayoutError) as error:
        detect_layout(tmp_path)
    message = str(error.value)
    assert "matches no layout" in message
    for layout in Layout:
        assert layout.value in message
    assert "Fix:" in message


def test_several_matches_ask_for_layout(tmp_path: Path) -> None:
    make_brats21(tmp_path)
    make_table(tmp_path)
    with pytest.raises(LayoutError, match=r"brats-2021, table.*layout=.*--layout NAME"):
        detect_layout(tmp_path)
    scan = read_site(tmp_path, layout=Layout.TABLE)
    assert scan.layout is Layout.TABLE and [s.subject_id for s in scan.subjects] == ["x"]


def test_missing_root_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(LayoutError, match=r"no such folder; check the site's data path"):
        read_site(tmp_path / "nowhere")
    (tmp_path / "file.csv").write_text("x")
    with pytest.raises(LayoutError, match="is a file, not a folder"):
        detect_layout(tmp_path / "file.csv")


def test_explicit_clinical_table_is_joined(tmp_path: Path) -> None:
    make_brats23(tmp_path / "site")
    table = tmp_path / "labels.xlsx"
    openpyxl = pytest.importorskip("openpyxl")
    book = openpyxl.Workbook()
    book.active.append(["Patient ID", "WHO CNS grade", "IDH mutation"])
    book.active.append(["BraTS-MEN-00004-000", "grade II", "IDH-wildtype"])
    book.save(table)
    scan = read_site(tmp_path / "site", clinical_table=table)
    clinical = scan.subjects[0].clinical
    assert (clinical.grade, clinical.idh, clinical.mgmt) == (2, False, None)


def test_label_convention_argument_only_for_tables(tmp_path: Path) -> None:
    make_table(tmp_path)
    assert (
        read_site(tmp_path, label_convention=LabelConvention.BINARY_LESION).layout is Layout.TABLE
    )
    with pytest.raises(ValueError, match="table layout only"):
        reader_for(Layout.BIDS, LabelConvention.BINARY_LESION)
