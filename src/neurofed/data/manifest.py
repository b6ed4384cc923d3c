"""The site manifest: which cases passed ``neurofed site check``, and the report saying why.

:func:`check_site` reads a site (or takes an already-read :class:`LayoutScan`), checks every case,
and writes ``<root>/neurofed/manifest.json`` (the cases training may use) and
``<root>/neurofed/check-report.json`` (every case's problems, plus a cache so that a re-run only
re-reads cases whose files changed). Paths in both files are relative to the site root; neither
holds a voxel value.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path, PurePosixPath
>>> from neurofed.data.layouts.base import LayoutScan
>>> from neurofed.data.nifti import write_image
>>> from neurofed.data.subject import ImageRef, Subject
>>> root = Path(tempfile.mkdtemp())
>>> write_image(root / "c1_t1.nii.gz", np.ones((3, 3, 3)), np.eye(4))
>>> write_image(root / "c2_t1.nii.gz", np.zeros((3, 3, 3)), np.eye(4))
>>> cases = tuple(
...     Subject(c, {Modality.T1: ImageRef(PurePosixPath(f"{c}_t1.nii.gz"))}) for c in ("c1", "c2")
... )
>>> report = check_site(root, scan=LayoutScan(Layout.TABLE, cases, (), (Modality.T1,)))
>>> report.excluded_ids, report.exit_code, [s.subject_id for s in load_manifest(root).subjects]
(('c2',), 1, ['c1'])
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

from neurofed import __version__
from neurofed.artifacts import write_json_atomically
from neurofed.data.check_runner import read_cache, run_checks
from neurofed.data.checks import CaseReport, CaseStatus, CheckSettings, find_duplicates
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.modalities import normalise_modality
from neurofed.data.subject import Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity, SiteFile
from neurofed.types import ProgressCallback

T = TypeVar("T")

__all__ = [
    "FORMAT_VERSION",
    "Manifest",
    "ManifestError",
    "SiteCheckReport",
    "check_site",
    "load_manifest",
    "read_site_file",
    "site_file",
    "write_site_file",
]

_DEFAULT_SETTINGS = CheckSettings()

#: Version of the layout of manifest.json / check-report.json; a change re-checks every case.
FORMAT_VERSION = 1


class ManifestError(ValueError):
    """The site manifest is missing or unusable; the message names the file and the fix."""


def site_file(root: Path, name: SiteFile) -> Path:
    """Where neurofed keeps ``name`` for the site at ``root``: ``<root>/neurofed/<name>``."""
    return Path(root) / SiteFile.FOLDER.value / SiteFile(name).value


def write_site_file(root: Path, name: SiteFile, data: Mapping[str, Any]) -> Path:
    """Write ``data`` as JSON to :func:`site_file` atomically (a crash never leaves half a file)."""
    return write_json_atomically(site_file(root, name), data, allow_nan=True)


def read_site_file(
    root: Path,
    name: SiteFile,
    parse: Callable[[Any], T],
    error: type[ValueError],
    fix: str,
) -> T:
    """Parse the JSON of :func:`site_file`, raising ``error`` that names the file and the fix.

    A missing file says to run the check first; an unusable one gives ``fix``.
    """
    path = site_file(root, name)
    if not path.is_file():
        raise error(f"{path}: not found; run `neurofed site check {root}` first")
    try:
        return parse(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise error(f"{path}: unusable ({type(exc).__name__}: {exc}); {fix}") from exc


@dataclass(frozen=True)
class Manifest:
    """The cases of one site that passed the check, and how the check was made.

    ``subjects`` holds only included cases; ``excluded`` names the others, whose reasons are in
    ``problems`` (which also holds the warnings of kept cases and site-level problems).
    """

    layout: Layout
    expected_modalities: tuple[Modality, ...]
    subjects: tuple[Subject, ...]
    excluded: tuple[str, ...]
    neurofed_version: str = __version__
    settings: CheckSettings = field(default_factory=CheckSettings)
    problems: tuple[Problem, ...] = ()
    created: str = ""  # ISO 8601, UTC
    clinical_table_sha256: str | None = None

    def subject(self, subject_id: str) -> Subject:
        """The included subject ``subject_id``."""
        for subject in self.subjects:
            if subject.subject_id == subject_id:
                return subject
        state = "was excluded" if subject_id in self.excluded else "is not at this site"
        raise KeyError(f"subject {subject_id!r} {state}; see check-report.json for why")

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "neurofed_version": self.neurofed_version,
            "created": self.created,
            "layout": self.layout.value,
            "expected_modalities": [m.value for m in self.expected_modalities],
            "settings": self.settings.to_json(),
            "clinical_table_sha256": self.clinical_table_sha256,
            "subjects": [s.to_json() for s in self.subjects],
            "excluded": list(self.excluded),
            "problems": [p.to_json() for p in self.problems],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Manifest:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version is {version!r}, this neurofed reads {FORMAT_VERSION}")
        return cls(
            layout=Layout(data["layout"]),
            expected_modalities=tuple(Modality(m) for m in data["expected_modalities"]),
            subjects=tuple(Subject.from_json(s) for s in data["subjects"]),
            excluded=tuple(data["excluded"]),
            neurofed_version=data["neurofed_version"],
            settings=CheckSettings.from_json(data.get("settings", {})),
            problems=tuple(Problem.from_json(p) for p in data.get("problems", [])),
            created=data.get("created", ""),
            clinical_table_sha256=data.get("clinical_table_sha256"),
        )


@dataclass(frozen=True)
class SiteCheckReport:
    """Everything ``neurofed site check`` found at one site."""

    manifest: Manifest
    cases: tuple[CaseReport, ...]
    site_problems: tuple[Problem, ...] = ()  # problems that belong to no single case
    seconds: float = 0.0

    @property
    def excluded_ids(self) -> tuple[str, ...]:
        ids = (c.subject_id for c in self.cases if c.status is CaseStatus.EXCLUDED)
        return tuple(dict.fromkeys(ids))

    @property
    def problems(self) -> tuple[Problem, ...]:
        """Site problems, then every case's problems in case order."""
        return self.site_problems + tuple(p for c in self.cases for p in c.problems)

    @property
    def warnings(self) -> tuple[Problem, ...]:
        return tuple(p for p in self.problems if p.severity is Severity.WARNING)

    @property
    def exit_code(self) -> int:
        """0 when every case was kept and the site has no error, else 1."""
        site_error = any(p.severity is Severity.ERROR for p in self.site_problems)
        return 1 if self.excluded_ids or site_error else 0

    def to_json(self) -> dict[str, Any]:
        """The report for ``--json`` output: ids, file paths and problems; no voxel values."""
        statuses = [c.status for c in self.cases]
        return {
            "format_version": FORMAT_VERSION,
            "neurofed_version": self.manifest.neurofed_version,
            "created": self.manifest.created,
            "layout": self.manifest.layout.value,
            "expected_modalities": [m.value for m in self.manifest.expected_modalities],
            "manifest": f"{SiteFile.FOLDER.value}/{SiteFile.MANIFEST.value}",
            "seconds": round(self.seconds, 3),
            "exit_code": self.exit_code,
            "summary": {
                "cases": len(self.cases),
                **{s.value: statuses.count(s) for s in CaseStatus},
                "cached": sum(c.cached for c in self.cases),
            },
            "excluded": list(self.excluded_ids),
            "site_problems": [p.to_json() for p in self.site_problems],
            "cases": [c.to_json() for c in self.cases],
        }


