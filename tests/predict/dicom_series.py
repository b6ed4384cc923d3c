"""A small single-frame MR series written with pydicom (what a scanner sends), for tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid


def mr_series(
    folder: Path,
    volume: np.ndarray,
    *,
    spacing: tuple[float, float, float] = (1.0, 1.0, 2.0),
    row_dir: tuple[float, float, float] = (1.0, 0.0, 0.0),
    col_dir: tuple[float, float, float] = (0.0, 1.0, 0.0),
    description: str = "T1 MPRAGE",
    patient: tuple[str, str] = ("Doe^Jane", "MRN123456"),
    origin: tuple[float, float, float] = (-8.0, -8.0, 0.0),
    study_uid: str | None = None,
) -> list[Path]:
    """Write ``volume`` ``(slices, rows, columns)`` uint16 as one series, slice k at
    ``k * spacing[2]`` along the normal; returns the files (in slice order)."""
    folder.mkdir(parents=True, exist_ok=True)
    study, series, frame = study_uid or generate_uid(), generate_uid(), generate_uid()
    normal = np.cross(row_dir, col_dir)
    files = []
    for k, pixels in enumerate(np.asarray(volume, dtype=np.uint16)):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = generate_uid()
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.PatientName, ds.PatientID = patient
        ds.PatientBirthDate, ds.PatientSex = "19700101", "F"
        ds.StudyInstanceUID, ds.SeriesInstanceUID, ds.FrameOfReferenceUID = study, series, frame
        ds.StudyDate, ds.StudyTime, ds.AccessionNumber, ds.StudyID = "20261201", "120000", "A1", "1"
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.SeriesNumber, ds.InstanceNumber = "MR", 3, k + 1
        ds.SeriesDescription = ds.ProtocolName = description
        ds.Manufacturer = "TEST"
        ds.ImagePositionPatient = [float(v) for v in np.asarray(origin) + k * spacing[2] * normal]
        ds.ImageOrientationPatient = [*row_dir, *col_dir]
        ds.PixelSpacing = [spacing[1], spacing[0]]  # between rows, between columns
        ds.SliceThickness = spacing[2]
        ds.Rows, ds.Columns = pixels.shape
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
        ds.PixelData = pixels.tobytes()
        path = folder / f"IM{k:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        files.append(path)
    return files
