"""A prediction back into the hospital's DICOM world: a DICOM Segmentation (highdicom) over the
very series the scan came from.

:func:`labels_on_slices` samples a label map (on any grid, by its RAS affine) at every pixel of
every slice of the source series, from each slice's own ImagePositionPatient,
ImageOrientationPatient and PixelSpacing (DICOM's LPS converted to RAS) — so the segmentation
lands on the source frames whatever order or orientation the NIfTI conversion chose.
:func:`write_dicom_seg` writes it as a binary DICOM SEG, one segment per label with SNOMED CT
codes, the model named as the algorithm; a PACS viewer shows it over the source series.

Examples
--------
>>> [s.label for s in task_segments("ms-lesion")]
['MS lesion']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

__all__ = ["Segment", "labels_on_slices", "series_affine", "task_segments", "write_dicom_seg"]

_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


@dataclass(frozen=True)
class Segment:
    """One label value of a segmentation as DICOM SEG describes it (SNOMED CT code names of
    ``pydicom.sr.codedict.codes.SCT``)."""

    value: int
    label: str
    category: str
    kind: str


_SEGMENTS: dict[str, tuple[Segment, ...]] = {
    "tumor-regions": (
        Segment(
            1,
            "necrotic / non-enhancing tumour core",
            "MorphologicallyAbnormalStructure",
            "Necrosis",
        ),
        Segment(2, "peritumoral oedema", "MorphologicallyAbnormalStructure", "Edema"),
        Segment(3, "enhancing tumour", "MorphologicallyAbnormalStructure", "Neoplasm"),
    ),
    "glioma-multitask": (
        Segment(1, "T2-hyperintense tumour region", "MorphologicallyAbnormalStructure", "Neoplasm"),
    ),
    "ms-lesion": (Segment(1, "MS lesion", "MorphologicallyAbnormalStructure", "Lesion"),),
}


def task_segments(task: str) -> tuple[Segment, ...]:
    """The segments a task's label map holds."""
    return _SEGMENTS[str(task)]


def _slice_geometry(ds: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[float, float]]:
    position = np.asarray([float(v) for v in ds.ImagePositionPatient])
    cosines = np.asarray([float(v) for v in ds.ImageOrientationPatient])
    spacing = (float(ds.PixelSpacing[0]), float(ds.PixelSpacing[1]))
    return position, cosines[:3], cosines[3:], spacing


def series_affine(datasets: Sequence[Any]) -> npt.NDArray[np.float64]:
    """The RAS affine of the series' slices stacked in the given order: voxel ``(column, row,
    slice)``."""
    first, row_dir, col_dir, (row_step, col_step) = _slice_geometry(datasets[0])
    if len(datasets) > 1:
        last = _slice_geometry(datasets[-1])[0]
        step = (last - first) / (len(datasets) - 1)
    else:
        step = np.cross(row_dir, col_dir) * float(getattr(datasets[0], "SliceThickness", 1.0))
    lps = np.eye(4)
    lps[:3, 0] = row_dir * col_step  # along a row: the column index grows
    lps[:3, 1] = col_dir * row_step  # down a column: the row index grows
    lps[:3, 2] = step
    lps[:3, 3] = first
    ras = np.eye(4)
    ras[:3] = _LPS_TO_RAS @ lps[:3]
    return ras


def labels_on_slices(
    labels: npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    datasets: Sequence[Any],
) -> npt.NDArray[np.uint8]:
    """``(slices, rows, columns)`` labels of the source series, sampled (nearest) from
    ``labels`` on the grid of ``affine`` at each pixel's position in the scanner."""
    to_voxel = np.linalg.inv(np.asarray(affine, dtype=np.float64))
    frames = []
    for ds in datasets:
        position, row_dir, col_dir, (row_step, col_step) = _slice_geometry(ds)
        rows, columns = int(ds.Rows), int(ds.Columns)
        r, c = np.meshgrid(np.arange(rows), np.arange(columns), indexing="ij")
        lps = (
            position[:, None]
            + row_dir[:, None] * (c.ravel() * col_step)
            + col_dir[:, None] * (r.ravel() * row_step)
        )
        ras = _LPS_TO_RAS @ lps
        voxel = to_voxel[:3, :3] @ ras + to_voxel[:3, 3:]
        sampled = ndimage.map_coordinates(labels, voxel, order=0, mode="constant", cval=0)
        frames.append(sampled.reshape(rows, columns).astype(np.uint8))
    return np.stack(frames)


def write_dicom_seg(
    labels: npt.NDArray[np.integer],
    affine: npt.NDArray[np.float64],
    datasets: Sequence[Any],
    segments: Sequence[Segment],
    out: Path,
    *,
    algorithm: str,
    version: str,
) -> Path:
    """Write ``labels`` (on the grid of ``affine``) as a DICOM SEG over ``datasets`` (the source
    series, single-frame, in any order) to ``out``; returns it.

    Raises
    ------
    ValueError
        The series is empty, multi-frame, or its slices are not parallel planes.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not datasets:
        raise ValueError("no source DICOM slices to attach the segmentation to")
    if any(int(getattr(ds, "NumberOfFrames", 1) or 1) > 1 for ds in datasets):
        raise ValueError("the source series is multi-frame; DICOM SEG here needs single slices")
    frames = labels_on_slices(labels, affine, datasets)
    pixels = np.zeros((*frames.shape, len(segments)), dtype=bool)
    for k, segment in enumerate(segments):
        pixels[..., k] = frames == segment.value
    family = codes.cid7162.ArtificialIntelligence
    identification = hd.AlgorithmIdentificationSequence(
        name=algorithm, version=version, family=family
    )
    descriptions = [
        hd.seg.SegmentDescription(
            segment_number=k + 1,
            segment_label=segment.label,
            segmented_property_category=getattr(codes.SCT, segment.category),
            segmented_property_type=getattr(codes.SCT, segment.kind),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=identification,
        )
        for k, segment in enumerate(segments)
    ]
    seg = hd.seg.Segmentation(
        source_images=list(datasets),
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=descriptions,
        series_instance_uid=hd.UID(),
        series_number=9901,
        sop_instance_uid=hd.UID(),
        instance_number=1,
        manufacturer="neurofed",
        manufacturer_model_name=algorithm,
        software_versions=version,
        device_serial_number="neurofed",
        series_description=f"neurofed {algorithm} (research use only)",
        omit_empty_frames=False,
    )
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    seg.save_as(out)
    return out
