"""The strategy interface: one abstract method (``combine``) inside a template ``aggregate``.

A strategy turns the global parameters and the (validated) site updates of a round into new
global parameters. :meth:`Strategy.aggregate` does the bookkeeping once for every strategy:

1. names matching ``local_parameters`` (e.g. FedBN's normalisation layers) keep the global value
   — they stay at the sites and are never averaged;
2. with ``mask_heads``, a head's parameters use only the sites with labels of its kind, weighted
   by those label counts; a head no site trained keeps its value;
3. integer and boolean entries (``num_batches_tracked``) take the largest site value;
4. float entries are combined by :meth:`Strategy.combine` in ``float64`` (weighted mean,
   median, …) and cast back to their dtype;
5. :meth:`Strategy.server_update` may then step from the old global towards the combined value
   with a server optimiser (FedAdam, FedYogi) keeping a
   :class:`~neurofed.federated.state.StrategyState`.

:meth:`Strategy.client_settings` tells each site's training what to do otherwise (FedProx's ``mu``,
parameters that stay local, Ditto's ``lambda``).
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, ClassVar

import numpy as np

from neurofed.config import ConfigBase, is_local, require
from neurofed.federated.heads import HeadMap, head_kind
from neurofed.federated.state import StrategyState
from neurofed.federated.update import Array, Parameters, SiteUpdate

__all__ = [
    "SECAGG_FIELDS",
    "ClientSettings",
    "Strategy",
    "StrategyName",
    "StrategyParams",
    "check_fraction",
    "check_number",
]


#: Options of secure aggregation, left out of the study while ``secagg`` is false.
SECAGG_FIELDS = ("secagg", "secagg_clip", "secagg_threshold")


class StrategyName(StrEnum):
    """Registered strategies (the ``name`` of a study's ``[strategy]`` table)."""

    FEDAVG = "fedavg"
    FEDPROX = "fedprox"
    FEDADAM = "fedadam"
    FEDYOGI = "fedyogi"
    FEDBN = "fedbn"
    DITTO = "ditto"
    MEDIAN = "median"
    TRIMMED_MEAN = "trimmed-mean"
    DISTILL = "distill"


def check_number(owner: object, name: str, low: float, high: float, fix: str) -> None:
    """Require ``owner.name`` to be a real number in ``[low, high]`` and store it as ``float``."""
    value = getattr(owner, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    require(ok and low <= value <= high, owner, name, fix)
    object.__setattr__(owner, name, float(value))


def check_fraction(owner: object, name: str, fix: str) -> None:
    """Require ``owner.name`` in ``[0, 1)`` (a decay rate) and store it as ``float``."""
    check_number(owner, name, 0.0, math.nextafter(1.0, 0.0), fix)


@dataclass(frozen=True)
class StrategyParams(ConfigBase):
    """Options every strategy has.

    Parameters
    ----------
    mask_heads
        Task-masked aggregation: average a head only over sites with labels of its kind,
        weighted by their label counts (``glioma-multitask``).
    local_parameters
        Glob patterns of state-dict names that stay at the sites (never averaged, never sent).
    secagg
        Secure aggregation (:mod:`neurofed.federated.server.secagg`): the server sees only
        masked updates and their sum. Weighted-mean strategies only.
    secagg_clip
        Each element of a site's update is clipped to ``[-secagg_clip, secagg_clip]`` before it
        is quantised (the rounding error of the mean is about ``sites · clip / 2^31``).
    secagg_threshold
        Shares that recover a site's secrets, the fewest sites a round can finish with (0: a
        majority of the sites that start the round, at least 2).
    """

    mask_heads: bool = False
    local_parameters: tuple[str, ...] = ()
    secagg: bool = False
    secagg_clip: float = 10.0
    secagg_threshold: int = 0

    def __post_init__(self) -> None:
        require(isinstance(self.mask_heads, bool), self, "mask_heads", "use true or false")
        require(isinstance(self.secagg, bool), self, "secagg", "use true or false")
        check_number(self, "secagg_clip", 1e-6, 1e6, "use a bound on one update element, e.g. 10")
        threshold = self.secagg_threshold
        require(
            isinstance(threshold, int) and not isinstance(threshold, bool) and threshold >= 0,
            self,
            "secagg_threshold",
            "use a whole number of sites >= 2, or 0 for a majority",
        )
        require(threshold != 1, self, "secagg_threshold", "use 2 or more (or 0 for a majority)")
        patterns = self.local_parameters
        if isinstance(patterns, list):
            patterns = tuple(patterns)
        require(
            isinstance(patterns, tuple) and all(isinstance(p, str) and p for p in patterns),
            self,
            "local_parameters",
            "give glob patterns of state-dict names, e.g. ['*.norm[0-9].*']",
        )
        object.__setattr__(self, "local_parameters", patterns)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; the secure aggregation options only with ``secagg`` (so a study
        without it keeps its hash)."""
        out = super().to_json()
        if not self.secagg:
            for name in SECAGG_FIELDS:
                out.pop(name)
        return out


@dataclass(frozen=True)
class ClientSettings:
    """What a strategy asks of each site's training.

    Attributes
    ----------
    fedprox_mu
        Weight of the proximal term ``mu/2·||w - w_global||²`` (0 = off): ``fedprox_mu``.
    local_parameters
        Glob patterns of state-dict names the site keeps (``TrainConfig.local_parameters``).
    ditto_lambda
        Ditto: also train a personalised model with ``lambda/2·||v - w_global||²``
        (``None`` = no personalised model).

    Examples
    --------
    >>> ClientSettings(fedprox_mu=0.01).to_json()
    {'fedprox_mu': 0.01, 'local_parameters': [], 'ditto_lambda': None}
    """

    fedprox_mu: float = 0.0
    local_parameters: tuple[str, ...] = ()
    ditto_lambda: float | None = None

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types."""
        return {
            "fedprox_mu": self.fedprox_mu,
            "local_parameters": list(self.local_parameters),
            "ditto_lambda": self.ditto_lambda,
        }


class Strategy(ABC):
    """Base of every strategy; subclasses implement :meth:`combine` (module docstring).

    Class attributes: ``name`` (registry key), ``description`` (one line for a custodian),
    ``params_type`` (the frozen parameters class).

    Parameters
    ----------
    params
        The strategy's :attr:`params_type`, a mapping of its fields, or ``None`` for defaults.
    heads
        Head map of the model (:func:`~neurofed.federated.heads.heads_for_model`); required when
        ``params.mask_heads`` is true.

    Raises
    ------
    ValueError
        Unknown or invalid parameters; ``mask_heads`` without a head map.
    """

    name: ClassVar[StrategyName]
    description: ClassVar[str]
    params_type: ClassVar[type[StrategyParams]] = StrategyParams
    #: Whether :meth:`combine` is the weighted mean, so that the server may see only the sum
    #: of the sites' updates (secure aggregation).
    weighted_mean: ClassVar[bool] = True
    params: StrategyParams

    def __init__(
        self, params: Mapping[str, Any] | StrategyParams | None = None, *, heads: HeadMap = ()
    ) -> None:
        self.params = self.params_type.parse(params)
        if self.params.mask_heads and not heads:
            raise ValueError(
                f"strategy {self.name.value!r}: mask_heads = true needs a model with labelled "
                "heads (multitask-unet, task glioma-multitask); set mask_heads = false"
            )
        self.heads: HeadMap = tuple(heads) if self.params.mask_heads else ()
        if self.params.secagg and not self.weighted_mean:
            raise ValueError(
                f"strategy {self.name.value!r} needs every site's update on its own, so it "
                "cannot run with secagg = true (the server sees only their sum); use a "
                "weighted-mean strategy (fedavg, fedprox, fedadam, fedyogi, fedbn, ditto) or "
                "set secagg = false"
            )

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.params!r})"

    # -- extension points --------------------------------------------------------------------

    @abstractmethod
    def combine(self, stack: Array, weights: Array) -> Array:
        """Combine one float parameter across sites.

        Parameters
        ----------
        stack
            ``(n_sites, *shape)`` ``float64`` values of the sites taking part.
        weights
            ``(n_sites,)`` positive weights (examples, or label counts for a masked head).

        Returns
        -------
        The combined ``float64`` array of ``shape``; identical rows must give that row.
        """

    def server_update(
        self,
        global_params: Mapping[str, Array],
        combined: Parameters,
        updated: frozenset[str],
        state: StrategyState,
    ) -> tuple[Parameters, StrategyState]:
        """Step from ``global_params`` given the ``combined`` values (default: take them).

        ``updated`` names the float entries that some site trained this round (others, such as
        local parameters or a head nobody trained, must keep their global value).
        """
        return combined, state

    def client_settings(self) -> ClientSettings:
        """What sites must do for this strategy (default: parameters that stay local)."""
        return ClientSettings(local_parameters=self.params.local_parameters)

    # -- template ----------------------------------------------------------------------------

    def site_weights(self, name: str, updates: Sequence[SiteUpdate]) -> Array:
        """``(n_sites,)`` weights of parameter ``name``: examples, or label counts of its head."""
        kind = head_kind(name, self.heads) if self.heads else None
        if kind is None:
            return np.array([u.num_examples for u in updates], dtype=np.float64)
        return np.array([u.label_count(kind) for u in updates], dtype=np.float64)

    def aggregate(
        self,
        global_params: Mapping[str, Array],
        updates: Sequence[SiteUpdate],
        state: StrategyState | None = None,
    ) -> tuple[Parameters, StrategyState]:
        """New global parameters (same names, shapes and dtypes) and the new strategy state.

        ``updates`` must have passed :func:`~neurofed.federated.validation.validate_updates`.

        Raises
        ------
        ValueError
            No update, or an update that lacks a shared parameter of the global model.
        """
        if not updates:
            raise ValueError(f"strategy {self.name.value!r}: no site update to aggregate")
        state = StrategyState.empty() if state is None else state
        local = self.client_settings().local_parameters
        combined: Parameters = {}
        updated: set[str] = set()
        for name, current in global_params.items():
            current = np.asarray(current)
            if is_local(name, local):
                combined[name] = current.copy()
                continue
            weights = self.site_weights(name, updates)
            taking_part = [u for u, w in zip(updates, weights, strict=True) if w > 0]
            if not taking_part:  # a head no site had labels for
                combined[name] = current.copy()
                continue
            missing = [u.site_id for u in taking_part if name not in u.params]
            if missing:
                raise ValueError(
                    f"parameter {name!r} is missing from the update of {missing}; validate "
                    "updates with validate_updates() before aggregating"
                )
            stack = np.stack([u.array(name) for u in taking_part])  # (n, *shape)
            if current.dtype.kind in "biu":
                combined[name] = np.asarray(stack.max(axis=0), dtype=current.dtype)
                continue
            value = self.combine(stack.astype(np.float64), weights[weights > 0])
            combined[name] = np.asarray(value, dtype=current.dtype)
            updated.add(name)
        return self.server_update(global_params, combined, frozenset(updated), state)
