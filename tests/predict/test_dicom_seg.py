"""DICOM SEG over the source series: each frame holds the labels at its pixels' positions in the
scanner, whatever grid the label map came on; read back with highdicom."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import nibabel as nib
import numpy as np
import pydicom
import pytest

from neurofed.predict.dicom_seg import (
    labels_on_slices,
    series_affine,
    task_segments,
    write_dicom_seg,
)
from tests.predict.dicom_series import mr_series


@pytest.mark.parametrize("oblique", [False, True], ids=["axial", "oblique"])
def test_a_segmentation_reads_back_on_the_source_frames(oblique: bool, tmp_path: Path) -> None:
    # Prepare: 8 slices of 12 x 16; labels drawn on the series' own (column, row, slice) grid
    c, s = np.cos(0.4), np.sin(0.4)
    row_dir, col_dir = ((c, s, 0.0), (-s, c, 0.0)) if oblique else ((1, 0, 0), (0, 1, 0))
    volume = np.arange(8 * 12 * 16).reshape(8, 12, 16) % 1000
    files = mr_series(tmp_path / "dicom", volume, row_dir=row_dir, col_dir=col_dir)
    datasets = [pydicom.dcmread(f) for f in files]
    affine = series_affine(datasets)
    labels = np.zeros((16, 12, 8), np.uint8)  # (column, row, slice)
    labels[3:7, 2:5, 1:3] = 1
    labels[10:12, 8:10, 5] = 3
    # the same labels on a flipped grid (as a NIfTI converter may write them)
    flipped = nib.orientations.apply_orientation(labels, [[0, -1], [1, -1], [2, 1]])
    flip_affine = affine @ nib.orientations.inv_ornt_aff([[0, -1], [1, -1], [2, 1]], labels.shape)

    # Execute
    out = write_dicom_seg(
        flipped, flip_affine, list(reversed(datasets)), task_segments("tumor-regions"),
        tmp_path / "seg.dcm", algorithm="neurofed tumor-regions", version="0.1",
    )  # fmt: skip

    # Assert
    seg = hd.seg.segread(out)
    assert [d.SegmentLabel for d in seg.SegmentSequence] == [
        "necrotic / non-enhancing tumour core",
        "peritumoral oedema",
        "enhancing tumour",
    ]
    uids = [ds.SOPInstanceUID for ds in datasets]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[1, 2, 3]
    )  # (slices, rows, columns, segments)
    expected = labels.transpose(2, 1, 0)  # (slice, row, column)
    np.testing.assert_array_equal(pixels[..., 0], expected == 1)
    np.testing.assert_array_equal(pixels[..., 2], expected == 3)
    assert not pixels[..., 1].any()
    assert seg.PatientID == "MRN123456"  # it belongs to the same patient's study in the PACS
    np.testing.assert_array_equal(labels_on_slices(labels, affine, datasets), expected)


def test_no_source_slices_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no source DICOM slices"):
        write_dicom_seg(
            np.zeros((2, 2, 2), np.uint8), np.eye(4), [], task_segments("ms-lesion"),
            tmp_path / "x.dcm", algorithm="a", version="1",
        )  # fmt: skip
