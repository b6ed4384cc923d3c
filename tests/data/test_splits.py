"""Splits are deterministic, group-aware, stratified, and stable once written."""

import json
from collections import Counter
from pathlib import Path, PurePosixPath

import numpy as np
import pytest

from neurofed.data.splits import (
    DEFAULT_VALIDATION_FRACTION,
    SplitParameters,
    Splits,
    SplitsError,
    load_or_create_splits,
    load_splits,
    make_splits,
    site_splits,
    split_parameters,
)
from neurofed.data.subject import Clinical, ImageRef, Subject
from neurofed.keys import ClinicalField, Modality, ProblemKind, Severity, Split

REF = {Modality.T1: ImageRef(PurePosixPath("t1.nii.gz"))}


def cases(n: int, prefix: str = "c", **clinical) -> list[Subject]:
    return [Subject(f"{prefix}{i:03d}", REF, clinical=Clinical(**clinical)) for i in range(n)]


def counts(splits: Splits) -> dict[Split, int]:
    return {s: len(splits.subject_ids(s)) for s in Split}


def test_same_seed_same_splits_other_seed_other_splits() -> None:
    subjects = cases(40)
    shuffled = [subjects[i] for i in np.random.default_rng(7).permutation(40)]
    first = make_splits(subjects, seed=1)
    assert make_splits(shuffled, seed=1) == first  # input order does not matter
    assert make_splits(subjects, seed=2).assignment != first.assignment
    assert counts(first) == {Split.TRAIN: 32, Split.VALIDATION: 8, Split.TEST: 0}


def test_three_way_split_proportions() -> None:
    splits = make_splits(cases(50), validation_fraction=0.2, test_fraction=0.1)
    assert counts(splits) == {Split.TRAIN: 35, Split.VALIDATION: 10, Split.TEST: 5}


def test_all_sessions_of_a_patient_land_in_one_split() -> None:
    # Prepare: 30 patients with 1 to 3 sessions each
    rng = np.random.default_rng(0)
    subjects = [
        Subject(f"p{p:02d}-ses{s}", REF, group_id=f"p{p:02d}")
        for p in range(30)
        for s in range(int(rng.integers(1, 4)))
    ]
    for seed in range(5):
        # Execute
        splits = make_splits(subjects, seed=seed)
        # Assert
        per_group: dict[str, set[Split]] = {}
        for subject in subjects:
            per_group.setdefault(subject.group_id, set()).add(splits.assignment[subject.subject_id])
        assert all(len(s) == 1 for s in per_group.values())
        share = len(splits.subject_ids(Split.VALIDATION)) / len(subjects)
        assert 0.13 <= share <= 0.27


def test_stratified_splits_keep_each_stratum_proportion() -> None:
    # Prepare: 20 IDH-mutant, 30 wild-type, 10 unknown, and one singleton grade stratum
    subjects = (
        cases(20, "mut", idh=True) + cases(30, "wt", idh=False) + cases(10, "unk") + cases(1, "g1")
    )
    for seed in range(5):
        # Execute
        splits = make_splits(subjects, seed=seed, stratify_on=ClinicalField.IDH)
        # Assert: within one case of 20% of each stratum
        validation = splits.subject_ids(Split.VALIDATION)
        per_stratum = Counter(sid.rstrip("0123456789") for sid in validation)
        assert abs(per_stratum["mut"] - 4) <= 1
        assert abs(per_stratum["wt"] - 6) <= 1
        assert abs(per_stratum["unk"] + per_stratum["g1"] - 2) <= 1
    singleton = make_splits(
        cases(8, grade=4) + cases(1, "rare", grade=1), stratify_on=ClinicalField.GRADE
    )
    assert len(singleton.assignment) == 9  # one-member strata do not crash


def test_stratifying_on_a_continuous_field_uses_quantile_bins() -> None:
    subjects = [Subject(f"c{i:02d}", REF, clinical=Clinical(age=20.0 + i)) for i in range(50)]
    splits = make_splits(subjects, seed=0, stratify_on=ClinicalField.AGE)
    ages = sorted(20.0 + int(sid[1:]) for sid in splits.subject_ids(Split.VALIDATION))
    assert len(ages) == 10
    assert [sum(20 + 10 * q <= a < 30 + 10 * q for a in ages) for q in range(5)] == [2] * 5


def test_every_split_gets_a_case_when_there_are_enough() -> None:
    assert counts(make_splits(cases(2))) == {Split.TRAIN: 1, Split.VALIDATION: 1, Split.TEST: 0}
    three = make_splits(cases(3), validation_fraction=0.1, test_fraction=0.1)
    assert counts(three) == {Split.TRAIN: 1, Split.VALIDATION: 1, Split.TEST: 1}
    assert counts(make_splits(cases(1))) == {Split.TRAIN: 1, Split.VALIDATION: 0, Split.TEST: 0}


@pytest.mark.parametrize(
    ("validation", "test", "match"),
    [
        (1.2, 0.0, r"validation_fraction=1\.2: must lie in \[0, 1\)"),
        (0.5, 0.5, r"\+ test_fraction = 1 leaves no training cases"),
        (0.2, -0.1, r"test_fraction=-0\.1"),
    ],
)
def test_impossible_fractions_are_refused(validation: float, test: float, match: str) -> None:
    with pytest.raises(SplitsError, match=match):
        make_splits(cases(5), validation_fraction=validation, test_fraction=test)


def test_duplicate_ids_are_refused() -> None:
    with pytest.raises(SplitsError, match=r"\['c000'\] occur more than once"):
        make_splits(cases(3) + cases(1))


