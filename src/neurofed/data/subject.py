"""Subjects, their clinical targets and the problems found with them.

A :class:`Subject` names files relative to the site root; it never holds voxels. Clinical targets
are ``None`` when unknown, which is different from ``False`` or ``0``.

Examples
--------
>>> from pathlib import PurePosixPath
>>> s = Subject(
...     subject_id="BraTS2021_00001",
...     images={Modality.T1: ImageRef(PurePosixPath("BraTS2021_00001/BraTS2021_00001_t1.nii.gz"))},
...     clinical=Clinical(idh=False, grade=4),
... )
>>> Subject.from_json(s.to_json()) == s
True
>>> s.clinical.mgmt is None  # unknown, not "unmethylated"
True
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import PurePosixPath
from types import MappingProxyType
from typing import Any

from neurofed.keys import ClinicalField, LabelConvention, Modality, ProblemKind, Severity, Sex

__all__ = ["Clinical", "ImageRef", "Problem", "Subject"]


@dataclass(frozen=True)
class Clinical:
    """Clinical targets of one subject; ``None`` means unknown."""

    idh: bool | None = None  # True = IDH-mutant
    codel_1p19q: bool | None = None  # True = 1p/19q co-deleted
    mgmt: bool | None = None  # True = MGMT promoter methylated
    grade: int | None = None  # WHO CNS grade 1..4
    age: float | None = None  # years
    sex: Sex | None = None
    sdmt: float | None = None  # Symbol Digit Modalities Test score

    def get(self, name: ClinicalField) -> bool | int | float | Sex | None:
        value: bool | int | float | Sex | None = getattr(self, ClinicalField(name).value)
        return value

    def known(self) -> tuple[ClinicalField, ...]:
        """Fields whose value is known."""
        return tuple(f for f in ClinicalField if self.get(f) is not None)

    def without(self, *names: ClinicalField) -> Clinical:
        """A copy with the named fields set to unknown."""
        return replace(self, **{ClinicalField(n).value: None for n in names})

    def to_json(self) -> dict[str, Any]:
        return {f.name: (getattr(self, f.name)) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Clinical:
        values = dict(data)
        if values.get("sex") is not None:
            values["sex"] = Sex(values["sex"])
        return cls(**{k: v for k, v in values.items() if k in {f.name for f in fields(cls)}})


@dataclass(frozen=True)
class ImageRef:
    """A file relative to the site root; ``channel`` picks a volume in a 4-D file (MSD)."""

    path: PurePosixPath
    channel: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {"path": str(self.path), "channel": self.channel}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ImageRef:
        return cls(PurePosixPath(data["path"]), data.get("channel"))


@dataclass(frozen=True)
class Subject:
    """One imaging case at one site.

    ``group_id`` ties several cases of one patient together (BIDS sessions) so that splits never
    put one patient on both sides; it defaults to ``subject_id``.
    """

    subject_id: str
    images: Mapping[Modality, ImageRef]
    label: ImageRef | None = None
    label_convention: LabelConvention | None = None
    clinical: Clinical = field(default_factory=Clinical)
    group_id: str = ""

    def __post_init__(self) -> None:
        if not self.subject_id:
            raise ValueError("subject_id must not be empty")
        object.__setattr__(self, "images", MappingProxyType(dict(self.images)))
        if not self.group_id:
            object.__setattr__(self, "group_id", self.subject_id)
        if self.label is not None and self.label_convention is None:
            raise ValueError(f"{self.subject_id}: a label map needs its label_convention")

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Subject):
            return NotImplemented
        return self.to_json() == other.to_json()

    def __hash__(self) -> int:
        return hash(self.subject_id)

    @property
    def modalities(self) -> tuple[Modality, ...]:
        return tuple(m for m in Modality if m in self.images)

    def files(self) -> tuple[PurePosixPath, ...]:
        """Every distinct file this subject uses (images then label)."""
        paths = [ref.path for ref in self.images.values()]
        if self.label is not None:
            paths.append(self.label.path)
        return tuple(dict.fromkeys(paths))

    def to_json(self) -> dict[str, Any]:
        return {
            "subject_id": self.subject_id,
            "group_id": self.group_id,
            "images": {m.value: self.images[m].to_json() for m in self.modalities},
            "label": self.label.to_json() if self.label is not None else None,
            "label_convention": self.label_convention.value if self.label_convention else None,
            "clinical": self.clinical.to_json(),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Subject:
        return cls(
            subject_id=data["subject_id"],
            group_id=data.get("group_id", ""),
            images={Modality(m): ImageRef.from_json(r) for m, r in data["images"].items()},
            label=ImageRef.from_json(data["label"]) if data.get("label") else None,
            label_convention=(
                LabelConvention(data["label_convention"]) if data.get("label_convention") else None
            ),
            clinical=Clinical.from_json(data.get("clinical", {})),
        )


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a case or a file: what, where, and how to fix it.

    ``subject_id`` is None for problems that belong to no single case (a broken ``dataset.json``).
    ``path`` is relative to the site root.
    """

    kind: ProblemKind
    message: str
    fix: str
    subject_id: str | None = None
    path: str | None = None
    severity: Severity = Severity.ERROR

    def line(self) -> str:
        """One human-readable line: ``subject: file: problem — fix``."""
        where = ": ".join(p for p in (self.subject_id, self.path) if p)
        prefix = f"{where}: " if where else ""
        return f"{prefix}{self.message} — fix: {self.fix}"

    def to_json(self) -> dict[str, Any]:
        return {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "subject_id": self.subject_id,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Problem:
        return cls(
            kind=ProblemKind(data["kind"]),
            severity=Severity(data["severity"]),
            subject_id=data.get("subject_id"),
            path=data.get("path"),
            message=data["message"],
            fix=data["fix"],
        )
