"""Federated learning without an FL engine: study files, strategies, update validation.

Everything here is pure Python / numpy over named parameter dicts (``dict[str, np.ndarray]``);
the NVFlare controller and site executor (:mod:`neurofed.federated.engine`) call it.

- :mod:`~neurofed.federated.study` — ``study.toml`` → frozen :class:`Study` with a content hash;
- :mod:`~neurofed.federated.strategies` — FedAvg, FedProx, FedAdam, FedYogi, FedBN, Ditto,
  median, trimmed mean; task-masked heads and local parameters as options of every strategy;
- :mod:`~neurofed.federated.validation` — reject bad site updates with a named reason;
- :mod:`~neurofed.federated.round` — validate, check the quorum, aggregate;
- :mod:`~neurofed.federated.selection` — the best round by a metric and an explicit direction.

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
from neurofed.federated.study import STUDY_FILE, Study, StudyError, canonical_json, load_study
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
    "STUDY_FILE",
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
    "Study",
    "StudyError",
    "TrimmedMean",
    "aggregate_round",
    "best_round",
    "canonical_json",
    "check_update",
    "get_strategy",
    "get_strategy_type",
    "head_kind",
    "heads_for_model",
    "load_study",
    "metric_direction",
    "register_strategy",
    "strategy_names",
    "update_norm",
    "validate_updates",
]
