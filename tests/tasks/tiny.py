"""Tiny model configs and batches for every task (a few voxels, a few channels)."""

from __future__ import annotations

import torch

from neurofed.config import ConfigBase
from neurofed.keys import ClinicalField, TaskId
from neurofed.models import (
    DynUNetConfig,
    MultitaskUNetConfig,
    ResidualUNetConfig,
    SFCNConfig,
    default_plan,
)
from neurofed.tasks import Batch, ClinicalTarget, Task

TINY_MODELS: dict[TaskId, ConfigBase] = {
    TaskId.TUMOR_REGIONS: ResidualUNetConfig(base_filters=4, depth=3, num_res_units=1),
    TaskId.GLIOMA_MULTITASK: MultitaskUNetConfig(base_filters=4),
    TaskId.MS_LESION: DynUNetConfig(
        plan=default_plan((16, 16, 16), (1.0, 1.0, 1.0), base_filters=4, max_filters=16)
    ),
    TaskId.BRAIN_AGE: SFCNConfig(width=0.0625, dropout=0.0),
}

#: Spatial shape each tiny model accepts.
TINY_SHAPES: dict[TaskId, tuple[int, int, int]] = {
    TaskId.TUMOR_REGIONS: (16, 16, 16),
    TaskId.GLIOMA_MULTITASK: (8, 16, 16),
    TaskId.MS_LESION: (16, 16, 16),
    TaskId.BRAIN_AGE: (32, 32, 32),
}


def blob_label(
    batch_size: int, shape: tuple[int, int, int], seed: int, max_label: int
) -> torch.Tensor:
    """Label maps with a random box of each label value 1..max_label per case."""
    g = torch.Generator().manual_seed(seed)
    label = torch.zeros(batch_size, *shape, dtype=torch.long)
    for b in range(batch_size):
        for value in range(1, max_label + 1):
            lo = [int(torch.randint(0, s // 2, (1,), generator=g)) for s in shape]
            size = [max(1, s // 4) for s in shape]
            x, y, z = lo
            label[b, x : x + size[0], y : y + size[1], z : z + size[2]] = value
    return label


def tiny_batch(task: Task, batch_size: int = 4, seed: int = 0) -> Batch:
    """A batch that fits ``task``: images correlated with the labels, some values unknown."""
    shape = TINY_SHAPES[task.task_id]
    g = torch.Generator().manual_seed(seed)
    image = torch.randn(batch_size, len(task.modalities), *shape, generator=g) * 0.1
    label = None
    if task.needs_label_map:
        label = blob_label(batch_size, shape, seed, task.max_label)
        image = image + label[:, None].float()  # learnable from the image
    clinical = {}
    for i, field in enumerate(task.clinical_fields):
        if field is ClinicalField.GRADE:
            values: list[float | None] = [float(2 + (b % 3)) for b in range(batch_size)]
        elif field in (ClinicalField.AGE, ClinicalField.SDMT):
            values = [40.0 + 10 * b for b in range(batch_size)]
        else:
            values = [float((b + i) % 2) for b in range(batch_size)]
        values[(i + 1) % batch_size] = None  # one unknown per field
        clinical[field] = ClinicalTarget.from_values(values)
    return Batch(image=image, label=label, clinical=clinical)
