"""Checks of one file of a case: where it is, what it is, and whether its voxels are usable.

:func:`check_file` refuses paths that leave the site root before opening anything, tells a
text or DICOM file named ``.nii.gz`` from a broken gzip, reads every voxel once however many
modalities the file holds (4-D MSD images), and returns only shapes and affines besides the
problems, so the voxels are released as soon as the file is done.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path, PurePosixPath
>>> from neurofed.data.nifti import write_image
>>> from neurofed.data.subject import ImageRef, Subject
>>> root = Path(tempfile.mkdtemp())
>>> write_image(root / "t1.nii.gz", np.full((3, 3, 3), np.nan), np.eye(4))
>>> ref = ImageRef(PurePosixPath("t1.nii.gz"))
>>> problems, grids = check_file(root, ref.path, [FileUse(Modality.T1, ref)], Subject("s", {}))
>>> [p.message for p in problems], grids[Modality.T1].shape
(['T1: 27 of 27 voxels are NaN or infinite'], (3, 3, 3))
"""

from __future__ import annotations

import gzip
import os
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt

from neurofed.data.labels import CONVENTION_VALUES, allowed_values, invalid_values
from neurofed.data.nifti import MAX_VOXEL_BYTES, HeaderError, read_image
from neurofed.data.subject import ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Modality, ProblemKind, Severity

__all__ = ["FileUse", "Grid", "check_file", "format_shape"]

_GZIP_MAGIC = b"\x1f\x8b"
_HEADER_BYTES = 540  # a NIfTI-2 header; NIfTI-1 needs 348
_REEXPORT = "re-copy the file from its source or re-export the scan, then re-run the check"
_K = ProblemKind


class FileUse(NamedTuple):
    """One role a file plays in a case: a modality (maybe a channel of it) or the label map."""

    modality: Modality | None  # None = the label map
    ref: ImageRef


@dataclass(frozen=True)
class Grid:
    """Where a checked volume lies: its spatial shape and voxel-to-world affine, no voxels."""

    shape: tuple[int, ...]
    affine: npt.NDArray[np.float64]


def _error(kind: ProblemKind, sid: str, path: str | None, message: str, fix: str) -> Problem:
    return Problem(kind, message, fix, subject_id=sid, path=path)


def format_shape(shape: Iterable[int]) -> str:
    """``6×7×5`` for ``(6, 7, 5)``."""
    return "×".join(str(int(s)) for s in shape)


def _locate(root: Path, root_resolved: Path, rel: PurePosixPath, sid: str) -> Path | Problem:
    """The file to open, or why it must not or cannot be opened (nothing is opened here)."""
    where = str(rel)
    if rel.is_absolute() or ".." in rel.parts:
        message = f"path {where!r} is absolute or uses '..', so it may lead outside the site root"
        fix = "move the file inside the site folder and list it by its path there"
        return _error(_K.PATH_ESCAPE, sid, where, message, fix)
    full = root / rel
    try:
        resolved = full.resolve()
    except (OSError, RuntimeError) as exc:  # a symlink loop
        return _error(_K.UNREADABLE, sid, where, f"path cannot be resolved ({exc})", _REEXPORT)
    if not resolved.is_relative_to(root_resolved):
        message = "is a symlink (or lies in a linked folder) whose target is outside the site root"
        fix = "copy the file into the site folder instead of linking to it"
        return _error(_K.PATH_ESCAPE, sid, where, message, fix)
    if not resolved.exists():
        message = "file not found" + (
            " (its symlink target is missing)" if full.is_symlink() else ""
        )
        fix = "restore the file, or rename it to the name the layout expects, and re-run"
        return _error(_K.MISSING_FILE, sid, where, message, fix)
    if not resolved.is_file():
        what = "a folder" if resolved.is_dir() else "not a regular file"
        return _error(_K.NOT_NIFTI, sid, where, f"is {what}, not a NIfTI file", _REEXPORT)
    if not os.access(resolved, os.R_OK):
        message = "permission denied: the account running neurofed cannot read the file"
        fix = "let it read the file (e.g. `chmod o+r FILE`, or add the account to its group)"
        return _error(_K.PERMISSION, sid, where, message, fix)
    if resolved.stat().st_size == 0:
        fix = "re-copy the file from its source; an interrupted transfer leaves empty files"
        return _error(_K.EMPTY_FILE, sid, where, "file is empty (0 bytes)", fix)
    return resolved


