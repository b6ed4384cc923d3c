"""Clinical tables: aliases, every value spelling, unknown stays None, range checks, joining."""

from pathlib import Path

import openpyxl
import pytest

from neurofed.data.clinical import (
    ClinicalRow,
    ClinicalTable,
    ClinicalTableError,
    ClinicalValueError,
    column_field,
    find_id_column,
    join_clinical,
    parse_clinical_value,
    read_clinical_table,
)
from neurofed.data.subject import Clinical, Subject
from neurofed.keys import ClinicalField, ProblemKind, Severity, Sex

F = ClinicalField


@pytest.mark.parametrize(
    ("header", "field"),
    [
        ("idh", F.IDH),
        ("IDH_status", F.IDH),
        ("idh1", F.IDH),
        ("IDH mutation", F.IDH),
        ("codel_1p19q", F.CODEL_1P19Q),
        ("1p19q", F.CODEL_1P19Q),
        ("1p/19q", F.CODEL_1P19Q),
        ("1p19q_codeletion", F.CODEL_1P19Q),
        ("MGMT", F.MGMT),
        ("mgmt_status", F.MGMT),
        ("MGMT_value", F.MGMT),
        ("mgmt_methylation", F.MGMT),
        ("grade", F.GRADE),
        ("who_grade", F.GRADE),
        ("WHO CNS grade", F.GRADE),
        ("age", F.AGE),
        ("age_at_scan", F.AGE),
        ("Age (years)", F.AGE),
        ("Age", F.AGE),
        ("sex", F.SEX),
        ("Gender", F.SEX),
        ("sdmt", F.SDMT),
        ("SDMT score", F.SDMT),
        ("notes", None),
        ("site", None),
    ],
)
def test_column_aliases(header: str, field: ClinicalField | None) -> None:
    assert column_field(header) is field


@pytest.mark.parametrize(
    "header",
    [
        "subject_id",
        "Subject",
        "ID",
        "case",
        "case_id",
        "patient",
        "Patient ID",
        "participant_id",
        "BraTS21ID",
        "BraTS_2021_subject_ID",
    ],
)
def test_id_column_aliases(header: str) -> None:
    assert find_id_column(["age", header, "sex"]) == 1


def test_id_column_prefers_subject_id() -> None:
    assert find_id_column(["patient_id", "subject_id"]) == 1
    assert find_id_column(["age", "sex"]) is None


@pytest.mark.parametrize(
    ("field", "texts", "expected"),
    [
        (F.IDH, ["mutant", "mut", "Mutated", "1", "yes", "TRUE", "positive", "IDH-mutant"], True),
        (F.IDH, ["wildtype", "wild-type", "WT", "0", "no", "false", "negative", "IDH-wt"], False),
        (F.CODEL_1P19Q, ["codeleted", "co-deleted", "codel", "1", "yes", "positive"], True),
        (
            F.CODEL_1P19Q,
            ["intact", "non-codeleted", "not codeleted", "0", "no", "negative"],
            False,
        ),
        (F.MGMT, ["methylated", "1", "1.0", "yes", "M", "positive"], True),
        (F.MGMT, ["unmethylated", "0", "no", "U", "negative"], False),
        (F.GRADE, ["2", "II", "G2", "grade II", "WHO II", "WHO grade 2", "2.0"], 2),
        (F.GRADE, ["3", "III", "g3", "Grade 3"], 3),
        (F.GRADE, ["4", "IV", "GIV", "WHO CNS grade 4"], 4),
        (F.GRADE, ["1", "I"], 1),
        (F.AGE, ["54.2", " 54.2 ", "54,2", "54.2y"], 54.2),
        (F.AGE, ["054Y", "54 years"], 54.0),
        (F.SEX, ["M", "male", "Man"], Sex.MALE),
        (F.SEX, ["F", "female", "woman"], Sex.FEMALE),
        (F.SEX, ["O", "other"], Sex.OTHER),
        (F.SDMT, ["52", "52.0"], 52.0),
    ],
)
def test_value_spellings(field: ClinicalField, texts: list[str], expected: object) -> None:
    assert [parse_clinical_value(field, t) for t in texts] == [expected] * len(texts)


@pytest.mark.parametrize("field", list(ClinicalField))
@pytest.mark.parametrize("text", ["", "NA", "n/a", "N/A", "nan", "unknown", "-", "?", "  "])
def test_unknown_is_none_never_false(field: ClinicalField, text: str) -> None:
    value = parse_clinical_value(field, text)
    assert value is None
    assert value is not False and value != 0


