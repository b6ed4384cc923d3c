"""The strategy registry: a :class:`StrategyName` → a strategy class.

A study names a strategy and gives its parameters; only installed strategies can be named.

Examples
--------
>>> get_strategy("fedprox", {"mu": 0.1}).client_settings().fedprox_mu
0.1
>>> get_strategy("fedavgg")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown strategy 'fedavgg' (did you mean 'fedavg'?); available: fedavg, ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neurofed.config import look_up
from neurofed.federated.heads import HeadMap
from neurofed.federated.strategies.base import Strategy, StrategyName, StrategyParams
from neurofed.federated.strategies.distill import Distill
from neurofed.federated.strategies.ditto import Ditto
from neurofed.federated.strategies.fedadam import FedAdam
from neurofed.federated.strategies.fedavg import FedAvg
from neurofed.federated.strategies.fedbn import FedBN
from neurofed.federated.strategies.fedprox import FedProx
from neurofed.federated.strategies.fedyogi import FedYogi
from neurofed.federated.strategies.median import Median
from neurofed.federated.strategies.trimmed_mean import TrimmedMean

__all__ = ["get_strategy", "get_strategy_type", "register_strategy", "strategy_names"]

_REGISTRY: dict[str, type[Strategy]] = {}


def register_strategy(strategy_type: type[Strategy]) -> None:
    """Register ``strategy_type`` under its ``name`` (which must be new)."""
    key = str(strategy_type.name)
    if key in _REGISTRY:
        raise ValueError(f"strategy {key!r} is registered already; choose another name")
    _REGISTRY[key] = strategy_type


def strategy_names() -> tuple[StrategyName, ...]:
    """Registered strategy names, in registration order."""
    return tuple(StrategyName(k) for k in _REGISTRY)


def get_strategy_type(name: StrategyName | str) -> type[Strategy]:
    """The class registered as ``name`` (a "did you mean" ``ValueError`` otherwise)."""
    return _REGISTRY[look_up("strategy", str(name), tuple(_REGISTRY))]


def get_strategy(
    name: StrategyName | str,
    params: Mapping[str, Any] | StrategyParams | None = None,
    *,
    heads: HeadMap = (),
) -> Strategy:
    """Instantiate strategy ``name`` with ``params`` (a mapping of its fields, or defaults).

    Parameters
    ----------
    name
        A registered name (:func:`strategy_names`).
    params
        The strategy's parameters; unknown fields are an error with a "did you mean".
    heads
        The model's head map, for ``mask_heads`` (:func:`~neurofed.federated.heads_for_model`).
    """
    return get_strategy_type(name)(params, heads=heads)


_ALL = (FedAvg, FedProx, FedAdam, FedYogi, FedBN, Ditto, Median, TrimmedMean, Distill)
for _strategy in _ALL:
    register_strategy(_strategy)
del _strategy
