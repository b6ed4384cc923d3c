"""FedProx (Li et al. 2020): FedAvg on the server, a proximal term at the sites.

Sites minimise ``loss + mu/2·||w - w_global||²`` (``TrainConfig.fedprox_mu``), which keeps
heterogeneous sites from drifting apart; the server averages as FedAvg.

Examples
--------
>>> FedProx({"mu": 0.1}).client_settings().fedprox_mu
0.1
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

__all__ = ["FedProx", "FedProxParams"]


@dataclass(frozen=True)
class FedProxParams(StrategyParams):
    """FedProx's options.

    Parameters
    ----------
    mu
        Weight of the proximal term (Li et al. try 0.001-1; 0 is FedAvg).
    """

    mu: float = 0.01

    def __post_init__(self) -> None:
        super().__post_init__()
        check_number(self, "mu", 0.0, 1e6, "use a number >= 0, e.g. 0.01 (0 is plain FedAvg)")


class FedProx(FedAvg):
    """FedAvg aggregation; sites add the proximal term with ``mu``."""

    name: ClassVar[StrategyName] = StrategyName.FEDPROX
    description: ClassVar[str] = (
        "FedAvg; sites add a proximal term mu/2·||w - w_global||² (Li et al. 2020)"
    )
    params_type: ClassVar[type[StrategyParams]] = FedProxParams
    params: FedProxParams

    def client_settings(self) -> ClientSettings:
        return ClientSettings(
            fedprox_mu=self.params.mu, local_parameters=self.params.local_parameters
        )
