"""What every layout reader returns, and the protocol readers follow.

A reader turns a site folder into :class:`Subject` records without reading voxel data (headers
at most). Problems it can see from names alone (a missing modality, an unknown file, a broken
``dataset.json``, a clinical value out of range) go into :attr:`LayoutScan.problems`; voxel-level
checks belong to :mod:`neurofed.data.checks`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from neurofed.data.subject import Problem, Subject
from neurofed.keys import Layout, Modality

__all__ = ["LayoutReader", "LayoutScan"]


@dataclass(frozen=True)
class LayoutScan:
    """The result of reading one site folder.

    Attributes
    ----------
    layout:
        Which layout was read.
    subjects:
        Every case found, in a stable (sorted) order. Subjects with reader problems of severity
        ERROR are still listed here; :mod:`neurofed.data.checks` decides exclusion.
    problems:
        Problems found from names and metadata alone.
    expected_modalities:
        Modalities every case of this site should have (from ``dataset.json``, the layout's own
        naming, or the modalities most cases have).
    """

    layout: Layout
    subjects: tuple[Subject, ...]
    problems: tuple[Problem, ...]
    expected_modalities: tuple[Modality, ...]


class LayoutReader(Protocol):
    """A reader for one community layout."""

    layout: Layout

    def matches(self, root: Path) -> bool:
        """Cheap test (names only) whether ``root`` looks like this layout."""
        ...

    def read(self, root: Path, clinical_table: Path | None = None) -> LayoutScan:
        """Read ``root``; join ``clinical_table`` (or the layout's own table) on subject id."""
        ...
