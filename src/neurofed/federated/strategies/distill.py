"""Distillation-based FL for ``glioma-multitask`` (the multi-task glioma study; cf. FedAF,
Wang et al. CVPR 2024), as a hybrid with FedAvg.

Each round every site trains as under FedAvg and also sends a *condensed payload*
(:mod:`neurofed.federated.condensed`): per head, the global model's mean logits per class over
its real cases (classes of at least ``n_min`` cases only), and ``images_per_class`` synthetic
volumes per class of the ``anchor`` head, condensed **from noise** so that a randomly perturbed
copy of the global encoder sees the same class-wise mean features in them as in the real cases
(plus a term pulling their predictions to the federation's class-mean probabilities), with the
site's class-mean soft labels. A site withholds any volume too similar to one of its real cases
(normalised cross-correlation above ``similarity_max``).

The server averages every parameter as FedAvg (so the segmentation decoder is FedAvg's) and
then trains the classification heads on the union of condensed volumes: cross-entropy on their
anchor class plus ``kl_weight`` · T² · KL to their soft labels at temperature ``temperature``
(:func:`neurofed.training.condense.train_heads`). The shared encoder is not trained on
synthetic volumes: it feeds the segmentation decoder through its skip connections. This module
is numpy only: it keeps the count-weighted class logits in the strategy state (sent to the
sites with the next round); the torch steps live in :mod:`neurofed.training.condense`.

**Proxy mode** (``proxy = "<dataset>"``, FedMD / FedDF style): no derived image leaves a site.
Every party holds the same public proxy set (e.g. a phantom site shipped with the study; each
site names where with ``neurofed site public-dataset NAME DIR``). After local training a site
sends its model's logits on every proxy case (and the set's fingerprint); the server averages
them, weighted by the sites' training cases, into a consensus it sends with the next round; each
site first distils its copy of the global model's heads towards that consensus on the proxy
cases (``proxy_epochs`` at ``proxy_lr``: T²·KL, encoder fixed), then trains as under FedAvg.
Sites send no condensed volume and no class logits, so the custodian's ``allow-condensed`` is
not needed.

Defaults, and why: ``n_min`` 10 (a class mean over fewer patients is close to one patient);
``images_per_class`` 2 (one 4 x 80 x 96 x 80 float16 volume is 4.9 MB); ``condense_steps``
100 and ``condense_lr`` 0.1 (Adam on z-scored voxels); ``perturbation`` 0.05 (relative noise
on the encoder's weights each step, the random embeddings of distribution matching);
``temperature`` 2 (Hinton et al. 2015); ``soft_weight`` and ``kl_weight`` 1; ``server_epochs``
50 at ``server_lr`` 1e-3 (linear heads on fixed features: cheap); ``similarity_max`` 0.5;
``proxy_epochs`` 20 at ``proxy_lr`` 1e-2 (full-batch Adam on the heads only: 20 steps of 1e-2
let the logits move by about one unit towards the consensus; at 1e-3 they barely move).

Examples
--------
>>> Distill({"anchor": "grade"}).params.anchor
'grade'
>>> Distill({"anchor": "ki67"})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: DistillParams.anchor = 'ki67' is invalid: use one of idh, ...
>>> "proxy" in DistillParams().to_json(), DistillParams(proxy="tcga-public").to_json()["proxy"]
(False, 'tcga-public')
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

from neurofed.config import require
from neurofed.federated.condensed import (
    HEAD_CLASSES,
    class_arrays,
    merge_class_logits,
    merge_proxy_logits,
)
from neurofed.federated.state import StrategyState
from neurofed.federated.strategies.base import (
    StrategyName,
    StrategyParams,
    check_number,
)
from neurofed.federated.strategies.fedavg import FedAvg
from neurofed.federated.update import Array, Parameters, SiteUpdate

__all__ = ["Distill", "DistillParams"]

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: Options of the proxy mode, left out of the study while ``proxy`` is not set.
_PROXY_FIELDS = ("proxy", "proxy_epochs", "proxy_lr")


def _whole(owner: object, name: str, low: int, high: int) -> None:
    value = getattr(owner, name)
    ok = isinstance(value, int) and not isinstance(value, bool) and low <= value <= high
    require(ok, owner, name, f"use a whole number from {low} to {high}")


@dataclass(frozen=True)
class DistillParams(StrategyParams):
    """The ``distill`` strategy's options (see the module docstring for the defaults)."""

    anchor: str = "idh"
    n_min: int = 10
    images_per_class: int = 2
    condense_steps: int = 100
    condense_lr: float = 0.1
    perturbation: float = 0.05
    soft_weight: float = 1.0
    temperature: float = 2.0
    server_epochs: int = 50
    server_lr: float = 1e-3
    kl_weight: float = 1.0
    similarity_max: float = 0.5
    proxy: str | None = None
    proxy_epochs: int = 20
    proxy_lr: float = 1e-2

    def __post_init__(self) -> None:
        super().__post_init__()
        heads = ", ".join(HEAD_CLASSES)
        require(self.anchor in HEAD_CLASSES, self, "anchor", f"use one of {heads}")
        _whole(self, "n_min", 1, 10_000)
        _whole(self, "images_per_class", 1, 10)
        _whole(self, "condense_steps", 1, 100_000)
        _whole(self, "server_epochs", 0, 100_000)
        check_number(self, "condense_lr", 1e-6, 10.0, "use a learning rate, e.g. 0.1")
        check_number(self, "perturbation", 0.0, 1.0, "use a fraction of each weight's std")
        check_number(self, "soft_weight", 0.0, 1e3, "use a number >= 0, e.g. 1")
        check_number(self, "temperature", 0.1, 100.0, "use a temperature, e.g. 2")
        check_number(self, "server_lr", 1e-7, 1.0, "use a learning rate, e.g. 0.001")
        check_number(self, "kl_weight", 0.0, 1e3, "use a number >= 0, e.g. 1")
        check_number(self, "similarity_max", 0.0, 1.0, "use a correlation in [0, 1], e.g. 0.5")
        require(
            self.proxy is None or (isinstance(self.proxy, str) and bool(_NAME.match(self.proxy))),
            self,
            "proxy",
            "name the public dataset every party holds (letters, digits, '.', '_', '-')",
        )
        _whole(self, "proxy_epochs", 0, 100_000)
        check_number(self, "proxy_lr", 1e-7, 1.0, "use a learning rate, e.g. 0.01")

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; the proxy mode's options only when ``proxy`` is set (so a study
        without it keeps its hash)."""
        out = super().to_json()
        if self.proxy is None:
            for name in _PROXY_FIELDS:
                out.pop(name)
        return out


class Distill(FedAvg):
    """FedAvg of every parameter, plus the federation's class-mean logits kept in the state;
    the server then trains the heads on the condensed volumes (``training.condense``)."""

    name: ClassVar[StrategyName] = StrategyName.DISTILL
    description: ClassVar[str] = (
        "FedAvg plus distillation: sites also send synthetic volumes condensed from noise and "
        "class-mean soft labels; the server trains the marker heads on them (cf. FedAF 2024)"
    )
    params_type: ClassVar[type[StrategyParams]] = DistillParams
    weighted_mean: ClassVar[bool] = False
    params: DistillParams

    def aggregate(
        self,
        global_params: Mapping[str, Array],
        updates: Sequence[SiteUpdate],
        state: StrategyState | None = None,
    ) -> tuple[Parameters, StrategyState]:
        params, state = super().aggregate(global_params, updates, state)
        if self.params.proxy is not None:
            sent = [u for u in updates if u.payload]
            consensus = merge_proxy_logits(
                [u.payload for u in sent], [float(u.num_examples) for u in sent]
            )
            if not consensus:
                return params, state
            return params, StrategyState(dict(consensus), dict(state.scalars))
        merged = merge_class_logits([u.payload for u in updates if u.payload])
        if not merged:  # nobody had a class of n_min cases: keep last round's
            return params, state
        return params, StrategyState(class_arrays(merged), dict(state.scalars))
