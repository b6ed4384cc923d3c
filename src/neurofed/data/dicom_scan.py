"""Read a folder of DICOM files: every header, grouped by series, with the files that are unusable.

Only headers are read (pixel data is deferred; its length is checked against the file size and
the image size, so a truncated copy is caught here rather than by dcm2niix). A file that is not
DICOM is listed and ignored; a damaged one is listed with the fix; a DICOMDIR index is ignored.
Every patient identifier seen (names, PatientID, AccessionNumber, birth date) is collected by a
:class:`Redactor`, which removes them from any text shown to a person.

Examples
--------
>>> redact = Redactor({"Doe", "Jane", "MRN123456"})
>>> redact("DOE_JANE/MRN123456/IM0001: damaged")
'[redacted]_[redacted]/[redacted]/IM0001: damaged'
"""

from __future__ import annotations

import hashlib
import os
import re
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from neurofed.data.dicom_mapping import FoundSeries
from neurofed.types import ProgressCallback

__all__ = [
    "REEXPORT_FIX",
    "DicomFolderError",
    "DicomScan",
    "DicomSeries",
    "FileProblem",
    "Redactor",
    "scan_dicom",
]

#: The fix for a damaged DICOM file.
REEXPORT_FIX = "re-export the series from the PACS / scanner"
_REDACTED = "[redacted]"
_DICOMDIR_CLASS = "1.2.840.10008.1.3.10"
_PIXEL_DATA = 0x7FE00010


class DicomFolderError(ValueError):
    """The DICOM folder is missing, not a folder, or empty; the message says the fix."""


# --- reading the DICOM folder -----------------------------------------------------------------


@dataclass(frozen=True)
class FileProblem:
    """A file under the DICOM folder that is not part of any converted series."""

    path: str  # relative to the DICOM folder, identifiers redacted
    message: str
    fix: str
    error: bool = True  # False: ignored (not DICOM); True: data that could not be used

    def line(self) -> str:
        return f"{self.path}: {self.message} — fix: {self.fix}"


@dataclass
class DicomSeries:
    """One series: its identifiers (for the custodian's record only), files and damage."""

    uid: str  # SeriesInstanceUID
    study_uid: str  # StudyInstanceUID
    patient_id: str  # PatientID ("" when the header has none)
    dicom_modality: str  # the DICOM Modality (MR, CT, ...)
    study_when: str  # StudyDate + StudyTime, to order a patient's studies (never shown)
    shown: FoundSeries
    files: list[Path] = field(default_factory=list)  # the readable files
    instances: list[str] = field(default_factory=list)  # their SOPInstanceUIDs
    damaged: list[str] = field(default_factory=list)  # "<path>: why", paths not yet redacted
    has_images: bool = True

    def fingerprint(self) -> str:
        """A hash of the series' instances: it changes when a file is added or removed."""
        return hashlib.sha256("\n".join(sorted(self.instances)).encode()).hexdigest()


class Redactor:
    """Removes identifiers from text: every patient name part (2+ characters), PatientID,
    OtherPatientIDs and AccessionNumber (3+ characters) and birth date seen in the headers,
    case-insensitively."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        self.values: set[str] = set(values)

    def __repr__(self) -> str:
        return f"Redactor({len(self.values)} values)"

    def add(self, ds: Any) -> None:
        """Collect the identifiers of a pydicom dataset."""
        name = str(ds.get("PatientName", "") or "")
        self.values.update(p for p in re.split(r"[\^=,\s]+", name) if len(p) >= 2)
        others = ds.get("OtherPatientIDs", "") or ""
        others = [others] if isinstance(others, str) else list(others)
        for value in (name, ds.get("PatientID"), ds.get("AccessionNumber"), *others):
            if value and len(str(value).strip()) >= 3:
                self.values.add(str(value).strip())
        birth = str(ds.get("PatientBirthDate", "") or "")
        if len(birth) >= 6:
            self.values.add(birth)

    def __call__(self, text: str) -> str:
        for value in sorted(self.values, key=len, reverse=True):
            text = re.sub(re.escape(value), _REDACTED, text, flags=re.IGNORECASE)
        return text

    def holds(self, text: str) -> bool:
        """Whether ``text`` contains an identifier."""
        return self(text) != text


@dataclass
class DicomScan:
    """Every series found under a DICOM folder, and the files that are not usable."""

    root: Path
    problems: list[FileProblem]  # paths and messages redacted
    redact: Redactor
    by_uid: dict[str, DicomSeries]  # SeriesInstanceUID -> series

    @property
    def series(self) -> tuple[FoundSeries, ...]:
        """What a custodian may see of every series (descriptions redacted)."""
        return tuple(
            replace(s.shown, description=self.redact(s.shown.description),
                    protocol=self.redact(s.shown.protocol))
            for s in self.by_uid.values()
        )  # fmt: skip


def _text(ds: Any, keyword: str) -> str:
    value = ds.get(keyword, "")
    return "" if value is None else str(value).strip()


def _pixel_problem(ds: Any, path: Path) -> str | None:
    """Why the pixel data is unusable (missing or shorter than the header says), or None."""
    element = ds.get_item(_PIXEL_DATA, keep_deferred=True)
    if element is None:
        return "it has no pixel data (the file ends early)"
    try:
        declared = getattr(element, "length", None)
        if getattr(element, "value", None) is None and declared is not None:  # deferred
            if declared != 0xFFFFFFFF and element.value_tell + declared > path.stat().st_size:
                return "its pixel data is cut short (truncated copy)"
            have = declared
        else:
            have = len(ds.PixelData)
        syntax = ds.file_meta.get("TransferSyntaxUID") if "file_meta" in dir(ds) else None
        if (syntax is not None and syntax.is_encapsulated) or have == 0xFFFFFFFF:
            return None  # compressed: dcm2niix judges it
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        pixels = int(ds.Rows) * int(ds.Columns) * int(ds.get("SamplesPerPixel", 1)) * frames
        need = (pixels * int(ds.BitsAllocated) + 7) // 8
    except (AttributeError, TypeError, ValueError, OSError):
        return "its image header is incomplete (Rows, Columns or BitsAllocated missing)"
    return None if have >= need else f"its pixel data holds {have} of {need} bytes (truncated)"


def _read_file(path: Path) -> Any:
    """The header of ``path`` (pixel data deferred), or raise; warnings (which may quote
    header values) are silenced."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            return pydicom.dcmread(path, defer_size="1 KB")
        except InvalidDicomError:  # maybe DICOM without the 128-byte preamble
            ds = pydicom.dcmread(path, defer_size="1 KB", force=True)
            if "SOPClassUID" not in ds or "SeriesInstanceUID" not in ds:
                raise
            return ds


