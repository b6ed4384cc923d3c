"""One round's server step: validate the site updates, check the quorum, aggregate.

:func:`aggregate_round` is what a coordinator calls with whatever the sites sent: bad updates are
rejected with reasons (:mod:`neurofed.federated.validation`), and if fewer than ``min_sites``
remain a :class:`QuorumError` says so — the global model is then left as it was.

Examples
--------
>>> import numpy as np
>>> from neurofed.federated.strategies import FedAvg
>>> from neurofed.federated.update import SiteUpdate
>>> g = {"w": np.zeros(1)}
>>> ups = [SiteUpdate("a", {"w": np.ones(1)}, 1), SiteUpdate("b", {"w": np.full(1, 1e9)}, 1)]
>>> result = aggregate_round(FedAvg(), g, ups, min_sites=1, max_update_norm=10.0)
>>> result.params["w"].tolist(), result.accepted, [r.reason.value for r in result.rejections]
([1.0], ('a',), ['update-norm'])
>>> aggregate_round(FedAvg(), g, ups, min_sites=2, max_update_norm=10.0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.federated.round.QuorumError: 1 of 2 site update(s) accepted; the quorum is min_sites = 2...
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neurofed.federated.state import StrategyState
from neurofed.federated.strategies.base import Strategy
from neurofed.federated.update import Array, Parameters, SiteUpdate
from neurofed.federated.validation import Rejection, validate_updates

__all__ = ["QuorumError", "RoundResult", "aggregate_round"]


class QuorumError(RuntimeError):
    """Too few valid site updates to aggregate a round.

    Attributes
    ----------
    accepted
        Sites whose updates were valid.
    rejections
        Why the others were refused.
    min_sites
        The quorum.
    """

    def __init__(
        self, accepted: Sequence[str], rejections: Sequence[Rejection], min_sites: int
    ) -> None:
        self.accepted = tuple(accepted)
        self.rejections = tuple(rejections)
        self.min_sites = min_sites
        total = len(self.accepted) + len(self.rejections)
        reasons = "; ".join(r.line() for r in self.rejections)
        super().__init__(
            f"{len(self.accepted)} of {total} site update(s) accepted; the quorum is "
            f"min_sites = {min_sites}" + (f" ({reasons})" if reasons else "")
        )


@dataclass(frozen=True)
class RoundResult:
    """The outcome of :func:`aggregate_round`.

    Attributes
    ----------
    params
        The new global parameters.
    state
        The strategy's new server state (checkpoint it with the parameters).
    accepted
        Sites whose updates were aggregated, in the order received.
    rejections
        Updates that were refused, with reasons.
    """

    params: Parameters
    state: StrategyState
    accepted: tuple[str, ...]
    rejections: tuple[Rejection, ...]


def aggregate_round(
    strategy: Strategy,
    global_params: Mapping[str, Array],
    updates: Sequence[SiteUpdate],
    state: StrategyState | None = None,
    *,
    min_sites: int,
    max_update_norm: float | None = None,
) -> RoundResult:
    """Validate ``updates`` against ``global_params`` and aggregate the accepted ones.

    Raises
    ------
    QuorumError
        Fewer than ``min_sites`` updates were accepted (nothing is aggregated).
    """
    if isinstance(min_sites, bool) or not isinstance(min_sites, int) or min_sites < 1:
        raise ValueError(f"min_sites = {min_sites!r}: use a whole number >= 1")
    accepted, rejections = validate_updates(
        global_params,
        updates,
        local_parameters=strategy.client_settings().local_parameters,
        max_update_norm=max_update_norm,
    )
    if len(accepted) < min_sites:
        raise QuorumError([u.site_id for u in accepted], rejections, min_sites)
    params, new_state = strategy.aggregate(global_params, accepted, state)
    return RoundResult(params, new_state, tuple(u.site_id for u in accepted), rejections)
