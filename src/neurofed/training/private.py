"""DP-SGD for a site's local training (Abadi et al. 2016), with Opacus's privacy accountants.

Each optimiser step draws a **Poisson sample** of the training cases: every case joins
independently with probability ``q = batch_size / N`` (the subsampling the accountants assume).
Each drawn case gives one training sample (a patch, augmented, as in ordinary training), its own
forward and backward pass and so its own gradient; each gradient is clipped to L2 norm
``clip_norm``; their sum plus Gaussian noise of standard deviation ``noise_multiplier ·
clip_norm`` (drawn even when no case was drawn) is divided by the *expected* batch size ``q·N``
and handed to the ordinary optimiser. The loss of one case never mixes with another's (a batch
Dice over several cases would), so removing a case changes the step by at most ``clip_norm``
before noise.

The per-case passes replace Opacus's per-sample gradient hooks, which do not cover every layer
of these networks (in-place activations, transposed convolutions); the accountants are
Opacus's (``rdp``: Rényi DP, Mironov 2017; ``prv``: privacy random variables, Gopi et al. 2021),
composed over every step ever taken on a dataset (:func:`epsilon`).

A network with batch normalisation mixes the cases of a batch in every layer and is refused
(:func:`check_private_network`).

Examples
--------
>>> round(epsilon([(1.1, 0.1, 100)], 1e-5, "rdp"), 2)
6.61
>>> epsilon([], 1e-5, "rdp")
0.0
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from neurofed.tasks import Task
from neurofed.tasks.batch import Batch
from neurofed.training.config import TrainConfig
from neurofed.training.dataset import CaseDataset, collate
from neurofed.training.sampling import steps_per_epoch, training_sample

__all__ = [
    "PrivateSGD",
    "check_private_network",
    "epsilon",
    "noise_for_epsilon",
    "private_batches",
    "uses_batch_norm",
]

#: One privacy-ledger entry: (noise multiplier, sample rate, steps).
Entry = tuple[float, float, int]


def _accountant(name: str):  # type: ignore[no-untyped-def]
    from opacus.accountants import PRVAccountant, RDPAccountant

    kinds = {"rdp": RDPAccountant, "prv": PRVAccountant}
    if name not in kinds:
        raise ValueError(f"accountant {name!r}: use one of {', '.join(kinds)}")
    return kinds[name]()


def epsilon(history: Sequence[Entry], delta: float, accountant: str) -> float:
    """The ε (at ``delta``) of every step in ``history`` composed, by ``accountant``."""
    steps = [(float(s), float(q), int(n)) for s, q, n in history if int(n) > 0]
    if not steps:
        return 0.0
    counter = _accountant(accountant)
    counter.history = steps
    with warnings.catch_warnings():  # "optimal order is the largest alpha": a looser bound
        warnings.simplefilter("ignore", UserWarning)
        return float(counter.get_epsilon(delta))


def noise_for_epsilon(
    target: float, delta: float, sample_rate: float, steps: int, accountant: str
) -> float:
    """The smallest noise multiplier whose ``steps`` steps at ``sample_rate`` spend at most
    ``target`` ε (Opacus's search)."""
    from opacus.accountants.utils import get_noise_multiplier

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return float(
            get_noise_multiplier(
                target_epsilon=target,
                target_delta=delta,
                sample_rate=sample_rate,
                steps=steps,
                accountant=accountant,
            )
        )


def uses_batch_norm(model: torch.nn.Module) -> bool:
    """Whether ``model`` normalises with batch statistics (which mix the cases of a batch)."""
    return any(isinstance(m, _BatchNorm) for m in model.modules())


def check_private_network(model: torch.nn.Module, name: str) -> None:
    """Refuse a network DP-SGD cannot bound per case.

    Raises
    ------
    ValueError
        ``model`` normalises with batch statistics.
    """
    if uses_batch_norm(model):
        raise ValueError(
            f"DP-SGD cannot train the {name} network: its batch normalisation mixes the cases of "
            "a batch, so no case's influence is bounded; use a network with instance or group "
            "normalisation, or drop [privacy]"
        )


def private_batches(
    dataset: CaseDataset, config: TrainConfig, epoch: int, task: Task, sample_rate: float, seed: int
) -> Iterator[list[Batch]]:
    """Per step of ``epoch``, the Poisson sample of cases, each as a batch of one (its training
    sample). ``seed`` must be the site's secret (the subsampling is private only while nobody
    else can replay it)."""
    divisor = config.spatial_divisor()
    draw = np.random.default_rng([seed, epoch])
    for step in range(steps_per_epoch(config, dataset)):
        chosen = np.flatnonzero(draw.random(len(dataset)) < sample_rate)
        yield [
            collate(
                [
                    training_sample(
                        dataset[int(k)], config, np.random.default_rng([seed, epoch, step, int(k)])
                    )
                ],
                task,
                divisor,
            )
            for k in chosen
        ]


@dataclass
class PrivateSGD:
    """What DP-SGD needs at a site for one study: the bound, the noise, the sampling.

    Attributes
    ----------
    clip_norm
        Each case's gradient is clipped to this L2 norm.
    noise_multiplier
        The noise's standard deviation in units of ``clip_norm``.
    sample_rate
        Each case's chance of joining a step (``batch_size / N``).
    cases
        ``N``, the site's training cases.
    seed
        The site's secret seed of the Poisson draws and of the noise (``secrets``, never the
        study's seed: whoever can replay the noise can subtract it).
    """

    clip_norm: float
    noise_multiplier: float
    sample_rate: float
    cases: int
    seed: int

    def __post_init__(self) -> None:
        self.generator = torch.Generator().manual_seed(self.seed)

    @property
    def expected_batch(self) -> float:
        return self.sample_rate * self.cases

    def step(
        self,
        model: torch.nn.Module,
        task: Task,
        optimizer: torch.optim.Optimizer,
        cases: Sequence[Batch],
        device: torch.device,
        extra: Callable[[], torch.Tensor] | None = None,
    ) -> torch.Tensor | None:
        """One DP-SGD step over ``cases`` (each a batch of one); ``extra`` is a data-free term
        (FedProx's proximal term) whose gradient is added after the noise. Returns the mean
        loss of the cases (``None`` for an empty draw)."""
        params = [p for p in model.parameters() if p.requires_grad]
        summed = [torch.zeros_like(p) for p in params]
        losses = []
        for batch in cases:
            batch = batch.to(device)
            for p in params:
                p.grad = None
            loss = task.loss(model(batch.image), batch)
            loss.backward()
            grads = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
            norm = math.sqrt(sum(float(g.pow(2).sum()) for g in grads))
            scale = min(1.0, self.clip_norm / (norm + 1e-12))
            for total, g in zip(summed, grads, strict=True):
                total.add_(g, alpha=scale)
            losses.append(loss.detach())
        std = self.noise_multiplier * self.clip_norm
        free: Sequence[torch.Tensor | None] = [None] * len(params)
        if extra is not None:  # data-free: its gradient needs no clipping and no noise
            free = torch.autograd.grad(extra(), params, allow_unused=True)
        for p, total, fixed in zip(params, summed, free, strict=True):
            noise = torch.normal(0.0, std, p.shape, generator=self.generator).to(device)
            grad = (total + noise) / self.expected_batch
            p.grad = grad if fixed is None else grad + fixed
        optimizer.step()
        return torch.stack(losses).mean() if losses else None
