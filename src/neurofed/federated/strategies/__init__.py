"""Aggregation strategies: pure numpy over named parameter dicts, and their registry.

Examples
--------
>>> [str(n) for n in strategy_names()]  # doctest: +NORMALIZE_WHITESPACE
['fedavg', 'fedprox', 'fedadam', 'fedyogi', 'fedbn', 'ditto', 'median', 'trimmed-mean', 'distill']
"""

from neurofed.federated.strategies.base import (
    ClientSettings,
    Strategy,
    StrategyName,
    StrategyParams,
)
from neurofed.federated.strategies.distill import Distill, DistillParams
from neurofed.federated.strategies.ditto import Ditto, DittoParams
from neurofed.federated.strategies.fedadam import FedAdam
from neurofed.federated.strategies.fedavg import FedAvg
from neurofed.federated.strategies.fedbn import NORM_PATTERNS, FedBN, FedBNParams
from neurofed.federated.strategies.fedopt import FedOpt, FedOptParams, fedopt_step
from neurofed.federated.strategies.fedprox import FedProx, FedProxParams
from neurofed.federated.strategies.fedyogi import FedYogi
from neurofed.federated.strategies.median import Median
from neurofed.federated.strategies.registry import (
    get_strategy,
    get_strategy_type,
    register_strategy,
    strategy_names,
)
from neurofed.federated.strategies.trimmed_mean import TrimmedMean, TrimmedMeanParams

__all__ = [
    "NORM_PATTERNS",
    "ClientSettings",
    "Distill",
    "DistillParams",
    "Ditto",
    "DittoParams",
    "FedAdam",
    "FedAvg",
    "FedBN",
    "FedBNParams",
    "FedOpt",
    "FedOptParams",
    "FedProx",
    "FedProxParams",
    "FedYogi",
    "Median",
    "Strategy",
    "StrategyName",
    "StrategyParams",
    "TrimmedMean",
    "TrimmedMeanParams",
    "fedopt_step",
    "get_strategy",
    "get_strategy_type",
    "register_strategy",
    "strategy_names",
]