def test_splits_json_round_trip_and_available_filter() -> None:
    splits = make_splits(cases(10), seed=4, stratify_on=ClinicalField.SEX)
    again = Splits.from_json(json.loads(json.dumps(splits.to_json())))
    assert again == splits
    validation = splits.subject_ids(Split.VALIDATION)
    assert splits.subject_ids(Split.VALIDATION, available=validation[:1]) == validation[:1]


def test_existing_file_is_reused_not_reshuffled(tmp_path: Path) -> None:
    # Prepare
    subjects = cases(20)
    first, problems = load_or_create_splits(tmp_path, subjects, seed=3)
    written = (tmp_path / "neurofed/splits.json").read_text()
    # Execute: the same call with the subjects in another order
    again, again_problems = load_or_create_splits(tmp_path, subjects[::-1], seed=3)
    # Assert
    assert problems == () == again_problems
    assert again == first == load_splits(tmp_path)
    assert (tmp_path / "neurofed/splits.json").read_text() == written


def test_new_subjects_are_added_deterministically_and_reported(tmp_path: Path) -> None:
    # Prepare: a split of 20 patients; then a new patient and a new session of a known one
    subjects = cases(20)
    first, _ = load_or_create_splits(tmp_path, subjects)
    known = subjects[0]
    session = Subject("c000-ses2", REF, group_id=known.group_id)
    newcomer = Subject("new", REF)
    # Execute
    splits, problems = load_or_create_splits(tmp_path, [*subjects, session, newcomer])
    # Assert
    assert {sid: splits.assignment[sid] for sid in first.assignment} == dict(first.assignment)
    assert splits.assignment["c000-ses2"] == first.assignment["c000"]
    assert [(p.kind, p.severity, p.subject_id) for p in problems] == [
        (ProblemKind.SPLIT, Severity.WARNING, "c000-ses2"),
        (ProblemKind.SPLIT, Severity.WARNING, "new"),
    ]
    assert "the split of its group 'c000'" in problems[0].message
    assert f"added to {splits.assignment['new'].value}" in problems[1].message
    assert load_splits(tmp_path) == splits  # written, so the next run reports nothing new
    other = tmp_path / "other"
    load_or_create_splits(other, subjects)
    elsewhere, _ = load_or_create_splits(other, [*subjects, newcomer])
    assert elsewhere.assignment["new"] == splits.assignment["new"]


def test_vanished_subjects_stay_in_the_file_and_are_reported(tmp_path: Path) -> None:
    subjects = cases(10)
    first, _ = load_or_create_splits(tmp_path, subjects)
    splits, problems = load_or_create_splits(tmp_path, subjects[1:])
    assert splits == first
    assert [(p.subject_id, p.kind) for p in problems] == [("c000", ProblemKind.SPLIT)]
    assert "not among the site's usable cases" in problems[0].message
    split = first.assignment["c000"]
    assert "c000" in splits.subject_ids(split)  # kept in the file
    assert "c000" not in splits.subject_ids(split, available=[c.subject_id for c in subjects[1:]])
    assert "c000" in load_splits(tmp_path).assignment


def test_other_parameters_are_refused_unless_reshuffled(tmp_path: Path) -> None:
    subjects = cases(20)
    load_or_create_splits(tmp_path, subjects, seed=0)
    with pytest.raises(
        SplitsError, match=r"made with seed=0, but this run asks for seed=1.*--reshuffle"
    ):
        load_or_create_splits(tmp_path, subjects, seed=1)
    with pytest.raises(
        SplitsError, match=r"stratify_on=None, but this run asks for stratify_on='idh'"
    ):
        load_or_create_splits(tmp_path, subjects, stratify_on=ClinicalField.IDH)
    reshuffled, problems = load_or_create_splits(tmp_path, subjects, seed=1, reshuffle=True)
    assert reshuffled == make_splits(subjects, seed=1) == load_splits(tmp_path)
    assert problems == ()


def test_damaged_splits_file_is_named(tmp_path: Path) -> None:
    (tmp_path / "neurofed").mkdir()
    (tmp_path / "neurofed/splits.json").write_text("{}")
    with pytest.raises(SplitsError, match=r"splits\.json: unusable.*--reshuffle"):
        load_or_create_splits(tmp_path, cases(3))


def test_split_parameters_are_the_given_ones_else_the_files_else_the_defaults(
    tmp_path: Path,
) -> None:
    # Prepare: no file yet, then a file made with other parameters
    assert split_parameters(tmp_path) == SplitParameters()
    assert SplitParameters().validation_fraction == DEFAULT_VALIDATION_FRACTION == 0.2
    load_or_create_splits(tmp_path, cases(10), seed=5, validation_fraction=0.4)
    # Execute / Assert
    assert split_parameters(tmp_path) == SplitParameters(seed=5, validation_fraction=0.4)
    assert split_parameters(tmp_path, seed=1) == SplitParameters(seed=1)  # given: no file value
    assert split_parameters(tmp_path, reshuffle=True) == SplitParameters()


def test_site_splits_reuse_the_files_parameters_and_add_new_cases(tmp_path: Path) -> None:
    # Prepare
    first, _ = load_or_create_splits(tmp_path, cases(10), seed=5, validation_fraction=0.4)
    # Execute: every reader of the site's splits (training, fingerprint, demo) calls this
    again, problems = site_splits(tmp_path, cases(11))
    # Assert
    assert (again.seed, again.validation_fraction) == (5, 0.4)
    assert {k: again.assignment[k] for k in first.assignment} == dict(first.assignment)
    assert [p.subject_id for p in problems] == ["c010"]
    fresh, _ = site_splits(tmp_path / "new", cases(10))
    assert fresh.validation_fraction == DEFAULT_VALIDATION_FRACTION
    assert load_splits(tmp_path / "new") == fresh
