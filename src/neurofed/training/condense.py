"""The torch side of the ``distill`` strategy: class statistics, condensation from noise, the
similarity gate, and the server's training of the heads on condensed volumes.

See :mod:`neurofed.federated.strategies.distill` for the method and its defaults and
:mod:`neurofed.federated.condensed` for the payload. Everything here works on a
:class:`~neurofed.models.multitask_unet.MultitaskUNet` (its :meth:`features` and
:meth:`classify`) and on a site's :class:`~neurofed.training.dataset.TrainingCase` list.

Hand-written, because no maintained library condenses 3-D volumes by distribution matching
(the method of Zhao & Bilen, WACV 2023, with FedAF's soft-label term); SSIM is MONAI's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F  # noqa: N812

from neurofed.data.subject import Clinical
from neurofed.federated.condensed import HEAD_CLASSES, temperature_probabilities
from neurofed.models.multitask_unet import MultitaskUNet
from neurofed.training.dataset import TrainingCase

__all__ = [
    "CondensedSet",
    "case_class",
    "class_statistics",
    "condense",
    "matching_loss",
    "nearest_similarity",
    "proxy_logits",
    "train_heads",
]


def case_class(clinical: Clinical, head: str) -> int | None:
    """The class of ``head`` a case belongs to (``None``: unknown).

    Examples
    --------
    >>> case_class(Clinical(idh=True, grade=4), "idh"), case_class(Clinical(grade=4), "grade")
    (1, 2)
    """
    value = getattr(clinical, head)
    if value is None:
        return None
    if head == "grade":
        return int(value) - 2 if int(value) in (2, 3, 4) else None
    return int(bool(value))


def _probabilities(logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """``(B,)`` binary or ``(B, K)`` logits as ``(B, classes)`` probabilities."""
    if logits.ndim == 1:
        p = torch.sigmoid(logits / temperature)
        return torch.stack([1.0 - p, p], dim=1)
    return torch.softmax(logits / temperature, dim=1)


def _images(cases: Sequence[TrainingCase], index: Sequence[int]) -> torch.Tensor:
    return torch.from_numpy(np.stack([cases[i].image for i in index]))


@torch.no_grad()
def _head_logits(
    model: MultitaskUNet, cases: Sequence[TrainingCase], batch_size: int
) -> dict[str, torch.Tensor]:
    """Per head, ``model``'s logits on every case (``(N,)`` binary or ``(N, K)``)."""
    model.eval()
    logits: dict[str, list[torch.Tensor]] = {h: [] for h in HEAD_CLASSES}
    for start in range(0, len(cases), batch_size):
        index = range(start, min(start + batch_size, len(cases)))
        out = model.classify(model.features(_images(cases, index)))
        for head in HEAD_CLASSES:
            logits[head].append(out[head])
    return {head: torch.cat(values) for head, values in logits.items()}


def proxy_logits(
    model: MultitaskUNet, cases: Sequence[TrainingCase], batch_size: int = 2
) -> dict[str, npt.NDArray[np.float32]]:
    """Per head, ``model``'s logits on each proxy case as ``proxy_logits/<head>`` ``(P, L)``
    (the proxy mode's payload; :mod:`neurofed.federated.condensed`)."""
    out = {}
    for head, z in _head_logits(model, cases, batch_size).items():
        z2 = z[:, None] if z.ndim == 1 else z
        out[f"proxy_logits/{head}"] = z2.numpy().astype(np.float32)
    return out


def soft_targets(
    arrays: Mapping[str, npt.ArrayLike], temperature: float
) -> dict[str, npt.NDArray[np.float32]]:
    """``proxy_logits/<head>`` ``(P, L)`` as per-case probabilities ``(P, classes)`` at
    ``temperature``, keyed by head (the targets of :func:`train_heads` in proxy mode)."""
    return {
        head: temperature_probabilities(arrays[f"proxy_logits/{head}"], temperature).astype(
            np.float32
        )
        for head in HEAD_CLASSES
        if f"proxy_logits/{head}" in arrays
    }


@torch.no_grad()
def class_statistics(
    model: MultitaskUNet,
    cases: Sequence[TrainingCase],
    n_min: int,
    temperature: float,
    batch_size: int = 2,
) -> tuple[dict[str, npt.NDArray[np.generic]], dict[str, npt.NDArray[np.float64]]]:
    """Per head, ``model``'s mean logits per class over ``cases`` and the counts behind them
    (a class of fewer than ``n_min`` cases: 0 and zeros), as payload arrays; and per case the
    probabilities of every head at ``temperature`` (``(N, classes)``, for soft labels)."""
    logits = _head_logits(model, cases, batch_size)
    arrays: dict[str, npt.NDArray[np.generic]] = {}
    probabilities: dict[str, npt.NDArray[np.float64]] = {}
    for head, classes in HEAD_CLASSES.items():
        z = logits[head].double()
        probabilities[head] = _probabilities(z, temperature).numpy()
        z2 = z[:, None] if z.ndim == 1 else z  # (N, L)
        labels = [case_class(c.clinical, head) for c in cases]
        means = np.zeros((classes, z2.shape[1]), np.float32)
        counts = np.zeros(classes, np.int64)
        for k in range(classes):
            members = [i for i, label in enumerate(labels) if label == k]
            if len(members) >= n_min:
                means[k] = z2[members].mean(dim=0).numpy()
                counts[k] = len(members)
        arrays[f"class_logits/{head}"] = means
        arrays[f"class_counts/{head}"] = counts
    return arrays, probabilities


