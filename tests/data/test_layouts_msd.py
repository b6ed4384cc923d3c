"""MSD Task01_BrainTumour folders: 4-D channels, test cases, broken dataset.json."""

import json
from pathlib import Path, PurePosixPath

import numpy as np

from neurofed.data.layouts import MsdReader
from neurofed.data.nifti import read_image, write_image
from neurofed.data.subject import ImageRef
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity
from tests.helpers import AFFINE, SHAPE, write_tiny_label

TASK01 = {
    "name": "BRATS",
    "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
    "labels": {
        "0": "background",
        "1": "edema",
        "2": "non-enhancing tumor",
        "3": "enhancing tumour",
    },
    "numTraining": 2,
    "training": [
        {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"},
        {"image": "./imagesTr/BRATS_002.nii.gz", "label": "./labelsTr/BRATS_002.nii.gz"},
    ],
    "test": ["./imagesTs/BRATS_485.nii.gz"],
}


def make_task(root: Path, data: object = TASK01) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(data))
    for folder, name in [
        ("imagesTr", "BRATS_001"),
        ("imagesTr", "BRATS_002"),
        ("labelsTr", "BRATS_001"),
        ("labelsTr", "BRATS_002"),
        ("imagesTs", "BRATS_485"),
    ]:
        (root / folder).mkdir(exist_ok=True)
        (root / folder / f"{name}.nii.gz").write_bytes(b"")
    return root


def test_each_modality_is_a_channel_of_the_4d_file(tmp_path: Path) -> None:
    # Prepare: a real 4-D file whose channel c is filled with c
    root = make_task(tmp_path)
    data = np.stack([np.full(SHAPE, c, dtype=np.float32) for c in range(4)], axis=-1)
    write_image(root / "imagesTr" / "BRATS_001.nii.gz", data, AFFINE)
    write_tiny_label(root / "labelsTr" / "BRATS_001.nii.gz", values=(0, 1, 2, 3))
    # Execute
    scan = MsdReader().read(root)
    # Assert
    assert scan.layout is Layout.MSD
    subject = scan.subjects[0]
    assert subject.subject_id == "BRATS_001"
    image = PurePosixPath("imagesTr/BRATS_001.nii.gz")
    assert dict(subject.images) == {
        Modality.FLAIR: ImageRef(image, 0),
        Modality.T1: ImageRef(image, 1),
        Modality.T1CE: ImageRef(image, 2),
        Modality.T2: ImageRef(image, 3),
    }
    ref = subject.images[Modality.T1CE]
    assert float(read_image(root / ref.path, ref.channel).array.mean()) == 2.0
    assert subject.label == ImageRef(PurePosixPath("labelsTr/BRATS_001.nii.gz"))
    assert subject.label_convention is LabelConvention.MSD_BRAIN_TUMOUR
    assert set(scan.expected_modalities) == set(Modality)
    assert scan.problems == ()


def test_test_cases_have_no_label(tmp_path: Path) -> None:
    scan = MsdReader().read(make_task(tmp_path))
    assert [s.subject_id for s in scan.subjects] == ["BRATS_001", "BRATS_002", "BRATS_485"]
    test_case = scan.subjects[2]
    assert test_case.label is None and test_case.label_convention is None
    assert test_case.images[Modality.T2] == ImageRef(PurePosixPath("imagesTs/BRATS_485.nii.gz"), 3)


def test_unlisted_files_warn_and_macos_junk_is_ignored(tmp_path: Path) -> None:
    root = make_task(tmp_path)
    (root / "imagesTr" / "._BRATS_001.nii.gz").write_bytes(b"\0")
    (root / "imagesTr" / "BRATS_777.nii.gz").write_bytes(b"")
    scan = MsdReader().read(root)
    (problem,) = scan.problems
    assert (problem.kind, problem.severity) == (ProblemKind.UNKNOWN_FILE, Severity.WARNING)
    assert problem.path == "imagesTr/BRATS_777.nii.gz"


def test_unparseable_dataset_json_is_a_layout_error(tmp_path: Path) -> None:
    root = make_task(tmp_path)
    (root / "dataset.json").write_text('{"modality": {"0": "FLAIR",')
    reader = MsdReader()
    assert reader.matches(root)  # no _0000 channel files: still MSD
    scan = reader.read(root)
    (problem,) = scan.problems
    assert (problem.kind, problem.severity) == (ProblemKind.LAYOUT, Severity.ERROR)
    assert problem.subject_id is None and problem.path == "dataset.json"
    assert "not readable JSON" in problem.message and "json.tool" in problem.fix
    assert scan.subjects == ()


def test_missing_labels_key_keeps_images_drops_label_maps(tmp_path: Path) -> None:
    root = make_task(tmp_path, {k: v for k, v in TASK01.items() if k != "labels"})
    scan = MsdReader().read(root)
    assert len(scan.subjects) == 3
    assert all(s.label is None for s in scan.subjects)
    assert all(len(s.images) == 4 for s in scan.subjects)
    errors = [p for p in scan.problems if p.kind is ProblemKind.LAYOUT]
    assert len(errors) == 1 and "'labels'" in errors[0].message
    assert not [p for p in scan.problems if p.kind is ProblemKind.UNKNOWN_FILE]


def test_missing_training_list_falls_back_to_folders(tmp_path: Path) -> None:
    root = make_task(tmp_path, {k: v for k, v in TASK01.items() if k != "training"})
    scan = MsdReader().read(root)
    labelled = [s for s in scan.subjects if s.label is not None]
    assert [s.subject_id for s in labelled] == ["BRATS_001", "BRATS_002"]
    assert any("'training'" in p.message for p in scan.problems if p.kind is ProblemKind.LAYOUT)


def test_unknown_channel_name_is_a_layout_error(tmp_path: Path) -> None:
    data = dict(TASK01, modality={"0": "FLAIR", "1": "DWI"})
    scan = MsdReader().read(make_task(tmp_path, data))
    (problem,) = [p for p in scan.problems if p.kind is ProblemKind.LAYOUT]
    assert "'DWI'" in problem.message and "T1, T1ce, T2 or FLAIR" in problem.fix
    assert scan.expected_modalities == (Modality.FLAIR,)
    assert scan.subjects[0].images[Modality.FLAIR].channel == 0


def test_nnunet_v1_channel_files_are_read(tmp_path: Path) -> None:
    root = tmp_path
    data = dict(
        TASK01,
        modality={"0": "FLAIR", "1": "T1"},
        training=[{"image": "./imagesTr/la_003.nii.gz", "label": "./labelsTr/la_003.nii.gz"}],
        test=[],
    )
    (root / "dataset.json").write_text(json.dumps(data))
    for path in (
        "imagesTr/la_003_0000.nii.gz",
        "imagesTr/la_003_0001.nii.gz",
        "labelsTr/la_003.nii.gz",
    ):
        (root / path).parent.mkdir(exist_ok=True)
        (root / path).write_bytes(b"")
    (subject,) = MsdReader().read(root).subjects
    assert subject.images[Modality.T1] == ImageRef(PurePosixPath("imagesTr/la_003_0001.nii.gz"))
    assert subject.images[Modality.FLAIR].channel is None
