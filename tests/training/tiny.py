"""Tiny training configs for every task: a second or two on the tiny sites, on a CPU."""

from __future__ import annotations

from typing import Any

from neurofed.keys import TaskId
from neurofed.models import (
    DynUNetConfig,
    MultitaskUNetConfig,
    ResidualUNetConfig,
    SFCNConfig,
    default_plan,
)
from neurofed.training import TrainConfig

#: SFCN channels with four pooling blocks instead of five: on a 32³ input the last blocks then
#: see 2³ voxels, not one, so their batch norms do not normalise over the 4 cases of a batch
#: alone (which makes a tiny brain-age model learn the order of ages but not their scale).
TINY_SFCN_CHANNELS = (32, 64, 128, 256, 64)

_TINY: dict[TaskId, dict[str, Any]] = {
    TaskId.TUMOR_REGIONS: {
        "model_config": ResidualUNetConfig(base_filters=4, depth=3, num_res_units=1),
        "patch_shape": (16, 16, 16),
        "foreground_probability": 0.5,
    },
    TaskId.GLIOMA_MULTITASK: {"model_config": MultitaskUNetConfig(base_filters=4)},
    TaskId.MS_LESION: {
        "model_config": DynUNetConfig(
            plan=default_plan((16, 16, 16), (2.0, 2.0, 2.0), base_filters=4, max_filters=16)
        ),
        "patch_shape": (16, 16, 16),
        "foreground_probability": 0.5,
    },
    TaskId.BRAIN_AGE: {
        "model_config": SFCNConfig(channels=TINY_SFCN_CHANNELS, width=0.125, dropout=0.0),
        "preprocess": {"spatial_shape": [32, 32, 32]},
        "learning_rate": 3e-3,
    },
}


def tiny_config(task: TaskId | str, **changes: Any) -> TrainConfig:
    """A config that trains ``task`` on the tiny sites in a second or two (no augmentation)."""
    task_id = TaskId(task)
    settings: dict[str, Any] = {
        "task": task_id,
        "epochs": 2,
        "batch_size": 4,
        "samples_per_epoch": 8,
        "learning_rate": 1e-2,
        "augment": None,
        "device": "cpu",
    }
    return TrainConfig(**(settings | _TINY[task_id] | changes))