def check_site(
    root: Path,
    *,
    layout: Layout | None = None,
    clinical_table: Path | None = None,
    label_convention: LabelConvention | None = None,
    scan: LayoutScan | None = None,
    settings: CheckSettings = _DEFAULT_SETTINGS,
    workers: int = 1,
    progress: ProgressCallback | None = None,
    force: bool = False,
) -> SiteCheckReport:
    """Check every case of the site at ``root`` and write its manifest and check report.

    Parameters
    ----------
    root:
        The site's data folder.
    layout, clinical_table, label_convention:
        Passed to the layout reader (the convention applies to a table of files without a
        ``label_convention`` column); ignored when ``scan`` is given.
    scan:
        An already-read site; when None the site is read with
        :func:`neurofed.data.layouts.detect.read_site`.
    settings:
        What every case must satisfy.
    workers:
        Processes checking cases in parallel; 1 checks in this process.
    progress:
        Called as ``progress(done, total, subject_id)`` after each case.
    force:
        Re-check every case even when its files and the settings are unchanged.

    Returns
    -------
    SiteCheckReport
        Its ``exit_code`` is 1 when a case was excluded or the site has an error.

    Examples
    --------
    See the module docstring.
    """
    start = time.perf_counter()
    root = Path(root)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such folder; pass the folder holding the site data")
    if workers < 1:
        raise ValueError(f"workers={workers}: must be at least 1 (1 checks cases one by one)")
    if scan is None:
        from neurofed.data.layouts.detect import read_site  # the readers' imports are heavy

        scan = read_site(
            root, layout=layout, clinical_table=clinical_table, label_convention=label_convention
        )
    chosen = settings.required_modalities
    checked, cache = run_checks(
        root,
        scan.subjects,
        settings=settings,
        layout=scan.layout,
        required=scan.expected_modalities if chosen is None else chosen,
        cache=None if force else read_cache(site_file(root, SiteFile.CHECK_REPORT)),
        workers=workers,
        progress=progress,
    )
    cases = _merge(scan, checked)
    ids = {s.subject_id for s in scan.subjects}
    site_problems = tuple(p for p in scan.problems if p.subject_id not in ids)
    if not scan.subjects:
        message = f"no cases found in the {scan.layout.value} layout"
        fix = "point the check at the folder that holds the cases, or name the layout"
        site_problems += (Problem(ProblemKind.LAYOUT, message, fix),)
    excluded = {c.subject_id for c in cases if c.status is CaseStatus.EXCLUDED}
    manifest = Manifest(
        layout=scan.layout,
        expected_modalities=scan.expected_modalities,
        subjects=tuple(s for s in scan.subjects if s.subject_id not in excluded),
        excluded=tuple(dict.fromkeys(c.subject_id for c in cases if c.subject_id in excluded)),
        settings=settings,
        problems=site_problems + tuple(p for c in cases for p in c.problems),
        created=datetime.now(UTC).isoformat(timespec="seconds"),
        clinical_table_sha256=_sha256(clinical_table),
    )
    report = SiteCheckReport(manifest, cases, site_problems, time.perf_counter() - start)
    write_site_file(root, SiteFile.MANIFEST, manifest.to_json())
    entries = {key: case.to_json() for key, case in cache.items()}
    write_site_file(root, SiteFile.CHECK_REPORT, report.to_json() | {"cache": entries})
    return report


