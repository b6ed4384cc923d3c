"""Aggregation maths: pure functions over a stack of site arrays.

Every function takes ``stack`` of shape ``(n_sites, *shape)`` in ``float64`` and returns one
array of ``shape``. Strategies call them per parameter (see
:meth:`Strategy.aggregate <neurofed.federated.strategies.Strategy.aggregate>`), casting back to
the parameter's dtype. Identical rows give back exactly that row (the contract every strategy
keeps).

Examples
--------
>>> import numpy as np
>>> stack = np.array([[1.0, 10.0], [2.0, 20.0], [6.0, 90.0]])
>>> weighted_average(stack, np.array([1.0, 1.0, 2.0])).tolist()
[3.75, 52.5]
>>> coordinate_median(stack).tolist()
[2.0, 20.0]
>>> trimmed_mean(np.array([[0.0], [1.0], [2.0], [100.0]]), 0.25).tolist()
[1.5]
"""

from __future__ import annotations

import math

import numpy as np

from neurofed.federated.update import Array

__all__ = ["coordinate_median", "trim_count", "trimmed_mean", "weighted_average"]


def _check_stack(stack: Array) -> None:
    if stack.ndim < 1 or stack.shape[0] == 0:
        raise ValueError(f"need a stack of at least one site's array; got shape {stack.shape}")


def weighted_average(stack: Array, weights: Array) -> Array:
    """``Σ w_i x_i / Σ w_i`` over the first axis (FedAvg).

    Computed as ``x_0 + Σ w_i (x_i - x_0) / Σ w_i`` so that identical rows give ``x_0`` exactly,
    one site at a time: beyond the stack it holds two arrays of one site's size, not a copy of
    the stack.

    Raises
    ------
    ValueError
        If the weights do not match the stack, are negative or non-finite, or sum to 0.
    """
    _check_stack(stack)
    weights = np.asarray(weights, dtype=np.float64)
    if weights.shape != (stack.shape[0],):
        raise ValueError(f"need one weight per site: {weights.shape} for {stack.shape[0]} sites")
    total = float(weights.sum())
    if not np.all(np.isfinite(weights)) or np.any(weights < 0) or not total > 0:
        raise ValueError(f"weights must be finite, >= 0 and not all 0; got {weights.tolist()}")
    base = stack[0]
    shift = np.zeros(base.shape, dtype=np.result_type(stack.dtype, np.float64))
    term = np.empty_like(shift)
    for share, row in zip(weights[1:] / total, stack[1:], strict=True):
        np.subtract(row, base, out=term)
        term *= share
        shift += term
    average: Array = base + shift
    return average


def coordinate_median(stack: Array) -> Array:
    """Coordinate-wise median over the first axis (the mean of the two middle values for an
    even number of sites); unweighted."""
    _check_stack(stack)
    median: Array = np.median(stack, axis=0)
    return median


def trim_count(num_sites: int, trim_fraction: float) -> int:
    """Values cut from each end per coordinate: ``floor(trim_fraction · num_sites)``.

    >>> trim_count(10, 0.1), trim_count(9, 0.1), trim_count(3, 0.34)
    (1, 0, 1)
    """
    if not 0.0 <= trim_fraction < 0.5:
        raise ValueError(f"trim_fraction = {trim_fraction!r}: use a fraction in [0, 0.5)")
    return math.floor(trim_fraction * num_sites)


def trimmed_mean(stack: Array, trim_fraction: float) -> Array:
    """Coordinate-wise mean after dropping the ``trim_count`` smallest and largest values;
    unweighted. ``trim_fraction = 0`` is the plain mean."""
    _check_stack(stack)
    k = trim_count(stack.shape[0], trim_fraction)
    kept = np.sort(stack, axis=0)[k : stack.shape[0] - k]  # (n - 2k, *shape)
    base = kept[0]
    mean: Array = base + (kept - base).mean(axis=0)
    return mean
