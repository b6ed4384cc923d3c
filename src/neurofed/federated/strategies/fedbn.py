"""FedBN (Li et al. 2021): normalisation layers stay at each site, the rest is FedAvg.

Scanners and protocols shift intensity statistics from site to site; keeping each site's
normalisation weights, biases and running statistics local lets the shared layers learn what is
common. The layers are found by state-dict name (:data:`NORM_PATTERNS`, ``fnmatch`` globs that
match the normalisation layers of every registered model); they are excluded from aggregation and
listed in :meth:`FedBN.client_settings` ``local_parameters``, so a site's training neither
sends nor overwrites them.

Examples
--------
>>> from neurofed.config import is_local
>>> names = ["model.0.conv.unit0.adn.N.running_mean", "encoder.1.norm2.weight",
...          "features.3.1.num_batches_tracked", "features.3.0.weight", "heads.idh.bias"]
>>> [n for n in names if is_local(n, FedBN().client_settings().local_parameters)]
... # doctest: +NORMALIZE_WHITESPACE
['model.0.conv.unit0.adn.N.running_mean', 'encoder.1.norm2.weight',
 'features.3.1.num_batches_tracked']
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from neurofed.federated.strategies.base import StrategyName, StrategyParams
from neurofed.federated.strategies.fedavg import FedAvg

__all__ = ["NORM_PATTERNS", "FedBN", "FedBNParams"]

#: Normalisation layers of the registered models, by state-dict name:
#: ``*norm*`` — MONAI U-Net blocks (``norm1``, ``norm2``, ``norm3``: dynunet, multitask-unet) and
#: torch-style ``*_norm`` names; ``*.adn.N.*`` — MONAI ``ADN`` blocks (residual-unet);
#: ``features.*.1.*`` — the batch norm of each SFCN block (``features.<block>.1``).
NORM_PATTERNS: tuple[str, ...] = ("*norm*", "*.adn.N.*", "features.*.1.*")


@dataclass(frozen=True)
class FedBNParams(StrategyParams):
    """FedBN's options: ``local_parameters`` defaults to :data:`NORM_PATTERNS`."""

    local_parameters: tuple[str, ...] = NORM_PATTERNS

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.local_parameters:
            raise ValueError(
                "FedBNParams.local_parameters = () is invalid: FedBN keeps normalisation layers "
                "local; leave it out for the default patterns, or use fedavg"
            )


class FedBN(FedAvg):
    """FedAvg over everything except normalisation layers, which stay at each site."""

    name: ClassVar[StrategyName] = StrategyName.FEDBN
    description: ClassVar[str] = "FedAvg; normalisation layers stay at each site (Li et al. 2021)"
    params_type: ClassVar[type[StrategyParams]] = FedBNParams
    params: FedBNParams