def _header_sizes(head: bytes) -> set[int]:
    """The ``sizeof_hdr`` field read in both byte orders."""
    return {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}


def _is_nifti(head: bytes) -> bool:
    sizes = _header_sizes(head)
    if 348 in sizes and len(head) >= 348 and head[344:348] in (b"n+1\0", b"ni1\0"):
        return True
    return 540 in sizes and len(head) >= 540 and head[4:8] in (b"n+2\0", b"ni2\0")


def _looks_like(head: bytes) -> str:
    if head[128:132] == b"DICM":
        return "a DICOM file"
    if 348 in _header_sizes(head):
        return "an Analyze 7.5 image"
    if head and all(32 <= b < 127 or b in b"\t\r\n" for b in head[:256]):
        return "text"
    return "unrecognised binary data"


def _sniff(full: Path, rel: PurePosixPath, sid: str) -> Problem | None:
    """Classify what nibabel would reject with a generic message: not NIfTI, misnamed, broken."""
    where = str(rel)
    try:
        with full.open("rb") as raw:
            head = raw.read(_HEADER_BYTES)
        compressed = head[:2] == _GZIP_MAGIC
        if compressed:
            with gzip.open(full, "rb") as unzipped:
                head = unzipped.read(_HEADER_BYTES)
    except PermissionError:
        message = "permission denied: the account running neurofed cannot read the file"
        fix = "let it read the file (e.g. `chmod o+r FILE`, or add the account to its group)"
        return _error(_K.PERMISSION, sid, where, message, fix)
    except (OSError, EOFError, zlib.error) as exc:
        message = f"gzip stream broken before the header ends ({exc})"
        return _error(_K.UNREADABLE, sid, where, message, _REEXPORT)
    if not _is_nifti(head):
        kind = _looks_like(head)
        fix = (
            "convert the DICOM series to NIfTI (e.g. `dcm2niix -z y`) and put the .nii.gz here"
            if kind == "a DICOM file"
            else "replace it with the scan exported as NIfTI (.nii.gz)"
        )
        return _error(_K.NOT_NIFTI, sid, where, f"is not a NIfTI file: {kind}", fix)
    if compressed != rel.name.endswith(".gz"):
        state = "gzip-compressed" if compressed else "not gzip-compressed"
        right = f"{rel.name}.gz" if compressed else rel.name.removesuffix(".gz")
        message = f"is a NIfTI file that is {state}, contrary to its name"
        fix = f"rename it to {right} (and update any list that names it)"
        return _error(_K.UNREADABLE, sid, where, message, fix)
    return None


def check_file(
    root: Path,
    rel: PurePosixPath,
    uses: Sequence[FileUse],
    subject: Subject,
    *,
    root_resolved: Path | None = None,
    max_voxel_bytes: int = MAX_VOXEL_BYTES,
) -> tuple[list[Problem], dict[Modality | None, Grid]]:
    """Check one file of ``subject`` in each role it plays; the file is decompressed once.

    The whole file is verified (a gzip body against its CRC-32 and length) and its header
    judged (declared size against the file and ``max_voxel_bytes``, voxel sizes, affine, data
    type) before any voxel is allocated. Returns the problems found and, for every role whose
    volume was usable, its :class:`Grid`. ``root_resolved`` saves resolving ``root`` again for
    each file of a case.
    """
    root = Path(root)
    root_resolved = root.resolve() if root_resolved is None else root_resolved
    sid, where = subject.subject_id, str(rel)
    located = _locate(root, root_resolved, rel, sid)
    if isinstance(located, Problem):
        return [located], {}
    sniffed = _sniff(located, rel, sid)
    if sniffed is not None:
        return [sniffed], {}
    try:
        volume = read_image(located, max_bytes=max_voxel_bytes)  # the whole file, verified
    except HeaderError as exc:
        text = str(exc).replace(f"{located}: ", "").replace(str(located), where)
        message, _, fix = text.partition("; ")
        return [_error(_K.BAD_HEADER, sid, where, message, fix or _REEXPORT)], {}
    except Exception as exc:  # VolumeError, MemoryError, ...: one broken file never stops a site
        cause = exc.__cause__ if exc.__cause__ is not None else exc
        reason = f"{type(cause).__name__}: {cause}".replace(str(located), where)
        fix = f"{_REEXPORT}; a truncated copy often has an intact header"
        return [_error(_K.UNREADABLE, sid, where, f"voxel data unreadable ({reason})", fix)], {}
    problems: list[Problem] = [
        Problem(
            _K.HEADER_MISMATCH,
            warning.partition("; ")[0],
            warning.partition("; ")[2],
            subject_id=sid,
            path=where,
            severity=Severity.WARNING,
        )
        for warning in volume.warnings
    ]
    grids: dict[Modality | None, Grid] = {}
    for use in uses:
        found, grid = _check_use(volume.array, volume.affine, use, where, subject)
        problems.extend(found)
        if grid is not None:
            grids[use.modality] = grid
    return problems, grids  # the voxels are released here; only shapes and affines remain


