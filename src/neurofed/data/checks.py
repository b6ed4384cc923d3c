"""Per-case checks behind ``neurofed site check``: can every file of a case be used?

:func:`check_case` opens each file of one :class:`~neurofed.data.subject.Subject` once, reads all
of its voxels (a truncated gzip often passes a header-only read) and reports every problem it
finds as a :class:`~neurofed.data.subject.Problem` that names the file, the value and the fix.
Only shapes and affines are kept once a volume has been checked, so memory stays at one file.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path, PurePosixPath
>>> from neurofed.data.nifti import write_image
>>> from neurofed.data.subject import ImageRef, Subject
>>> root = Path(tempfile.mkdtemp())
>>> write_image(root / "c1" / "c1_t1.nii.gz", np.ones((4, 4, 4)), np.eye(4))
>>> subject = Subject("c1", {Modality.T1: ImageRef(PurePosixPath("c1/c1_t1.nii.gz"))})
>>> report = check_case(root, subject, expected=(Modality.T1, Modality.FLAIR))
>>> report.status, [p.kind.value for p in report.problems]
(<CaseStatus.EXCLUDED: 'excluded'>, ['missing-modality'])
"""

from __future__ import annotations

import itertools
import math
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path, PurePosixPath
from typing import Any

import numpy as np

from neurofed.data.file_checks import FileUse, Grid, check_file, format_shape
from neurofed.data.modalities import normalise_modality
from neurofed.data.nifti import MAX_VOXEL_BYTES
from neurofed.data.subject import Problem, Subject
from neurofed.keys import Layout, Modality, ProblemKind, Severity

__all__ = ["CaseReport", "CaseStatus", "CheckSettings", "check_case", "find_duplicates"]

_K = ProblemKind


class CaseStatus(StrEnum):
    """Outcome of checking one case."""

    OK = "ok"
    WARNING = "warning"  # kept; something was noted or dropped
    EXCLUDED = "excluded"  # at least one ERROR


def _as_modality(value: object) -> Modality:
    found = normalise_modality(str(value))
    if found is None:
        names = ", ".join(m.value for m in Modality)
        raise ValueError(f"required_modalities: {value!r} is not a modality; use one of {names}")
    return found