def _files(root: Path) -> list[Path]:
    found = []
    for folder, dirs, names in os.walk(root):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Path(folder) / n for n in sorted(names) if not n.startswith((".", "~$"))]
    return found


def scan_dicom(dicom_dir: Path, progress: ProgressCallback | None = None) -> DicomScan:
    """Read every file's header under ``dicom_dir`` and group the DICOM files by series.

    Raises
    ------
    DicomFolderError
        ``dicom_dir`` is missing, not a folder, or holds no file at all.

    Examples
    --------
    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "README.txt").write_text("not a scan")
    >>> scan = scan_dicom(folder)
    >>> scan.series, [p.line() for p in scan.problems]
    ((), ['README.txt: not a DICOM file; ignored — fix: none needed'])
    """
    from pydicom.errors import InvalidDicomError

    root = Path(dicom_dir)
    if not root.is_dir():
        what = "is a file, not a folder" if root.exists() else "no such folder"
        raise DicomFolderError(f"{root}: {what}; pass the folder holding the DICOM files")
    paths = _files(root)
    if not paths:
        raise DicomFolderError(
            f"{root}: the folder is empty; pass the folder the DICOM export was copied into"
        )
    scan = DicomScan(root, [], Redactor(), {})
    pending: list[FileProblem] = []
    for index, path in enumerate(paths):
        rel = path.relative_to(root).as_posix()
        try:
            ds = _read_file(path)
        except InvalidDicomError:
            pending.append(FileProblem(rel, "not a DICOM file; ignored", "none needed", False))
            continue
        except OSError as exc:
            why = f"cannot be read ({exc.strerror or type(exc).__name__})"
            pending.append(FileProblem(rel, why, "let this account read it (chmod o+r)"))
            continue
        except Exception as exc:  # any parser failure: the file is damaged, the rest goes on
            why = f"damaged DICOM, the header cannot be parsed ({type(exc).__name__})"
            pending.append(FileProblem(rel, why, REEXPORT_FIX))
            continue
        scan.redact.add(ds)
        if ds.file_meta.get("MediaStorageSOPClassUID") == _DICOMDIR_CLASS:
            pending.append(FileProblem(rel, "a DICOMDIR index; ignored", "none needed", False))
            continue
        uid = _text(ds, "SeriesInstanceUID")
        if not uid:
            why = "damaged DICOM: its header has no SeriesInstanceUID (the file ends early?)"
            pending.append(FileProblem(rel, why, REEXPORT_FIX))
            continue
        series = scan.by_uid.get(uid)
        if series is None:
            number = ds.get("SeriesNumber")
            shown = FoundSeries(
                _text(ds, "SeriesDescription"),
                _text(ds, "ProtocolName"),
                int(number) if isinstance(number, int | float) else None,
                0,
                tuple(str(t).upper() for t in (ds.get("ImageType") or ())),
            )
            when = _text(ds, "StudyDate") + _text(ds, "StudyTime")
            series = DicomSeries(
                uid, _text(ds, "StudyInstanceUID") or uid, _text(ds, "PatientID"),
                _text(ds, "Modality"), when, shown,
            )  # fmt: skip
            scan.by_uid[uid] = series
        is_image = "Rows" in ds or ds.get_item(_PIXEL_DATA, keep_deferred=True) is not None
        damage = _pixel_problem(ds, path) if is_image else None
        if damage is not None:
            series.damaged.append(f"{rel}: {damage}")
        else:
            series.files.append(path)
            series.instances.append(_text(ds, "SOPInstanceUID") or rel)
            series.has_images = series.has_images and is_image
        series.shown = replace(series.shown, files=series.shown.files + 1)
        if progress is not None:
            progress(index + 1, len(paths), "headers")
    scan.problems = [replace(p, path=scan.redact(p.path)) for p in pending]
    return scan