@pytest.mark.parametrize(
    ("field", "text", "message"),
    [
        (F.GRADE, "5", "grade = 5 is outside 1..4"),
        (F.GRADE, "V", "grade = V is outside 1..4"),
        (F.GRADE, "0", "grade = 0 is outside 1..4"),
        (F.AGE, "130", "age = 130 is outside 0..120"),
        (F.AGE, "-3", "age = -3 is outside 0..120"),
        (F.SDMT, "111", "sdmt = 111 is outside 0..110"),
    ],
)
def test_out_of_range(field: ClinicalField, text: str, message: str) -> None:
    with pytest.raises(ClinicalValueError) as error:
        parse_clinical_value(field, text)
    assert str(error.value) == message
    assert error.value.kind is ProblemKind.CLINICAL_RANGE


@pytest.mark.parametrize(
    ("field", "text"),
    [
        (F.IDH, "maybe"),
        (F.IDH, "2"),
        (F.CODEL_1P19Q, "partial"),
        (F.MGMT, "weak"),
        (F.GRADE, "high"),
        (F.GRADE, "2.5"),
        (F.AGE, "old"),
        (F.SEX, "x"),
        (F.SDMT, "fifty"),
    ],
)
def test_unparseable(field: ClinicalField, text: str) -> None:
    with pytest.raises(ClinicalValueError, match=f"{field.value} = '{text}' is not understood"):
        parse_clinical_value(field, text)


def test_phantom_clinical_csv(tmp_path: Path) -> None:
    # Prepare: exactly what the phantom writes
    path = tmp_path / "clinical.csv"
    path.write_text(
        "subject_id,age,sex,grade,idh,codel_1p19q,mgmt\n"
        "BraTS2021_00003,54.2,F,IV,wildtype,intact,methylated\n"
        "BraTS2021_00004,,,,,,\n"
        "BraTS2021_00005,61,M,II,mutant,codeleted,unmethylated\n"
    )
    # Execute
    table = read_clinical_table(path, root=tmp_path)
    # Assert
    a, b, c = (row.clinical for row in table.rows)
    assert a == Clinical(idh=False, codel_1p19q=False, mgmt=True, grade=4, age=54.2, sex=Sex.FEMALE)
    assert b == Clinical()
    assert (b.idh, b.codel_1p19q, b.mgmt, b.grade) == (None, None, None, None)
    assert c == Clinical(idh=True, codel_1p19q=True, mgmt=False, grade=2, age=61.0, sex=Sex.MALE)
    assert [row.row for row in table.rows] == [2, 3, 4]
    assert table.columns[F.CODEL_1P19Q] == "codel_1p19q"
    assert all(row.problems == () for row in table.rows)


def test_bad_values_become_unknown_with_warnings(tmp_path: Path) -> None:
    path = tmp_path / "clinical.csv"
    path.write_text("subject_id,grade,idh,age\ns1,5,maybe,40\n")
    (row,) = read_clinical_table(path, root=tmp_path).rows
    assert (row.clinical.grade, row.clinical.idh, row.clinical.age) == (None, None, 40.0)
    range_problem, unparseable = row.problems
    assert (range_problem.kind, range_problem.severity) == (
        ProblemKind.CLINICAL_RANGE,
        Severity.WARNING,
    )
    assert (range_problem.subject_id, range_problem.path) == ("s1", "clinical.csv")
    assert range_problem.message == "grade = 5 is outside 1..4"
    assert range_problem.fix == "correct the value in clinical.csv or leave it empty for unknown"
    assert unparseable.kind is ProblemKind.CLINICAL_UNPARSEABLE and "'maybe'" in unparseable.message


def test_semicolon_and_tab_delimiters_are_sniffed(tmp_path: Path) -> None:
    semicolon = tmp_path / "a.csv"
    semicolon.write_text("Patient;Age;Gender\nx;33,5;F\n", encoding="utf-8-sig")  # Excel, EU
    tab = tmp_path / "b.tsv"
    tab.write_text("participant_id\tsex\nsub-01\tM\n")
    (row,) = read_clinical_table(semicolon).rows
    assert (row.subject_id, row.clinical.age, row.clinical.sex) == ("x", 33.5, Sex.FEMALE)
    assert read_clinical_table(tab).rows[0].clinical.sex is Sex.MALE


def test_xlsx_with_numbers_and_text(tmp_path: Path) -> None:
    path = tmp_path / "clinical.xlsx"
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["BraTS21ID", "MGMT_value", "Age", "WHO CNS grade"])
    sheet.append([5, 1, 61.5, "IV"])
    sheet.append([7.0, 0, None, 3])
    book.save(path)
    table = read_clinical_table(path, root=tmp_path)
    assert [r.subject_id for r in table.rows] == ["5", "7"]
    first, second = (r.clinical for r in table.rows)
    assert (first.mgmt, first.age, first.grade) == (True, 61.5, 4)
    assert (second.mgmt, second.age, second.grade) == (False, None, 3)
    assert table.path == "clinical.xlsx"


