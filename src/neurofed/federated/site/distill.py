"""A site's condensed payload under the ``distill`` strategy, and its similarity gate.

Made from the **global** model the round started from (not the site's freshly trained one):
its class-mean logits per head over the site's training cases (classes of ``n_min`` cases or
more), and volumes condensed from noise (:func:`neurofed.training.condense.condense`). Every
volume is compared with the site's real training cases first (normalised cross-correlation,
SSIM); one whose correlation with its nearest case exceeds ``similarity_max`` is withheld and
the round goes on without it. The site's log records, per volume, its class and both
similarities (never which case was nearest).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import numpy as np

from neurofed.federated.condensed import HEAD_CLASSES
from neurofed.federated.strategies.distill import DistillParams
from neurofed.training import LocalTrainer

__all__ = ["condensed_payload"]

logger = logging.getLogger(__name__)


def condensed_payload(
    trainer: LocalTrainer,
    params: DistillParams,
    class_logits: Mapping[str, np.ndarray],
    seed: int,
) -> dict[str, np.ndarray]:
    """The payload this site sends with its weights, from ``trainer``'s model as it is (call
    it once the global parameters are loaded, before local training)."""
    import copy

    from neurofed.models.multitask_unet import MultitaskUNet
    from neurofed.training.condense import class_statistics, condense, nearest_similarity

    model = copy.deepcopy(trainer.model).cpu()
    if not isinstance(model, MultitaskUNet):
        raise ValueError(f"the distill strategy needs the multi-task U-Net, not {type(model)}")
    cases = list(trainer.train_data)
    arrays, probabilities = class_statistics(model, cases, params.n_min, params.temperature)
    payload: dict[str, np.ndarray] = dict(arrays)
    made = condense(
        model,
        cases,
        anchor=params.anchor,
        n_min=params.n_min,
        images_per_class=params.images_per_class,
        steps=params.condense_steps,
        lr=params.condense_lr,
        perturbation=params.perturbation,
        soft_weight=params.soft_weight,
        temperature=params.temperature,
        probabilities=probabilities,
        global_logits=class_logits or None,
        seed=seed,
    )
    if made is None:
        logger.info(
            "distill: no %s class has %d cases here; no volume condensed",
            params.anchor,
            params.n_min,
        )
        return payload
    keep = []
    for index, (ncc, ssim) in enumerate(nearest_similarity(made.volumes, cases)):
        withheld = ncc > params.similarity_max
        logger.info(
            "distill: condensed volume %d (%s class %d): nearest real case NCC %.3f, SSIM %.3f%s",
            index,
            params.anchor,
            int(made.classes[index]),
            ncc,
            ssim,
            f" > {params.similarity_max:g}: withheld" if withheld else "",
        )
        if not withheld:
            keep.append(index)
    payload["withheld"] = np.array([len(made.volumes) - len(keep)], np.int64)
    if keep:
        payload["volumes"] = made.volumes[keep].astype(np.float16)
        payload["volume_class"] = made.classes[keep]
        for head in HEAD_CLASSES:
            payload[f"soft/{head}"] = made.soft[head][keep]
    return payload
