"""DICOM in: convert a hospital's DICOM series into a BIDS site folder neurofed reads.

:func:`import_dicom` reads the DICOM folder (:mod:`neurofed.data.dicom_scan`), names each
series' modality with the custodian's mapping (:mod:`neurofed.data.dicom_mapping`), converts
each mapped series on its own with ``dcm2niix -z y -b y -ba y`` (gzipped NIfTI and an anonymised
BIDS sidecar) in a temporary folder inside the site, and moves it to
``sub-NNN/[ses-NN/]anat/sub-NNN_[ses-NN_][ce-gadolinium_][run-N_]{T1w,T2w,FLAIR}.nii.gz``.

File and folder names hold neutral ids only: ``sub-001``, ``sub-002``, ... in the order of a
salted hash of the PatientID (sessions ``ses-01``, ... when a patient has several studies). The
link from PatientID / StudyInstanceUID to those ids, and what became of each series, is kept in
``<site>/neurofed/dicom-import.json``, readable by its owner only; only ``neurofed predict``
reads it, on the same machine, to answer a DICOM input with a DICOM SEG over the source
series. Importing the same folder again reuses the ids and converts again only the series
whose files or modality changed. Messages never show patient names or ids.

Examples
--------
>>> bids_name("sub-003", "02", Modality.T1CE, run=2)
'sub-003_ses-02_ce-gadolinium_run-2_T1w.nii.gz'
>>> bids_name("sub-001", None, Modality.FLAIR)
'sub-001_FLAIR.nii.gz'
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from neurofed import __version__
from neurofed.artifacts import atomic_path, write_json_atomically, write_text_atomically
from neurofed.data.dicom_mapping import DicomMapping, FoundSeries, SeriesMatch
from neurofed.data.dicom_scan import REEXPORT_FIX, DicomSeries, FileProblem, Redactor, scan_dicom
from neurofed.keys import Modality, SiteFile
from neurofed.types import ProgressCallback

__all__ = [
    "IMPORT_RECORD",
    "DicomImportError",
    "DicomImportReport",
    "SeriesOutcome",
    "SeriesStatus",
    "bids_name",
    "import_dicom",
    "write_mapping",
]

#: The custodian-only record inside ``<site>/neurofed/``: DICOM ids → neutral ids, per series.
IMPORT_RECORD = "dicom-import.json"
RECORD_VERSION = 1
_TIMEOUT_S = 600
_SUFFIX = {Modality.T1: "T1w", Modality.T1CE: "T1w", Modality.T2: "T2w", Modality.FLAIR: "FLAIR"}
#: Sidecar keys dcm2niix keeps even when anonymising that could point back to a person, a place
#: or a day; dropped, as is any key ending in UID and any value holding an identifier.
_SIDECAR_DROP = frozenset(
    (
        *("InstitutionName", "InstitutionAddress", "InstitutionalDepartmentName", "StationName"),
        *("DeviceSerialNumber", "ReferringPhysicianName", "PerformingPhysicianName"),
        *("OperatorsName", "PatientName", "PatientID", "PatientBirthDate", "PatientSex"),
        *("PatientAge", "PatientWeight", "AccessionNumber", "StudyID", "AcquisitionDateTime"),
        *("AcquisitionDate", "AcquisitionTime", "ContentTime", "StudyDate", "StudyTime"),
        *("SeriesDate", "SeriesTime"),
    )
)


class DicomImportError(ValueError):
    """The import cannot start (bad folder, mapping, record or no dcm2niix); the message says
    which and the fix."""


class SeriesStatus(StrEnum):
    """What became of one series."""

    CONVERTED = "converted"  # a new file in the site
    UPDATED = "updated"  # its files (or modality) changed since the last import: re-converted
    UNCHANGED = "unchanged"  # imported before, nothing changed: left as it was
    SKIPPED = "skipped"  # no modality (unmatched, skip pattern, not MR, no images)
    FAILED = "failed"  # damaged files, or dcm2niix could not make one 3-D volume


def write_mapping(path: Path, dicom_dir: Path, mapping: DicomMapping | None = None) -> Path:
    """Write ``mapping`` (default: :meth:`DicomMapping.default`) and, as comments, what it makes
    of every series under ``dicom_dir``. Converts nothing. Refuses to overwrite a file."""
    path = Path(path)
    if path.exists():
        raise DicomImportError(f"{path}: exists; choose another name (or delete it first)")
    scan = scan_dicom(dicom_dir)  # its series' descriptions come redacted
    return write_text_atomically(path, (mapping or DicomMapping.default()).to_toml(scan.series))


# --- the record -------------------------------------------------------------------------------


@dataclass
class _Record:
    """``<site>/neurofed/dicom-import.json``: custodian-only, holds DICOM identifiers."""

    salt: str
    subjects: list[dict[str, Any]]  # {subject_id, patient_id, studies: [{study_uid, session}]}
    series: dict[str, dict[str, Any]]  # series uid -> what became of it
    imports: list[dict[str, Any]]

    @classmethod
    def load(cls, path: Path) -> _Record:
        if not path.is_file():
            return cls(secrets.token_hex(16), [], {}, [])
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data["format_version"] != RECORD_VERSION:
                raise ValueError(f"format_version {data['format_version']!r}")
            series = {entry["series_uid"]: entry for entry in data["series"]}
            return cls(str(data["salt"]), list(data["subjects"]), series, list(data["imports"]))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DicomImportError(
                f"{path}: unusable ({type(exc).__name__}: {exc}); restore it from a backup: it "
                "links the DICOM ids to this site's subject ids (without it a new import would "
                "give the same patients new ids)"
            ) from exc

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": RECORD_VERSION,
            "note": "custodian only: links DICOM identifiers to this site's neutral subject ids. "
            "Never copy it out of the hospital.",
            "salt": self.salt,
            "subjects": self.subjects,
            "series": sorted(
                self.series.values(), key=lambda s: (s.get("path") or "~", s["series_uid"])
            ),
            "imports": self.imports,
        }

    def save(self, path: Path) -> None:
        """Write the record atomically, readable by its owner only from the first byte."""
        with atomic_path(path) as tmp:
            tmp.chmod(0o600)
            tmp.write_text(json.dumps(self.to_json(), indent=2) + "\n", encoding="utf-8")


def _salted(salt: str, text: str) -> str:
    return hashlib.sha256(f"{salt}:{text}".encode()).hexdigest()


def _assign_ids(
    record: _Record, series: Iterable[DicomSeries]
) -> dict[str, tuple[str, str | None]]:
    """(subject id, session) of every study, reusing the record's; new patients are numbered
    after the highest id in the order of a salted hash of their PatientID, new studies get
    sessions in date order. A patient gaining a second study moves its first to ``ses-01``."""
    by_patient = {s["patient_id"]: s for s in record.subjects if s["patient_id"]}
    by_study = {st["study_uid"]: s for s in record.subjects for st in s["studies"]}
    studies: dict[str, tuple[str, str]] = {}  # study uid -> (patient id, when)
    for item in series:
        studies.setdefault(item.study_uid, (item.patient_id, item.study_when))
    new: dict[str, list[tuple[str, str]]] = {}  # patient key -> [(when, study uid)]
    for uid, (patient, when) in studies.items():
        if uid not in by_study:
            new.setdefault(patient or f"\0{uid}", []).append((when, uid))  # no id: own subject
    top = max((int(s["subject_id"][4:]) for s in record.subjects), default=0)
    for key in sorted(new, key=lambda k: _salted(record.salt, k)):
        subject = by_patient.get(key)
        if subject is None:
            top += 1
            patient_id = None if key.startswith("\0") else key
            subject = {"subject_id": f"sub-{top:03d}", "patient_id": patient_id, "studies": []}
            record.subjects.append(subject)
        ordered = sorted(new[key], key=lambda w: (w[0], _salted(record.salt, w[1])))
        subject["studies"] += [{"study_uid": uid, "session": None} for _, uid in ordered]
        if len(subject["studies"]) > 1:
            numbers = [int(st["session"]) for st in subject["studies"] if st["session"]]
            for study in subject["studies"]:
                if study["session"] is None:
                    numbers.append(max(numbers, default=0) + 1)
                    study["session"] = f"{numbers[-1]:02d}"
    return {
        st["study_uid"]: (s["subject_id"], st["session"])
        for s in record.subjects
        for st in s["studies"]
    }


def bids_name(subject_id: str, session: str | None, modality: Modality, run: int = 0) -> str:
    """The BIDS file name neurofed's BIDS reader takes for ``modality`` (``run`` 0: none)."""
    parts = [subject_id, f"ses-{session}" if session else ""]
    parts += ["ce-gadolinium" if modality is Modality.T1CE else "", f"run-{run}" if run else ""]
    return "_".join([p for p in parts if p] + [_SUFFIX[modality]]) + ".nii.gz"


