"""The server's side of the ``distill`` strategy: what a payload may hold for this study, and
the training of the marker heads on the union of the sites' condensed volumes after FedAvg.

See :mod:`neurofed.federated.strategies.distill`.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from neurofed.federated.condensed import (
    HEAD_CLASSES,
    PROXY_FINGERPRINT,
    PayloadSpec,
    proxy_cases,
)
from neurofed.federated.strategies.distill import DistillParams
from neurofed.federated.study import Study
from neurofed.federated.update import Parameters
from neurofed.training.config import TrainConfig

__all__ = ["class_logits_of", "payload_spec", "proxy_mismatches", "train_on_payloads"]

logger = logging.getLogger(__name__)


def payload_spec(study: Study, config: TrainConfig) -> PayloadSpec:
    """What this study lets a site send (its channels, the preprocessing's fixed shape)."""
    params = study.strategy_params
    assert isinstance(params, DistillParams)
    shape = config.preprocess.spatial_shape
    if shape is None:
        raise ValueError(
            "the distill strategy needs a fixed volume shape ([train.preprocess] spatial_shape)"
        )
    return PayloadSpec(
        channels=len(study.build_task().modalities),
        shape=shape,
        anchor=params.anchor,
        images_per_class=params.images_per_class,
        n_min=params.n_min,
        proxy=params.proxy is not None,
    )


def class_logits_of(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The strategy state's class logits and counts, as the next round's task carries them."""
    prefixes = ("class_logits/", "class_counts/", "proxy_logits/")
    return {k: np.asarray(v) for k, v in arrays.items() if k.startswith(prefixes)}


def proxy_mismatches(payloads: Mapping[str, Mapping[str, np.ndarray]]) -> dict[str, str]:
    """Proxy mode: the sites (by id) whose (checked) payload is on another proxy set than most
    sites' — their logits do not line up with the others' — and why.

    The set most sites hold (by fingerprint and number of cases) is the round's; on a tie, the
    set of the site first by id.

    Examples
    --------
    >>> a = {"proxy_fingerprint": np.full(32, 1, np.uint8), "proxy_logits/idh": np.zeros((4, 1))}
    >>> b = {"proxy_fingerprint": np.full(32, 2, np.uint8), "proxy_logits/idh": np.zeros((4, 1))}
    >>> list(proxy_mismatches({"site-1": a, "site-2": a, "site-3": b}))
    ['site-3']
    """

    def key(payload: Mapping[str, np.ndarray]) -> tuple[bytes, int]:
        return bytes(np.asarray(payload[PROXY_FINGERPRINT], np.uint8)), proxy_cases(payload)

    keys = {site: key(payload) for site, payload in sorted(payloads.items())}
    if not keys:
        return {}
    votes = list(keys.values())
    chosen = max(votes, key=lambda k: (votes.count(k), -votes.index(k)))
    return {
        site: (
            f"malformed answer: its proxy set (fingerprint {k[0].hex()[:12]}, {k[1]} cases) is "
            f"not the one most sites hold (fingerprint {chosen[0].hex()[:12]}, {chosen[1]} "
            "cases); its custodian registers the study's public dataset as the others hold it"
        )
        for site, k in keys.items()
        if k != chosen
    }


def train_on_payloads(
    study: Study,
    config: TrainConfig,
    params: Parameters,
    payloads: Sequence[Mapping[str, np.ndarray]],
) -> tuple[Parameters, dict[str, float]]:
    """``params`` with the heads trained on every payload's condensed volumes (the union), and
    what happened (volumes used, first and last loss). Without volumes: ``params`` as they are."""
    import torch

    from neurofed.models.multitask_unet import MultitaskUNet
    from neurofed.training.condense import train_heads
    from neurofed.training.parameters import check_arrays, load_arrays

    strategy = study.strategy_params
    assert isinstance(strategy, DistillParams)
    with_volumes = [p for p in payloads if "volumes" in p]
    if not with_volumes or strategy.server_epochs == 0:
        return params, {"condensed_volumes": 0.0}
    volumes = np.concatenate([np.asarray(p["volumes"], np.float32) for p in with_volumes])
    classes = np.concatenate([np.asarray(p["volume_class"]) for p in with_volumes])
    soft = {
        head: np.concatenate([np.asarray(p[f"soft/{head}"], np.float32) for p in with_volumes])
        for head in HEAD_CLASSES
    }
    model = study.build_task().build_model(config.model_config)
    if not isinstance(model, MultitaskUNet):
        raise ValueError(f"the distill strategy trains a multi-task U-Net, not {type(model)}")
    load_arrays(model, check_arrays(model, params))
    torch.manual_seed(config.seed)
    losses = train_heads(
        model,
        volumes,
        classes,
        soft,
        anchor=strategy.anchor,
        temperature=strategy.temperature,
        kl_weight=strategy.kl_weight,
        epochs=strategy.server_epochs,
        lr=strategy.server_lr,
    )
    trained = {k: v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    out = dict(params)
    for name in out:
        if name.startswith("heads."):
            out[name] = np.asarray(trained[name], dtype=np.asarray(params[name]).dtype)
    info = {
        "condensed_volumes": float(len(volumes)),
        "distill_loss_first": losses[0],
        "distill_loss_last": losses[-1],
    }
    logger.info(
        "trained the heads on %d condensed volumes: loss %.4g -> %.4g",
        len(volumes),
        losses[0],
        losses[-1],
    )
    return out, info