def _perturbed(
    model: torch.nn.Module, scale: float, generator: torch.Generator
) -> list[torch.Tensor]:
    """Add noise of ``scale`` x each tensor's std to the weights; returns the originals."""
    saved = []
    with torch.no_grad():
        for p in model.parameters():
            saved.append(p.detach().clone())
            if scale > 0 and p.numel() > 1:
                noise = torch.randn(p.shape, generator=generator, dtype=p.dtype)
                p.add_(noise * scale * float(p.std()))
    return saved


def _restore(model: torch.nn.Module, saved: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, original in zip(model.parameters(), saved, strict=True):
            p.copy_(original)


@dataclass(frozen=True)
class CondensedSet:
    """Synthetic volumes of one site and what they were made to match."""

    volumes: npt.NDArray[np.float32]  # (N, C, X, Y, Z)
    classes: npt.NDArray[np.int64]  # (N,) anchor class
    soft: dict[str, npt.NDArray[np.float32]]  # head -> (N, classes)
    initial: npt.NDArray[np.float32]  # (N, C, X, Y, Z) the noise they started from
    losses: tuple[float, ...]  # the matching loss of each step (perturbed encoders)


def matching_loss(
    model: MultitaskUNet,
    volumes: npt.ArrayLike,
    classes: npt.ArrayLike,
    cases: Sequence[TrainingCase],
    anchor: str,
) -> float:
    """Squared distance between the class-wise mean features of ``volumes`` and of the real
    ``cases`` (``model`` as it is, summed over the classes present): what condensation lowers."""
    model.eval()
    labels = [case_class(c.clinical, anchor) for c in cases]
    synthetic = torch.as_tensor(np.asarray(volumes, np.float32))
    wanted = np.asarray(classes)
    total = 0.0
    with torch.no_grad():
        for k in sorted(set(wanted.tolist())):
            members = [i for i, label in enumerate(labels) if label == k]
            real = model.features(_images(cases, members)).mean(dim=0)
            syn = model.features(synthetic[wanted == k]).mean(dim=0)
            total += float(((real - syn) ** 2).sum())
    return total


def condense(
    model: MultitaskUNet,
    cases: Sequence[TrainingCase],
    *,
    anchor: str,
    n_min: int,
    images_per_class: int,
    steps: int,
    lr: float,
    perturbation: float,
    soft_weight: float,
    temperature: float,
    probabilities: Mapping[str, npt.NDArray[np.float64]],
    global_logits: Mapping[str, npt.ArrayLike] | None = None,
    seed: int = 0,
    real_batch: int = 4,
) -> CondensedSet | None:
    """``images_per_class`` volumes per class of ``anchor`` with at least ``n_min`` cases,
    initialised from Gaussian noise and optimised (Adam) so that a copy of ``model``'s encoder,
    perturbed afresh each step, gives them the class-wise mean features of the real ``cases``;
    ``soft_weight`` pulls their predicted ``anchor`` probabilities to the federation's
    (``global_logits``: ``class_logits/<head>`` and ``class_counts/<head>``, if sent). Soft
    labels: per head, the mean of ``probabilities`` over the real cases of that class.
    ``None`` when no class has ``n_min`` cases."""
    labels = [case_class(c.clinical, anchor) for c in cases]
    eligible = [k for k in range(HEAD_CLASSES[anchor]) if labels.count(k) >= n_min]
    if not eligible:
        return None
    shapes = {c.image.shape for c in cases}
    if len(shapes) != 1:
        raise ValueError(f"condense: cases have different shapes {sorted(shapes)}; fix the shape")
    generator = torch.Generator().manual_seed(int(seed))
    rng = np.random.default_rng(seed)
    shape = next(iter(shapes))
    initial = torch.randn((len(eligible) * images_per_class, *shape), generator=generator)
    synthetic = initial.clone().requires_grad_(True)
    optimiser = torch.optim.Adam([synthetic], lr=lr)
    target = None
    if global_logits is not None and soft_weight > 0 and f"class_logits/{anchor}" in global_logits:
        counts = np.asarray(global_logits[f"class_counts/{anchor}"])
        probs = temperature_probabilities(global_logits[f"class_logits/{anchor}"], temperature)
        target = {k: torch.as_tensor(probs[k]) for k in eligible if counts[k] > 0}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    members = {k: [i for i, label in enumerate(labels) if label == k] for k in eligible}
    losses = []
    try:
        for _ in range(steps):
            saved = _perturbed(model, perturbation, generator)
            loss = torch.zeros(())
            for j, k in enumerate(eligible):
                pick = rng.choice(members[k], size=min(real_batch, len(members[k])), replace=False)
                with torch.no_grad():
                    real = model.features(_images(cases, pick.tolist())).mean(dim=0)
                mine = synthetic[j * images_per_class : (j + 1) * images_per_class]
                features = model.features(mine)
                loss = loss + ((real - features.mean(dim=0)) ** 2).sum()
                if target is not None and k in target:
                    logits = model.classify(features)[anchor]
                    predicted = _probabilities(logits, temperature).mean(dim=0).double()
                    wanted = target[k]
                    kl = (wanted * (wanted.clamp_min(1e-8).log() - predicted.log())).sum()
                    loss = loss + soft_weight * kl.float()
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            _restore(model, saved)
            losses.append(float(loss.detach()))
    finally:
        for p in model.parameters():
            p.requires_grad_(True)
    classes = np.repeat(np.array(eligible, np.int64), images_per_class)
    soft = {}
    for head in HEAD_CLASSES:
        rows = [probabilities[head][members[k]].mean(axis=0) for k in eligible]
        soft[head] = np.repeat(np.array(rows, np.float32), images_per_class, axis=0)
    return CondensedSet(
        volumes=synthetic.detach().numpy().astype(np.float32),
        classes=classes,
        soft=soft,
        initial=initial.numpy(),
        losses=tuple(losses),
    )


def nearest_similarity(
    volumes: npt.NDArray[np.floating], cases: Sequence[TrainingCase]
) -> list[tuple[float, float]]:
    """Per volume: the highest normalised cross-correlation with any real case, and the SSIM
    (MONAI, 3-D, per channel averaged) with that case."""
    from monai.metrics.regression import SSIMMetric

    reals = np.stack([c.image for c in cases]).astype(np.float64)  # (M, C, X, Y, Z)
    flat = reals.reshape(len(cases), -1)
    flat = (flat - flat.mean(axis=1, keepdims=True)) / (flat.std(axis=1, keepdims=True) + 1e-12)
    smallest = min(reals.shape[2:])
    window = max(3, min(7, smallest if smallest % 2 else smallest - 1))
    out = []
    for volume in volumes:
        v = np.asarray(volume, np.float64).ravel()
        v = (v - v.mean()) / (v.std() + 1e-12)
        ncc = flat @ v / v.size  # (M,)
        nearest = int(np.argmax(ncc))
        real = torch.as_tensor(reals[nearest], dtype=torch.float32)[:, None]  # (C, 1, X, Y, Z)
        mine = torch.as_tensor(np.asarray(volume), dtype=torch.float32)[:, None]
        span = float(real.max() - real.min()) or 1.0
        metric = SSIMMetric(spatial_dims=3, data_range=span, win_size=window)
        score = metric(mine, real)
        assert isinstance(score, torch.Tensor)
        ssim = float(score.mean())
        out.append((float(ncc[nearest]), ssim))
    return out


def train_heads(
    model: MultitaskUNet,
    volumes: npt.ArrayLike,
    classes: npt.ArrayLike | None,
    soft: Mapping[str, npt.ArrayLike],
    *,
    anchor: str,
    temperature: float,
    kl_weight: float,
    epochs: int,
    lr: float,
    batch_size: int = 4,
) -> list[float]:
    """Train ``model.heads`` only (encoder fixed) on condensed volumes: cross-entropy on their
    ``anchor`` class plus ``kl_weight`` x T² x KL(soft label || prediction at T) for every head
    (``classes=None``, the proxy mode: the KL terms only). Returns the mean loss of each epoch."""
    model.eval()  # the encoder's features, without dropout
    x = torch.as_tensor(np.asarray(volumes, np.float32))
    with torch.no_grad():
        features = torch.cat(
            [model.features(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        )
    y = None if classes is None else torch.as_tensor(np.asarray(classes, np.int64))
    targets = {h: torch.as_tensor(np.asarray(v, np.float32)) for h, v in soft.items()}
    optimiser = torch.optim.Adam(model.heads.parameters(), lr=lr)
    history = []
    for _ in range(epochs):
        logits = model.classify(features)
        anchor_logits = logits[anchor]
        loss = anchor_logits.new_zeros(())
        if y is not None and anchor_logits.ndim == 1:
            loss = F.binary_cross_entropy_with_logits(anchor_logits, y.float())
        elif y is not None:
            loss = F.cross_entropy(anchor_logits, y)
        for head, target in targets.items():
            log_p = _probabilities(logits[head], temperature).clamp_min(1e-8).log()
            kl = (target * (target.clamp_min(1e-8).log() - log_p)).sum(dim=1).mean()
            loss = loss + kl_weight * temperature**2 * kl
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
        history.append(float(loss.detach()))
    return history