def test_table_errors_name_the_file_and_fix(tmp_path: Path) -> None:
    with pytest.raises(ClinicalTableError, match="no such file"):
        read_clinical_table(tmp_path / "missing.csv")
    no_id = tmp_path / "x.csv"
    no_id.write_text("age,sex\n3,F\n")
    with pytest.raises(
        ClinicalTableError, match=r"x\.csv: no subject id column.*name the id column"
    ):
        read_clinical_table(no_id)
    broken = tmp_path / "y.xlsx"
    broken.write_bytes(b"not a zip")
    with pytest.raises(ClinicalTableError, match=r"y\.xlsx: not a readable XLSX"):
        read_clinical_table(broken)
    other = tmp_path / "z.json"
    other.write_text("{}")
    with pytest.raises(ClinicalTableError, match=r"z\.json: \.json extension; save it as \.csv"):
        read_clinical_table(other)


def table(*rows: tuple[str, Clinical]) -> ClinicalTable:
    return ClinicalTable(
        "clinical.csv", tuple(ClinicalRow(i, c, n + 2) for n, (i, c) in enumerate(rows)), {}
    )


@pytest.mark.parametrize(
    ("subject_id", "table_id"),
    [
        ("BraTS2021_00005", "BraTS2021_00005"),  # exact
        ("BraTS2021_00005", "brats2021_00005"),  # case-insensitive
        ("sub-07", "07"),  # BIDS prefix missing in the table
        ("07", "sub-07"),  # ... or in the subject id
        ("BraTS2021_00005", "5"),  # RSNA-MICCAI BraTS21ID
        ("sub-001", "1"),
    ],
)
def test_join_variants(subject_id: str, table_id: str) -> None:
    joined, problems = join_clinical(
        [Subject(subject_id, {}), Subject("other_99", {})], table((table_id, Clinical(grade=3)))
    )
    assert [s.clinical.grade for s in joined] == [3, None]
    assert problems == ()


def test_exact_match_wins_over_looser_rules() -> None:
    subjects = [Subject("Case1", {}), Subject("case1", {})]
    joined, _ = join_clinical(subjects, table(("case1", Clinical(age=1.0))))
    assert [s.clinical.age for s in joined] == [None, 1.0]


def test_ambiguous_numeric_id_matches_nothing() -> None:
    subjects = [Subject("BraTS-GLI-00001-000", {}), Subject("BraTS-GLI-00002-000", {})]
    joined, problems = join_clinical(subjects, table(("0", Clinical(age=1.0))))
    assert [s.clinical.age for s in joined] == [None, None]
    assert (
        problems[0].kind is ProblemKind.LAYOUT
        and "1 row(s) match no subject (0)" in problems[0].message
    )


def test_unmatched_rows_one_warning_and_subjects_without_row_stay_unknown() -> None:
    rows = [(f"ghost{i}", Clinical(age=30.0)) for i in range(7)]
    joined, problems = join_clinical(
        [Subject("a", {}, clinical=Clinical(sex=Sex.MALE))], table(("a", Clinical(idh=True)), *rows)
    )
    (subject,) = joined
    assert (subject.clinical.idh, subject.clinical.sex, subject.clinical.mgmt) == (
        True,
        Sex.MALE,
        None,
    )
    (problem,) = problems
    assert problem.severity is Severity.WARNING and problem.path == "clinical.csv"
    assert problem.message.startswith(
        "7 row(s) match no subject (ghost0, ghost1, ghost2, ghost3, ghost4, …"
    )


def test_duplicate_rows_warn_and_first_wins() -> None:
    joined, problems = join_clinical(
        [Subject("a", {})], table(("a", Clinical(age=1.0)), ("a", Clinical(age=2.0)))
    )
    assert joined[0].clinical.age == 1.0
    (problem,) = problems
    assert (problem.kind, problem.subject_id) == (ProblemKind.DUPLICATE_SUBJECT, "a")
    assert "rows 2 and 3" in problem.message


def test_duplicate_subjects_both_get_the_row() -> None:
    joined, problems = join_clinical(
        [Subject("a", {}), Subject("a", {})], table(("a", Clinical(grade=2)))
    )
    assert [s.clinical.grade for s in joined] == [2, 2]
    assert problems == ()


def test_row_problems_are_renamed_to_the_matched_subject(tmp_path: Path) -> None:
    path = tmp_path / "clinical.csv"
    path.write_text("BraTS21ID,age\n5,200\n")
    joined, problems = join_clinical(
        [Subject("BraTS2021_00005", {})], read_clinical_table(path, root=tmp_path)
    )
    (problem,) = problems
    assert (problem.kind, problem.subject_id) == (ProblemKind.CLINICAL_RANGE, "BraTS2021_00005")
    assert joined[0].clinical.age is None


def test_a_huge_unreadable_cell_is_echoed_cut_short() -> None:
    from neurofed.data.clinical import ClinicalValueError, parse_clinical_value

    with pytest.raises(ClinicalValueError) as caught:
        parse_clinical_value(ClinicalField.AGE, "x" * 10_000)
    assert "(10002 characters)" in str(caught.value) and len(str(caught.value)) < 200
