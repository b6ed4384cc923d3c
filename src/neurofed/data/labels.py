"""Label conventions of the source datasets, and their mapping to neurofed's internal numbering.

Inside neurofed a glioma label map uses :class:`~neurofed.keys.TumorLabel` (BraTS 2023 numbering:
1 NCR, 2 ED, 3 ET) and an MS lesion map uses :class:`~neurofed.keys.LesionLabel`. Each reader says
which convention its files use; :func:`to_internal` converts on load.

Examples
--------
>>> import numpy as np
>>> to_internal(np.array([0, 1, 2, 4], dtype=np.uint8), LabelConvention.BRATS_2021).tolist()
[0, 1, 2, 3]
>>> to_internal(np.array([0, 1, 2, 3], dtype=np.uint8), LabelConvention.MSD_BRAIN_TUMOUR).tolist()
[0, 2, 1, 3]
"""

from __future__ import annotations

from collections.abc import Mapping
from types import MappingProxyType

import numpy as np
import numpy.typing as npt

from neurofed.keys import LabelConvention, LesionLabel, TumorLabel

__all__ = ["CONVENTION_VALUES", "allowed_values", "invalid_values", "is_tumor", "to_internal"]

_B, _N, _E, _T = TumorLabel.BACKGROUND, TumorLabel.NCR, TumorLabel.ED, TumorLabel.ET

#: raw value -> internal value, for every convention.
CONVENTION_VALUES: Mapping[LabelConvention, Mapping[int, int]] = MappingProxyType(
    {
        LabelConvention.BRATS_2021: MappingProxyType({0: _B, 1: _N, 2: _E, 4: _T}),
        LabelConvention.BRATS_2023: MappingProxyType({0: _B, 1: _N, 2: _E, 3: _T}),
        LabelConvention.MSD_BRAIN_TUMOUR: MappingProxyType({0: _B, 1: _E, 2: _N, 3: _T}),
        LabelConvention.BINARY_LESION: MappingProxyType(
            {0: LesionLabel.BACKGROUND, 1: LesionLabel.LESION}
        ),
    }
)


def allowed_values(convention: LabelConvention) -> tuple[int, ...]:
    """Raw label values a file in ``convention`` may contain."""
    return tuple(sorted(CONVENTION_VALUES[convention]))


def is_tumor(convention: LabelConvention) -> bool:
    """Whether the convention describes glioma sub-regions (else binary lesions)."""
    return convention is not LabelConvention.BINARY_LESION


def invalid_values(labels: npt.NDArray[np.integer], convention: LabelConvention) -> tuple[int, ...]:
    """Values present in ``labels`` that ``convention`` does not define (empty when clean)."""
    present = np.unique(labels)
    allowed = CONVENTION_VALUES[convention]
    return tuple(int(v) for v in present if int(v) not in allowed)


def to_internal(
    labels: npt.NDArray[np.integer], convention: LabelConvention
) -> npt.NDArray[np.uint8]:
    """Renumber a raw label map into the internal convention.

    Raises
    ------
    ValueError
        If the map holds a value the convention does not define.
    """
    bad = invalid_values(labels, convention)
    if bad:
        raise ValueError(
            f"label values {list(bad)} are not part of the {convention.value} convention "
            f"(allowed: {list(allowed_values(convention))})"
        )
    lookup = np.zeros(256, dtype=np.uint8)
    for raw, internal in CONVENTION_VALUES[convention].items():
        lookup[raw] = internal
    return lookup[np.asarray(labels, dtype=np.uint8)]
