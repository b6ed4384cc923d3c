"""A DICOM folder as ``neurofed predict``'s input: imported as a site, each file traced back to
its source series for the DICOM SEG.

:func:`is_dicom_folder` tells a DICOM folder from a site folder (a DICOM Part 10 file, ``DICM``
at byte 128, among its first files). :func:`import_for_prediction` imports it with
``neurofed site import-dicom``'s own code (:func:`~neurofed.data.dicom_import.import_dicom`:
the custodian's mapping, neutral ids, no identifier in any name) into a working site inside
the output folder, and returns, per imported NIfTI file, the source DICOM files of its series
(from the import's custodian-only record, read here on the same machine) so that the
segmentation can go back as a DICOM SEG over exactly those slices.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from neurofed.data.dicom_import import IMPORT_RECORD, DicomImportReport, import_dicom
from neurofed.data.dicom_mapping import DicomMapping
from neurofed.data.dicom_scan import scan_dicom
from neurofed.keys import SiteFile

__all__ = ["DICOM_SITE", "DicomInput", "import_for_prediction", "is_dicom_folder"]

#: The working site a DICOM input is imported into, inside the output folder.
DICOM_SITE = "dicom-site"
_LOOKED_AT = 50  # files opened to recognise a DICOM folder


def is_dicom_folder(folder: Path) -> bool:
    """Whether ``folder`` holds DICOM Part 10 files (among the first files found)."""
    seen = 0
    for path in sorted(Path(folder).rglob("*")):
        if not path.is_file():
            continue
        try:
            with path.open("rb") as handle:
                head = handle.read(132)
        except OSError:
            continue
        if len(head) == 132 and head[128:] == b"DICM":
            return True
        seen += 1
        if seen >= _LOOKED_AT:
            break
    return False


@dataclass(frozen=True)
class DicomInput:
    """The imported site, the import's report, and each imported file's source slices."""

    site: Path
    report: DicomImportReport
    sources: dict[str, list[Path]]  # site-relative NIfTI path → the series' DICOM files


def import_for_prediction(
    dicom_dir: Path, out: Path, mapping: DicomMapping | None = None
) -> DicomInput:
    """Import ``dicom_dir`` into ``out/dicom-site`` (again: only what changed) and trace every
    imported file to its series' files.

    Raises
    ------
    DicomImportError, DicomFolderError, MappingError
        As ``neurofed site import-dicom`` does (unusable folder, no series, no dcm2niix).
    """
    site = Path(out) / DICOM_SITE
    report = import_dicom(Path(dicom_dir), site, mapping=mapping)
    record = json.loads((site / SiteFile.FOLDER.value / IMPORT_RECORD).read_text("utf-8"))
    scan = scan_dicom(Path(dicom_dir))
    sources = {
        str(entry["path"]): list(scan.by_uid[entry["series_uid"]].files)
        for entry in record.get("series", [])
        if entry.get("path") and entry.get("series_uid") in scan.by_uid
    }
    return DicomInput(site, report, sources)