@dataclass(frozen=True)
class CheckSettings:
    """What :func:`check_case` demands of a case.

    Attributes
    ----------
    required_modalities:
        Modalities every case must have; None means the layout's expected modalities.
    affine_tolerance_mm:
        Two volumes share a grid when their shapes are equal and their 8 corner voxel centres
        map to world points at most this far apart.
    require_label:
        Whether a case without a label map is excluded.
    max_voxel_bytes:
        The most voxel bytes one file may declare; a larger header is refused before anything
        is allocated (:data:`~neurofed.data.nifti.MAX_VOXEL_BYTES` by default).

    Examples
    --------
    >>> CheckSettings(required_modalities=("flair",)).required_modalities
    (<Modality.FLAIR: 'FLAIR'>,)
    """

    required_modalities: tuple[Modality, ...] | None = None
    affine_tolerance_mm: float = 0.1
    require_label: bool = False
    max_voxel_bytes: int = MAX_VOXEL_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.max_voxel_bytes, int) or self.max_voxel_bytes < 1:
            raise ValueError(
                f"max_voxel_bytes={self.max_voxel_bytes!r}: give a positive number of bytes"
            )
        if self.required_modalities is not None:
            modalities = tuple(_as_modality(m) for m in self.required_modalities)
            object.__setattr__(self, "required_modalities", modalities)
        tolerance = float(self.affine_tolerance_mm)
        if not math.isfinite(tolerance) or tolerance < 0:
            raise ValueError(
                f"affine_tolerance_mm={self.affine_tolerance_mm!r}: must be a distance in mm "
                "of at least 0; 0.1 suits scans that were co-registered"
            )
        object.__setattr__(self, "affine_tolerance_mm", tolerance)

    def to_json(self) -> dict[str, Any]:
        required = self.required_modalities
        return {
            "required_modalities": None if required is None else [m.value for m in required],
            "affine_tolerance_mm": self.affine_tolerance_mm,
            "require_label": self.require_label,
            "max_voxel_bytes": self.max_voxel_bytes,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CheckSettings:
        required = data.get("required_modalities")
        return cls(
            required_modalities=None if required is None else tuple(required),
            affine_tolerance_mm=float(data.get("affine_tolerance_mm", 0.1)),
            require_label=bool(data.get("require_label", False)),
            max_voxel_bytes=int(data.get("max_voxel_bytes", MAX_VOXEL_BYTES)),
        )


@dataclass(frozen=True)
class CaseReport:
    """Everything found about one case.

    ``cached`` marks a result reused from an earlier run; ``seconds`` is then that run's time.
    """

    subject_id: str
    problems: tuple[Problem, ...]
    seconds: float = 0.0
    cached: bool = False

    @property
    def status(self) -> CaseStatus:
        severities = {p.severity for p in self.problems}
        if Severity.ERROR in severities:
            return CaseStatus.EXCLUDED
        return CaseStatus.WARNING if severities else CaseStatus.OK

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "status": self.status.value,
            "seconds": round(self.seconds, 4),
            "cached": self.cached,
            "problems": [p.to_json() for p in self.problems],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> CaseReport:
        return cls(
            subject_id=data["subject_id"],
            problems=tuple(Problem.from_json(p) for p in data["problems"]),
            seconds=float(data.get("seconds", 0.0)),
            cached=bool(data.get("cached", False)),
        )


def _error(kind: ProblemKind, sid: str, path: str | None, message: str, fix: str) -> Problem:
    return Problem(kind, message, fix, subject_id=sid, path=path)


def check_case(
    root: Path,
    subject: Subject,
    settings: CheckSettings = CheckSettings(),
    expected: Sequence[Modality] = (),
    *,
    layout: Layout | None = None,
) -> CaseReport:
    """Check every file of one case.

    Parameters
    ----------
    root:
        The site root; the subject's paths are relative to it and must stay inside it.
    subject:
        The case to check.
    settings:
        What is required of the case.
    expected:
        The modalities the site's layout expects; required when
        ``settings.required_modalities`` is None.
    layout:
        The site's layout, used only to say what a missing modality's file should be called.

    Returns
    -------
    CaseReport
        Status ``excluded`` when any problem is an ERROR.

    Examples
    --------
    >>> import tempfile, numpy as np
    >>> from pathlib import Path, PurePosixPath
    >>> from neurofed.data.nifti import write_image
    >>> from neurofed.data.subject import ImageRef, Subject
    >>> root = Path(tempfile.mkdtemp())
    >>> write_image(root / "t1.nii.gz", np.zeros((3, 3, 3)), np.eye(4))
    >>> t1 = ImageRef(PurePosixPath("t1.nii.gz"))
    >>> report = check_case(root, Subject("s1", {Modality.T1: t1}))
    >>> [(p.kind.value, p.path) for p in report.problems]
    [('all-zero', 't1.nii.gz')]
    """
    start = time.perf_counter()
    root, sid = Path(root), subject.subject_id
    required = settings.required_modalities
    problems = _missing_problems(subject, expected if required is None else required, layout)
    if settings.require_label and subject.label is None:
        message = "case has no label map, and this check requires one"
        fix = "add the case's segmentation with the name the layout expects"
        problems.append(_error(_K.MISSING_FILE, sid, None, message, fix))
    uses: dict[PurePosixPath, list[FileUse]] = {}
    for modality in subject.modalities:
        ref = subject.images[modality]
        uses.setdefault(ref.path, []).append(FileUse(modality, ref))
    if subject.label is not None:
        uses.setdefault(subject.label.path, []).append(FileUse(None, subject.label))
    grids: dict[Modality | None, Grid] = {}
    root_resolved = root.resolve()  # once per case, not once per file
    for path, file_uses in uses.items():  # each file is opened and decompressed once
        found, file_grids = check_file(
            root,
            path,
            file_uses,
            subject,
            root_resolved=root_resolved,
            max_voxel_bytes=settings.max_voxel_bytes,
        )
        problems.extend(found)
        grids.update(file_grids)
    problems.extend(_grid_problems(subject, grids, settings.affine_tolerance_mm))
    return CaseReport(sid, tuple(problems), time.perf_counter() - start)


# --- naming -----------------------------------------------------------------------------------

_SUFFIXES: Mapping[Layout, Mapping[Modality, str]] = {
    Layout.BRATS_2021: dict(zip(Modality, ("_t1", "_t1ce", "_t2", "_flair"), strict=True)),
    Layout.BRATS_2023: dict(zip(Modality, ("-t1n", "-t1c", "-t2w", "-t2f"), strict=True)),
    Layout.BIDS: dict(zip(Modality, ("_T1w", "_ce-gadolinium_T1w", "_T2w", "_FLAIR"), strict=True)),
}


def _expected_name(layout: Layout | None, subject: Subject, modality: Modality) -> str | None:
    """What ``layout`` calls the file of ``modality`` for this case, when it can be said."""
    if layout is Layout.TABLE:
        return f"a `{modality.value}` column in the site table"
    if layout is Layout.MSD:
        return f"a channel of the case's 4-D image, listed as {modality.value} in dataset.json"
    if not subject.images or layout is None:
        return None
    folder = next(iter(subject.images.values())).path.parent
    sid = subject.subject_id
    if layout is Layout.NNUNET_V2:
        return f"`{folder / sid}_XXXX.nii.gz` (XXXX = its channel index in dataset.json)"
    if layout is Layout.BIDS:
        return f"a file ending `{_SUFFIXES[layout][modality]}.nii.gz` in `{folder}`"
    return f"`{folder / sid}{_SUFFIXES[layout][modality]}.nii.gz`"


def _missing_problems(
    subject: Subject, required: Sequence[Modality], layout: Layout | None
) -> list[Problem]:
    sid = subject.subject_id
    if not subject.images:
        fix = "add the case's scans with the names the layout expects, or remove the case"
        return [_error(_K.MISSING_MODALITY, sid, None, "case has no image at all", fix)]
    problems = []
    for modality in (m for m in required if m not in subject.images):
        hint = _expected_name(layout, subject, modality)
        where = f"; the {layout.value} layout expects it as {hint}" if layout and hint else ""
        has = ", ".join(m.value for m in subject.modalities)
        message = f"required modality {modality.value} is missing (case has {has}){where}"
        fix = (
            f"add the {modality.value} scan under that name, or leave {modality.value} out of "
            "the required modalities if the study does not use it"
        )
        problems.append(_error(_K.MISSING_MODALITY, sid, None, message, fix))
    return problems


# --- grids ------------------------------------------------------------------------------------


def _grid_gap(a: Grid, b: Grid) -> float | None:
    """Largest distance in mm between corresponding corner voxel centres; None if shapes differ."""
    if a.shape != b.shape:
        return None
    corners = np.array(list(itertools.product(*[(0, n - 1) for n in a.shape])), dtype=float)
    points = np.c_[corners, np.ones(len(corners))]  # (8, 4)
    offsets = points @ a.affine.T - points @ b.affine.T  # (8, 4)
    return float(np.sqrt((offsets[:, :3] ** 2).sum(axis=1)).max())


def _grid_problems(
    subject: Subject, grids: Mapping[Modality | None, Grid], tolerance: float
) -> list[Problem]:
    modalities = [m for m in subject.modalities if m in grids]
    if not modalities:
        return []

    def agrees(a: Modality, b: Modality) -> bool:
        gap = _grid_gap(grids[a], grids[b])
        return gap is not None and gap <= tolerance

    # The reference is the grid most modalities share, so one odd scan is the one reported.
    reference = max(modalities, key=lambda m: sum(agrees(m, o) for o in modalities))
    ref, sid = grids[reference], subject.subject_id
    problems = []
    for modality in [*modalities, None]:
        if modality is reference or modality not in grids:
            continue
        grid = grids[modality]
        gap = _grid_gap(ref, grid)
        if gap is not None and gap <= tolerance:
            continue
        if gap is None:
            shapes = (
                f"{format_shape(grid.shape)} but {reference.value} has {format_shape(ref.shape)}"
            )
            detail = f"has shape {shapes}"
        else:
            detail = (
                f"lies {gap:.2f} mm off the {reference.value} grid (tolerance {tolerance:g} mm)"
            )
        if modality is None:
            path = str(subject.label.path) if subject.label is not None else None
            fix = (
                f"resample the label map onto the {reference.value} grid with nearest-neighbour "
                "interpolation, or check that it belongs to this case"
            )
            problems.append(_error(_K.LABEL_GRID, sid, path, f"label map {detail}", fix))
        else:
            path = str(subject.images[modality].path)
            fix = (
                f"co-register and resample {modality.value} onto {reference.value}, or fix its "
                "header if the scans are in fact aligned"
            )
            message = f"{modality.value} {detail}"
            problems.append(_error(_K.GRID_MISMATCH, sid, path, message, fix))
    return problems


# --- duplicates -------------------------------------------------------------------------------


def find_duplicates(subjects: Sequence[Subject]) -> tuple[Problem, ...]:
    """One DUPLICATE_SUBJECT error per occurrence of every id that occurs more than once.

    Problems come in the order of ``subjects``, one per duplicated occurrence, with ``path`` the
    occurrence's first file and a message naming the other occurrences' files.

    Examples
    --------
    >>> from pathlib import PurePosixPath
    >>> from neurofed.data.subject import ImageRef, Subject
    >>> a = Subject("c1", {Modality.T1: ImageRef(PurePosixPath("a/c1_t1.nii.gz"))})
    >>> b = Subject("c1", {Modality.T1: ImageRef(PurePosixPath("b/c1_t1.nii.gz"))})
    >>> [p.path for p in find_duplicates([a, b])]
    ['a/c1_t1.nii.gz', 'b/c1_t1.nii.gz']
    """
    counts = Counter(s.subject_id for s in subjects)
    problems = []
    for index, subject in enumerate(subjects):
        sid = subject.subject_id
        if counts[sid] < 2:
            continue
        others = "; ".join(
            ", ".join(str(p) for p in other.files()) or "no files"
            for j, other in enumerate(subjects)
            if other.subject_id == sid and j != index
        )
        files = subject.files()
        message = f"subject id {sid!r} occurs {counts[sid]} times; the other copies use {others}"
        fix = "give every case its own id (rename one copy's files) or remove the copy"
        problems.append(
            _error(_K.DUPLICATE_SUBJECT, sid, str(files[0]) if files else None, message, fix)
        )
    return tuple(problems)
