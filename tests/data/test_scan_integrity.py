"""Scan integrity: a damaged or lying file is refused before its voxels are used or allocated.

Each class of damage is checked on a one-modality case (a single file), through `site check`'s
case check, and where it matters through the one NIfTI reader training uses too.
"""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import nibabel as nib
import numpy as np
import pytest

import neurofed.data.file_checks as file_checks
from neurofed.data.checks import CaseStatus, CheckSettings, check_case
from neurofed.data.nifti import HeaderError, VolumeError, format_bytes, read_image
from neurofed.data.subject import ImageRef, Subject
from neurofed.keys import Modality, ProblemKind, Severity
from tests.helpers import AFFINE, SHAPE, tiny_image

REL = "c1/c1_t1.nii.gz"


def _case() -> Subject:
    return Subject("c1", {Modality.T1: ImageRef(PurePosixPath(REL))})


#: Byte offsets in a NIfTI-1 header: pixdim[0..7] (float32) and srow_x/y/z (4 float32 each).
PIXDIM, SROW_X = 76, 280


def _nifti(
    array: np.ndarray | None = None, edit: Callable[[bytearray], None] | None = None
) -> bytes:
    """The bytes of an uncompressed NIfTI-1 file (sform and qform set), then ``edit`` applied
    to the raw bytes (so nothing re-derives the header from the affine)."""
    image = nib.Nifti1Image(tiny_image() if array is None else array, AFFINE)
    image.set_sform(AFFINE, code=1)
    image.set_qform(AFFINE, code=1)
    raw = bytearray(image.to_bytes())
    if edit is not None:
        edit(raw)
    return bytes(raw)


def _float(offset: int, value: float) -> Callable[[bytearray], None]:
    def edit(raw: bytearray) -> None:
        raw[offset : offset + 4] = struct.pack("<f", value)

    return edit


def _write(root: Path, raw: bytes, level: int = 0) -> Path:
    """Write ``raw`` gzipped; level 0 stores deflate blocks (a flipped byte still inflates)."""
    path = root / REL
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(raw, compresslevel=level))
    return path


def _problem(root: Path, settings: CheckSettings | None = None) -> tuple[ProblemKind, str, str]:
    report = check_case(root, _case(), settings or CheckSettings(), (Modality.T1,))
    assert report.status is CaseStatus.EXCLUDED, [p.line() for p in report.problems]
    assert len(report.problems) == 1, [p.line() for p in report.problems]
    problem = report.problems[0]
    assert problem.path == REL and problem.fix and str(root) not in problem.line()
    return problem.kind, problem.message, problem.fix


# -- the gzip body -------------------------------------------------------------------------------


def test_a_gzip_body_corrupted_mid_stream_is_caught_by_its_crc(tmp_path: Path) -> None:
    # Prepare: stored (uncompressed) deflate blocks, so a flipped byte still decompresses; only
    # the CRC-32 in the trailer can tell
    path = _write(tmp_path, _nifti())
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    assert nib.load(path).shape == SHAPE  # the header alone looks fine
    # Execute
    kind, message, _ = _problem(tmp_path)
    # Assert
    assert kind is ProblemKind.UNREADABLE and "gzip stream damaged" in message
    with pytest.raises(VolumeError, match="CRC check failed"):
        read_image(path)  # training reads through the same verified reader


def test_a_gzip_trailer_whose_length_lies_is_caught(tmp_path: Path) -> None:
    path = _write(tmp_path, _nifti())
    raw = path.read_bytes()
    path.write_bytes(raw[:-4] + struct.pack("<I", (len(_nifti()) + 1) % 2**32))
    kind, message, _ = _problem(tmp_path)
    assert kind is ProblemKind.UNREADABLE and "gzip stream damaged" in message


# -- the header's declared size ----------------------------------------------------------------


def test_a_tiny_file_declaring_a_huge_volume_is_refused_before_allocating(tmp_path: Path) -> None:
    # Prepare: a valid header declaring 2048³ float32 voxels (32 GiB) and no voxels at all
    header = nib.Nifti1Header()
    header.set_data_shape((2048, 2048, 2048))
    header.set_data_dtype(np.float32)
    header["vox_offset"] = 352
    raw = header.binaryblock + b"\0" * 4
    path = _write(tmp_path, raw, level=9)
    assert path.stat().st_size < 150
    # Execute
    tracemalloc.start()
    try:
        kind, message, _ = _problem(tmp_path, CheckSettings(max_voxel_bytes=64 * 1024**3))
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # Assert: the lie is named, and nothing near its size was allocated
    assert kind is ProblemKind.BAD_HEADER
    assert "declares 32.0 GiB" in message and "the file holds 352 B" in message
    assert peak < 16 * 1024**2


