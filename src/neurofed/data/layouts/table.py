"""A plain table at the site root listing each subject's files (CSV, TSV or XLSX).

Columns: a subject id (``subject_id``, ``case_id``, ...), one path column per modality (``t1``,
``T1ce_path``, ``flair_file``, ...), optionally a label column (``label``, ``seg``,
``segmentation``, ``mask``, with or without ``_path``), a ``label_convention`` column, a
``group_id`` column and clinical columns (see :mod:`neurofed.data.clinical`). Relative paths are
taken from the table's folder; absolute paths inside the root become relative. Paths are never
resolved, so a ``..`` or an outside path stays visible to :mod:`neurofed.data.checks`.

Examples
--------
>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> _ = (root / "cases.csv").write_text(
...     "subject_id,t1_path,flair_path,mask,label_convention,age\\n"
...     "p1,p1/t1.nii.gz,p1/flair.nii.gz,p1/mask.nii.gz,binary-lesion,31\\n")
>>> scan = TableReader().read(root)
>>> s = scan.subjects[0]
>>> s.modalities, str(s.label.path), s.label_convention.value, s.clinical.age
((<Modality.T1: 'T1'>, <Modality.FLAIR: 'FLAIR'>), 'p1/mask.nii.gz', 'binary-lesion', 31.0)
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from neurofed.artifacts import shown as show_value
from neurofed.data.clinical import (
    ClinicalTableError,
    find_id_column,
    join_clinical,
    read_clinical_table,
    read_rows,
)
from neurofed.data.layouts._files import (
    column_modality,
    is_junk,
    majority_modalities,
    site_path,
    sort_subjects,
)
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.subject import Clinical, ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity

__all__ = ["TABLE_SUFFIXES", "TableReader", "manifest_tables"]

TABLE_SUFFIXES = (".csv", ".tsv", ".xlsx")
_NOT_MANIFESTS = frozenset({"participants.tsv"})
_LABEL_COLUMNS = frozenset({"label", "labels", "seg", "segmentation", "mask", "labelmap"})
_GROUP_COLUMNS = ("groupid", "group", "patientid", "patient", "participantid")
_CONVENTION_COLUMNS = ("labelconvention", "convention")
_CONVENTIONS = {re.sub(r"[^a-z0-9]", "", c.value): c for c in LabelConvention}
_CONVENTION_FIX = (
    "add a label_convention column holding one of "
    + ", ".join(c.value for c in LabelConvention)
    + ", or name the site's convention: `neurofed site check DIR --label-convention "
    + "binary-lesion` (MS lesion masks) or `brats-2023` (glioma)"
)


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _is_label_column(name: str) -> bool:
    stem = re.sub(r"(?:[\s_\-]*(?:path|file|filename|nifti))+$", "", name.strip().lower())
    return _key(stem) in _LABEL_COLUMNS


def _is_manifest(header: list[str]) -> bool:
    return find_id_column(header) is not None and any(column_modality(h) for h in header)


def manifest_tables(root: Path) -> tuple[Path, ...]:
    """Tables at ``root`` with a subject id column and at least one image-path column.

    Examples
    --------
    >>> import tempfile
    >>> root = Path(tempfile.mkdtemp())
    >>> _ = (root / "clinical.csv").write_text("subject_id,age\\nx,40\\n")
    >>> _ = (root / "cases.csv").write_text("subject_id,T1_path\\nx,x/t1.nii.gz\\n")
    >>> [p.name for p in manifest_tables(root)]
    ['cases.csv']
    """
    found = []
    for path in sorted(Path(root).iterdir()):
        usable = path.suffix.lower() in TABLE_SUFFIXES and path.is_file()
        if not usable or is_junk(path.name) or path.name.lower() in _NOT_MANIFESTS:
            continue
        try:
            header, _ = read_rows(path, max_rows=1)
        except ClinicalTableError:
            continue
        if _is_manifest(header):
            found.append(path)
    return tuple(found)


class TableReader:
    """Reader for sites that list their files in a table.

    Parameters
    ----------
    label_convention:
        The convention of label maps when the table has no ``label_convention`` column (else
        BraTS 2023 is assumed, with a WARNING).
    """

    layout: Layout = Layout.TABLE

    def __init__(self, label_convention: LabelConvention | None = None) -> None:
        self.label_convention = label_convention

    def __repr__(self) -> str:
        return f"TableReader(label_convention={self.label_convention!r})"

    def matches(self, root: Path) -> bool:
        """Whether a table at ``root`` lists image paths (``participants.tsv`` excepted)."""
        return bool(manifest_tables(root))

    def read(self, root: Path, clinical_table: Path | None = None) -> LayoutScan:
        """Read every manifest table at ``root``; join ``clinical_table`` when given."""
        root = Path(root)
        subjects: list[Subject] = []
        problems: list[Problem] = []
        for path in manifest_tables(root):
            found, found_problems = self._read_table(root, path)
            subjects += found
            problems += found_problems
        if clinical_table is not None:
            table = read_clinical_table(clinical_table, root=root)
            joined, join_problems = join_clinical(subjects, table)
            subjects, problems = list(joined), problems + list(join_problems)
        return LayoutScan(
            layout=self.layout,
            subjects=sort_subjects(subjects),
            problems=tuple(problems),
            expected_modalities=majority_modalities(subjects),
        )

    def _read_table(self, root: Path, path: Path) -> tuple[list[Subject], list[Problem]]:
        header, rows = read_rows(path)
        clinical = read_clinical_table(path, root=root)
        by_row = {r.row: r for r in clinical.rows}
        columns = _Columns.of(header)
        shown, base = clinical.path, PurePosixPath(clinical.path).parent
        subjects: list[Subject] = []
        problems: list[Problem] = []
        assumed = 0
        for number, row in enumerate(rows, start=2):
            subject_id = row[columns.subject]
            if not subject_id:
                message = f"row {number} has no subject id, so it is skipped"
                problems.append(_problem(message, "fill in the subject id", None, shown))
                continue
            refs = {m: ImageRef(site_path(root, row[i], base)) for m, i in columns.images.items()}
            refs = {m: ref for m, ref in refs.items() if row[columns.images[m]]}
            label_text = row[columns.label] if columns.label is not None else ""
            label = ImageRef(site_path(root, label_text, base)) if label_text else None
            stated = row[columns.convention] if columns.convention is not None else ""
            convention = _CONVENTIONS.get(_key(stated)) if stated else self.label_convention
            if label is not None and stated and convention is None:
                message = f"label_convention = {show_value(stated)} is not a known convention"
                problems.append(_problem(message, _CONVENTION_FIX, subject_id, shown))
                label = None
            elif label is not None and convention is None:
                convention, assumed = LabelConvention.BRATS_2023, assumed + 1
            parsed = by_row.get(number)
            problems += parsed.problems if parsed else ()
            subjects.append(
                Subject(
                    subject_id,
                    refs,
                    label,
                    convention if label is not None else None,
                    parsed.clinical if parsed else Clinical(),
                    group_id=row[columns.group] if columns.group is not None else "",
                )
            )
        if assumed:
            message = (
                f"no label_convention given for {assumed} labelled subject(s): assumed "
                f"{LabelConvention.BRATS_2023.value} (glioma labels 0-3); a binary lesion mask "
                "(0/1) would then be read as tumour core"
            )
            problems.append(_problem(message, _CONVENTION_FIX, None, shown, Severity.WARNING))
        return subjects, problems


@dataclass(frozen=True)
class _Columns:
    """Column indices of a manifest table."""

    subject: int
    images: dict[Modality, int]
    label: int | None
    convention: int | None
    group: int | None

    @classmethod
    def of(cls, header: list[str]) -> _Columns:
        subject = find_id_column(header)
        assert subject is not None  # manifest_tables checked it
        images: dict[Modality, int] = {}
        for index, name in enumerate(header):
            modality = column_modality(name)
            if modality is not None:
                images.setdefault(modality, index)
        keys = [_key(h) for h in header]

        def first(names: tuple[str, ...]) -> int | None:
            found = [keys.index(k) for k in names if k in keys and keys.index(k) != subject]
            return found[0] if found else None

        label = next((i for i, h in enumerate(header) if _is_label_column(h)), None)
        return cls(subject, images, label, first(_CONVENTION_COLUMNS), first(_GROUP_COLUMNS))


def _problem(
    message: str,
    fix: str,
    subject_id: str | None,
    path: str,
    severity: Severity = Severity.ERROR,
) -> Problem:
    return Problem(ProblemKind.LAYOUT, message, fix, subject_id, path, severity)
