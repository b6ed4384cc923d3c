"""nnU-Net v2 raw folders: channels, label names -> conventions (incl. regions), problems."""

import json
from pathlib import Path, PurePosixPath

import pytest

from neurofed.data.layouts import NnunetReader, convention_from_label_names
from neurofed.data.subject import ImageRef
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity

MS_DATASET = {
    "channel_names": {"0": "FLAIR", "1": "T1"},
    "labels": {"background": 0, "lesion": 1},
    "numTraining": 2,
    "file_ending": ".nii.gz",
}


def make_dataset(root: Path, data: object = MS_DATASET, files: tuple[str, ...] = ()) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset.json").write_text(json.dumps(data) if not isinstance(data, str) else data)
    default = (
        "imagesTr/ms_001_0000.nii.gz",
        "imagesTr/ms_001_0001.nii.gz",
        "labelsTr/ms_001.nii.gz",
        "imagesTr/ms_002_0000.nii.gz",
        "imagesTr/ms_002_0001.nii.gz",
        "labelsTr/ms_002.nii.gz",
        "imagesTs/ms_100_0000.nii.gz",
        "imagesTs/ms_100_0001.nii.gz",
    )
    for path in files or default:
        (root / path).parent.mkdir(exist_ok=True)
        (root / path).write_bytes(b"")
    return root


def test_cases_channels_and_binary_labels(tmp_path: Path) -> None:
    scan = NnunetReader().read(make_dataset(tmp_path))
    assert scan.layout is Layout.NNUNET_V2
    assert [s.subject_id for s in scan.subjects] == ["ms_001", "ms_002", "ms_100"]
    first = scan.subjects[0]
    assert dict(first.images) == {
        Modality.FLAIR: ImageRef(PurePosixPath("imagesTr/ms_001_0000.nii.gz")),
        Modality.T1: ImageRef(PurePosixPath("imagesTr/ms_001_0001.nii.gz")),
    }
    assert first.label == ImageRef(PurePosixPath("labelsTr/ms_001.nii.gz"))
    assert first.label_convention is LabelConvention.BINARY_LESION
    assert scan.subjects[2].label is None  # imagesTs
    assert scan.expected_modalities == (Modality.T1, Modality.FLAIR)
    assert scan.problems == ()


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ({"background": 0, "lesion": 1}, LabelConvention.BINARY_LESION),
        ({"background": 0, "MS lesion": 1}, LabelConvention.BINARY_LESION),
        ({"background": 0, "WMH": 1}, LabelConvention.BINARY_LESION),
        ({"background": 0, "NCR": 1, "ED": 2, "ET": 4}, LabelConvention.BRATS_2021),
        (
            {"background": 0, "necrosis": 1, "peritumoral edema": 2, "enhancing tumor": 3},
            LabelConvention.BRATS_2023,
        ),
        (
            {"background": 0, "oedema": 1, "non-enhancing tumour": 2, "enhancing tumour": 3},
            LabelConvention.MSD_BRAIN_TUMOUR,
        ),
        ({"background": "0", "NCR/NET": "1", "edema": "2", "ET": "4"}, LabelConvention.BRATS_2021),
        (
            {"background": 0, "whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3},
            LabelConvention.MSD_BRAIN_TUMOUR,
        ),
        (
            {"background": 0, "WT": [1, 2, 3], "TC": [1, 3], "ET": [3]},
            LabelConvention.BRATS_2023,
        ),
        (
            {"background": 0, "whole tumour": [1, 2, 4], "tumour core": [1, 4], "ET": 4},
            LabelConvention.BRATS_2021,
        ),
    ],
)
def test_label_names_give_the_convention(
    labels: dict[str, object], expected: LabelConvention
) -> None:
    assert convention_from_label_names(labels) is expected


@pytest.mark.parametrize(
    "labels",
    [
        {"background": 0, "liver": 1},
        {"background": 0, "lesion": 2},
        {"background": 1, "lesion": 0},
        {"background": 0, "NCR": 1, "ED": 2},
        {"background": 0, "NCR": 1, "ED": 2, "ET": 5},
        {"background": 0, "edema": 1, "oedema": 2, "ET": 3, "NCR": 4},
    ],
)
def test_unknown_label_names_raise(labels: dict[str, object]) -> None:
    with pytest.raises(ValueError, match="match no label convention"):
        convention_from_label_names(labels)