def test_a_header_above_the_sites_cap_is_refused(tmp_path: Path) -> None:
    _write(tmp_path, _nifti())
    kind, message, fix = _problem(tmp_path, CheckSettings(max_voxel_bytes=1000))
    assert kind is ProblemKind.BAD_HEADER and "above the limit of 1000 B" in message
    assert "raise the limit" in message + fix


def test_an_uncompressed_file_shorter_than_its_header_says_is_refused(tmp_path: Path) -> None:
    raw = _nifti()
    path = tmp_path / "c1/c1_t1.nii"
    path.parent.mkdir(parents=True)
    path.write_bytes(raw[: len(raw) - 100])
    case = Subject("c1", {Modality.T1: ImageRef(PurePosixPath("c1/c1_t1.nii"))})
    report = check_case(tmp_path, case, CheckSettings(), (Modality.T1,))
    assert [p.kind for p in report.problems] == [ProblemKind.BAD_HEADER]
    assert "it is truncated or its header damaged" in report.problems[0].message


# -- what no scan can have -----------------------------------------------------------------------


def _pixdim(axis: int, value: float) -> Callable[[bytearray], None]:
    return _float(PIXDIM + 4 * (axis + 1), value)


def _srow(row: int, column: int, value: float) -> Callable[[bytearray], None]:
    return _float(SROW_X + 16 * row + 4 * column, value)


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        (_pixdim(1, 0.0), "pixdim (voxel size along y) is 0.0"),
        (_pixdim(0, -2.0), "pixdim (voxel size along x) is -2.0"),
        (_pixdim(2, float("nan")), "pixdim (voxel size along z) is nan"),
        (_srow(0, 0, float("nan")), "holds NaN or infinite values"),
        (_srow(1, 1, 0.0), "is singular"),
    ],
    ids=["zero", "negative", "nan", "affine-nan", "singular"],
)
def test_impossible_geometry_is_refused_naming_the_field(
    tmp_path: Path, edit: Callable[[bytearray], None], expected: str
) -> None:
    _write(tmp_path, _nifti(edit=edit))
    kind, message, _ = _problem(tmp_path)
    assert kind is ProblemKind.BAD_HEADER and expected in message, message
    with pytest.raises(HeaderError, match=r"c1_t1\.nii\.gz"):
        read_image(tmp_path / REL)


@pytest.mark.parametrize(
    ("array", "expected"),
    [
        (tiny_image().astype(np.complex64), "complex64"),
        (np.zeros(SHAPE, dtype=[("R", "u1"), ("G", "u1"), ("B", "u1")]), "RGB24"),
    ],
    ids=["complex", "rgb"],
)
def test_complex_and_rgb_data_are_refused_with_the_reason(
    tmp_path: Path, array: np.ndarray, expected: str
) -> None:
    _write(tmp_path, _nifti(array))
    kind, message, fix = _problem(tmp_path)
    assert kind is ProblemKind.BAD_HEADER and expected in message
    assert "magnitude" in fix or "real numbers" in fix


def test_disagreeing_sform_and_qform_are_a_warning_not_an_exclusion(tmp_path: Path) -> None:
    _write(tmp_path, _nifti(edit=_srow(0, 3, float(AFFINE[0, 3]) + 5.0)))

    report = check_case(tmp_path, _case(), CheckSettings(), (Modality.T1,))

    assert report.status is not CaseStatus.EXCLUDED
    (problem,) = report.problems
    assert problem.kind is ProblemKind.HEADER_MISMATCH and problem.severity is Severity.WARNING
    assert "disagree by up to 5 mm" in problem.message and problem.fix


# -- the file system -----------------------------------------------------------------------------


def test_permission_denied_is_reported_as_such(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: tests run as root here, so the refusal is simulated at the access check
    path = _write(tmp_path, _nifti())
    monkeypatch.setattr(file_checks.os, "access", lambda p, mode: Path(p) != path.resolve())
    # Execute
    kind, message, fix = _problem(tmp_path)
    # Assert
    assert kind is ProblemKind.PERMISSION and "permission denied" in message
    assert "chmod" in fix


def test_the_reader_names_permission_denied(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = _write(tmp_path, _nifti())

    def refuse(self: Path) -> bytes:
        raise PermissionError(13, "Permission denied", str(self))

    monkeypatch.setattr(Path, "read_bytes", refuse)
    with pytest.raises(VolumeError, match="permission denied; let the account"):
        read_image(path)


def test_byte_counts_read_as_a_person_would() -> None:
    assert [format_bytes(n) for n in (117, 2048, 3 * 1024**3)] == ["117 B", "2.0 KiB", "3.0 GiB"]