def _bids_path(subject_id: str, session: str | None, modality: Modality, run: int = 0) -> str:
    folder = f"{subject_id}/ses-{session}/anat" if session else f"{subject_id}/anat"
    return f"{folder}/{bids_name(subject_id, session, modality, run)}"


def _sidecar(path: str) -> str:
    return path.removesuffix(".nii.gz") + ".json"


def _remove(site: Path, rel: str) -> None:
    for name in (rel, _sidecar(rel)):
        (site / name).unlink(missing_ok=True)


def _move(site: Path, old: str, new: str) -> None:
    for source, target in ((old, new), (_sidecar(old), _sidecar(new))):
        if (site / source).exists():
            (site / target).parent.mkdir(parents=True, exist_ok=True)
            os.replace(site / source, site / target)
    for folder in (site / old).parents:  # drop the emptied anat/ (and its parents)
        if folder == site or any(folder.iterdir()):
            break
        folder.rmdir()


# --- converting -------------------------------------------------------------------------------


@dataclass(frozen=True)
class SeriesOutcome:
    """What became of one series: no DICOM identifier, safe to print."""

    status: SeriesStatus
    series: FoundSeries
    message: str
    fix: str = ""
    subject_id: str | None = None
    modality: Modality | None = None
    path: str | None = None  # relative to the site

    def line(self) -> str:
        shown = self.series
        what = f"series {shown.series_number} {shown.description or shown.protocol!r}"
        what = f"{what} ({shown.files} files)"
        who = f"{self.subject_id} " if self.subject_id else ""
        text = f"{who}{what}: {self.message}"
        return f"{text} — fix: {self.fix}" if self.fix else text


