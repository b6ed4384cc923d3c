"""BIDS datasets: ``sub-*/[ses-*/]anat/sub-*_[ses-*_][...]_{T1w,T2w,FLAIR}.nii.gz``.

A ``T1w`` with a ``ce-<agent>`` entity is T1CE. When one modality has several files (runs), the
highest ``run-`` is used and a WARNING names the others. With sessions every session is a
subject (``sub-01_ses-02``) whose ``group_id`` is the participant (``sub-01``). Lesion masks come
from ``derivatives/<pipeline>/sub-*/[ses-*/]anat/`` files with ``label-lesion`` or
``desc-lesion`` and suffix ``mask``, ``roi`` or ``dseg``. Clinical targets come from
``participants.tsv`` and, per session, ``sub-*/sub-*_sessions.tsv``.

Examples
--------
>>> parse_bids_name("sub-01_ses-02_ce-gadolinium_run-2_T1w.nii.gz")
({'sub': '01', 'ses': '02', 'ce': 'gadolinium', 'run': '2'}, 'T1w')
>>> parse_bids_name("notes_T1w.nii.gz") is None
True
"""

from __future__ import annotations

import dataclasses
import os
import re
from collections.abc import Sequence
from pathlib import Path, PurePosixPath

from neurofed.data.clinical import ClinicalTableError, join_clinical, read_clinical_table
from neurofed.data.layouts._files import (
    layout_error,
    majority_modalities,
    nifti_stem,
    sort_subjects,
    unknown_file,
    walk_files,
)
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.subject import ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity

__all__ = ["BidsReader", "parse_bids_name"]

_SUFFIXES = {"T1w": Modality.T1, "T2w": Modality.T2, "FLAIR": Modality.FLAIR}
_LABEL_SUFFIXES = frozenset({"mask", "roi", "dseg"})
_NOT_RAW = frozenset({"derivatives", "sourcedata", "code", "stimuli", "phenotype"})
_ENTITY = re.compile(r"^[A-Za-z0-9]+-[A-Za-z0-9]+$")
_NAME_FIX = "name it sub-<label>[_ses-<label>][_<entity>-<value>...]_<T1w|T2w|FLAIR>.nii.gz"
_PARTICIPANTS = "participants.tsv"

_Key = tuple[str, str | None]  # (participant label, session label or None)


def parse_bids_name(name: str) -> tuple[dict[str, str], str] | None:
    """The entities and suffix of a BIDS NIfTI name, or None when it is not one."""
    stem = nifti_stem(name)
    parts = stem.split("_") if stem else []
    if len(parts) < 2 or "-" in parts[-1] or not all(_ENTITY.match(p) for p in parts[:-1]):
        return None
    entities = dict(p.split("-", 1) for p in parts[:-1])
    return (entities, parts[-1]) if parts[0].startswith("sub-") else None


def _folder_key(parts: Sequence[str]) -> _Key | None:
    """(participant, session) of ``sub-X/[ses-Y/]<datatype>/<file>`` parts, else None."""
    if len(parts) == 3 and parts[0].startswith("sub-"):
        return parts[0][4:], None
    if len(parts) == 4 and parts[0].startswith("sub-") and parts[1].startswith("ses-"):
        return parts[0][4:], parts[1][4:]
    return None


def _run(path: PurePosixPath) -> tuple[int, str]:
    parsed = parse_bids_name(path.name)
    run = parsed[0].get("run", "0") if parsed else "0"
    return (int(run) if run.isdigit() else 0), path.name


class BidsReader:
    """Reader for BIDS raw datasets with optional lesion-mask derivatives."""

    layout: Layout = Layout.BIDS

    def __repr__(self) -> str:
        return "BidsReader()"

    def matches(self, root: Path) -> bool:
        """``dataset_description.json`` or a ``sub-*/[ses-*/]anat`` folder at ``root``."""
        root = Path(root)
        if (root / "dataset_description.json").is_file():
            return True
        for sub in _subfolders(root, "sub-"):
            sessions = _subfolders(sub, "ses-")
            if (sub / "anat").is_dir() or any((s / "anat").is_dir() for s in sessions):
                return True
        return False

    def read(self, root: Path, clinical_table: Path | None = None) -> LayoutScan:
        """List every (participant, session) with anatomical images."""
        root = Path(root)
        images: dict[_Key, dict[Modality, list[PurePosixPath]]] = {}
        labels: dict[_Key, list[PurePosixPath]] = {}
        problems: list[Problem] = []
        for path in walk_files(root):
            if nifti_stem(path.name) is None:
                continue
            if path.parts[0] == "derivatives":
                key = _folder_key(path.parts[2:])
                parsed = parse_bids_name(path.name)
                if key and path.parts[-2] == "anat" and parsed and _is_lesion_mask(key, *parsed):
                    labels.setdefault(key, []).append(path)
                continue
            if path.parts[0] in _NOT_RAW:
                continue
            key = _folder_key(path.parts)
            if key is not None and path.parts[-2] != "anat":
                continue  # func/, dwi/, ...: valid BIDS that neurofed does not use
            parsed = parse_bids_name(path.name)
            if key is None or parsed is None:
                why = "not a BIDS anatomical file (sub-*/[ses-*/]anat/sub-*_<suffix>.nii.gz)"
                problems.append(unknown_file(path, why, _NAME_FIX))
                continue
            entities, suffix = parsed
            if (entities.get("sub"), entities.get("ses")) != key:
                why = "its sub-/ses- entities do not match the folders it is in"
                problems.append(unknown_file(path, why, "rename or move it to match"))
                continue
            modality = _SUFFIXES.get(suffix)
            if modality is Modality.T1 and "ce" in entities:
                modality = Modality.T1CE
            elif "ce" in entities:
                modality = None  # post-contrast T2w / FLAIR: not a modality neurofed uses
            if modality is not None:
                images.setdefault(key, {}).setdefault(modality, []).append(path)
        subjects = [
            _subject(key, found, labels.pop(key, []), problems) for key, found in images.items()
        ]
        why = "a lesion mask for a subject/session without anatomical images"
        fix = "add the images or remove the mask"
        problems += [unknown_file(p, why, fix) for paths in labels.values() for p in paths]
        subjects, clinical_problems = _clinical(root, subjects, clinical_table)
        return LayoutScan(
            layout=self.layout,
            subjects=sort_subjects(subjects),
            problems=(*problems, *clinical_problems),
            expected_modalities=majority_modalities(subjects),
        )