def load_manifest(root: Path) -> Manifest:
    """Read ``<root>/neurofed/manifest.json``.

    Raises
    ------
    ManifestError
        When the file is missing or cannot be read, naming the file and the fix.

    Examples
    --------
    >>> import tempfile
    >>> load_manifest(Path(tempfile.mkdtemp()))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.data.manifest.ManifestError: ...manifest.json: not found; run `neurofed site check ...
    """
    return read_site_file(
        root,
        SiteFile.MANIFEST,
        Manifest.from_json,
        ManifestError,
        f"re-create it with `neurofed site check {root} --force`",
    )


# --- internals --------------------------------------------------------------------------------


def _sha256(path: Path | None) -> str | None:
    if path is None or not Path(path).is_file():
        return None
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def _already_reported(problem: Problem, reader: Sequence[Problem]) -> bool:
    """Whether the layout reader already reported what ``problem`` says."""
    for known in reader:
        if known.kind is not problem.kind:
            continue
        if problem.path is not None and known.path == problem.path:
            return True
        if problem.kind is ProblemKind.MISSING_MODALITY and problem.path is None:
            named = [m for m in Modality if f"modality {m.value} " in problem.message]
            if named and _names(known.message, named[0]):
                return True
    return False


def _names(message: str, modality: Modality) -> bool:
    """Whether ``message`` names ``modality`` in any spelling (``FLAIR``, ``t2f``, ``T2-FLAIR``)."""
    words = re.split(r"[\s,;:()'\"`]+", message)
    return any(normalise_modality(w) is modality for w in words if w)


def _merge(scan: LayoutScan, checked: Sequence[CaseReport]) -> tuple[CaseReport, ...]:
    """Reader problems, then check problems, then duplicate-id errors, for every case."""
    by_subject: dict[str, list[Problem]] = {}
    for problem in scan.problems:
        if problem.subject_id is not None:
            by_subject.setdefault(problem.subject_id, []).append(problem)
    duplicates = iter(find_duplicates(scan.subjects))  # one per duplicated occurrence, in order
    counts: dict[str, int] = {}
    for subject in scan.subjects:
        counts[subject.subject_id] = counts.get(subject.subject_id, 0) + 1
    cases = []
    for subject, result in zip(scan.subjects, checked, strict=True):
        reader = by_subject.get(subject.subject_id, [])
        own = [p for p in result.problems if not _already_reported(p, reader)]
        twin = [next(duplicates)] if counts[subject.subject_id] > 1 else []
        problems = (*reader, *own, *twin)
        cases.append(CaseReport(subject.subject_id, problems, result.seconds, result.cached))
    return tuple(cases)
