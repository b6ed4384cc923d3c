"""Federated learning: the pure maths at the top level, and the rooms of a federated run.

Importing this package imports numpy only (no torch, no NVFlare): it exports the maths over
named parameter dicts (``dict[str, np.ndarray]``) that the server calls:

- :mod:`~neurofed.federated.strategies` — FedAvg, FedProx, FedAdam, FedYogi, FedBN, Ditto,
  median, trimmed mean; task-masked heads and local parameters as options of every strategy;
- :mod:`~neurofed.federated.validation` — reject bad site updates with a named reason;
- :mod:`~neurofed.federated.round` — validate, check the quorum, aggregate;
- :mod:`~neurofed.federated.selection` — the best round by a metric and an explicit direction.

The rooms (import them by name):

- :mod:`~neurofed.federated.protocol` — every message between server and site;
- :mod:`~neurofed.federated.study` — ``study.toml`` → frozen :class:`Study` with a content hash;
- :mod:`~neurofed.federated.server` — the run: rounds, quorum, selection, run folder;
- :mod:`~neurofed.federated.site` — what a site does for a task and keeps (no NVFlare);
- :mod:`~neurofed.federated.engine` — the only room that imports or drives NVFlare.

Examples
--------
>>> import numpy as np
>>> strategy = get_strategy("fedavg")
>>> updates = [SiteUpdate("a", {"w": np.array([1.0])}, 1),
...            SiteUpdate("b", {"w": np.array([3.0])}, 3)]
>>> aggregate_round(strategy, {"w": np.zeros(1)}, updates, min_sites=2).params["w"].tolist()
[2.5]
"""

from neurofed.federated.heads import (
    MODEL_HEADS,
    MULTITASK_UNET_HEADS,
    HeadMap,
    head_kind,
    heads_for_model,
)
from neurofed.federated.round import QuorumError, RoundResult, aggregate_round
from neurofed.federated.selection import Direction, Selection, best_round, metric_direction
from neurofed.federated.state import StrategyState
from neurofed.federated.strategies import (
    NORM_PATTERNS,
    ClientSettings,
    Ditto,
    FedAdam,
    FedAvg,
    FedBN,
    FedOpt,
    FedProx,
    FedYogi,
    Median,
    Strategy,
    StrategyName,
    StrategyParams,
    TrimmedMean,
    get_strategy,
    get_strategy_type,
    register_strategy,
    strategy_names,
)
from neurofed.federated.update import Array, Parameters, SiteUpdate
from neurofed.federated.validation import (
    Rejection,
    RejectReason,
    check_update,
    update_norm,
    validate_updates,
)

__all__ = [
    "MODEL_HEADS",
    "MULTITASK_UNET_HEADS",
    "NORM_PATTERNS",
    "Array",
    "ClientSettings",
    "Direction",
    "Ditto",
    "FedAdam",
    "FedAvg",
    "FedBN",
    "FedOpt",
    "FedProx",
    "FedYogi",
    "HeadMap",
    "Median",
    "Parameters",
    "QuorumError",
    "RejectReason",
    "Rejection",
    "RoundResult",
    "Selection",
    "SiteUpdate",
    "Strategy",
    "StrategyName",
    "StrategyParams",
    "StrategyState",
    "TrimmedMean",
    "aggregate_round",
    "best_round",
    "check_update",
    "get_strategy",
    "get_strategy_type",
    "head_kind",
    "heads_for_model",
    "metric_direction",
    "register_strategy",
    "strategy_names",
    "update_norm",
    "validate_updates",
]
