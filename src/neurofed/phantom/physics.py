"""MR signal physics for the phantom: tissue relaxation times and the sequence equations.

Every image the phantom writes is a partial-volume mix of per-tissue signals, and every
per-tissue signal comes from a closed-form equation of the tissue's (T1, T2, PD) and the site's
sequence timing (TR, TE, TI), so contrasts behave as on a scanner: CSF is dark on T1w and nulled
on FLAIR, bright on T2w; oedema and MS lesions are bright on T2w and FLAIR; gadolinium shortens T1
in enhancing tumour.

Examples
--------
>>> seq = Sequence(tr=500.0, te=12.0)
>>> wm = tissue_signal(Tissue.WM, seq, field_t=3.0)
>>> csf = tissue_signal(Tissue.CSF, seq, field_t=3.0)
>>> bool(csf < wm)  # CSF is dark on T1w
True
>>> round(flair_null_ti(4000.0, 9000.0))  # TI that nulls CSF with T1 = 4 s at TR = 9 s
2372
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from enum import StrEnum
from types import MappingProxyType
from typing import TypeVar

import numpy as np
import numpy.typing as npt

__all__ = [
    "RELAXATION_1_5T",
    "RELAXATION_3T",
    "Relaxation",
    "Sequence",
    "Tissue",
    "flair_null_ti",
    "gadolinium_relaxivity",
    "inversion_recovery",
    "relaxation_at",
    "signal",
    "spin_echo",
    "tissue_signal",
    "with_gadolinium",
]

_Value = TypeVar("_Value", float, npt.NDArray[np.float64])


class Tissue(StrEnum):
    """Tissue classes the phantom mixes; each has relaxation parameters."""

    WM = "wm"
    GM = "gm"
    CSF = "csf"
    FAT = "fat"  # scalp fat and skin
    SKULL = "skull"  # cortical bone with a little marrow
    TUMOUR = "tumour"  # solid non-enhancing tumour
    NECROSIS = "necrosis"
    OEDEMA = "oedema"  # peritumoral oedema / infiltrated tissue
    ENHANCING = "enhancing"  # enhancing tumour before contrast
    CALCIFICATION = "calcification"
    MS_LESION = "ms-lesion"


@dataclass(frozen=True)
class Relaxation:
    """Relaxation times in ms and relative proton density (water = 1)."""

    t1: float
    t2: float
    pd: float

    def scaled(self, t1: float = 1.0, t2: float = 1.0, pd: float = 1.0) -> Relaxation:
        """A copy with each parameter multiplied by the given factor."""
        return Relaxation(self.t1 * t1, self.t2 * t2, self.pd * pd)


_R = Relaxation
#: Literature-typical values at 1.5 T (T1 rises ~10-40 % at 3 T, T2 falls slightly).
RELAXATION_1_5T = MappingProxyType(
    {
        Tissue.WM: _R(700.0, 80.0, 0.69),
        Tissue.GM: _R(1100.0, 100.0, 0.80),
        Tissue.CSF: _R(4000.0, 2000.0, 1.00),
        Tissue.FAT: _R(260.0, 80.0, 0.90),
        Tissue.SKULL: _R(500.0, 30.0, 0.15),
        Tissue.TUMOUR: _R(1250.0, 125.0, 0.86),
        Tissue.NECROSIS: _R(2600.0, 350.0, 0.92),
        Tissue.OEDEMA: _R(1150.0, 150.0, 0.86),
        Tissue.ENHANCING: _R(1150.0, 110.0, 0.85),
        Tissue.CALCIFICATION: _R(700.0, 20.0, 0.30),
        Tissue.MS_LESION: _R(1000.0, 120.0, 0.80),
    }
)
RELAXATION_3T = MappingProxyType(
    {
        Tissue.WM: _R(830.0, 70.0, 0.69),
        Tissue.GM: _R(1300.0, 90.0, 0.80),
        Tissue.CSF: _R(4200.0, 1800.0, 1.00),
        Tissue.FAT: _R(380.0, 70.0, 0.90),
        Tissue.SKULL: _R(600.0, 25.0, 0.15),
        Tissue.TUMOUR: _R(1550.0, 110.0, 0.86),
        Tissue.NECROSIS: _R(2900.0, 320.0, 0.92),
        Tissue.OEDEMA: _R(1400.0, 130.0, 0.86),
        Tissue.ENHANCING: _R(1450.0, 95.0, 0.85),
        Tissue.CALCIFICATION: _R(800.0, 18.0, 0.30),
        Tissue.MS_LESION: _R(1300.0, 105.0, 0.80),
    }
)


def relaxation_at(tissue: Tissue, field_t: float) -> Relaxation:
    """Relaxation of ``tissue`` at ``field_t`` tesla, linear between the 1.5 T and 3 T tables.

    >>> relaxation_at(Tissue.WM, 2.25).t1
    765.0
    """
    a, b = RELAXATION_1_5T[tissue], RELAXATION_3T[tissue]
    w = (field_t - 1.5) / 1.5
    return Relaxation(a.t1 + w * (b.t1 - a.t1), a.t2 + w * (b.t2 - a.t2), a.pd + w * (b.pd - a.pd))


@dataclass(frozen=True)
class Sequence:
    """Timing of one acquisition in ms; ``ti`` set means inversion recovery (FLAIR).

    ``contrast`` marks a post-gadolinium acquisition (T1ce): gadolinium then shortens T1 and T2
    wherever a tissue carries a concentration.
    """

    tr: float
    te: float
    ti: float | None = None
    contrast: bool = False


def spin_echo(pd: _Value, t1: _Value, t2: _Value, tr: float, te: float) -> _Value:
    """Spin-echo magnitude ``PD (1 - exp(-TR/T1)) exp(-TE/T2)``.

    >>> round(float(spin_echo(1.0, 1000.0, 100.0, tr=1000.0, te=100.0)), 4)
    0.2325
    """
    return pd * (1.0 - np.exp(-tr / t1)) * np.exp(-te / t2)  # type: ignore[no-any-return]


def inversion_recovery(
    pd: _Value, t1: _Value, t2: _Value, tr: float, te: float, ti: float
) -> _Value:
    """Inversion-recovery magnitude ``PD |1 - 2 exp(-TI/T1) + exp(-TR/T1)| exp(-TE/T2)``.

    >>> ti = flair_null_ti(4000.0, 9000.0)
    >>> round(float(inversion_recovery(1.0, 4000.0, 2000.0, tr=9000.0, te=120.0, ti=ti)), 6)
    0.0
    """
    mz = 1.0 - 2.0 * np.exp(-ti / t1) + np.exp(-tr / t1)
    return pd * np.abs(mz) * np.exp(-te / t2)  # type: ignore[no-any-return]


def flair_null_ti(t1: float, tr: float) -> float:
    """Inversion time that nulls a tissue of longitudinal relaxation ``t1`` (about T1 ln 2)."""
    return t1 * math.log(2.0 / (1.0 + math.exp(-tr / t1)))


def gadolinium_relaxivity(field_t: float) -> tuple[float, float]:
    """(r1, r2) of a macrocyclic gadolinium agent in 1/(s mM); r1 falls slightly with field."""
    w = (field_t - 1.5) / 1.5
    return 4.3 - 0.3 * w, 5.5 - 0.3 * w


def with_gadolinium(relax: Relaxation, gd_mmol: float, field_t: float) -> Relaxation:
    """``1/T1' = 1/T1 + r1 C`` and ``1/T2' = 1/T2 + r2 C`` (times in ms, C in mM).

    >>> with_gadolinium(Relaxation(1000.0, 100.0, 1.0), 0.5, 1.5).t1 < 1000.0
    True
    """
    if gd_mmol <= 0.0:
        return relax
    r1, r2 = gadolinium_relaxivity(field_t)
    t1 = 1000.0 / (1000.0 / relax.t1 + r1 * gd_mmol)
    t2 = 1000.0 / (1000.0 / relax.t2 + r2 * gd_mmol)
    return replace(relax, t1=t1, t2=t2)


def signal(relax: Relaxation, seq: Sequence, gd_mmol: float = 0.0, field_t: float = 3.0) -> float:
    """Signal of one tissue in one sequence (gadolinium counts only when ``seq.contrast``)."""
    if seq.contrast:
        relax = with_gadolinium(relax, gd_mmol, field_t)
    if seq.ti is None:
        return float(spin_echo(relax.pd, relax.t1, relax.t2, seq.tr, seq.te))
    return float(inversion_recovery(relax.pd, relax.t1, relax.t2, seq.tr, seq.te, seq.ti))


def tissue_signal(tissue: Tissue, seq: Sequence, field_t: float, gd_mmol: float = 0.0) -> float:
    """Signal of a tissue with its nominal relaxation at ``field_t``."""
    return signal(relaxation_at(tissue, field_t), seq, gd_mmol, field_t)
