"""FedOpt (Reddi et al. 2021): a server optimiser on the averaged pseudo-gradient.

Each round the sites' models are averaged as in FedAvg (or combined by any strategy's
``combine``) and the server treats ``Δ = average - global`` as a pseudo-gradient (Reddi et al.,
Algorithm 2, without bias correction)::

    m ← β1·m + (1 - β1)·Δ
    v ← β2·v + (1 - β2)·Δ²                       (FedAdam)
    v ← v - (1 - β2)·Δ²·sign(v - Δ²)             (FedYogi)
    x ← x + η·m / (√v + τ)

with ``m`` starting at 0 and ``v`` at ``τ²`` (the paper's ``v_{-1} ≥ τ²``). ``m`` and ``v`` live in
the :class:`~neurofed.federated.state.StrategyState` as ``m/<name>`` and ``v/<name>`` (``float64``),
with the number of server steps as the scalar ``step``, so a resumed server continues exactly.
Entries that no site trained this round (local parameters, a masked head without labels) and
integer buffers are not stepped and their moments are left as they were.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass
from typing import ClassVar

import numpy as np

from neurofed.federated.aggregation import weighted_average
from neurofed.federated.state import StrategyState
from neurofed.federated.strategies.base import (
    Strategy,
    StrategyParams,
    check_fraction,
    check_number,
)
from neurofed.federated.update import Array, Parameters

__all__ = ["FIRST_MOMENT", "SECOND_MOMENT", "STEP", "FedOpt", "FedOptParams", "fedopt_step"]

FIRST_MOMENT = "m/"
SECOND_MOMENT = "v/"
STEP = "step"


@dataclass(frozen=True)
class FedOptParams(StrategyParams):
    """Server optimiser settings (Reddi et al. 2021).

    Parameters
    ----------
    eta
        Server learning rate ``η``.
    beta1, beta2
        Decay of the first and second moments, in ``[0, 1)``.
    tau
        Adaptivity ``τ > 0`` (smaller is more adaptive; Reddi et al. use 1e-3).
    """

    eta: float = 1e-2
    beta1: float = 0.9
    beta2: float = 0.99
    tau: float = 1e-3

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self, "eta", 1e-12, 1e3, "use a positive server learning rate, e.g. 0.01")
        check_fraction(self, "beta1", "use a decay in [0, 1), e.g. 0.9")
        check_fraction(self, "beta2", "use a decay in [0, 1), e.g. 0.99")
        check_number(self, "tau", 1e-12, 1e3, "use a positive number, e.g. 1e-3")


def fedopt_step(
    x: Array, delta: Array, m: Array, v: Array, *, eta: float, beta1: float, tau: float
) -> tuple[Array, Array]:
    """The parameter step shared by FedAdam and FedYogi, given the new ``v``.

    Returns the new ``x`` and the new first moment ``m`` (all ``float64``).

    >>> x, m = fedopt_step(np.array([1.0]), np.array([1.0]), np.array([0.0]),
    ...                    v=np.array([0.25]), eta=0.5, beta1=0.5, tau=0.0)
    >>> x.tolist(), m.tolist()  # m = 0.5·0 + 0.5·1; x = 1 + 0.5·0.5/√0.25
    ([1.5], [0.5])
    """
    m = beta1 * m + (1.0 - beta1) * delta
    return x + eta * m / (np.sqrt(v) + tau), m


class FedOpt(Strategy):
    """Base of the server optimisers: FedAvg's combination, then :meth:`second_moment`."""

    params_type: ClassVar[type[StrategyParams]] = FedOptParams
    params: FedOptParams

    def combine(self, stack: Array, weights: Array) -> Array:
        return weighted_average(stack, weights)

    @abstractmethod
    def second_moment(self, v: Array, delta: Array) -> Array:
        """The new second moment from the old one and the pseudo-gradient ``delta``."""

    def server_update(
        self,
        global_params: Mapping[str, Array],
        combined: Parameters,
        updated: frozenset[str],
        state: StrategyState,
    ) -> tuple[Parameters, StrategyState]:
        p = self.params
        arrays = dict(state.arrays)
        new = dict(combined)
        for name in sorted(updated):
            x = np.asarray(global_params[name])
            dtype = x.dtype
            x64 = x.astype(np.float64)
            delta = combined[name].astype(np.float64) - x64  # the pseudo-gradient
            m = arrays.get(FIRST_MOMENT + name, np.zeros_like(x64))
            v = arrays.get(SECOND_MOMENT + name, np.full_like(x64, p.tau**2))
            v = self.second_moment(np.asarray(v, dtype=np.float64), delta)
            stepped, m = fedopt_step(
                x64, delta, np.asarray(m, dtype=np.float64), v, eta=p.eta, beta1=p.beta1, tau=p.tau
            )
            arrays[FIRST_MOMENT + name], arrays[SECOND_MOMENT + name] = m, v
            new[name] = np.asarray(stepped, dtype=dtype)  # 0-d stays an array
        scalars = dict(state.scalars)
        scalars[STEP] = int(state.scalar(STEP, 0)) + 1
        return new, StrategyState(arrays=arrays, scalars=scalars)
