"""BraTS 2021 and BraTS 2023+ folders: one folder per case, one file per modality.

BraTS 2021 names files ``BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz`` (labels 0, 1, 2, 4);
BraTS 2023 and later name them ``BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz`` (labels 0, 1,
2, 3), also with other cohort prefixes (``BraTS-MEN-``, ``BraTS-SSA-``, ``BraTS-PED-``, ...).
Case folders may sit at the root or one level deeper (``TrainingData/``).

Examples
--------
>>> import tempfile
>>> root = Path(tempfile.mkdtemp())
>>> for name in ("t1", "t1ce", "t2", "flair", "seg"):
...     path = root / "BraTS2021_00001" / f"BraTS2021_00001_{name}.nii.gz"
...     path.parent.mkdir(exist_ok=True)
...     _ = path.write_bytes(b"")
>>> reader = BratsReader(Layout.BRATS_2021)
>>> reader.matches(root), BratsReader(Layout.BRATS_2023).matches(root)
(True, False)
>>> subject = reader.read(root).subjects[0]
>>> subject.subject_id, subject.modalities, str(subject.label.path), subject.label_convention.value
('BraTS2021_00001', (<Modality.T1: 'T1'>, <Modality.T1CE: 'T1CE'>, <Modality.T2: 'T2'>, \
<Modality.FLAIR: 'FLAIR'>), 'BraTS2021_00001/BraTS2021_00001_seg.nii.gz', 'brats-2021')
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from types import MappingProxyType

from neurofed.data.layouts._files import (
    attach_clinical,
    is_junk,
    nifti_stem,
    sort_subjects,
    unknown_file,
    walk_files,
)
from neurofed.data.layouts.base import LayoutScan
from neurofed.data.subject import ImageRef, Problem, Subject
from neurofed.keys import LabelConvention, Layout, Modality

__all__ = ["BRATS_MODALITIES", "BratsReader"]

#: Modalities every BraTS case has.
BRATS_MODALITIES = (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)
_SEG = "seg"


@dataclass(frozen=True)
class _Naming:
    file: re.Pattern[str]  # groups: case, part
    parts: MappingProxyType[str, Modality]
    convention: LabelConvention
    example: str


_NAMING = {
    Layout.BRATS_2021: _Naming(
        re.compile(r"^(?P<case>BraTS\w*?_\d+)_(?P<part>t1|t1ce|t2|flair|seg)$", re.IGNORECASE),
        MappingProxyType(dict(zip(("t1", "t1ce", "t2", "flair"), BRATS_MODALITIES, strict=True))),
        LabelConvention.BRATS_2021,
        "BraTS2021_00000/BraTS2021_00000_{t1,t1ce,t2,flair,seg}.nii.gz",
    ),
    Layout.BRATS_2023: _Naming(
        re.compile(r"^(?P<case>BraTS-[A-Za-z]+(?:-\d+)+)-(?P<part>t1n|t1c|t2w|t2f|seg)$"),
        MappingProxyType(dict(zip(("t1n", "t1c", "t2w", "t2f"), BRATS_MODALITIES, strict=True))),
        LabelConvention.BRATS_2023,
        "BraTS-GLI-00000-000/BraTS-GLI-00000-000-{t1n,t1c,t2w,t2f,seg}.nii.gz",
    ),
}


class BratsReader:
    """Reader for BraTS 2021 (``layout=Layout.BRATS_2021``) or BraTS 2023+ folders.

    Files are grouped per (folder, case id); the same case folder found twice (e.g. in two
    nested copies) gives two subjects with one id, for :mod:`neurofed.data.checks` to flag.
    """

    layout: Layout

    def __init__(self, layout: Layout = Layout.BRATS_2021) -> None:
        if layout not in _NAMING:
            raise ValueError(f"BratsReader reads {list(_NAMING)}, not {layout.value!r}")
        self.layout = layout
        self._naming = _NAMING[layout]

    def __repr__(self) -> str:
        return f"BratsReader({self.layout.value!r})"

    def _case(self, name: str) -> tuple[str, str] | None:
        stem = nifti_stem(name)
        match = self._naming.file.match(stem) if stem is not None else None
        return (match["case"], match["part"].lower()) if match else None

    def matches(self, root: Path) -> bool:
        """Whether a case file sits in ``root``, a case folder, or a case folder one level down."""
        folders = [Path(root)]
        for depth in range(3):
            nested: list[Path] = []
            for folder in folders:
                try:
                    entries = sorted(os.scandir(folder), key=lambda e: e.name)
                except OSError:
                    continue
                for entry in entries:
                    if is_junk(entry.name) or entry.name.startswith("."):
                        continue
                    if entry.is_dir():
                        nested.append(Path(entry.path))
                    elif self._case(entry.name) is not None:
                        return True
            folders = nested if depth < 2 else []
        return False

    def read(self, root: Path, clinical_table: Path | None = None) -> LayoutScan:
        """List every case; NIfTIs not named like this layout are UNKNOWN_FILE warnings."""
        root = Path(root)
        groups: dict[tuple[PurePosixPath, str], dict[str, PurePosixPath]] = {}
        problems: list[Problem] = []
        for path in walk_files(root):
            stem = nifti_stem(path.name)
            if stem is None:
                continue
            case = self._case(path.name)
            if case is None:
                why = f"its name is not a {self.layout.value} case file"
                fix = f"rename it like {self._naming.example}, or move it out of the site folder"
                problems.append(unknown_file(path, why, fix))
                continue
            parts = groups.setdefault((path.parent, case[0]), {})
            if case[1] in parts:  # e.g. both .nii and .nii.gz
                why = f"{parts[case[1]].name} already gives {case[0]} its {case[1]}"
                problems.append(unknown_file(path, why, "delete one of the two copies"))
                continue
            parts[case[1]] = path
        subjects = [self._subject(case_id, parts) for (_, case_id), parts in groups.items()]
        joined, clinical_problems = attach_clinical(root, subjects, clinical_table)
        return LayoutScan(
            layout=self.layout,
            subjects=sort_subjects(joined),
            problems=(*problems, *clinical_problems),
            expected_modalities=BRATS_MODALITIES,
        )

    def _subject(self, case_id: str, parts: dict[str, PurePosixPath]) -> Subject:
        images = {m: ImageRef(parts[p]) for p, m in self._naming.parts.items() if p in parts}
        label = ImageRef(parts[_SEG]) if _SEG in parts else None
        convention = self._naming.convention if label is not None else None
        return Subject(case_id, images, label=label, label_convention=convention)
