"""File-name helpers shared by the layout readers (private to :mod:`neurofed.data.layouts`).

Paths are always handled lexically: a symlink inside the site root keeps its in-root path, so
that :mod:`neurofed.data.checks` can see where it points and flag escapes.

Examples
--------
>>> nifti_stem("BraTS2021_00001_t1.nii.gz"), nifti_stem("notes.txt")
('BraTS2021_00001_t1', None)
>>> is_junk("._BRATS_001.nii.gz"), is_junk(".DS_Store"), is_junk("t1.nii.gz")
(True, True, False)
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from pathlib import Path, PurePosixPath
from typing import Any, Literal

from neurofed.data.clinical import (
    CLINICAL_SUFFIXES,
    ClinicalTableError,
    column_field,
    find_id_column,
    join_clinical,
    read_clinical_table,
    read_rows,
)
from neurofed.data.modalities import normalise_modality
from neurofed.data.nifti import NIFTI_SUFFIXES
from neurofed.data.subject import Problem, Subject
from neurofed.keys import Modality, ProblemKind, Severity, SiteFile

__all__ = [
    "DATASET_JSON",
    "attach_clinical",
    "column_modality",
    "dataset_kind",
    "find_clinical_table",
    "is_junk",
    "layout_error",
    "load_dataset_json",
    "majority_modalities",
    "nifti_stem",
    "site_path",
    "sort_subjects",
    "unknown_file",
    "walk_files",
]

DATASET_JSON = "dataset.json"
_HERE = PurePosixPath()
_JUNK_NAMES = frozenset({".DS_Store", "Thumbs.db", "desktop.ini"})


def is_junk(name: str) -> bool:
    """Whether ``name`` is a leftover (macOS ``._*``, ``.DS_Store``, Office ``~$`` locks, ...)."""
    return name.startswith(("._", "~$")) or name in _JUNK_NAMES


def nifti_stem(name: str) -> str | None:
    """``name`` without its ``.nii.gz`` / ``.nii`` ending, or None when it is not a NIfTI name."""
    for suffix in NIFTI_SUFFIXES:
        if name.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)]
    return None


def walk_files(root: Path, under: PurePosixPath = _HERE) -> Iterator[PurePosixPath]:
    """Every non-junk file below ``root / under``, as sorted POSIX paths relative to ``root``.

    Symlinked folders are followed (except into one of their own ancestors, so link loops end)
    and reported by their in-root path; a folder linked twice is listed twice. Dangling
    symlinks are listed like files. Hidden folders and neurofed's own output folder
    (``<root>/neurofed``) are skipped.
    """

    def visit(relative: PurePosixPath, ancestors: frozenset[str]) -> Iterator[PurePosixPath]:
        folder = root / relative
        real = os.path.realpath(folder)  # loop guard only; reported paths stay lexical
        if real in ancestors:
            return
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if is_junk(entry.name):
                continue
            child = relative / entry.name
            if entry.is_dir():
                skip = entry.name.startswith(".") or child == PurePosixPath(SiteFile.FOLDER)
                if not skip:
                    yield from visit(child, ancestors | {real})
            else:
                yield child

    yield from visit(under, frozenset())


def unknown_file(path: PurePosixPath, why: str, fix: str) -> Problem:
    """A WARNING that ``path`` (a NIfTI) was not placed in any subject."""
    return Problem(
        kind=ProblemKind.UNKNOWN_FILE,
        severity=Severity.WARNING,
        path=str(path),
        message=f"file not used: {why}",
        fix=fix,
    )


def site_path(root: Path, text: str, base: PurePosixPath = _HERE) -> PurePosixPath:
    """The path a table or ``dataset.json`` names, relative to ``root`` where it can be.

    Relative paths are taken from ``base`` (the table's folder inside root) and keep any ``..``;
    absolute paths lexically inside ``root`` become relative, other absolute paths stay absolute.
    Nothing is resolved, so the checker can still see an escape.

    Examples
    --------
    >>> root = Path("/site")
    >>> [str(site_path(root, t)) for t in ("./a/t1.nii.gz", "../b.nii", "/site/c.nii", "/x.nii")]
    ['a/t1.nii.gz', '../b.nii', 'c.nii', '/x.nii']
    """
    path = PurePosixPath(text.strip().replace("\\", "/"))
    if not path.is_absolute():
        return base / path
    for candidate in (root.absolute(), root.resolve()):
        anchor = PurePosixPath(candidate.as_posix())
        if path.is_relative_to(anchor):
            return path.relative_to(anchor)
    return path


def sort_subjects(subjects: Iterable[Subject]) -> tuple[Subject, ...]:
    """Subjects sorted by id, duplicates kept and ordered by their first file."""
    return tuple(sorted(subjects, key=lambda s: (s.subject_id, [str(p) for p in s.files()])))


def majority_modalities(subjects: Iterable[Subject]) -> tuple[Modality, ...]:
    """Modalities that more than half of ``subjects`` have (for layouts that declare none)."""
    listed = list(subjects)
    counts = Counter(m for s in listed for m in s.modalities)
    return tuple(m for m in Modality if counts[m] * 2 > len(listed))


def load_dataset_json(root: Path) -> tuple[dict[str, Any] | None, tuple[Problem, ...]]:
    """Parse ``root/dataset.json``; on failure return None and a LAYOUT error saying why."""
    path = root / DATASET_JSON
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, (layout_error(f"{DATASET_JSON} is not readable JSON ({exc})", _JSON_FIX),)
    if not isinstance(data, dict):
        message = f"{DATASET_JSON} holds a {type(data).__name__}, not a JSON object"
        return None, (layout_error(message, _JSON_FIX),)
    return data, ()


_JSON_FIX = "repair dataset.json (validate it with `python -m json.tool dataset.json`)"


def layout_error(message: str, fix: str, path: str = DATASET_JSON) -> Problem:
    """A site-wide LAYOUT error (broken metadata)."""
    return Problem(kind=ProblemKind.LAYOUT, message=message, fix=fix, path=path)


_CHANNEL_FILE = re.compile(r"_\d{4}$")


def dataset_kind(root: Path) -> Literal["msd", "nnunet"] | None:
    """Which ``dataset.json`` family ``root`` holds: MSD (or nnU-Net v1), nnU-Net v2, or none.

    Decided by the JSON keys (``channel_names`` is nnU-Net v2; ``modality`` / ``training`` is
    MSD); when the JSON is broken, by whether ``imagesTr`` holds ``<case>_0000`` channel files.
    """
    if not (root / DATASET_JSON).is_file():
        return None
    data, _ = load_dataset_json(root)
    if data is not None:
        if "channel_names" in data:
            return "nnunet"
        if "modality" in data or "training" in data:
            return "msd"
    images = root / "imagesTr"
    names = sorted(os.listdir(images)) if images.is_dir() else []
    stems = [s for s in (nifti_stem(n) for n in names if not is_junk(n)) if s is not None]
    if data is None and any(_CHANNEL_FILE.search(s) for s in stems):
        return "nnunet"
    return "msd" if data is None else None


def column_modality(name: str) -> Modality | None:
    """The modality an image-path column stands for (``'T1ce_path'``, ``'flair file'``)."""
    stem = re.sub(r"(?:[\s_\-]*(?:path|file|filename|nifti))+$", "", name.strip().lower())
    return normalise_modality(stem) if stem else None


def _is_clinical(path: Path) -> bool:
    try:
        header, _ = read_rows(path, max_rows=1)
    except ClinicalTableError:
        return False
    has_field = any(column_field(h) is not None for h in header)
    no_images = all(column_modality(h) is None for h in header)
    return find_id_column(header) is not None and has_field and no_images


def find_clinical_table(root: Path) -> tuple[Path | None, tuple[Problem, ...]]:
    """The clinical table at ``root`` (id column, a clinical column, no image columns), if any.

    When several qualify the first by name is used, with a WARNING naming the others.
    """
    candidates = [
        p
        for p in sorted(Path(root).iterdir())
        if p.suffix.lower() in CLINICAL_SUFFIXES and not is_junk(p.name) and p.is_file()
    ]
    tables = [p for p in candidates if _is_clinical(p)]
    if len(tables) <= 1:
        return (tables[0] if tables else None), ()
    others = ", ".join(p.name for p in tables[1:])
    problem = Problem(
        kind=ProblemKind.LAYOUT,
        severity=Severity.WARNING,
        path=tables[0].name,
        message=f"several clinical tables at the site root; using {tables[0].name}, not {others}",
        fix="merge them into one table, or pass clinical_table=PATH to choose one",
    )
    return tables[0], (problem,)


def attach_clinical(
    root: Path, subjects: Iterable[Subject], clinical_table: Path | None = None
) -> tuple[tuple[Subject, ...], tuple[Problem, ...]]:
    """Join ``clinical_table`` (or the one found at ``root``) to ``subjects``."""
    problems: tuple[Problem, ...] = ()
    if clinical_table is None:
        clinical_table, problems = find_clinical_table(root)
        if clinical_table is None:
            return tuple(subjects), problems
    table = read_clinical_table(clinical_table, root=root)
    if not table.columns:
        problems += (
            Problem(
                kind=ProblemKind.LAYOUT,
                severity=Severity.WARNING,
                path=table.path,
                message="no clinical column recognised",
                fix="name the columns e.g. age, sex, grade, idh, codel_1p19q, mgmt, sdmt",
            ),
        )
    joined, join_problems = join_clinical(subjects, table)
    return joined, problems + join_problems