def _subject(
    key: _Key,
    found: dict[Modality, list[PurePosixPath]],
    labels: list[PurePosixPath],
    problems: list[Problem],
) -> Subject:
    """One subject from its files; several runs or masks for one slot give a WARNING."""
    participant = f"sub-{key[0]}"
    subject_id = participant if key[1] is None else f"{participant}_ses-{key[1]}"
    chosen = {}
    for modality, paths in found.items():
        ordered = sorted(paths, key=_run)
        chosen[modality] = ImageRef(ordered[-1])
        if len(ordered) > 1:
            ignored = ", ".join(p.name for p in ordered[:-1])
            message = f"{len(ordered)} {modality.value} files; using {ordered[-1].name}"
            message += f" (highest run), not {ignored}"
            fix = "move the runs you do not want out of the dataset (e.g. to sourcedata/)"
            problems.append(_warning(message, fix, subject_id, ordered[-1]))
    masks = sorted(labels)
    if len(masks) > 1:
        message = f"{len(masks)} lesion masks; using {masks[0]}"
        fix = "keep one lesion mask per subject/session in derivatives/"
        problems.append(_warning(message, fix, subject_id, masks[0]))
    label = ImageRef(masks[0]) if masks else None
    convention = LabelConvention.BINARY_LESION if label is not None else None
    return Subject(subject_id, chosen, label, convention, group_id=participant)


def _warning(message: str, fix: str, subject_id: str, path: PurePosixPath) -> Problem:
    return Problem(ProblemKind.LAYOUT, message, fix, subject_id, str(path), Severity.WARNING)


def _is_lesion_mask(key: _Key, entities: dict[str, str], suffix: str) -> bool:
    tags = (entities.get("label", ""), entities.get("desc", ""))
    in_place = (entities.get("sub"), entities.get("ses")) == key
    return in_place and suffix in _LABEL_SUFFIXES and any("lesion" in t.lower() for t in tags)


def _subfolders(folder: Path, prefix: str) -> list[Path]:
    try:
        entries = os.scandir(folder)
        return [Path(e.path) for e in entries if e.name.startswith(prefix) and e.is_dir()]
    except OSError:
        return []


def _clinical(
    root: Path, subjects: list[Subject], clinical_table: Path | None
) -> tuple[list[Subject], list[Problem]]:
    """participants.tsv, then each participant's sessions.tsv, then ``clinical_table``."""
    problems: list[Problem] = []
    if (root / _PARTICIPANTS).is_file():
        subjects = _join(root / _PARTICIPANTS, root, subjects, problems, on_group=True)
    for participant in sorted({s.group_id for s in subjects}):
        sessions = root / participant / f"{participant}_sessions.tsv"
        if sessions.is_file():
            mine = [s for s in subjects if s.group_id == participant]
            others = [s for s in subjects if s.group_id != participant]
            subjects = others + _join(sessions, root, mine, problems, session_of=participant)
    if clinical_table is not None:
        table = read_clinical_table(clinical_table, root=root)
        joined, join_problems = join_clinical(subjects, table, on_group=True)
        subjects, problems = list(joined), problems + list(join_problems)
    return subjects, problems


def _join(
    path: Path,
    root: Path,
    subjects: list[Subject],
    problems: list[Problem],
    *,
    on_group: bool = False,
    session_of: str | None = None,
) -> list[Subject]:
    try:
        table = read_clinical_table(path, root=root, id_column="session_id" if session_of else None)
    except ClinicalTableError as exc:
        fix = "give the table a participant_id (or session_id) column, tab-separated"
        problems.append(layout_error(str(exc), fix, str(path.relative_to(root))))
        return subjects
    if session_of is not None:
        prefix = f"{session_of}_ses-"
        rows = [
            dataclasses.replace(r, subject_id=prefix + r.subject_id.removeprefix("ses-"))
            for r in table.rows
        ]
        table = dataclasses.replace(table, rows=tuple(rows))
    joined, join_problems = join_clinical(subjects, table, on_group=on_group)
    problems.extend(join_problems)
    return list(joined)
