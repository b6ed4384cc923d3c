"""Medical Segmentation Decathlon folders (``Task01_BrainTumour``): 4-D images + ``dataset.json``.

``dataset.json`` names the channels (``"modality": {"0": "FLAIR", ...}``), the labels
(``"labels": {"0": "background", "1": "edema", ...}``), the training pairs and the test images.
Each modality of a subject is an :class:`~neurofed.data.subject.ImageRef` with its ``channel``
in the 4-D file. nnU-Net v1 raw folders (same ``dataset.json``, one ``<case>_0000`` file per
channel) are read too.

Examples
--------
>>> import json, tempfile
>>> root = Path(tempfile.mkdtemp())
>>> pair = {"image": "./imagesTr/BRATS_001.nii.gz", "label": "./labelsTr/BRATS_001.nii.gz"}
>>> _ = (root / "dataset.json").write_text(json.dumps({
...     "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
...     "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing"},
...     "training": [pair],
...     "test": ["./imagesTs/BRATS_485.nii.gz"]}))
>>> scan = MsdReader().read(root)
>>> [(s.subject_id, s.label_convention) for s in scan.subjects]
[('BRATS_001', <LabelConvention.MSD_BRAIN_TUMOUR: 'msd-brain-tumour'>), ('BRATS_485', None)]
>>> scan.subjects[0].images[Modality.T1CE]
ImageRef(path=PurePosixPath('imagesTr/BRATS_001.nii.gz'), channel=2)
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath
from typing import Any

from neurofed.artifacts import shown
from neurofed.data.layouts._files import (
    attach_clinical,
    dataset_kind,
    layout_error,
    load_dataset_json,
    nifti_stem,
    site_path,
    sort_subjects,
    unknown_file,
    walk_files,
)
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.layouts.nnunet import channel_modalities, dataset_label_convention
from neurofed.data.subject import ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality

__all__ = ["MsdReader"]

_ENTRY_FIX = (
    'list training cases as {"image": "./imagesTr/<case>.nii.gz", "label": '
    '"./labelsTr/<case>.nii.gz"} and test cases as "./imagesTs/<case>.nii.gz"'
)


def _label_names(labels: object) -> object:
    """MSD writes ``{"1": "edema"}``; turn it into ``{"edema": 1}`` (name -> value)."""
    if isinstance(labels, dict) and all(str(k).isdigit() for k in labels):
        return {str(name): int(value) for value, name in labels.items()}
    return labels


class MsdReader:
    """Reader for MSD-style folders (``dataset.json`` with ``modality`` and ``training``)."""

    layout: Layout = Layout.MSD

    def __repr__(self) -> str:
        return "MsdReader()"

    def matches(self, root: Path) -> bool:
        """Whether ``root/dataset.json`` is MSD's (``modality`` / ``training``, no nnU-Net keys)."""
        return dataset_kind(Path(root)) == "msd"

    def read(self, root: Path, clinical_table: Path | None = None) -> LayoutScan:
        """List training and test cases from ``dataset.json``; test cases have no label."""
        root = Path(root)
        data, problems_json = load_dataset_json(root)
        if data is None:  # nothing can be placed without the channel order
            return LayoutScan(self.layout, (), problems_json, ())
        channels, problems_channels = channel_modalities(data.get("modality"), "modality")
        convention, problems_labels = dataset_label_convention(_label_names(data.get("labels")))
        problems: list[Problem] = [*problems_channels, *problems_labels]
        entries = list(self._entries(root, data, problems))
        four_d = isinstance(data.get("modality"), dict) and len(data["modality"]) > 1
        subjects = [
            self._subject(root, image, label, channels, convention, four_d)
            for image, label in entries
        ]
        used = {p for s in subjects for p in s.files()} | {p for e in entries for p in e if p}
        for path in walk_files(root):
            if nifti_stem(path.name) is not None and path not in used:
                problems.append(unknown_file(path, "dataset.json does not list it", _ENTRY_FIX))
        joined, problems_clinical = attach_clinical(root, subjects, clinical_table)
        return LayoutScan(
            layout=self.layout,
            subjects=sort_subjects(joined),
            problems=(*problems, *problems_clinical),
            expected_modalities=tuple(m for m in Modality if m in channels.values()),
        )

    def _entries(
        self, root: Path, data: dict[str, Any], problems: list[Problem]
    ) -> list[tuple[PurePosixPath, PurePosixPath | None]]:
        """(image, label) paths of every training and test case."""
        training = data.get("training")
        if not isinstance(training, list):
            message = "dataset.json has no 'training' list; pairs are taken from imagesTr/labelsTr"
            problems.append(layout_error(message, _ENTRY_FIX))
            training = [
                {"image": str(p), "label": f"labelsTr/{p.name}"}
                for p in walk_files(root, PurePosixPath("imagesTr"))
                if nifti_stem(p.name) is not None
            ]
            training = [
                e if (root / e["label"]).exists() else {"image": e["image"]} for e in training
            ]
        test = data.get("test", [])
        found: list[tuple[PurePosixPath, PurePosixPath | None]] = []
        for key, items in (
            ("training", training),
            ("test", test if isinstance(test, list) else []),
        ):
            for number, entry in enumerate(items):
                image = entry.get("image") if isinstance(entry, dict) else entry
                label = entry.get("label") if isinstance(entry, dict) else None
                if not isinstance(image, str) or not (label is None or isinstance(label, str)):
                    message = f"dataset.json {key}[{number}] = {shown(entry)} names no image"
                    problems.append(layout_error(message, _ENTRY_FIX))
                    continue
                label_path = site_path(root, label) if label else None
                found.append((site_path(root, image), label_path))
        return found

    def _subject(
        self,
        root: Path,
        image: PurePosixPath,
        label: PurePosixPath | None,
        channels: dict[int, Modality],
        convention: LabelConvention | None,
        four_d: bool,
    ) -> Subject:
        name = nifti_stem(image.name) or image.name
        suffix = image.name[len(name) :]
        split = [image.with_name(f"{name}_{c:04d}{suffix}") for c in channels]
        if not (root / image).exists() and split and all((root / p).exists() for p in split):
            images = {m: ImageRef(p) for m, p in zip(channels.values(), split, strict=True)}
        else:
            images = {m: ImageRef(image, c if four_d else None) for c, m in channels.items()}
        ref = ImageRef(label) if label is not None and convention is not None else None
        return Subject(name, images, ref, convention if ref else None)
