"""Training batches of one epoch: case order, patches and augmentation from explicit generators.

Everything random in an epoch is fixed by ``(seed, epoch)``: the order of cases comes from
``numpy.random.default_rng([seed, epoch])`` and each sample's patch and augmentation from
``default_rng([seed, epoch, k])`` (``k`` its position in the epoch). Epoch ``e`` therefore gives
the same batches whether or not the run was interrupted before it, and global random state is
never touched.

A model with batch norm cannot train on a batch of one sample (its statistics need more than one
value per channel, and SFCN pools down to 1³). With ``fill_single`` (the trainer sets it for such
models), a last batch that would hold one sample takes one more: the next one the epoch's order
draws (the first case of the next permutation, with its own ``default_rng([seed, epoch, k])``).
The epoch's first samples and the number of steps are unchanged, and a single training case with
``batch_size`` >= 2 is simply sampled twice.

With ``TrainConfig.batches_by_site`` pooled training draws every batch from one site, the sites
in turn (:func:`epoch_order_by_site`), as a federated site's batches are: batch norm then sees one
site at a time, which is what costs FedAvg the between-site differences of a target such as age
(docs/reproduce.md).

Examples
--------
>>> import numpy as np
>>> from neurofed.data.subject import Clinical
>>> from neurofed.training.config import TrainConfig
>>> label = np.zeros((24, 24, 24), np.uint8); label[8:12, 8:12, 8:12] = 1
>>> case = TrainingCase("c1", "site-1", np.ones((2, 24, 24, 24), np.float32), label, Clinical())
>>> config = TrainConfig(task="ms-lesion", patch_shape=(16, 16, 16), batch_size=2,
...                      samples_per_epoch=3, augment=None,
...                      model_config={"plan": {"patch_size": [16, 16, 16],
...                                             "strides": [[1, 1, 1], [2, 2, 2], [2, 2, 2]],
...                                             "kernel_sizes": [[3, 3, 3]] * 3,
...                                             "filters": [4, 8, 16]}})
>>> batches = list(epoch_batches(CaseDataset([case]), config, epoch=1))
>>> [tuple(b.image.shape) for b in batches]
[(2, 2, 16, 16, 16), (1, 2, 16, 16, 16)]
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np

from neurofed.preprocess import apply_augmentation, sample_augmentation, sample_patch
from neurofed.tasks import Batch, Task
from neurofed.training.config import TrainConfig
from neurofed.training.dataset import CaseDataset, Sample, TrainingCase, collate, pad_to_shape

__all__ = [
    "epoch_batches",
    "epoch_order",
    "epoch_order_by_site",
    "filled_epoch_length",
    "steps_per_epoch",
    "training_sample",
]


def epoch_order(num_cases: int, num_samples: int, rng: np.random.Generator) -> list[int]:
    """Case indices for ``num_samples`` samples: whole permutations, the last one cut short.

    >>> epoch_order(3, 5, np.random.default_rng(0))
    [2, 0, 1, 2, 1]
    """
    order: list[int] = []
    while len(order) < num_samples:
        order.extend(int(i) for i in rng.permutation(num_cases))
    return order[:num_samples]


def epoch_order_by_site(
    sites: Sequence[str], num_samples: int, batch_size: int, rng: np.random.Generator
) -> list[int]:
    """Case indices for ``num_samples`` samples whose every batch of ``batch_size`` comes from
    one site (``sites[i]`` is case ``i``'s): the sites take turns, in order of first appearance,
    each drawing whole permutations of its own cases, the last batch cut short.

    >>> epoch_order_by_site(["a", "a", "b", "b", "b"], 7, 2, np.random.default_rng(0))
    [0, 1, 4, 2, 1, 0, 3]
    """
    names = list(dict.fromkeys(sites))
    pools = {n: [i for i, s in enumerate(sites) if s == n] for n in names}
    queues: dict[str, list[int]] = {n: [] for n in names}
    order: list[int] = []
    turn = 0
    while len(order) < num_samples:
        name = names[turn % len(names)]
        queue = queues[name]
        while len(queue) < batch_size:
            queue.extend(int(i) for i in rng.permutation(pools[name]))
        order.extend(queue[:batch_size])
        del queue[:batch_size]
        turn += 1
    return order[:num_samples]


def samples_per_epoch(config: TrainConfig, dataset: CaseDataset) -> int:
    """``config.samples_per_epoch``, or one sample per training case."""
    return config.samples_per_epoch or len(dataset)


def steps_per_epoch(config: TrainConfig, dataset: CaseDataset) -> int:
    """Optimiser steps in one epoch (the last batch may be smaller; ``fill_single`` keeps it)."""
    return -(-samples_per_epoch(config, dataset) // config.batch_size)


def filled_epoch_length(num_samples: int, batch_size: int, *, fill_single: bool) -> int:
    """Samples drawn in one epoch: ``num_samples``, plus one if ``fill_single`` and the last batch
    would otherwise hold a single sample (the number of batches stays the same).

    >>> [filled_epoch_length(n, 2, fill_single=True) for n in (1, 2, 3)]
    [2, 2, 4]
    >>> filled_epoch_length(3, 2, fill_single=False), filled_epoch_length(1, 1, fill_single=True)
    (3, 1)
    """
    if fill_single and batch_size > 1 and num_samples % batch_size == 1:
        return num_samples + 1
    return num_samples


def training_sample(
    case: TrainingCase, config: TrainConfig, rng: np.random.Generator, *, augment: bool = True
) -> Sample:
    """One training sample of ``case``: a patch (or the whole volume), then augmentation.

    A case smaller than the patch is zero-padded to it first.
    """
    image, label = case.image, case.label
    patch = config.patch_shape
    if patch is not None:
        needed = np.maximum(case.spatial_shape, patch)
        if tuple(needed.tolist()) != case.spatial_shape:
            image = pad_to_shape(image, needed.tolist())
            label = None if label is None else pad_to_shape(label, needed.tolist())
        _, x, y, z = image.shape
        where = sample_patch(rng, (x, y, z), patch, label, config.foreground_probability)
        image = image[(slice(None), *where)]
        label = None if label is None else label[where]
    if augment and config.augment is not None:
        _, x, y, z = image.shape
        params = sample_augmentation(config.augment, rng, (x, y, z))
        image, label = apply_augmentation(image, label, params)
    return np.ascontiguousarray(image), label, case.clinical


def epoch_batches(
    dataset: CaseDataset,
    config: TrainConfig,
    epoch: int,
    *,
    task: Task | None = None,
    augment: bool = True,
    fill_single: bool = False,
) -> Iterator[Batch]:
    """The training batches of ``epoch`` (1-based), fixed by ``(config.seed, epoch)``.

    With ``fill_single`` no batch holds a single sample when ``config.batch_size`` >= 2 (for
    models with batch norm; see the module docstring).
    """
    if len(dataset) == 0:
        raise ValueError("no training cases: the dataset is empty")
    task = task or config.build_task()
    divisor = config.spatial_divisor()
    total = filled_epoch_length(
        samples_per_epoch(config, dataset), config.batch_size, fill_single=fill_single
    )
    rng = np.random.default_rng([config.seed, epoch])
    if config.batches_by_site:
        sites = [case.site_id for case in dataset]
        order = epoch_order_by_site(sites, total, config.batch_size, rng)
    else:
        order = epoch_order(len(dataset), total, rng)
    for start in range(0, total, config.batch_size):
        samples = [
            training_sample(
                dataset[order[k]],
                config,
                np.random.default_rng([config.seed, epoch, k]),
                augment=augment,
            )
            for k in range(start, min(start + config.batch_size, total))
        ]
        yield collate(samples, task, divisor)
