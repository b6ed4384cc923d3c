"""Feature normalisation inside a network, as a named option of model configs."""

from __future__ import annotations

from enum import StrEnum

__all__ = ["Norm"]


class Norm(StrEnum):
    """Feature normalisation inside a network (FedBN-style strategies treat BATCH specially)."""

    INSTANCE = "instance"
    BATCH = "batch"
