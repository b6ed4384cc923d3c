"""Ditto (Li et al. 2021): a FedAvg global model plus a personalised model at each site.

Each site trains the global model as usual (its update is averaged as FedAvg) and, alongside,
its own personalised model with ``loss + lambda/2·||v - w_global||²``. The personalised model
never leaves the site, so the server needs nothing beyond FedAvg; ``ditto_lambda`` travels in
the client settings.

Examples
--------
>>> Ditto({"ditto_lambda": 0.5}).client_settings().ditto_lambda
0.5
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from neurofed.federated.strategies.base import (
    ClientSettings,
    StrategyName,
    StrategyParams,
    check_number,
)
from neurofed.federated.strategies.fedavg import FedAvg

__all__ = ["Ditto", "DittoParams"]


@dataclass(frozen=True)
class DittoParams(StrategyParams):
    """Ditto's options.

    Parameters
    ----------
    ditto_lambda
        Pull of each personalised model towards the global one (Li et al.: 0.01-2; larger is
        closer to the global model).
    """

    ditto_lambda: float = 0.1

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self, "ditto_lambda", 0.0, 1e6, "use a number >= 0, e.g. 0.1")


class Ditto(FedAvg):
    """FedAvg on the server; sites also keep a personalised model (``ditto_lambda``)."""

    name: ClassVar[StrategyName] = StrategyName.DITTO
    description: ClassVar[str] = (
        "FedAvg global model plus a personalised model per site (Li et al. 2021)"
    )
    params_type: ClassVar[type[StrategyParams]] = DittoParams
    params: DittoParams

    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            local_parameters=self.params.local_parameters, ditto_lambda=self.params.ditto_lambda
        )
