"""Feature normalisation inside a network, as a named option of model configs."""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from neurofed.config import coerce_enum, require

__all__ = ["U_NET_NORMS", "Norm", "coerce_norm", "group_count"]


class Norm(StrEnum):
    """Feature normalisation inside a network (FedBN-style strategies treat BATCH specially)."""

    INSTANCE = "instance"
    BATCH = "batch"
    GROUP = "group"


def group_count(channels: int) -> int:
    """Groups of a group norm over ``channels``: the largest divisor of it up to 32 (Wu & He
    2018 use 32; Opacus's ``ModuleValidator.fix`` also caps at 32).

    >>> group_count(64), group_count(8), group_count(24), group_count(1)
    (32, 8, 24, 1)
    """
    return max(g for g in range(1, min(32, channels) + 1) if channels % g == 0)


def coerce_norm(owner: Any, allowed: tuple[Norm, ...]) -> None:
    """Turn ``owner.norm`` into a :class:`Norm` member among ``allowed``, or raise the
    config's ``ValueError`` naming them."""
    coerce_enum(owner, "norm", Norm)
    names = ", ".join(f'"{n.value}"' for n in allowed)
    require(owner.norm in allowed, owner, "norm", f"this network takes {names}")


#: What the U-Nets normalise with (MONAI's ``instance`` or ``batch``).
U_NET_NORMS = (Norm.INSTANCE, Norm.BATCH)
