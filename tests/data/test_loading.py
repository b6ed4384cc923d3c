"""load_subject: channels first in the asked order, float32 images, internal uint8 labels."""

from pathlib import Path, PurePosixPath

import numpy as np
import pytest

import neurofed.data.loading as loading
from neurofed.data.loading import load_subject
from neurofed.data.nifti import VolumeError, write_image, write_label
from neurofed.data.subject import ImageRef, Subject
from neurofed.keys import LabelConvention, Modality, TumorLabel
from tests.helpers import AFFINE, SHAPE, tiny_image, tiny_label


def brats_case(root: Path, label: bool = True) -> Subject:
    images = {}
    for i, modality in enumerate(Modality):
        rel = f"c1/c1_{modality.value.lower()}.nii.gz"
        write_image(root / rel, np.full(SHAPE, i + 1, dtype=np.int16), AFFINE)  # channel = value
        images[modality] = ImageRef(PurePosixPath(rel))
    seg = None
    if label:
        seg = ImageRef(PurePosixPath("c1/c1_seg.nii.gz"))
        write_label(root / "c1/c1_seg.nii.gz", tiny_label((0, 1, 2, 4)), AFFINE)
    convention = LabelConvention.BRATS_2021 if label else None
    return Subject("c1", images, label=seg, label_convention=convention)


def test_shapes_dtypes_order_and_label_conversion(tmp_path: Path) -> None:
    # Prepare
    case = brats_case(tmp_path)
    # Execute
    loaded = load_subject(tmp_path, case, modalities=(Modality.FLAIR, Modality.T1))
    # Assert
    assert loaded.image.shape == (2, *SHAPE)
    assert loaded.image.dtype == np.float32
    assert loaded.image[0].max() == 4.0 and loaded.image[1].max() == 1.0  # FLAIR, then T1
    assert loaded.modalities == (Modality.FLAIR, Modality.T1)
    assert loaded.label is not None and loaded.label.dtype == np.uint8
    assert loaded.label.shape == SHAPE
    expected = tiny_label((0, 1, 2, 4))
    assert np.array_equal(loaded.label == TumorLabel.ET, expected == 4)  # BraTS 2021's 4 → 3
    assert set(np.unique(loaded.label).tolist()) == {0, 1, 2, 3}
    np.testing.assert_allclose(loaded.affine, AFFINE)
    assert loaded.spatial_shape == SHAPE


def test_default_order_and_no_label(tmp_path: Path) -> None:
    loaded = load_subject(tmp_path, brats_case(tmp_path, label=False))
    assert loaded.modalities == tuple(Modality)
    assert [float(c.max()) for c in loaded.image] == [1.0, 2.0, 3.0, 4.0]
    assert loaded.label is None


def test_4d_file_is_read_once_for_all_channels(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    data = np.stack([tiny_image(seed=c) for c in range(4)], axis=-1)  # (X, Y, Z, 4)
    write_image(tmp_path / "imagesTr/B_001.nii.gz", data, AFFINE)
    path = PurePosixPath("imagesTr/B_001.nii.gz")
    case = Subject("B_001", {m: ImageRef(path, channel=c) for c, m in enumerate(Modality)})
    reads: list[Path] = []
    real = loading.read_image
    monkeypatch.setattr(loading, "read_image", lambda p, *a: reads.append(p) or real(p, *a))
    loaded = load_subject(tmp_path, case, modalities=(Modality.T2, Modality.T1))
    assert len(reads) == 1
    np.testing.assert_array_equal(loaded.image[0], data[..., 2])
    np.testing.assert_array_equal(loaded.image[1], data[..., 0])


def test_missing_modality_and_mismatched_label_are_named(tmp_path: Path) -> None:
    case = brats_case(tmp_path)
    t1_only = Subject("c1", {Modality.T1: case.images[Modality.T1]})
    with pytest.raises(VolumeError, match=r"c1: has no FLAIR image \(it has T1\)"):
        load_subject(tmp_path, t1_only, modalities=(Modality.FLAIR,))
    write_label(tmp_path / "c1/c1_seg.nii.gz", np.zeros((6, 7, 4)), AFFINE)
    with pytest.raises(VolumeError, match=r"c1_seg\.nii\.gz: label shape \(6, 7, 4\) differs"):
        load_subject(tmp_path, case)
    write_label(tmp_path / "c1/c1_seg.nii.gz", tiny_label((0, 3)), AFFINE)
    with pytest.raises(VolumeError, match=r"label values \[3\] are not part of the brats-2021"):
        load_subject(tmp_path, case)
