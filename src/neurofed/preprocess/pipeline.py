"""A site's harmonised preprocessing and quality control: ``neurofed site preprocess`` / ``qc``.

:func:`preprocess_site` runs every case of the site manifest that has the wanted modalities
through :func:`~neurofed.preprocess.ops.harmonise_case` → :func:`~neurofed.preprocess.qc.
measure_case` → :func:`~neurofed.preprocess.ops.finish_case`, in worker processes, and writes::

    <site>/neurofed/preprocessed/<params_id>/<case>.npz      arrays, through PreprocessedCache
    <site>/neurofed/preprocessed/<params_id>/provenance.json versions, params, per-case steps
    <site>/neurofed/preprocessed/<params_id>/qc.json, qc.csv the QC table

The arrays are the training cache itself (same folder, key and source stamp as
:class:`~neurofed.training.SiteData`), so training reuses them. A case whose files are unchanged
since its last successful run is skipped; a case that fails is reported (file, reason, fix)
and skipped, never fatal. :func:`run_qc` re-judges the recorded measures and, on the
custodian's decision, writes ``<site>/neurofed/qc-exclusions.json``, which training respects.

The cache's folder, case keys and source stamps are :mod:`~neurofed.preprocess.cache`'s.
"""

from __future__ import annotations

import csv
import io
import json
import multiprocessing
import os
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Future, ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from neurofed import __version__
from neurofed.artifacts import (
    spreadsheet_safe,
    versions,
    write_json_atomically,
    write_text_atomically,
)
from neurofed.data.loading import load_subject
from neurofed.data.manifest import ManifestError, load_manifest
from neurofed.data.nifti import VolumeError
from neurofed.data.subject import Subject
from neurofed.keys import Modality, SiteFile
from neurofed.preprocess.cache import PreprocessedCache, cache_key, site_cache_root, source_stamp
from neurofed.preprocess.harmonise import N4Settings, RegistrationSettings
from neurofed.preprocess.ops import finish_case, harmonise_case
from neurofed.preprocess.params import PreprocessError, PreprocessParams
from neurofed.preprocess.qc import (
    CaseMeasures,
    QCConfig,
    QCStatus,
    QCTable,
    evaluate_qc,
    measure_case,
)
from neurofed.preprocess.skull import extraction_channel, extraction_record
from neurofed.types import ProgressCallback

__all__ = [
    "CaseOutcome",
    "OutcomeStatus",
    "PipelineError",
    "PipelineFile",
    "PreprocessReport",
    "QCExclusion",
    "QCReport",
    "default_workers",
    "load_qc_exclusions",
    "preprocess_site",
    "run_qc",
]

#: Where preprocessed arrays live, inside ``<site>/neurofed/``.
PROVENANCE_FORMAT = 1


class PipelineFile(StrEnum):
    """Files the pipeline writes (the first three in the params folder, the last in
    ``<site>/neurofed/``)."""

    PROVENANCE = "provenance.json"
    QC_JSON = "qc.json"
    QC_CSV = "qc.csv"
    QC_EXCLUSIONS = "qc-exclusions.json"


class OutcomeStatus(StrEnum):
    DONE = "done"
    CACHED = "cached"  # unchanged since a successful run: skipped
    FAILED = "failed"
    SKIPPED = "skipped"  # lacks a modality


class PipelineError(ValueError):
    """The site cannot be preprocessed or judged at all; the message names the fix."""


