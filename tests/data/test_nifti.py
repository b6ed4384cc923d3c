"""NIfTI I/O keeps geometry and types; broken files give errors that name the file."""

import gzip
from pathlib import Path

import numpy as np
import pytest

from neurofed.data.nifti import VolumeError, read_header, read_image, read_label, write_image
from tests.helpers import AFFINE, SHAPE, write_tiny_image, write_tiny_label


def test_round_trip_preserves_affine_header_and_dtype(tmp_path: Path) -> None:
    # Prepare: an oblique affine, the kind a radiologist's export has
    angle = np.deg2rad(12)
    affine = np.array(
        [
            [0.9 * np.cos(angle), -np.sin(angle), 0, -90.5],
            [0.9 * np.sin(angle), np.cos(angle), 0, 12.25],
            [0, 0, 3.0, -40.0],
            [0, 0, 0, 1],
        ]
    )
    data = np.arange(np.prod(SHAPE), dtype=np.float64).reshape(SHAPE)
    path = tmp_path / "oblique.nii.gz"
    # Execute
    write_image(path, data, affine)
    volume = read_image(path)
    # Assert
    assert volume.array.dtype == np.float32
    np.testing.assert_allclose(volume.affine, affine, atol=1e-5)
    np.testing.assert_array_equal(volume.array, data.astype(np.float32))
    assert volume.spacing == pytest.approx((0.9, 1.0, 3.0), abs=1e-5)
    assert read_header(path) == (SHAPE, pytest.approx(volume.affine))


def test_header_fields_survive_rewrite(tmp_path: Path) -> None:
    source = write_tiny_image(tmp_path / "a.nii.gz")
    volume = read_image(source)
    volume.header["descrip"] = b"site-7 scanner"
    write_image(tmp_path / "b.nii.gz", volume.array, volume.affine, volume.header)
    again = read_image(tmp_path / "b.nii.gz")
    assert again.header is not None
    assert bytes(again.header["descrip"]).rstrip(b"\0") == b"site-7 scanner"


def test_labels_are_uint8(tmp_path: Path) -> None:
    path = write_tiny_label(tmp_path / "seg.nii.gz", values=(0, 1, 4))
    labels = read_label(path)
    assert labels.array.dtype == np.uint8
    assert set(np.unique(labels.array)) == {0, 1, 4}
    np.testing.assert_allclose(labels.affine, AFFINE)


def test_fractional_label_map_is_rejected(tmp_path: Path) -> None:
    path = tmp_path / "soft.nii.gz"
    write_image(path, np.full(SHAPE, 0.5), AFFINE)
    with pytest.raises(VolumeError, match=r"soft\.nii\.gz.*non-integer"):
        read_label(path)


def test_truncated_gzip_names_the_file(tmp_path: Path) -> None:
    path = write_tiny_image(tmp_path / "t1.nii.gz", shape=(30, 30, 30))
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    with pytest.raises(VolumeError, match=r"t1\.nii\.gz"):
        read_image(path)


def test_text_file_is_not_a_nifti(tmp_path: Path) -> None:
    path = tmp_path / "flair.nii.gz"
    path.write_bytes(gzip.compress(b"this is a report, not a scan"))
    with pytest.raises(VolumeError, match=r"flair\.nii\.gz.*not a readable NIfTI"):
        read_image(path)


def test_channel_of_4d_file(tmp_path: Path) -> None:
    path = tmp_path / "msd.nii.gz"
    data = np.stack([np.full(SHAPE, c, dtype=np.float32) for c in range(4)], axis=-1)
    write_image(path, data, AFFINE)
    assert float(read_image(path, channel=2).array.mean()) == 2.0
    with pytest.raises(VolumeError, match="channel 7"):
        read_image(path, channel=7)
