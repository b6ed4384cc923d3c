"""One batch as every task sees it: images, optional label maps, clinical targets with masks.

Unknown is never encoded as 0 or ``False``: a label map is used only where ``has_label`` is true,
a clinical value only where its ``known`` mask is true (the value there is ignored; NaN is a good
placeholder).

Examples
--------
>>> import torch
>>> from neurofed.keys import ClinicalField
>>> batch = Batch(
...     image=torch.zeros(2, 4, 8, 16, 16),
...     label=torch.zeros(2, 8, 16, 16, dtype=torch.uint8),
...     has_label=torch.tensor([True, False]),
...     clinical={ClinicalField.IDH: ClinicalTarget.from_values([True, None])},
... )
>>> batch.batch_size, batch.spatial_shape
(2, (8, 16, 16))
>>> batch.clinical[ClinicalField.IDH].known.tolist()
[True, False]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType

import torch

from neurofed.keys import ClinicalField

__all__ = ["Batch", "ClinicalTarget"]


@dataclass(frozen=True)
class ClinicalTarget:
    """One clinical field for every case of a batch.

    Attributes
    ----------
    values
        ``(B,)`` floating values (booleans as 0/1, WHO grade as 2/3/4, age in years); entries
        where ``known`` is false are ignored.
    known
        ``(B,)`` bool mask of the cases whose value is known.
    """

    values: torch.Tensor  # (B,)
    known: torch.Tensor  # (B,) bool

    def __post_init__(self) -> None:
        if self.values.dim() != 1:
            raise ValueError(
                f"ClinicalTarget.values has shape {tuple(self.values.shape)}; expected (B,)"
            )
        if self.known.dtype != torch.bool or self.known.shape != self.values.shape:
            raise ValueError(
                f"ClinicalTarget.known must be a bool tensor shaped like values "
                f"{tuple(self.values.shape)}; got {self.known.dtype} {tuple(self.known.shape)}"
            )
        if not self.values.is_floating_point():
            object.__setattr__(self, "values", self.values.to(torch.float32))

    @classmethod
    def from_values(cls, values: Sequence[float | bool | None]) -> ClinicalTarget:
        """Build from per-case values where ``None`` means unknown.

        >>> t = ClinicalTarget.from_values([65.0, None])
        >>> t.values.tolist()[0], t.known.tolist()
        (65.0, [True, False])
        >>> ClinicalTarget.from_values([]).known.dtype  # no case: still a bool mask
        torch.bool
        """
        known = [v is not None for v in values]
        numbers = [math.nan if v is None else float(v) for v in values]
        return cls(
            torch.tensor(numbers, dtype=torch.float32), torch.tensor(known, dtype=torch.bool)
        )

    @classmethod
    def unknown(cls, batch_size: int) -> ClinicalTarget:
        """A field unknown for every case."""
        return cls(torch.full((batch_size,), math.nan), torch.zeros(batch_size, dtype=torch.bool))

    def to(self, device: torch.device | str) -> ClinicalTarget:
        """A copy on ``device``."""
        return ClinicalTarget(self.values.to(device), self.known.to(device))


@dataclass(frozen=True)
class Batch:
    """Inputs and targets of one batch.

    Attributes
    ----------
    image
        ``(B, C, X, Y, Z)`` floating images, channels in the task's ``modalities`` order.
    label
        ``(B, X, Y, Z)`` integer label map in the internal convention
        (:class:`~neurofed.keys.TumorLabel` or :class:`~neurofed.keys.LesionLabel`), or ``None``.
        Cases without a mask hold any values (e.g. zeros) and are marked in ``has_label``.
    has_label
        ``(B,)`` bool: which cases have a label map. Defaults to all true when ``label`` is given
        and all false otherwise.
    clinical
        Clinical targets by field.
    """

    image: torch.Tensor  # (B, C, X, Y, Z)
    label: torch.Tensor | None = None  # (B, X, Y, Z)
    has_label: torch.Tensor | None = None  # (B,) bool
    clinical: Mapping[ClinicalField, ClinicalTarget] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.image.dim() != 5 or not self.image.is_floating_point():
            raise ValueError(
                f"Batch.image is a {self.image.dtype} tensor of shape {tuple(self.image.shape)}; "
                "expected a floating (B, C, X, Y, Z) tensor"
            )
        b = self.image.shape[0]
        expected = (b, *self.image.shape[2:])
        if self.label is not None:
            if tuple(self.label.shape) != expected:
                raise ValueError(
                    f"Batch.label has shape {tuple(self.label.shape)}; expected {expected} "
                    "(B, X, Y, Z) matching the image (no channel axis)"
                )
            if self.label.is_floating_point() or self.label.dtype == torch.bool:
                raise ValueError(
                    f"Batch.label has dtype {self.label.dtype}; expected an integer label map "
                    "(convert with label.long())"
                )
        if self.has_label is None:
            fill = self.label is not None
            object.__setattr__(
                self,
                "has_label",
                torch.full((b,), fill, dtype=torch.bool, device=self.image.device),
            )
        elif self.has_label.dtype != torch.bool or tuple(self.has_label.shape) != (b,):
            raise ValueError(
                f"Batch.has_label must be a ({b},) bool tensor; got {self.has_label.dtype} "
                f"{tuple(self.has_label.shape)}"
            )
        elif self.label is None and bool(self.has_label.any()):
            raise ValueError("Batch.has_label marks cases as labelled but Batch.label is None")
        clinical: dict[ClinicalField, ClinicalTarget] = {}
        for key, target in self.clinical.items():
            name = ClinicalField(key)
            if not isinstance(target, ClinicalTarget) or target.values.shape[0] != b:
                raise ValueError(
                    f"Batch.clinical[{name.value!r}] must be a ClinicalTarget of {b} cases"
                )
            clinical[name] = target
        object.__setattr__(self, "clinical", MappingProxyType(clinical))

    @property
    def batch_size(self) -> int:
        """Number of cases ``B``."""
        return int(self.image.shape[0])

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        """``(X, Y, Z)``."""
        x, y, z = (int(s) for s in self.image.shape[2:])
        return (x, y, z)

    @property
    def labelled(self) -> torch.Tensor:
        """``(B,)`` bool mask of cases with a label map (``has_label``)."""
        assert self.has_label is not None  # set in __post_init__
        return self.has_label

    def to(self, device: torch.device | str) -> Batch:
        """A copy with every tensor on ``device``."""
        return Batch(
            image=self.image.to(device),
            label=None if self.label is None else self.label.to(device),
            has_label=self.labelled.to(device),
            clinical={k: v.to(device) for k, v in self.clinical.items()},
        )
