"""nnU-Net v2 raw datasets: ``dataset.json``, ``imagesTr/<case>_0000.nii.gz``, ``labelsTr/``.

Channels are named in ``channel_names`` and mapped with
:func:`~neurofed.data.modalities.normalise_modality`; the label convention is recognised from the
label *names* in ``labels`` (see :func:`convention_from_label_names`), including nnU-Net's
region-based labels (``"whole tumor": [1, 2, 3]``).

Examples
--------
>>> convention_from_label_names({"background": 0, "lesion": 1}).value
'binary-lesion'
>>> convention_from_label_names({"background": 0, "NCR": 1, "ED": 2, "ET": 4}).value
'brats-2021'
>>> regions = {"whole tumor": [1, 2, 3], "tumor core": [2, 3], "enhancing tumor": 3}
>>> convention_from_label_names(regions).value
'msd-brain-tumour'
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from pathlib import Path, PurePosixPath
from typing import Any

from neurofed.artifacts import shown
from neurofed.data.labels import CONVENTION_VALUES, is_tumor
from neurofed.data.layouts._files import (
    attach_clinical,
    dataset_kind,
    layout_error,
    load_dataset_json,
    nifti_stem,
    sort_subjects,
    unknown_file,
    walk_files,
)
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.modalities import normalise_modality
from neurofed.data.nifti import NIFTI_SUFFIXES
from neurofed.data.subject import ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality, ProblemKind, Severity, TumorLabel

__all__ = [
    "NnunetReader",
    "channel_modalities",
    "convention_from_label_names",
    "dataset_label_convention",
]

_LABEL_FIX = (
    "name the labels in dataset.json 'background' + 'lesion' (binary), or 'background', "
    "'necrosis' (NCR), 'edema' (ED), 'enhancing tumor' (ET) with BraTS 2021 (1, 2, 4), "
    "BraTS 2023 (1, 2, 3) or MSD (edema 1, non-enhancing 2, enhancing 3) values"
)


def _kind(name: str) -> str | None:
    """What a label name means: background, ncr, ed, et, tc, wt or lesion."""
    words = re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()
    compact = words.replace(" ", "")
    if compact in {"background", "bg", "backgr"}:
        return "background"
    if "necro" in compact or "nonenhanc" in compact or compact in {"ncr", "net", "ncrnet"}:
        return "ncr"
    if any(w in compact for w in ("edema", "oedema", "peritumo")) or compact in {"ed", "snfh"}:
        return "ed"
    if "whole" in compact or compact == "wt":
        return "wt"
    if compact in {"tc", "core", "tumorcore", "tumourcore"}:
        return "tc"
    if "enhancing" in compact or compact == "et":
        return "et"
    if "lesion" in compact or compact in {"wmh", "wml", "foreground", "plaque", "plaques"}:
        return "lesion"
    return None


def _values(value: object) -> frozenset[int] | None:
    items = value if isinstance(value, list | tuple) else [value]
    try:
        return frozenset(int(str(v)) for v in items if not isinstance(v, bool))
    except ValueError:
        return None


def convention_from_label_names(labels: Mapping[str, Any]) -> LabelConvention:
    """The label convention named by ``{label name: value or [values]}``.

    Tumour compartments may be given directly (NCR, ED, ET) or as nnU-Net regions (whole tumour,
    tumour core, enhancing tumour), from which NCR = core - ET and ED = whole - core.

    Raises
    ------
    ValueError
        When the names or values match no convention; the message names the labels and the fix.
    """
    parts: dict[str, frozenset[int]] = {}
    for name, value in labels.items():
        kind, values = _kind(name), _values(value)
        if kind is None or not values or kind in parts:
            parts = {}
            break
        parts[kind] = values
    background = parts.pop("background", frozenset({0}))
    if parts and background == {0}:
        if parts == {"lesion": {1}}:
            return LabelConvention.BINARY_LESION
        et = parts.get("et", frozenset())
        core = parts.get("tc") or parts.get("ncr", frozenset()) | et
        ncr = parts.get("ncr") or core - et
        ed = parts.get("ed") or parts.get("wt", frozenset()) - core
        if "lesion" not in parts and len(ncr) == len(ed) == len(et) == 1:
            found = {TumorLabel.NCR: min(ncr), TumorLabel.ED: min(ed), TumorLabel.ET: min(et)}
            for convention, mapping in CONVENTION_VALUES.items():
                raw = {internal: value for value, internal in mapping.items()}
                if is_tumor(convention) and all(raw.get(k) == v for k, v in found.items()):
                    return convention
    raise ValueError(f"labels {dict(labels)} match no label convention neurofed knows")


def channel_modalities(
    channels: object, field: str
) -> tuple[dict[int, Modality], tuple[Problem, ...]]:
    """``{"0": "FLAIR", ...}`` from ``dataset.json`` as channel index -> modality, with problems.

    Examples
    --------
    >>> channels = {"0": "FLAIR", "1": "T1w", "2": "ADC"}
    >>> found, problems = channel_modalities(channels, "channel_names")
    >>> found, [p.message for p in problems]
    ({0: <Modality.FLAIR: 'FLAIR'>, 1: <Modality.T1: 'T1'>}, \
["dataset.json channel_names '2': 'ADC' is not usable (use T1, T1CE, T2, FLAIR)"])
    """
    if not isinstance(channels, dict) or not channels:
        message = f"dataset.json has no {field!r} object naming the image channels"
        fix = f'add "{field}": {{"0": "FLAIR", "1": "T1", ...}} to dataset.json'
        return {}, (layout_error(message, fix),)
    found: dict[int, Modality] = {}
    problems = []
    for key, name in channels.items():
        modality = normalise_modality(str(name))
        index = int(key) if str(key).isdigit() else None
        if modality is None or index is None or modality in found.values():
            why = "is listed twice" if modality in found.values() else "is not usable"
            message = (
                f"dataset.json {field} {shown(key)}: {shown(name)} {why} (use T1, T1CE, T2, FLAIR)"
            )
            fix = f"name each channel in {field} once as T1, T1ce, T2 or FLAIR (or remove it)"
            problems.append(layout_error(message, fix))
        else:
            found[index] = modality
    return found, tuple(problems)


def dataset_label_convention(
    labels: object, field: str = "labels"
) -> tuple[LabelConvention | None, tuple[Problem, ...]]:
    """The convention of a ``dataset.json`` label mapping, or None plus a LAYOUT error.

    Examples
    --------
    >>> dataset_label_convention({"background": 0, "lesion": 1})
    (<LabelConvention.BINARY_LESION: 'binary-lesion'>, ())
    >>> convention, (problem,) = dataset_label_convention({"background": 0, "liver": 1})
    >>> convention, problem.kind.value, problem.path
    (None, 'layout', 'dataset.json')
    """
    try:
        if not isinstance(labels, dict):
            raise ValueError(f"dataset.json has no {field!r} object")
        return convention_from_label_names(labels), ()
    except ValueError as exc:
        return None, (layout_error(f"{exc}; label maps are not used", _LABEL_FIX),)


_CHANNEL_FILE = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})$")
_IMAGES = frozenset({"imagesTr", "imagesTs"})
_LABELS = {"labelsTr": "imagesTr", "labelsTs": "imagesTs"}  # labelsTs: a common extra


class NnunetReader:
    """Reader for nnU-Net v2 raw dataset folders (``Dataset001_Name/``)."""

    layout: Layout = Layout.NNUNET_V2

    def __repr__(self) -> str:
        return "NnunetReader()"

    def matches(self, root: Path) -> bool:
        """Whether ``root/dataset.json`` is nnU-Net v2's (it has ``channel_names``)."""
        return dataset_kind(Path(root)) == "nnunet"

    def read(self, root: Path, clinical_table: Path | None = None) -> LayoutScan:
        """List training (imagesTr + labelsTr) and test (imagesTs [+ labelsTs]) cases."""
        root = Path(root)
        data, problems_json = load_dataset_json(root)
        if data is None:  # nothing can be placed without channel names and labels
            return LayoutScan(self.layout, (), problems_json, ())
        problems = list(problems_json)
        channels, channel_problems = channel_modalities(data.get("channel_names"), "channel_names")
        convention, label_problems = dataset_label_convention(data.get("labels"))
        problems += [*channel_problems, *label_problems]
        ending = data.get("file_ending")
        if not isinstance(ending, str) or not ending.startswith("."):
            fix = 'add "file_ending": ".nii.gz" to dataset.json'
            problems.append(layout_error(f"dataset.json file_ending is {shown(ending)}", fix))
            ending = ".nii.gz"
        elif ending not in NIFTI_SUFFIXES:
            fix = "convert the images to NIfTI (.nii.gz) and set file_ending to .nii.gz"
            problems.append(layout_error(f"file_ending {shown(ending)} is not NIfTI", fix))
        declared = {int(k) for k in data.get("channel_names") or {} if str(k).isdigit()}
        cases: dict[tuple[str, str], dict[int, PurePosixPath]] = {}
        labels: dict[tuple[str, str], PurePosixPath] = {}  # (images folder, case) -> label
        for path in walk_files(root):
            stem = path.name[: -len(ending)] if path.name.endswith(ending) else None
            folder = str(path.parent)
            match = _CHANNEL_FILE.match(stem) if stem and folder in _IMAGES else None
            if match and int(match["channel"]) in declared:
                cases.setdefault((folder, match["case"]), {})[int(match["channel"])] = path
            elif stem and folder in _LABELS:
                labels[(_LABELS[folder], stem)] = path
            elif nifti_stem(path.name) is not None or stem:
                problems.append(_unknown(path, ending))
        subjects = []
        for (folder, case), files in sorted(cases.items()):
            images = {channels[c]: ImageRef(p) for c, p in files.items() if c in channels}
            label = labels.pop((folder, case), None)
            ref = ImageRef(label) if label is not None and convention is not None else None
            subjects.append(Subject(case, images, ref, convention if ref else None))
        problems += [
            unknown_file(p, "no case in imagesTr/imagesTs has its name", _FIX)
            for p in labels.values()
        ]
        problems += _count_check(data.get("numTraining"), sum(f == "imagesTr" for f, _ in cases))
        joined, clinical_problems = attach_clinical(root, subjects, clinical_table)
        return LayoutScan(
            layout=self.layout,
            subjects=sort_subjects(joined),
            problems=(*problems, *clinical_problems),
            expected_modalities=tuple(m for m in Modality if m in channels.values()),
        )


_FIX = "name images imagesTr/<case>_0000<file_ending> and labels labelsTr/<case><file_ending>"


def _unknown(path: PurePosixPath, ending: str) -> Problem:
    why = "not an nnU-Net case file (imagesTr|imagesTs/<case>_<channel>, labelsTr/<case>)"
    return unknown_file(path, why, _FIX.replace("<file_ending>", ending))


def _count_check(declared: object, found: int) -> Sequence[Problem]:
    if not isinstance(declared, int) or declared == found:
        return ()
    message = f"dataset.json numTraining is {declared} but imagesTr holds {found} cases"
    fix = "set numTraining to the number of training cases (or restore the missing ones)"
    return (Problem(ProblemKind.LAYOUT, message, fix, None, "dataset.json", Severity.WARNING),)