def test_region_labels_in_dataset_json(tmp_path: Path) -> None:
    data = {
        "channel_names": {"0": "FLAIR", "1": "T1", "2": "T1ce", "3": "T2"},
        "labels": {
            "background": 0,
            "whole tumor": [1, 2, 3],
            "tumor core": [2, 3],
            "enhancing tumor": 3,
        },
        "regions_class_order": [1, 2, 3],
        "numTraining": 1,
        "file_ending": ".nii.gz",
    }
    images = [f"imagesTr/BRATS_001_000{c}.nii.gz" for c in range(4)]
    files = (*images, "labelsTr/BRATS_001.nii.gz")
    scan = NnunetReader().read(make_dataset(tmp_path, data, files))
    (subject,) = scan.subjects
    assert subject.label_convention is LabelConvention.MSD_BRAIN_TUMOUR
    assert subject.modalities == (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)
    assert scan.problems == ()


def test_unknown_labels_are_a_layout_error_and_labels_dropped(tmp_path: Path) -> None:
    data = dict(MS_DATASET, labels={"background": 0, "liver": 1, "spleen": 2})
    scan = NnunetReader().read(make_dataset(tmp_path, data))
    (problem,) = scan.problems
    assert (problem.kind, problem.severity, problem.subject_id) == (
        ProblemKind.LAYOUT,
        Severity.ERROR,
        None,
    )
    assert "liver" in problem.message and "'lesion'" in problem.fix
    assert [s.label for s in scan.subjects] == [None, None, None]
    assert len(scan.subjects[0].images) == 2


def test_unknown_channel_is_a_layout_error(tmp_path: Path) -> None:
    data = dict(MS_DATASET, channel_names={"0": "FLAIR", "1": "ADC"})
    scan = NnunetReader().read(make_dataset(tmp_path, data))
    (problem,) = scan.problems
    assert problem.kind is ProblemKind.LAYOUT and "'ADC'" in problem.message
    assert scan.subjects[0].modalities == (Modality.FLAIR,)


def test_stray_files_orphan_labels_and_missing_file_ending(tmp_path: Path) -> None:
    data = {k: v for k, v in MS_DATASET.items() if k != "file_ending"}
    files = (
        "imagesTr/ms_001_0000.nii.gz",
        "imagesTr/ms_001_0001.nii.gz",
        "imagesTr/ms_001_0002.nii.gz",  # channel not declared
        "imagesTr/ms_001.nii.gz",  # no channel suffix
        "labelsTr/ms_001.nii.gz",
        "labelsTr/ms_009.nii.gz",  # no images
        "imagesTr/._ms_001_0000.nii.gz",
    )
    scan = NnunetReader().read(make_dataset(tmp_path, data, files))
    assert [s.subject_id for s in scan.subjects] == ["ms_001"]
    unknown = sorted(p.path or "" for p in scan.problems if p.kind is ProblemKind.UNKNOWN_FILE)
    assert unknown == [
        "imagesTr/ms_001.nii.gz",
        "imagesTr/ms_001_0002.nii.gz",
        "labelsTr/ms_009.nii.gz",
    ]
    layout = [p for p in scan.problems if p.kind is ProblemKind.LAYOUT]
    assert any("file_ending" in p.message for p in layout)
    assert any("numTraining is 2" in p.message and p.severity is Severity.WARNING for p in layout)


def test_detects_nnunet_not_msd(tmp_path: Path) -> None:
    from neurofed.data.layouts import MsdReader

    root = make_dataset(tmp_path)
    assert NnunetReader().matches(root) and not MsdReader().matches(root)


def test_labels_ts_label_test_cases(tmp_path: Path) -> None:
    files = ("imagesTs/t_001_0000.nii.gz", "imagesTs/t_001_0001.nii.gz", "labelsTs/t_001.nii.gz")
    data = dict(MS_DATASET, numTraining=0)
    scan = NnunetReader().read(make_dataset(tmp_path, data, files))
    (subject,) = scan.subjects
    assert subject.label == ImageRef(PurePosixPath("labelsTs/t_001.nii.gz"))
    assert scan.problems == ()
