"""Run :func:`~neurofed.data.checks.check_case` over a site's cases, in parallel and incrementally.

A case's result depends only on its files (relative path, size, mtime_ns), its record (which
file is which modality, the label convention) and the check settings; :func:`case_key` hashes
exactly that, so :func:`run_checks` re-reads only the cases whose key is not in the cache.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path, PurePosixPath
>>> from neurofed.data.nifti import write_image
>>> from neurofed.data.subject import ImageRef, Subject
>>> root = Path(tempfile.mkdtemp())
>>> write_image(root / "t1.nii.gz", np.ones((3, 3, 3)), np.eye(4))
>>> cases = (Subject("c1", {Modality.T1: ImageRef(PurePosixPath("t1.nii.gz"))}),)
>>> reports, cache = run_checks(root, cases, settings=CheckSettings(), layout=Layout.TABLE)
>>> again, _ = run_checks(root, cases, settings=CheckSettings(), layout=Layout.TABLE, cache=cache)
>>> reports[0].cached, again[0].cached
(False, True)
"""

from __future__ import annotations

import hashlib
import json
import multiprocessing
from collections.abc import Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import replace
from pathlib import Path, PurePosixPath
from typing import Any

from neurofed import __version__
from neurofed.data.checks import CaseReport, CheckSettings, check_case
from neurofed.data.subject import Problem, Subject
from neurofed.keys import Layout, Modality, ProblemKind
from neurofed.types import ProgressCallback

__all__ = ["CHECK_VERSION", "case_key", "read_cache", "run_checks"]

#: Bump when a check changes what it reports: every cached result then becomes stale.
CHECK_VERSION = 2  # 2: gzip CRC, header sizes, voxel sizes, affines, data types


def _stamp(root: Path, rel: PurePosixPath) -> list[Any]:
    """``[path, size, mtime_ns]`` of a case file; size and time are None when it is absent."""
    if rel.is_absolute() or ".." in rel.parts:
        return [str(rel), None, None]  # never looked at: the check reports it as an escape
    try:
        stat = (root / rel).stat()
    except OSError:
        return [str(rel), None, None]
    return [str(rel), stat.st_size, stat.st_mtime_ns]


def case_key(
    root: Path,
    subject: Subject,
    settings: CheckSettings,
    required: Sequence[Modality],
    layout: Layout | None,
) -> str:
    """Hash of everything a case's check result depends on.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import Path
    >>> from neurofed.data.subject import ImageRef
    >>> s = Subject("c1", {Modality.T1: ImageRef(PurePosixPath("t1.nii.gz"))})
    >>> root = Path(tempfile.mkdtemp())
    >>> key = case_key(root, s, CheckSettings(), (Modality.T1,), None)
    >>> key == case_key(root, s, CheckSettings(affine_tolerance_mm=1.0), (Modality.T1,), None)
    False
    """
    record = subject.to_json()
    del record["clinical"]  # clinical values are the reader's business, merged on every run
    payload = {
        "check": [__version__, CHECK_VERSION],
        "layout": None if layout is None else layout.value,
        "subject": record,
        "settings": settings.to_json(),
        "required": [m.value for m in required],
        "files": [_stamp(Path(root), p) for p in subject.files()],
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()


def read_cache(path: Path) -> dict[str, CaseReport]:
    """The ``cache`` section of a check report; empty when the file is missing or damaged."""
    try:
        entries = json.loads(Path(path).read_text(encoding="utf-8"))["cache"]
        return {key: CaseReport.from_json(entry) for key, entry in entries.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return {}  # no usable report: every case is checked afresh


def _crash_report(subject: Subject, exc: BaseException) -> CaseReport:
    message = f"checking this case failed unexpectedly ({type(exc).__name__}: {exc})"
    fix = "re-run with --workers 1; if it fails again, report this message to neurofed"
    problem = Problem(ProblemKind.UNREADABLE, message, fix, subject_id=subject.subject_id)
    return CaseReport(subject.subject_id, (problem,))


def _check_record(
    root: str,
    record: dict[str, Any],
    settings: CheckSettings,
    required: tuple[Modality, ...],
    layout: Layout | None,
) -> CaseReport:
    """Worker entry point: subjects travel as JSON (their mapping proxies do not pickle)."""
    return check_case(Path(root), Subject.from_json(record), settings, required, layout=layout)


def run_checks(
    root: Path,
    subjects: Sequence[Subject],
    *,
    settings: CheckSettings,
    layout: Layout | None,
    required: Sequence[Modality] = (),
    cache: Mapping[str, CaseReport] | None = None,
    workers: int = 1,
    progress: ProgressCallback | None = None,
) -> tuple[tuple[CaseReport, ...], dict[str, CaseReport]]:
    """Check every case, reusing ``cache`` entries whose key still matches.

    Returns the reports in the order of ``subjects`` (reused ones marked ``cached``) and the
    cache to store for the next run. A case whose check crashed gets an UNREADABLE error and is
    left out of the new cache, so it is retried next time.
    """
    root = Path(root)
    cache = {} if cache is None else cache
    keys = [case_key(root, s, settings, required, layout) for s in subjects]
    results: dict[int, CaseReport] = {}
    fresh: dict[str, CaseReport] = {}

    def finish(index: int, result: CaseReport, cacheable: bool = True) -> None:
        results[index] = result
        if cacheable:
            fresh[keys[index]] = replace(result, cached=False)
        if progress is not None:
            progress(len(results), len(subjects), subjects[index].subject_id)

    todo = []
    for index, subject in enumerate(subjects):
        hit = cache.get(keys[index])
        if hit is not None and hit.subject_id == subject.subject_id:
            finish(index, replace(hit, cached=True))
        else:
            todo.append(index)
    args = (settings, tuple(required), layout)
    if workers <= 1 or len(todo) < 2:
        for index in todo:
            try:
                finish(index, _check_record(str(root), subjects[index].to_json(), *args))
            except Exception as exc:  # one broken case never aborts the site
                finish(index, _crash_report(subjects[index], exc), cacheable=False)
    else:
        # spawn, not fork: the caller may hold threads (torch, a progress bar) a fork would copy.
        context = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(min(workers, len(todo)), mp_context=context) as pool:
            futures = {
                pool.submit(_check_record, str(root), subjects[i].to_json(), *args): i for i in todo
            }
            for future in as_completed(futures):
                index = futures[future]
                try:
                    finish(index, future.result())
                except Exception as exc:  # a crashed worker costs its case, not the site
                    finish(index, _crash_report(subjects[index], exc), cacheable=False)
    return tuple(results[i] for i in range(len(subjects))), fresh
