"""Clinical tables (CSV, TSV, XLSX): read them, parse every spelling, join them to subjects.

Column names are matched case-, space- and punctuation-insensitively against aliases (``IDH
mutation`` is ``idh``, ``BraTS21ID`` is the subject id). Values are parsed per field; empty,
``NA``, ``n/a``, ``unknown``, ``-`` and ``?`` mean unknown (``None``), never ``False`` or ``0``.
A value out of range or not understood becomes unknown plus a WARNING :class:`Problem`.

Examples
--------
>>> p = parse_clinical_value
>>> p(ClinicalField.IDH, "wild-type"), p(ClinicalField.IDH, "n/a"), p(ClinicalField.IDH, "1")
(False, None, True)
>>> p(ClinicalField.GRADE, "WHO grade IV"), p(ClinicalField.SEX, "f")
(4, <Sex.FEMALE: 'F'>)
>>> p(ClinicalField.GRADE, "5")
Traceback (most recent call last):
...
neurofed.data.clinical.ClinicalValueError: grade = 5 is outside 1..4
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import datetime
import io
import itertools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType
from typing import Any

from neurofed.artifacts import shown
from neurofed.data.subject import Clinical, Problem, Subject
from neurofed.keys import ClinicalField, ProblemKind, Severity, Sex

__all__ = [
    "CLINICAL_SUFFIXES",
    "ClinicalRow",
    "ClinicalTable",
    "ClinicalTableError",
    "ClinicalValueError",
    "column_field",
    "find_id_column",
    "join_clinical",
    "parse_clinical_value",
    "read_clinical_table",
    "read_rows",
]

CLINICAL_SUFFIXES = (".csv", ".tsv", ".xlsx")
_F = ClinicalField
_DUPLICATE = ProblemKind.DUPLICATE_SUBJECT


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


#: Accepted spellings of the subject id column, in order of preference.
_ID_ALIASES = tuple(
    _norm(a)
    for a in (
        "subject_id", "subject", "id", "case", "case_id", "patient", "patient_id",
        "participant_id", "BraTS21ID", "BraTS_2021_subject_ID", "Brats20ID", "brats_id",
        "scan_id",
    )
)  # fmt: skip
_FIELD_ALIASES: Mapping[str, ClinicalField] = MappingProxyType(
    {
        _norm(alias): field
        for field, aliases in {
            _F.IDH: ("idh", "idh_status", "idh1", "IDH mutation", "idh_mutation", "idh1_status"),
            _F.CODEL_1P19Q: ("codel_1p19q", "1p19q", "1p/19q", "1p19q_codeletion", "1p19q_status"),
            _F.MGMT: ("mgmt", "mgmt_status", "MGMT_value", "mgmt_methylation", "mgmt_promoter"),
            _F.GRADE: ("grade", "who_grade", "WHO CNS grade", "tumor_grade", "tumour_grade"),
            _F.AGE: ("age", "age_at_scan", "age_years", "age_at_diagnosis"),
            _F.SEX: ("sex", "gender"),
            _F.SDMT: ("sdmt", "SDMT score", "sdmt_score"),
        }.items()
        for alias in aliases
    }
)
_UNKNOWN = frozenset({"", "na", "n/a", "nan", "none", "null", "unknown", "unk", "-", "--", "?"})
_BOOLEAN_WORDS: Mapping[ClinicalField, tuple[frozenset[str], frozenset[str], str]] = {
    # field: (words meaning True, words meaning False, prefix a value may repeat, e.g. "IDH-mutant")
    _F.IDH: (
        frozenset({"mutant", "mut", "mutated", "mutation", "yes", "y", "true", "positive", "pos"}),
        frozenset({"wildtype", "wt", "wild", "no", "n", "false", "negative", "neg"}),
        r"^idh[12]?",
    ),
    _F.CODEL_1P19Q: (
        frozenset({"codeleted", "codel", "codeletion", "deleted", "yes", "y", "true", "positive"}),
        frozenset(
            {"intact", "noncodeleted", "notcodeleted", "noncodel", "nocodeletion", "retained"}
            | {"notdeleted", "no", "n", "false", "negative"}
        ),
        r"^1p19q",
    ),
    _F.MGMT: (
        frozenset({"methylated", "meth", "m", "yes", "y", "true", "positive", "pos"}),
        frozenset({"unmethylated", "unmeth", "u", "notmethylated", "nonmethylated", "no", "n"})
        | frozenset({"false", "negative", "neg"}),
        r"^mgmt",
    ),
}
_SEX_WORDS = {"m": Sex.MALE, "male": Sex.MALE, "man": Sex.MALE, "f": Sex.FEMALE}
_SEX_WORDS |= {"female": Sex.FEMALE, "woman": Sex.FEMALE, "o": Sex.OTHER, "other": Sex.OTHER}
_ROMAN = {"i": 1, "ii": 2, "iii": 3, "iv": 4, "v": 5, "vi": 6}
_GRADE = re.compile(r"^(?:who)?(?:cns)?(?:grade)?g?(?P<v>[iv]+|\d+)$")
_NUMBER = re.compile(r"^(?P<v>[+-]?\d+(?:\.\d*)?)\s*(?:y|yr|yrs|year|years)?$")
_RANGES: Mapping[ClinicalField, tuple[float, float]] = {
    _F.GRADE: (1, 4),
    _F.AGE: (0, 120),
    _F.SDMT: (0, 110),
}
_EXPECTED = {
    _F.IDH: "mutant or wildtype",
    _F.CODEL_1P19Q: "codeleted or intact",
    _F.MGMT: "methylated or unmethylated",
    _F.GRADE: "a WHO grade such as 2, III, G4 or 'WHO grade 2'",
    _F.AGE: "years, e.g. 54.2",
    _F.SEX: "M, F or O",
    _F.SDMT: "a score 0..110",
}


class ClinicalTableError(ValueError):
    """A clinical table cannot be read at all; the message names the file and the fix."""


class ClinicalValueError(ValueError):
    """One clinical value is out of range or not understood."""

    def __init__(self, message: str, kind: ProblemKind) -> None:
        super().__init__(message)
        self.kind = kind


def column_field(name: str) -> ClinicalField | None:
    """The clinical field a column header stands for, if any.

    Examples
    --------
    >>> column_field("IDH mutation"), column_field("WHO CNS grade"), column_field("notes")
    (<ClinicalField.IDH: 'idh'>, <ClinicalField.GRADE: 'grade'>, None)
    """
    return _FIELD_ALIASES.get(_norm(name))


def find_id_column(headers: Sequence[str], preferred: str | None = None) -> int | None:
    """Index of the subject id column (``preferred`` first, then aliases in order), or None.

    Examples
    --------
    >>> find_id_column(["Age", "BraTS21ID"]), find_id_column(["age"])
    (1, None)
    """
    keys = [_norm(h) for h in headers]
    for alias in (_norm(preferred),) if preferred else _ID_ALIASES:
        if alias in keys:
            return keys.index(alias)
    return None


def parse_clinical_value(field: ClinicalField, text: str) -> bool | int | float | Sex | None:
    """Parse one cell; None when unknown.

    Examples
    --------
    >>> parse_clinical_value(ClinicalField.MGMT, "U"), parse_clinical_value(ClinicalField.AGE, "")
    (False, None)

    Raises
    ------
    ClinicalValueError
        When the value is out of range (``kind`` CLINICAL_RANGE) or not understood
        (``kind`` CLINICAL_UNPARSEABLE).
    """
    raw = str(text).strip()
    if raw.lower() in _UNKNOWN:
        return None
    number = _number(raw)
    value: bool | int | float | Sex | None = None
    if field in _BOOLEAN_WORDS:
        true_words, false_words, prefix = _BOOLEAN_WORDS[field]
        word = re.sub(prefix, "", _norm(raw)) or _norm(raw)
        value = {1.0: True, 0.0: False}.get(number) if number is not None else None
        value = True if word in true_words else False if word in false_words else value
    elif field is _F.SEX:
        value = _SEX_WORDS.get(raw.lower())
    elif field is _F.GRADE:
        match = _GRADE.match(_norm(raw)) if number is None else None
        if number is not None and number == int(number):
            value = int(number)
        elif match is not None:
            v = match["v"]
            value = int(v) if v.isdigit() else _ROMAN.get(v)
    else:
        value = number
    if value is None:
        raise ClinicalValueError(
            f"{field.value} = {shown(raw)} is not understood (expected {_EXPECTED[field]})",
            ProblemKind.CLINICAL_UNPARSEABLE,
        )
    low, high = _RANGES.get(field, (None, None))
    if low is not None and high is not None and not low <= float(value) <= high:
        message = f"{field.value} = {raw} is outside {low:g}..{high:g}"
        raise ClinicalValueError(message, ProblemKind.CLINICAL_RANGE)
    return value


def _number(raw: str) -> float | None:
    text = raw.replace(",", ".") if raw.count(",") == 1 and "." not in raw else raw
    match = _NUMBER.match(text.lower())
    return float(match["v"]) if match else None


@dataclass(frozen=True)
class ClinicalRow:
    """One row of a clinical table: the id as written, its parsed values and their problems."""

    subject_id: str
    clinical: Clinical
    row: int  # 1-based row number in the file, header = 1
    problems: tuple[Problem, ...] = ()


@dataclass(frozen=True)
class ClinicalTable:
    """A parsed clinical table.

    Attributes
    ----------
    path:
        The table as problems name it (relative to the site root when inside it).
    rows:
        Every row with an id, in file order (duplicates kept).
    columns:
        Which column header fed each clinical field.
    problems:
        Problems that belong to no single row (e.g. rows without an id).
    """

    path: str
    rows: tuple[ClinicalRow, ...]
    columns: Mapping[ClinicalField, str]
    problems: tuple[Problem, ...] = ()


def read_rows(path: Path, max_rows: int | None = None) -> tuple[list[str], list[list[str]]]:
    """Header and rows of a CSV, TSV (delimiter sniffed) or XLSX file, every cell as text.

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "t.csv"
    >>> _ = path.write_text("id;age\\n1;54,2\\n")
    >>> read_rows(path)
    (['id', 'age'], [['1', '54,2']])

    Raises
    ------
    ClinicalTableError
        When the file is missing, unreadable or of another format.
    """
    path = Path(path)
    suffix = path.suffix.lower()
    if not path.is_file():
        raise ClinicalTableError(f"{path}: no such file; check the clinical table path")
    if suffix in {".xlsx", ".xlsm"}:
        table = _read_xlsx(path, max_rows)
    elif suffix in {".csv", ".tsv", ".txt"}:
        table = _read_text(path, max_rows)
    else:
        raise ClinicalTableError(f"{path}: {suffix or 'no'} extension; save it as .csv or .xlsx")
    table = [[cell.strip() for cell in row] for row in table if any(c.strip() for c in row)]
    if not table:
        raise ClinicalTableError(f"{path}: the table is empty; add a header row and data rows")
    header, rows = table[0], table[1:]
    return header, [row + [""] * (len(header) - len(row)) for row in rows]


def _read_text(path: Path, max_rows: int | None) -> list[list[str]]:
    data = path.read_bytes()
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError:
        text = data.decode("cp1252", errors="replace")
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    if delimiter != "\t":
        with contextlib.suppress(csv.Error):  # one column, or nothing to sniff: keep the comma
            delimiter = csv.Sniffer().sniff(text[:8192], delimiters=",;\t|").delimiter
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    return list(itertools.islice(reader, max_rows))


def _read_xlsx(path: Path, max_rows: int | None) -> list[list[str]]:
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # openpyxl raises many types for broken files
        raise ClinicalTableError(f"{path}: not a readable XLSX ({exc}); re-save it") from exc
    try:
        sheet = book.worksheets[0]
        return [
            [_cell(v) for v in row] for row in sheet.iter_rows(values_only=True, max_row=max_rows)
        ]
    finally:
        book.close()


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime.date | datetime.time):
        return value.isoformat()
    return str(value)


def _shown(path: Path, root: Path | None) -> str:
    if root is not None:
        anchor = PurePosixPath(root.absolute().as_posix())
        absolute = PurePosixPath(path.absolute().as_posix())
        if absolute.is_relative_to(anchor):
            return str(absolute.relative_to(anchor))
    return str(path)


def read_clinical_table(
    path: Path, *, root: Path | None = None, id_column: str | None = None
) -> ClinicalTable:
    """Read and parse a clinical table.

    Parameters
    ----------
    path:
        A ``.csv``, ``.tsv`` or ``.xlsx`` file.
    root:
        The site root; problems name the table relative to it.
    id_column:
        The id column's name when it is none of the usual ones (e.g. ``session_id``).

    Examples
    --------
    >>> import tempfile
    >>> path = Path(tempfile.mkdtemp()) / "clinical.csv"
    >>> _ = path.write_text("BraTS21ID,MGMT_value,Age\\n5,1,61\\n7,,130\\n")
    >>> table = read_clinical_table(path, root=path.parent)
    >>> [(r.subject_id, r.clinical.mgmt, r.clinical.age) for r in table.rows]
    [('5', True, 61.0), ('7', None, None)]
    >>> print(table.rows[1].problems[0].line())  # doctest: +NORMALIZE_WHITESPACE
    7: clinical.csv: age = 130 is outside 0..120 — fix: correct the value in clinical.csv or
    leave it empty for unknown
    """
    path = Path(path)
    shown = _shown(path, root)
    header, rows = read_rows(path)
    id_index = find_id_column(header, id_column)
    if id_index is None:
        expected = id_column or "subject_id (or case_id, patient_id, participant_id, BraTS21ID)"
        raise ClinicalTableError(
            f"{shown}: no subject id column among {header}; name the id column {expected}"
        )
    columns: dict[ClinicalField, int] = {}
    for index, name in enumerate(header):
        field = column_field(name)
        if field is not None and index != id_index:
            columns.setdefault(field, index)
    parsed, problems = [], []
    for number, row in enumerate(rows, start=2):
        subject_id = row[id_index]
        if not subject_id:
            message = f"row {number} has no subject id, so it is skipped"
            problems.append(_value_problem(ProblemKind.CLINICAL_UNPARSEABLE, None, shown, message))
            continue
        values: dict[str, Any] = {}
        row_problems = []
        for field, index in columns.items():
            try:
                values[field.value] = parse_clinical_value(field, row[index])
            except ClinicalValueError as exc:
                row_problems.append(_value_problem(exc.kind, subject_id, shown, str(exc)))
        clinical = dataclasses.replace(Clinical(), **values)
        parsed.append(ClinicalRow(subject_id, clinical, number, tuple(row_problems)))
    names = MappingProxyType({f: header[i] for f, i in columns.items()})
    return ClinicalTable(shown, tuple(parsed), names, tuple(problems))


def _value_problem(kind: ProblemKind, subject_id: str | None, shown: str, message: str) -> Problem:
    fix = f"correct the value in {PurePosixPath(shown).name} or leave it empty for unknown"
    return _warning(kind, shown, message, fix, subject_id)


def _merge(base: Clinical, new: Clinical) -> Clinical:
    """``base`` with every field ``new`` knows replaced."""
    known: dict[str, Any] = {f.value: new.get(f) for f in new.known()}
    return dataclasses.replace(base, **known)


def _trailing_number(text: str) -> str | None:
    match = re.search(r"(\d+)$", text)
    return str(int(match[1])) if match else None


_MATCHERS: tuple[Callable[[str], str | None], ...] = (
    lambda s: s,
    lambda s: s.casefold(),
    lambda s: s.casefold().removeprefix("sub-"),
    lambda s: _trailing_number(s),
)


def join_clinical(
    subjects: Iterable[Subject], table: ClinicalTable, *, on_group: bool = False
) -> tuple[tuple[Subject, ...], tuple[Problem, ...]]:
    """Give each subject the clinical values of its table row.

    Rows are matched by exact id, then case-insensitively, then with or without the BIDS
    ``sub-`` prefix, then (numeric ids only) to the trailing digits of subject ids, so that
    RSNA-MICCAI's ``BraTS21ID`` 5 finds ``BraTS2021_00005``. A looser rule is used only where
    it picks one id. Known values override the subject's; subjects without a row keep theirs.
    ``on_group`` matches rows to ``group_id`` (a BIDS participant with several sessions).

    Examples
    --------
    >>> table = ClinicalTable("clinical.csv", (ClinicalRow("5", Clinical(idh=True), 2),), {})
    >>> joined, problems = join_clinical([Subject("BraTS2021_00005", {})], table)
    >>> joined[0].clinical.idh, problems
    (True, ())
    """
    listed = list(subjects)
    ids = [s.group_id if on_group else s.subject_id for s in listed]
    owner: dict[int, ClinicalRow] = {}  # subject index -> the row it took
    matched: set[int] = set()
    problems: list[Problem] = [*table.problems]
    for stage, key in enumerate(_MATCHERS):
        index: dict[str, list[int]] = {}
        for i, subject_id in enumerate(ids):
            k = key(subject_id)
            if k is not None:
                index.setdefault(k, []).append(i)
        for number, row in enumerate(table.rows):
            k = key(row.subject_id) if stage < 3 or row.subject_id.isdigit() else None
            hits = index.get(k, []) if number not in matched and k is not None else []
            if not hits or len({ids[i] for i in hits}) > 1:
                continue
            matched.add(number)
            for i in hits:
                if i in owner:
                    message = (
                        f"listed in rows {owner[i].row} and {row.row}; row {owner[i].row} is used"
                    )
                    fix = f"keep one row per subject in {PurePosixPath(table.path).name}"
                    problems.append(_warning(_DUPLICATE, table.path, message, fix, ids[i]))
                    continue
                owner[i] = row
                problems += [dataclasses.replace(p, subject_id=ids[i]) for p in row.problems]
    joined = tuple(
        dataclasses.replace(s, clinical=_merge(s.clinical, owner[i].clinical)) if i in owner else s
        for i, s in enumerate(listed)
    )
    unmatched = [r.subject_id for n, r in enumerate(table.rows) if n not in matched]
    if unmatched:
        examples = ", ".join(unmatched[:5]) + (", …" if len(unmatched) > 5 else "")
        message = f"{len(unmatched)} row(s) match no subject ({examples})"
        fix = "make the ids match the subject ids (case folder names) or remove those rows"
        problems.append(_warning(ProblemKind.LAYOUT, table.path, message, fix))
    return joined, tuple(dict.fromkeys(problems))


def _warning(
    kind: ProblemKind, path: str, message: str, fix: str, subject_id: str | None = None
) -> Problem:
    return Problem(kind, message, fix, subject_id, path, Severity.WARNING)