def _check_use(
    array: npt.NDArray[Any],
    affine: npt.NDArray[np.float64],
    use: FileUse,
    where: str,
    subject: Subject,
) -> tuple[list[Problem], Grid | None]:
    sid = subject.subject_id
    name = use.modality.value if use.modality is not None else "label map"
    channel = use.ref.channel
    while channel is None and array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]  # (X, Y, Z, 1) is a 3-D volume
    if channel is None and array.ndim != 3:
        message = (
            f"{name}: file is {array.ndim}-D (shape {format_shape(array.shape)}) where one "
            "3-D volume is expected"
        )
        fix = (
            "save one 3-D volume per file (e.g. `fslsplit`); a 4-D file holding all modalities "
            "needs its channel order declared in dataset.json (MSD layout)"
        )
        return [_error(_K.WRONG_DIMENSIONS, sid, where, message, fix)], None
    if channel is not None:
        if array.ndim != 4 or not 0 <= channel < array.shape[3]:
            message = (
                f"{name} should be channel {channel} of a 4-D file, but the file has shape "
                f"{format_shape(array.shape)}"
            )
            fix = "make the channel list in dataset.json match the files"
            return [_error(_K.WRONG_DIMENSIONS, sid, where, message, fix)], None
        array = array[..., channel]  # (X, Y, Z), a view
    problems: list[Problem] = []
    finite = int(np.count_nonzero(np.isfinite(array)))
    if finite != array.size:
        message = f"{name}: {array.size - finite} of {array.size} voxels are NaN or infinite"
        fix = f"replace them (e.g. `fslmaths in -nan out`) or {_REEXPORT}"
        problems.append(_error(_K.NON_FINITE, sid, where, message, fix))
    if use.modality is None:
        if not problems and subject.label_convention is not None:
            problems.extend(_label_problems(array, subject.label_convention, where, sid))
    elif not np.any(array):
        fix = f"{_REEXPORT}; an empty volume usually comes from a failed conversion"
        problems.append(_error(_K.ALL_ZERO, sid, where, f"{name}: every voxel is 0", fix))
    return problems, Grid(tuple(int(s) for s in array.shape), affine)


def _label_problems(
    array: npt.NDArray[Any], convention: LabelConvention, where: str, sid: str
) -> list[Problem]:
    rounded = np.rint(array)
    if not np.allclose(array, rounded, atol=1e-3):
        message = "label map has non-integer values (a probability map, or resampled linearly?)"
        fix = "save it as integer labels, resampling with nearest-neighbour interpolation"
        return [_error(_K.LABEL_VALUES, sid, where, message, fix)]
    if rounded.size and rounded.min() >= 0 and rounded.max() <= 255:
        present = np.flatnonzero(np.bincount(rounded.astype(np.uint8).ravel()))
    else:
        present = np.unique(rounded).astype(np.int64)
    bad = invalid_values(present, convention)
    if not bad:
        return []
    allowed = list(allowed_values(convention))
    values = {int(v) for v in present}
    fits = [c.value for c in LabelConvention if values <= set(CONVENTION_VALUES[c])]
    other = f", or declare the site's convention ({fits[0]} fits these values)" if fits else ""
    message = (
        f"label values {list(bad)} are not part of the {convention.value} convention "
        f"(allowed: {allowed})"
    )
    fix = f"relabel the file so it uses only {allowed}{other}"
    return [_error(_K.LABEL_VALUES, sid, where, message, fix)]