@dataclass(frozen=True)
class DicomImportReport:
    """Every series' outcome, the unusable files, and where the record is."""

    site: Path
    outcomes: tuple[SeriesOutcome, ...]
    file_problems: tuple[FileProblem, ...]
    record: Path
    subjects: tuple[str, ...]
    notes: tuple[str, ...] = ()

    def count(self, status: SeriesStatus) -> int:
        return sum(o.status is status for o in self.outcomes)

    @property
    def exit_code(self) -> int:
        """0 all went well (skips are fine), 1 some series or DICOM file failed."""
        failed = self.count(SeriesStatus.FAILED) or any(p.error for p in self.file_problems)
        return 1 if failed else 0


def _dcm2niix_version(executable: str) -> str:
    """The version dcm2niix reports; raises when it cannot be run."""
    found = shutil.which(executable)
    if found is None:
        raise DicomImportError(
            f"dcm2niix not found ({executable!r} is not an executable on PATH); install it with "
            "`pip install dcm2niix` (or from https://github.com/rordenlab/dcm2niix) or pass "
            "its path with --dcm2niix PATH"
        )
    try:
        run = subprocess.run(
            [found, "-v"], capture_output=True, text=True, errors="replace", timeout=60
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DicomImportError(f"{found}: cannot be run ({exc}); reinstall dcm2niix") from exc
    lines = [ln for ln in (run.stdout + run.stderr).split() if re.match(r"v\d", ln)]
    return lines[-1] if lines else "unknown"


def _convert(item: DicomSeries, work: Path, executable: str, redact: Redactor) -> Path | str:
    """dcm2niix on this series alone; the NIfTI path, or why it failed."""
    source, out = work / "in", work / "out"
    for folder in (source, out):
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
    for index, path in enumerate(item.files):  # neutral names: no identifier reaches dcm2niix
        link = source / f"{index:05d}.dcm"
        try:
            link.symlink_to(path.resolve())
        except OSError:
            shutil.copyfile(path, link)
    command = [executable, "-z", "y", "-b", "y", "-ba", "y", "-f", "series", "-o", str(out)]
    try:
        run = subprocess.run(
            [*command, str(source)],
            capture_output=True,
            text=True,
            errors="replace",  # a header in Latin-1 must not stop the import
            timeout=_TIMEOUT_S,
        )
    except subprocess.TimeoutExpired:
        return f"dcm2niix ran over {_TIMEOUT_S} s"
    except OSError as exc:
        return f"dcm2niix could not be started ({exc.strerror or exc})"
    said = [
        redact(ln.replace(str(work), "").strip())
        for ln in (run.stdout + run.stderr).splitlines()
        if re.search(r"error|warning|corrupt|invalid|unsupported", ln, re.IGNORECASE)
    ]
    detail = f": {'; '.join(said[-3:])}" if said else ""
    volumes = sorted(out.glob("*.nii.gz"))
    if run.returncode != 0:
        return f"dcm2niix could not convert it (exit {run.returncode}){detail}"
    if len(volumes) != 1:
        names = ", ".join(v.name for v in volumes) or "none"
        return f"dcm2niix made {len(volumes)} volumes, not one ({names}){detail}"
    from neurofed.data.nifti import VolumeError, read_header

    try:
        shape, _ = read_header(volumes[0])
    except VolumeError as exc:
        return f"dcm2niix wrote an unreadable NIfTI ({type(exc).__name__})"
    if len(shape) > 3 and any(n > 1 for n in shape[3:]):
        return f"it is {len(shape)}-D {shape}: several volumes (echoes, dynamics) in one series"
    if len(shape) < 3 or min(shape[:3]) < 2:
        return f"it is a single slice {shape}, not a 3-D volume"
    return volumes[0]


def _clean_sidecar(raw: Path, redact: Redactor) -> dict[str, Any]:
    """dcm2niix's sidecar without site, time-of-day and date fields, nor any identifier."""
    data = json.loads(raw.read_text(encoding="utf-8"))
    return {
        k: v
        for k, v in data.items()
        if k not in _SIDECAR_DROP and not k.endswith("UID") and not redact.holds(json.dumps(v))
    }


_CONVERT_FIX = (
    "look at the series in a viewer; if it is not a single 3-D volume, map another series "
    "(edit the mapping), or convert it by hand with dcm2niix and put the volume in the site"
)


def import_dicom(
    dicom_dir: Path,
    site: Path,
    *,
    mapping: DicomMapping | None = None,
    dcm2niix: str = "dcm2niix",
    progress: ProgressCallback | None = None,
) -> DicomImportReport:
    """Convert every mapped series under ``dicom_dir`` into the BIDS site folder ``site``.

    Parameters
    ----------
    dicom_dir:
        The folder holding the DICOM files (any depth, any names; other files are reported).
    site:
        The site folder to write: missing, empty, or made by an earlier import.
    mapping:
        Which series become which modality (default :meth:`DicomMapping.default`).
    dcm2niix:
        The dcm2niix executable (name on PATH or path).
    progress:
        Called as ``progress(done, total, "headers")`` after each file read, then as
        ``progress(done, total, subject_id)`` after each series.

    Returns
    -------
    DicomImportReport
        Per series: converted, updated, unchanged, skipped or failed, with the reason and fix.

    Raises
    ------
    DicomImportError
        The folders, the record or dcm2niix are unusable, or no DICOM series was found.
    """
    mapping = mapping or DicomMapping.default()
    dicom_dir, site = Path(dicom_dir), Path(site)
    record_path = site / SiteFile.FOLDER.value / IMPORT_RECORD
    _check_site(dicom_dir, site, record_path)
    version = _dcm2niix_version(dcm2niix)
    scan = scan_dicom(dicom_dir, progress)
    if not scan.by_uid:
        shown = "; ".join(p.line() for p in scan.problems[:3])
        raise DicomImportError(
            f"{dicom_dir}: no DICOM series found ({len(scan.problems)} files: {shown}); pass "
            "the folder the DICOM export was copied into"
        )
    record = _Record.load(record_path)
    ids = _assign_ids(record, scan.by_uid.values())
    order = sorted(
        scan.by_uid.values(),
        key=lambda s: (*ids[s.study_uid], s.shown.series_number or 0, _salted(record.salt, s.uid)),
    )
    outcomes: list[SeriesOutcome] = []
    work = Path(tempfile.mkdtemp(prefix=".dicom-import-", dir=_ensure(record_path.parent)))
    try:  # the record is saved whatever happens: it must name every file placed in the site
        notes = _apply_sessions(site, record, ids)
        for done, item in enumerate(order, start=1):
            outcome = _import_one(
                item, ids[item.study_uid], site, work, record, mapping, dcm2niix, scan.redact
            )
            outcomes.append(outcome)
            if progress is not None:
                progress(done, len(order), ids[item.study_uid][0])
        _write_description(site, version)
    finally:
        shutil.rmtree(work, ignore_errors=True)
        record.imports.append(
            {
                "when": datetime.now(UTC).isoformat(timespec="seconds"),
                "dicom_dir": str(dicom_dir.resolve()),
                "mapping": mapping.source,
                "dcm2niix": version,
                "neurofed": __version__,
                **{s.value: sum(o.status is s for o in outcomes) for s in SeriesStatus},
                "series_left": len(order) - len(outcomes),  # > 0: the import was interrupted
                "file_problems": [p.line() for p in scan.problems],
            }
        )
        record.save(record_path)
    subjects = sorted({ids[s.study_uid][0] for s in order})
    return DicomImportReport(
        site, tuple(outcomes), tuple(scan.problems), record_path, tuple(subjects), tuple(notes)
    )


def _ensure(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _check_site(dicom_dir: Path, site: Path, record_path: Path) -> None:
    if site.exists() and not site.is_dir():
        raise DicomImportError(f"{site}: is a file; pass a folder for the site (--out)")
    a, b = dicom_dir.resolve(), site.resolve()
    if a.is_relative_to(b) or b.is_relative_to(a):
        raise DicomImportError(
            f"{site}: the site folder and the DICOM folder {dicom_dir} lie inside one another; "
            "put the site somewhere else"
        )
    if site.is_dir() and not record_path.is_file():
        others = [p.name for p in site.iterdir() if p.name != SiteFile.FOLDER.value]
        if [n for n in others if not n.startswith(".")]:
            raise DicomImportError(
                f"{site}: holds files an import did not make ({', '.join(sorted(others)[:3])}"
                "…); pass an empty or new folder with --out"
            )


def _apply_sessions(
    site: Path, record: _Record, ids: Mapping[str, tuple[str, str | None]]
) -> list[str]:
    """Move files of studies that gained a session (a patient's second study arrived)."""
    notes = []
    for entry in record.series.values():
        path, modality = entry.get("path"), entry.get("modality")
        if not path or entry["study_uid"] not in ids or modality is None:
            continue
        subject_id, session = ids[entry["study_uid"]]
        if session and f"/ses-{session}/" not in path:
            run = re.search(r"_run-(\d+)_", path)
            new = _bids_path(subject_id, session, Modality(modality), int(run[1]) if run else 0)
            _move(site, path, new)
            entry["path"] = new
            notes.append(f"{path} moved to {new}: {subject_id} now has several studies (sessions)")
    return notes


def _skip_reason(item: DicomSeries, match: SeriesMatch, mapping: DicomMapping) -> str | None:
    if item.dicom_modality and item.dicom_modality != "MR":
        return f"DICOM Modality is {item.dicom_modality}; neurofed imports MR series only"
    if not item.has_images:
        return "it holds no images (a report or presentation state)"
    return None if match.modality is not None else match.reason


def _import_one(
    item: DicomSeries,
    ids: tuple[str, str | None],
    site: Path,
    work: Path,
    record: _Record,
    mapping: DicomMapping,
    executable: str,
    redact: Redactor,
) -> SeriesOutcome:
    """Skip, fail, keep or convert one series, and note it in ``record``."""
    subject_id, session = ids
    found = item.shown
    shown = replace(found, description=redact(found.description), protocol=redact(found.protocol))
    previous = record.series.get(item.uid, {})
    entry: dict[str, Any] = {
        "series_uid": item.uid,
        "study_uid": item.study_uid,
        "subject_id": subject_id,
        "series_number": found.series_number,
        "description": found.description,
        "protocol": found.protocol,
        "files": found.files,
        "fingerprint": item.fingerprint(),
        "modality": None,
        "path": previous.get("path"),
    }

    def done(status: SeriesStatus, message: str, fix: str = "") -> SeriesOutcome:
        record.series[item.uid] = entry | {"status": status.value, "reason": message, "fix": fix}
        modality = Modality(entry["modality"]) if entry["modality"] else None
        return SeriesOutcome(status, shown, message, fix, subject_id, modality, entry["path"])

    match = mapping.classify(found.description, found.protocol, found.image_types)
    why = _skip_reason(item, match, mapping)
    if why is not None:
        fix = "none needed" if match.skipped or match.modality else _unmatched_fix(mapping)
        if entry["path"]:
            _remove(site, entry["path"])
            why, entry["path"] = f"{why} (removed {entry['path']}, imported before)", None
        return done(SeriesStatus.SKIPPED, f"skipped: {why}", fix)
    modality = match.modality
    assert modality is not None  # _skip_reason returns a reason otherwise
    entry["modality"] = modality.value
    if item.damaged:
        listed = "; ".join(redact(d) for d in item.damaged[:3])
        more = f" (and {len(item.damaged) - 3} more)" if len(item.damaged) > 3 else ""
        message = f"{len(item.damaged)} damaged files: {listed}{more}"
        return done(SeriesStatus.FAILED, message, f"{REEXPORT_FIX}; {_DAMAGED_FIX}")
    same = [previous.get(k) for k in ("fingerprint", "modality")] == [
        entry["fingerprint"],
        modality.value,
    ]
    if same and entry["path"] and (site / entry["path"]).is_file():
        return done(SeriesStatus.UNCHANGED, f"{modality.value}: unchanged since the last import")
    result = _convert(item, work, executable, redact)
    if isinstance(result, str):
        return done(SeriesStatus.FAILED, result, _CONVERT_FIX)
    status = SeriesStatus.UPDATED if previous.get("path") else SeriesStatus.CONVERTED
    if previous.get("path") and previous.get("modality") != modality.value:
        _remove(site, previous["path"])
        entry["path"] = None
    if not entry["path"]:
        entry["path"] = _free_path(site, record, item.uid, (subject_id, session, modality))
    target = site / entry["path"]
    target.parent.mkdir(parents=True, exist_ok=True)
    sidecar = _clean_sidecar(result.parent / _sidecar(result.name), redact)
    os.replace(result, target)
    write_json_atomically(site / _sidecar(entry["path"]), sidecar)
    return done(status, f"{modality.value} ({match.reason})")


_DAMAGED_FIX = "or move the damaged files out of the folder if the series is whole without them"


def _unmatched_fix(mapping: DicomMapping) -> str:
    return (
        f"if it is a scan neurofed uses, add a pattern for it to the mapping ({mapping.source}; "
        "--write-mapping FILE writes one) and run again with --mapping FILE"
    )


def _free_path(
    site: Path, record: _Record, uid: str, slot: tuple[str, str | None, Modality]
) -> str:
    """The first name of ``slot`` no other series holds: no run entity, then run-2, run-3, ..."""
    taken = {e.get("path") for u, e in record.series.items() if u != uid}
    run = 0
    while (path := _bids_path(*slot, run)) in taken or (site / path).exists():
        run = 2 if run == 0 else run + 1
    return path


def _write_description(site: Path, version: str) -> None:
    path = site / "dataset_description.json"
    if not path.exists():
        write_json_atomically(
            path,
            {
                "Name": "neurofed DICOM import",
                "BIDSVersion": "1.9.0",
                "DatasetType": "raw",
                "GeneratedBy": [
                    {"Name": "neurofed site import-dicom", "Version": __version__},
                    {"Name": "dcm2niix", "Version": version},
                ],
            },
        )