def _cores() -> int:
    """CPUs this process may use (all of the machine's where affinity is unknown)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def default_workers() -> int:
    """``min(cores, 4)``: preprocessing is memory-hungry at 1 mm."""
    return max(1, min(_cores(), 4))


@dataclass(frozen=True)
class CaseOutcome:
    """What happened to one case in one run."""

    subject_id: str
    status: OutcomeStatus
    reason: str = ""
    fix: str = ""
    files: tuple[str, ...] = ()
    seconds: float = 0.0


@dataclass(frozen=True)
class PreprocessReport:
    """The result of :func:`preprocess_site`."""

    folder: Path
    params: PreprocessParams
    outcomes: tuple[CaseOutcome, ...]
    table: QCTable
    seconds: float

    def count(self, status: OutcomeStatus) -> int:
        return sum(1 for o in self.outcomes if o.status is status)

    @property
    def produced(self) -> int:
        """Cases whose arrays are in the cache now (made by this run, or already there)."""
        return self.count(OutcomeStatus.DONE) + self.count(OutcomeStatus.CACHED)

    @property
    def exit_code(self) -> int:
        """2 if no case was (or had been) preprocessed, 1 if a case failed to preprocess or
        failed QC, else 0 (as ``site check``)."""
        if self.produced == 0 and self.count(OutcomeStatus.FAILED) == 0:
            return 2
        failed_qc = any(s is QCStatus.FAIL for s in self.table.case_status().values())
        return int(self.count(OutcomeStatus.FAILED) > 0 or failed_qc)


@dataclass(frozen=True)
class QCExclusion:
    """A case the custodian excluded after QC (``modalities`` empty: every modality)."""

    subject_id: str
    modalities: tuple[Modality, ...]
    reasons: tuple[str, ...]

    def applies_to(self, modalities: Sequence[Modality]) -> bool:
        return not self.modalities or bool(set(self.modalities) & set(modalities))

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "modalities": [m.value for m in self.modalities],
            "reasons": list(self.reasons),
        }


@dataclass(frozen=True)
class QCReport:
    """The result of :func:`run_qc`."""

    folder: Path
    table: QCTable
    exclusions: tuple[QCExclusion, ...] | None  # None: exclusions not (re)written

    @property
    def exit_code(self) -> int:
        return int(any(s is QCStatus.FAIL for s in self.table.case_status().values()))


# --- files --------------------------------------------------------------------------------------


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    write_json_atomically(path, data, indent=1)


def _read_json(path: Path, what: str) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise PipelineError(f"{path}: unreadable {what} ({exc}); {_RERUN}") from exc
    if not isinstance(data, dict):
        raise PipelineError(f"{path}: not a {what}; {_RERUN}")
    return data


_RERUN = "move it away and run `neurofed site preprocess` again"


def _table_json(tables: Mapping[str, QCTable], params_id: str) -> dict[str, Any]:
    groups = {}
    for channels, table in tables.items():
        status = table.case_status()
        groups[channels] = {
            "config": table.config.to_json(),
            "summary": {s.value: sum(1 for v in status.values() if v is s) for s in QCStatus},
            "cases": {sid: s.value for sid, s in status.items()},
            "rows": [row.to_json() for row in table.rows],
        }
    return {"format": PROVENANCE_FORMAT, "params_id": params_id, "channels": groups}


_CSV_COLUMNS = ("channels", "subject_id", "modality", "check", "status", "value", "threshold")


def _table_csv(tables: Mapping[str, QCTable]) -> str:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow([*_CSV_COLUMNS, "reason"])
    for channels, table in tables.items():
        for row in table.rows:
            data = row.to_json()
            value = "" if data["value"] is None else f"{data['value']:g}"
            modality = data["modality"] or ""
            cells = [channels, row.subject_id, modality, data["check"], data["status"], value,
                     row.threshold, row.reason]  # fmt: skip
            writer.writerow([spreadsheet_safe(str(c)) for c in cells])
    return buffer.getvalue()


def _write_tables(folder: Path, tables: Mapping[str, QCTable], params_id: str) -> None:
    _write_json(folder / PipelineFile.QC_JSON, _table_json(tables, params_id))
    write_text_atomically(folder / PipelineFile.QC_CSV, _table_csv(tables))


def _exclusions_path(root: Path) -> Path:
    return Path(root) / SiteFile.FOLDER.value / PipelineFile.QC_EXCLUSIONS.value


def load_qc_exclusions(root: Path) -> dict[str, QCExclusion]:
    """The custodian's QC exclusions of the site at ``root`` (empty when there are none).

    Raises
    ------
    PipelineError
        When the file exists but cannot be read (naming it and the fix).
    """
    path = _exclusions_path(root)
    if not path.is_file():
        return {}
    data = _read_json(path, "QC exclusions file")
    try:
        items = [
            QCExclusion(
                subject_id=str(item["subject_id"]),
                modalities=tuple(Modality(m) for m in item.get("modalities", ())),
                reasons=tuple(str(r) for r in item.get("reasons", ())),
            )
            for item in data["excluded"]
        ]
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(
            f"{path}: unusable ({exc}); re-create it with `neurofed site qc {root} "
            "--exclude-failures`, or delete it to exclude nothing"
        ) from exc
    return {item.subject_id: item for item in items}


def _exclusions(tables: Mapping[str, QCTable]) -> tuple[QCExclusion, ...]:
    found: dict[str, tuple[set[Modality], list[str], bool]] = {}
    for table in tables.values():
        for sid, rows in table.failures().items():
            modalities, reasons, whole = found.setdefault(sid, (set(), [], False))
            for row in rows:
                reasons.append(f"{row.check.value}: {row.reason}")
                if row.modality is None:
                    whole = True
                else:
                    modalities.add(row.modality)
            found[sid] = (modalities, reasons, whole)
    return tuple(
        QCExclusion(sid, () if whole else tuple(m for m in Modality if m in mods), tuple(reasons))
        for sid, (mods, reasons, whole) in found.items()
    )


# --- one case (runs in a worker process) ----------------------------------------------------------


def _init_worker(threads: int) -> None:
    import SimpleITK
    import torch

    SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
    torch.set_num_threads(threads)


def _fix_for(exc: BaseException, root: Path) -> str:
    if isinstance(exc, VolumeError | OSError):
        return f"run `neurofed site check {root}` and fix or remove the file"
    if isinstance(exc, PreprocessError) and ("--no-" in str(exc) or "site check" in str(exc)):
        return "as the reason says"
    return (
        "check the scan in a viewer; if it is unusable, leave it out (it is skipped) or exclude "
        "it with `neurofed site qc --exclude-failures`"
    )


def _run_case(job: dict[str, Any]) -> dict[str, Any]:
    """Preprocess one case and return its provenance entry (never raises for a bad case)."""
    root = Path(job["root"])
    subject = Subject.from_json(job["subject"])
    modalities = tuple(Modality(m) for m in job["modalities"])
    params = PreprocessParams.from_json(job["params"])
    start = time.perf_counter()
    entry: dict[str, Any] = {
        "subject_id": subject.subject_id,
        "modalities": [m.value for m in modalities],
        "reference": modalities[0].value,
        "source_stamp": job["stamp"],
        "inputs": _inputs(root, subject),
    }
    try:
        loaded = load_subject(root, subject, modalities)
        load_seconds = time.perf_counter() - start
        harmonised = harmonise_case(
            loaded.image,
            loaded.label,
            loaded.affine,
            params,
            subject_id=subject.subject_id,
            extract_from=extraction_channel(modalities),
        )
        measure_start = time.perf_counter()
        measures = measure_case(subject.subject_id, harmonised, modalities)
        measure_seconds = time.perf_counter() - measure_start
        timings: dict[str, float] = {}
        case = finish_case(harmonised, params, subject_id=subject.subject_id, timings=timings)
        cache = PreprocessedCache(Path(job["cache"]), params)
        write_start = time.perf_counter()
        cache.get_or_compute(job["key"], job["stamp"], lambda: case)
        seconds = {"load": load_seconds, **harmonised.seconds, **timings}
        seconds |= {"qc": measure_seconds, "write": time.perf_counter() - write_start}
    except (VolumeError, PreprocessError, OSError, ValueError, RuntimeError, MemoryError) as exc:
        entry |= {
            "status": OutcomeStatus.FAILED.value,
            "error": {"reason": f"{exc}", "fix": _fix_for(exc, root), "type": type(exc).__name__},
            "seconds": {"total": round(time.perf_counter() - start, 4)},
        }
        return entry
    steps = ["load", "reorient"]
    steps += ["bias_correction"] if params.bias_correction else []
    steps += ["registration"] if params.registration and len(modalities) > 1 else []
    steps += ["brain_extraction"] if harmonised.extraction is not None else []
    steps += ["resample"] if params.spacing is not None else []
    steps += ["brain_mask"] + (["zscore"] if params.zscore else [])
    steps += ["crop_to_brain"] if params.crop_to_brain else []
    steps += ["crop_or_pad"] if params.spatial_shape is not None else []
    seconds["total"] = time.perf_counter() - start
    entry |= {
        "status": OutcomeStatus.DONE.value,
        "steps": steps,
        "brain_mask_method": case.brain_mask_method.value,
        "bias_correction": [b.to_json() if b else None for b in harmonised.bias],
        "registration": [r.to_json() if r else None for r in harmonised.registration],
        "brain_extraction": extraction_record(
            harmonised.stripped, harmonised.extraction, harmonised.affine
        ),
        "output": {
            "file": PreprocessedCache(Path(job["cache"]), params).path_for(job["key"]).name,
            "shape": list(case.image.shape),
            "affine": [list(map(float, row)) for row in case.affine],
            "original_spacing": list(case.original_spacing),
            "original_shape": list(case.original_shape),
        },
        "qc": measures.to_json(),
        "seconds": {k: round(v, 4) for k, v in seconds.items()},
    }
    return entry


def _inputs(root: Path, subject: Subject) -> list[dict[str, Any]]:
    out = []
    for rel in subject.files():
        try:
            stat = (root / rel).stat()
            out.append({"path": str(rel), "size": stat.st_size, "mtime_ns": stat.st_mtime_ns})
        except OSError:
            out.append({"path": str(rel), "size": None, "mtime_ns": None})
    return out


# --- the site ---------------------------------------------------------------------------------


def _folder(root: Path, params: PreprocessParams) -> Path:
    return PreprocessedCache.for_site(root, params).folder


def _provenance(folder: Path) -> dict[str, Any]:
    path = folder / PipelineFile.PROVENANCE
    return _read_json(path, "provenance file") if path.is_file() else {}


def _evaluate(cases: Mapping[str, Any], config: QCConfig) -> dict[str, QCTable]:
    """One QC table per channel set (the site statistics compare like with like)."""
    groups: dict[str, tuple[list[CaseMeasures], dict[str, str]]] = {}
    for key in sorted(cases):
        entry = cases[key]
        channels = "+".join(entry["modalities"])
        measures, failed = groups.setdefault(channels, ([], {}))
        if entry["status"] == OutcomeStatus.DONE:
            measures.append(CaseMeasures.from_json(entry["qc"]))
        else:
            failed[entry["subject_id"]] = entry["error"]["reason"]
    return {ch: evaluate_qc(m, config, f) for ch, (m, f) in sorted(groups.items())}


def _jobs_in_pool(
    jobs: list[dict[str, Any]], workers: int, report: Callable[[dict[str, Any]], None]
) -> None:
    context = multiprocessing.get_context("spawn")
    threads = max(1, _cores() // workers)
    with ProcessPoolExecutor(
        max_workers=workers, mp_context=context, initializer=_init_worker, initargs=(threads,)
    ) as pool:
        futures: dict[Future[dict[str, Any]], dict[str, Any]] = {
            pool.submit(_run_case, job): job for job in jobs
        }
        for future in as_completed(futures):
            job = futures[future]
            try:
                report(future.result())
            except BrokenProcessPool as exc:
                report(_crashed(job, f"the worker process died ({exc})"))


def _crashed(job: dict[str, Any], reason: str) -> dict[str, Any]:
    return {
        "subject_id": job["subject"]["subject_id"],
        "modalities": list(job["modalities"]),
        "reference": job["modalities"][0],
        "source_stamp": job["stamp"],
        "status": OutcomeStatus.FAILED.value,
        "error": {
            "reason": reason,
            "fix": "rerun with --workers 1 (memory?) or --no-registration / --no-bias-correction",
            "type": "crash",
        },
    }


def preprocess_site(
    root: Path,
    modalities: Sequence[Modality],
    params: PreprocessParams,
    *,
    with_label: bool = True,
    qc_config: QCConfig | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> PreprocessReport:
    """Preprocess every case of the site that has ``modalities`` (the first is the reference).

    ``with_label`` reads label maps (as a segmentation task does). ``qc_config`` defaults to
    :meth:`QCConfig.for_spacing` of ``params.spacing``. Cases run in ``workers`` processes.

    Raises
    ------
    PipelineError
        When the site has no manifest (run ``neurofed site check``) or ``modalities`` is empty.
    """
    start = time.perf_counter()
    root = Path(root)
    wanted = tuple(Modality(m) for m in modalities)
    if not wanted:
        raise PipelineError("no modalities given; pass the task's, e.g. --task tumor-regions")
    try:
        manifest = load_manifest(root)
    except ManifestError as exc:
        raise PipelineError(str(exc)) from exc
    folder = _folder(root, params)
    provenance = _provenance(folder)
    cases: dict[str, Any] = dict(provenance.get("cases", {}))
    cache = PreprocessedCache(folder.parent, params)
    outcomes: list[CaseOutcome] = []
    jobs: list[dict[str, Any]] = []
    total = len(manifest.subjects)
    done = [0]

    def tick(label: str) -> None:
        done[0] += 1
        if progress is not None:
            progress(done[0], total, label)

    for subject in manifest.subjects:
        missing = [m.value for m in wanted if m not in subject.images]
        if missing:
            reason = f"has no {', '.join(missing)} image"
            outcomes.append(CaseOutcome(subject.subject_id, OutcomeStatus.SKIPPED, reason))
            tick(subject.subject_id)
            continue
        if not with_label and subject.label is not None:
            subject = replace(subject, label=None, label_convention=None)
        key, stamp = cache_key(subject.subject_id, wanted), source_stamp(root, subject)
        old = cases.get(key)
        if (
            old is not None
            and old.get("status") == OutcomeStatus.DONE
            and old.get("source_stamp") == stamp
            and cache.path_for(key).is_file()
        ):
            outcomes.append(CaseOutcome(subject.subject_id, OutcomeStatus.CACHED))
            tick(subject.subject_id)
            continue
        jobs.append({
            "root": str(root), "subject": subject.to_json(), "key": key, "stamp": stamp,
            "modalities": [m.value for m in wanted], "params": params.to_json(),
            "cache": str(folder.parent),
        })  # fmt: skip

    def record(entry: dict[str, Any]) -> None:
        key = cache_key(entry["subject_id"], [Modality(m) for m in entry["modalities"]])
        cases[key] = entry
        sid = entry["subject_id"]
        seconds = float(entry.get("seconds", {}).get("total", 0.0))
        files = tuple(i["path"] for i in entry.get("inputs", ()))
        if entry["status"] == OutcomeStatus.DONE:
            outcomes.append(CaseOutcome(sid, OutcomeStatus.DONE, files=files, seconds=seconds))
        else:
            error = entry["error"]
            outcomes.append(
                CaseOutcome(
                    sid, OutcomeStatus.FAILED, error["reason"], error["fix"], files, seconds
                )
            )
        tick(sid)

    if workers > 1 and len(jobs) > 1:
        _jobs_in_pool(jobs, min(workers, len(jobs)), record)
    else:
        for job in jobs:
            record(_run_case(job))
    config = qc_config or QCConfig.for_spacing(params.spacing)
    folder.mkdir(parents=True, exist_ok=True)
    _write_json(
        folder / PipelineFile.PROVENANCE,
        {
            "format": PROVENANCE_FORMAT,
            "params_id": params.params_id,
            "params": params.to_json()
            | {"bias_correction": params.bias_correction, "registration": params.registration},
            "versions": versions(),
            "settings": {
                "n4": N4Settings().to_json(),
                "registration": RegistrationSettings().to_json(),
            },
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            "cases": dict(sorted(cases.items())),
        },
    )
    tables = _evaluate(cases, config)
    _write_tables(folder, tables, params.params_id)
    channels = "+".join(m.value for m in wanted)
    table = tables.get(channels, QCTable(config, ()))
    return PreprocessReport(folder, params, tuple(outcomes), table, time.perf_counter() - start)


def _find_folder(root: Path, params_id: str | None) -> Path:
    base = site_cache_root(root)
    found = sorted(p.parent for p in base.glob(f"*/{PipelineFile.PROVENANCE.value}"))
    if params_id is not None:
        chosen = base / params_id
        if chosen in found:
            return chosen
        raise PipelineError(
            f"{chosen}: holds no {PipelineFile.PROVENANCE.value}; choose one of "
            f"{[p.name for p in found] or 'none'} or run `neurofed site preprocess {root}` first"
        )
    if not found:
        raise PipelineError(
            f"{base}: nothing preprocessed yet; run `neurofed site preprocess {root} --task T`"
        )
    if len(found) > 1:
        raise PipelineError(
            f"{base}: several preprocessings ({', '.join(p.name for p in found)}); pick one with "
            "--params-id"
        )
    return found[0]


def run_qc(
    root: Path,
    *,
    params_id: str | None = None,
    config: QCConfig | None = None,
    exclude_failures: bool = False,
) -> QCReport:
    """Re-judge the recorded measures of a preprocessed folder and rewrite ``qc.json``/``.csv``.

    With ``exclude_failures`` (the custodian's decision), every case that fails QC is written
    to ``<site>/neurofed/qc-exclusions.json`` (replacing it), and training skips it.
    """
    folder = _find_folder(Path(root), params_id)
    provenance = _provenance(folder)
    try:
        params = PreprocessParams.from_json(provenance["params"])
        cases = dict(provenance["cases"])
        tables = _evaluate(cases, config or QCConfig.for_spacing(params.spacing))
    except (KeyError, TypeError, ValueError) as exc:
        raise PipelineError(
            f"{folder / PipelineFile.PROVENANCE}: unusable ({exc}); {_RERUN}"
        ) from exc
    _write_tables(folder, tables, folder.name)
    merged = tuple(row for table in tables.values() for row in table.rows)
    table = QCTable(next(iter(tables.values())).config if tables else QCConfig(), merged)
    exclusions = None
    if exclude_failures:
        exclusions = _exclusions(tables)
        _write_json(
            _exclusions_path(Path(root)),
            {
                "format": PROVENANCE_FORMAT,
                "written_by": f"neurofed {__version__} site qc --exclude-failures",
                "params_id": folder.name,
                "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "excluded": [e.to_json() for e in exclusions],
            },
        )
    return QCReport(folder, table, exclusions)
