"""Preprocessed cases in memory, and how a list of them becomes a task's :class:`Batch`.

A :class:`TrainingCase` holds one case's network-ready arrays and clinical targets; a
:class:`CaseDataset` is an ordered, immutable collection of them (one site's split, or the union
of several sites' splits for the pooled baseline). :func:`collate` stacks arrays into a
:class:`~neurofed.tasks.Batch`, padding to a common shape the model accepts, with unknown clinical
values and missing label maps masked (never encoded as 0).

Examples
--------
>>> import numpy as np
>>> from neurofed.data.subject import Clinical
>>> from neurofed.tasks import get_task
>>> case = TrainingCase("c1", "site-1", np.zeros((1, 30, 30, 30), np.float32), None,
...                     Clinical(age=61.0))
>>> data = CaseDataset([case])
>>> batch = collate([(case.image, case.label, case.clinical)], get_task("brain-age"), (32, 32, 32))
>>> tuple(batch.image.shape), batch.clinical["age"].values.tolist(), data.num_examples
((1, 1, 32, 32, 32), [61.0], 1)
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TypeVar

import numpy as np
import numpy.typing as npt
import torch

from neurofed.data.subject import Clinical
from neurofed.keys import ClinicalField
from neurofed.tasks import Batch, ClinicalTarget, Task

__all__ = ["CaseDataset", "SkippedCase", "TrainingCase", "collate", "pad_to_shape"]

FloatImage = npt.NDArray[np.float32]  # (C, X, Y, Z)
LabelMap = npt.NDArray[np.uint8]  # (X, Y, Z)
Shape3 = tuple[int, int, int]
_T = TypeVar("_T", bound=np.generic)
#: One sample before collation: image, label map (or None), clinical targets.
Sample = tuple[FloatImage, LabelMap | None, Clinical]


@dataclass(frozen=True, eq=False)
class TrainingCase:
    """One preprocessed case: ``image`` float32 ``(C, X, Y, Z)`` in the task's channel order,
    ``label`` uint8 ``(X, Y, Z)`` in the internal convention (or ``None``), clinical targets."""

    subject_id: str
    site_id: str
    image: FloatImage
    label: LabelMap | None
    clinical: Clinical

    def __post_init__(self) -> None:
        if self.image.ndim != 4 or self.image.dtype != np.float32:
            raise ValueError(
                f"{self.subject_id}: image must be float32 (C, X, Y, Z); got {self.image.dtype} "
                f"{self.image.shape}"
            )
        if self.label is not None and self.label.shape != self.image.shape[1:]:
            raise ValueError(
                f"{self.subject_id}: label shape {self.label.shape} differs from the image's "
                f"{self.image.shape[1:]}"
            )

    @property
    def spatial_shape(self) -> Shape3:
        _, x, y, z = self.image.shape
        return (int(x), int(y), int(z))


@dataclass(frozen=True)
class SkippedCase:
    """A case left out of a dataset, and why (also logged when it happens)."""

    site_id: str
    subject_id: str
    reason: str

    def line(self) -> str:
        return f"{self.site_id}: {self.subject_id}: {self.reason}"


class CaseDataset:
    """An immutable, ordered collection of :class:`TrainingCase` (cases of one or more sites).

    Parameters
    ----------
    cases
        The cases, in a fixed order (the order decides nothing random: epochs shuffle with the
        trainer's seed).
    skipped
        Cases that were considered but left out, with reasons.
    """

    def __init__(self, cases: Iterable[TrainingCase], skipped: Iterable[SkippedCase] = ()) -> None:
        self._cases = tuple(cases)
        self.skipped = tuple(skipped)

    def __len__(self) -> int:
        return len(self._cases)

    def __getitem__(self, index: int) -> TrainingCase:
        return self._cases[index]

    def __iter__(self) -> Iterator[TrainingCase]:
        return iter(self._cases)

    def __repr__(self) -> str:
        return f"CaseDataset({len(self)} cases from {', '.join(self.site_ids) or 'no site'})"

    @property
    def num_examples(self) -> int:
        """Number of cases (the weight of this dataset in federated averaging)."""
        return len(self._cases)

    @property
    def site_ids(self) -> tuple[str, ...]:
        """Sites the cases come from, in order of first appearance."""
        return tuple(dict.fromkeys(c.site_id for c in self._cases))

    @property
    def subject_ids(self) -> tuple[str, ...]:
        return tuple(c.subject_id for c in self._cases)

    @classmethod
    def pooled(cls, datasets: Sequence[CaseDataset]) -> CaseDataset:
        """The union of several sites' datasets (the centralised upper bound), in order."""
        cases = [case for dataset in datasets for case in dataset]
        return cls(cases, [s for dataset in datasets for s in dataset.skipped])


def pad_to_shape(array: npt.NDArray[_T], shape: Sequence[int]) -> npt.NDArray[_T]:
    """Zero-pad the last three axes of ``array`` at their end up to ``shape`` (never crops).

    >>> pad_to_shape(np.ones((2, 3, 3, 3)), (4, 3, 5)).shape
    (2, 4, 3, 5)
    """
    current = array.shape[-3:]
    if tuple(current) == tuple(shape):
        return array
    widths = [(0, 0)] * (array.ndim - 3) + [
        (0, max(int(t) - int(c), 0)) for c, t in zip(current, shape, strict=True)
    ]
    return np.pad(array, widths)


def _round_up(shape: Sequence[int], divisor: Sequence[int]) -> Shape3:
    x, y, z = (-(-int(s) // int(d)) * int(d) for s, d in zip(shape, divisor, strict=True))
    return (x, y, z)


def _clinical_value(clinical: Clinical, field: ClinicalField) -> float | None:
    value = clinical.get(field)
    if value is None:
        return None
    if isinstance(value, bool | int | float):
        return float(value)
    raise TypeError(f"clinical field {field.value!r} holds {value!r}, which is not a number")


def collate(samples: Sequence[Sample], task: Task, divisor: Sequence[int]) -> Batch:
    """Stack samples into a :class:`Batch` for ``task``.

    Images (and label maps) are zero-padded at their end to the largest shape among the samples,
    rounded up to a multiple of ``divisor``. Samples without a label map get zeros and
    ``has_label=False``; unknown clinical values stay unknown.
    """
    if not samples:
        raise ValueError("collate: no samples")
    spatial = np.max([s[0].shape[1:] for s in samples], axis=0)
    shape = _round_up(spatial.tolist(), divisor)
    image = torch.from_numpy(np.stack([pad_to_shape(s[0], shape) for s in samples]))
    label = None
    has_label = None
    if task.needs_label_map:
        labels = [
            np.zeros(shape, np.uint8) if s[1] is None else pad_to_shape(s[1], shape)
            for s in samples
        ]
        label = torch.from_numpy(np.stack(labels)).long()  # (B, X, Y, Z)
        has_label = torch.tensor([s[1] is not None for s in samples])
    clinical = {
        field: ClinicalTarget.from_values([_clinical_value(s[2], field) for s in samples])
        for field in task.clinical_fields
    }
    return Batch(image=image, label=label, has_label=has_label, clinical=clinical)
