"""Tiny named-parameter dicts for strategy tests (a few floats, one int buffer, mixed dtypes)."""

from __future__ import annotations

import numpy as np

from neurofed.federated import Parameters, SiteUpdate

__all__ = ["LOCAL_NAME", "SHAPES", "params", "update"]

#: A name FedBN keeps local (matches ``*norm*``).
LOCAL_NAME = "encoder.norm1.weight"

SHAPES: dict[str, tuple[tuple[int, ...], type[np.generic]]] = {
    "encoder.conv.weight": ((2, 3), np.float32),
    "encoder.conv.bias": ((3,), np.float32),
    LOCAL_NAME: ((3,), np.float32),
    "encoder.norm1.num_batches_tracked": ((), np.int64),
    "head.weight": ((1, 2), np.float64),
}


def params(seed: int) -> Parameters:
    """Random parameters of every name in :data:`SHAPES`, with its dtype."""
    rng = np.random.default_rng(seed)
    out: Parameters = {}
    for name, (shape, dtype) in SHAPES.items():
        if np.issubdtype(dtype, np.integer):
            out[name] = np.asarray(rng.integers(0, 100, size=shape), dtype=dtype)
        else:
            out[name] = rng.normal(size=shape).astype(dtype)
    return out


def update(site_id: str, values: Parameters, num_examples: int = 4, **kwargs: object) -> SiteUpdate:
    """A :class:`SiteUpdate` holding copies of ``values``."""
    copied = {k: np.array(v, copy=True) for k, v in values.items()}
    return SiteUpdate(site_id, copied, num_examples, **kwargs)  # type: ignore[arg-type]
