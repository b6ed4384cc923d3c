"""A site's condensed payload under the ``distill`` strategy, and its similarity gate.

Made from the **global** model the round started from (not the site's freshly trained one):
its class-mean logits per head over the site's training cases (classes of ``n_min`` cases or
more), and volumes condensed from noise (:func:`neurofed.training.condense.condense`). Every
volume is compared with the site's real training cases first (normalised cross-correlation,
SSIM); one whose correlation with its nearest case exceeds ``similarity_max`` is withheld and
the round goes on without it. The site's log records, per volume, its class and both
similarities (never which case was nearest).

In proxy mode (``proxy = "<dataset>"``) nothing is condensed: the site reads the public proxy
set from the folder its custodian named (:func:`load_proxy`), distils the global model's heads
towards the federation's consensus on it (:func:`digest`), trains, and sends its model's logits
on the proxy cases with the set's fingerprint (:func:`proxy_payload`).
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from neurofed.data.manifest import load_manifest
from neurofed.federated.condensed import HEAD_CLASSES, PROXY_FINGERPRINT, proxy_cases
from neurofed.federated.strategies.distill import DistillParams
from neurofed.preprocess import PreprocessParams
from neurofed.tasks import Task
from neurofed.training import LocalTrainer
from neurofed.training.dataset import TrainingCase
from neurofed.training.site_data import SiteData, SiteDataError

__all__ = ["ProxySet", "condensed_payload", "digest", "load_proxy", "proxy_payload"]

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
        # fail closed: a volume whose similarity cannot be measured (NaN) stays here too
        withheld = not ncc <= params.similarity_max
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


@dataclass(frozen=True)
class ProxySet:
    """A public proxy set as this site holds it: its cases (by case id) and its fingerprint."""

    name: str
    cases: tuple[TrainingCase, ...]
    fingerprint: bytes  # SHA-256 of its image files, case by case


def load_proxy(name: str, root: Path, task: Task, params: PreprocessParams) -> ProxySet:
    """The proxy set ``name`` from its site folder ``root``, preprocessed like the study's
    cases (cached in that folder like any site's).

    The fingerprint hashes, case by case in the order of their ids, each case id and the bytes
    of each of the task's image files: two parties holding the same files agree, whatever
    their machines.

    Raises
    ------
    neurofed.training.site_data.SiteDataError
        The folder is not a checked site folder, or no case serves the task.
    """
    cases = sorted(SiteData(root, task, params).split(None), key=lambda c: c.subject_id)
    if not cases:
        raise SiteDataError(
            f"public dataset {name!r} ({root}): no case serves task {task.task_id.value!r}; "
            "check the folder with `neurofed site check`"
        )
    subjects = {s.subject_id: s for s in load_manifest(root).subjects}
    digest_ = hashlib.sha256()
    for case in cases:
        digest_.update(case.subject_id.encode() + b"\0")
        images = subjects[case.subject_id].images
        for modality in task.modalities:
            ref = images[modality]
            digest_.update(hashlib.sha256((root / ref.path).read_bytes()).digest())
            digest_.update(str(ref.channel).encode())
    logger.info("distill: public dataset %r: %d proxy cases", name, len(cases))
    return ProxySet(name, tuple(cases), digest_.digest())


def digest(
    trainer: LocalTrainer,
    params: DistillParams,
    proxy: ProxySet,
    consensus: Mapping[str, np.ndarray],
) -> list[float]:
    """Distil ``trainer``'s model heads (the global model, just loaded) towards the
    federation's consensus logits on the proxy cases: ``proxy_epochs`` of T²·KL, the encoder
    fixed. Returns each epoch's loss (empty: no usable consensus, e.g. in round 1)."""
    from neurofed.models.multitask_unet import MultitaskUNet
    from neurofed.training.condense import soft_targets, train_heads

    model = trainer.model
    if not isinstance(model, MultitaskUNet):
        raise ValueError(f"the distill strategy needs the multi-task U-Net, not {type(model)}")
    names = [f"proxy_logits/{h}" for h in HEAD_CLASSES]
    if not consensus or not all(n in consensus for n in names) or params.proxy_epochs == 0:
        return []
    if proxy_cases(consensus) != len(proxy.cases):
        logger.warning(
            "distill: the consensus covers %d proxy cases, this site holds %d of %r; not used",
            proxy_cases(consensus),
            len(proxy.cases),
            proxy.name,
        )
        return []
    device = next(model.parameters()).device
    model.cpu()
    try:
        losses = train_heads(
            model,
            np.stack([c.image for c in proxy.cases]),
            None,
            soft_targets(consensus, params.temperature),
            anchor=params.anchor,
            temperature=params.temperature,
            kl_weight=params.kl_weight,
            epochs=params.proxy_epochs,
            lr=params.proxy_lr,
        )
    finally:
        model.to(device)
    logger.info(
        "distill: heads distilled towards the consensus on %d proxy cases: loss %.4g -> %.4g",
        len(proxy.cases),
        losses[0],
        losses[-1],
    )
    return losses


def proxy_payload(trainer: LocalTrainer, proxy: ProxySet) -> dict[str, np.ndarray]:
    """What a proxy-mode site sends besides its weights: its (locally trained) model's logits
    on every proxy case and the proxy set's fingerprint. No array derived from its own cases."""
    import copy

    from neurofed.models.multitask_unet import MultitaskUNet
    from neurofed.training.condense import proxy_logits

    model = copy.deepcopy(trainer.model).cpu()
    if not isinstance(model, MultitaskUNet):
        raise ValueError(f"the distill strategy needs the multi-task U-Net, not {type(model)}")
    payload: dict[str, np.ndarray] = dict(proxy_logits(model, proxy.cases))
    payload[PROXY_FINGERPRINT] = np.frombuffer(proxy.fingerprint, np.uint8).copy()
    return payload
