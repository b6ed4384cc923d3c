"""Normalise the many spellings of MRI contrasts to :class:`~neurofed.keys.Modality`.

Examples
--------
>>> normalise_modality("t1c"), normalise_modality("T2-FLAIR"), normalise_modality("T1w")
(<Modality.T1CE: 'T1CE'>, <Modality.FLAIR: 'FLAIR'>, <Modality.T1: 'T1'>)
>>> normalise_modality("dwi") is None
True
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from types import MappingProxyType

from neurofed.keys import Modality

__all__ = ["MODALITY_ALIASES", "normalise_modality"]


def _key(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


_ALIASES: dict[Modality, tuple[str, ...]] = {
    # BraTS 2021 / 2023, MSD, BIDS suffixes, nnU-Net channel names and common scanner names
    Modality.T1: ("t1", "t1n", "t1w", "t1native", "t1pre", "native t1", "mprage", "t1 mprage"),
    Modality.T1CE: (
        "t1ce",
        "t1c",
        "t1gd",
        "t1 gd",
        "t1 post",
        "t1post",
        "t1 contrast",
        "t1 ce",
        "t1wce",
        "ce t1w",
        "t1 gado",
        "t1gado",
        "ce-gadolinium t1w",
        "t1 mprage gd",
    ),
    Modality.T2: ("t2", "t2w", "t2 weighted", "t2 tse"),
    Modality.FLAIR: ("flair", "t2f", "t2 flair", "t2flair", "t2wflair", "flair t2", "t2 fluid"),
}

#: normalised spelling -> modality
MODALITY_ALIASES: Mapping[str, Modality] = MappingProxyType(
    {_key(alias): modality for modality, aliases in _ALIASES.items() for alias in aliases}
    | {_key(m.value): m for m in Modality}
)


def normalise_modality(name: str) -> Modality | None:
    """Return the modality ``name`` stands for, or None when it is not one neurofed uses."""
    return MODALITY_ALIASES.get(_key(name))
