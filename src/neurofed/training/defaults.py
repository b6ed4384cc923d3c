"""Per-task training settings that run on a CPU in a few minutes on 2 mm phantom data.

Small networks (8 base filters), isotropic resampling (:data:`DEFAULT_SPACING`), 48³ patches for
``tumor-regions`` and 32³ for ``ms-lesion``, a fixed field of view (:data:`FIELD_OF_VIEW`) for the
whole-volume tasks, Adam with a poly learning-rate decay, and a few hundred optimiser steps.

Examples
--------
>>> config = default_train_config("tumor-regions", epochs=1)
>>> config.patch_shape, config.preprocess.spacing, config.model_config.base_filters
((48, 48, 48), (2.0, 2.0, 2.0), 8)
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from neurofed.config import ConfigBase, look_up
from neurofed.keys import TaskId
from neurofed.models import (
    DynUNetConfig,
    MultitaskUNetConfig,
    ResidualUNetConfig,
    SFCNConfig,
    default_plan,
)
from neurofed.preprocess import AugmentConfig, PreprocessParams
from neurofed.training.config import LRSchedule, Shape3, TrainConfig

__all__ = [
    "DEFAULT_SPACING",
    "FIELD_OF_VIEW",
    "RUN_CONFIG",
    "build_train_config",
    "default_train_config",
    "read_train_config",
]

#: A training run folder's record of how it was made (its ``train_config`` among the rest).
RUN_CONFIG = "config.json"

#: Voxel size (mm) of the CPU defaults, per task.
DEFAULT_SPACING: Mapping[TaskId, float] = MappingProxyType(
    {
        TaskId.TUMOR_REGIONS: 2.0,
        TaskId.GLIOMA_MULTITASK: 4.0,  # whole volumes: 4 mm keeps a CPU step under a second
        TaskId.MS_LESION: 2.0,
        TaskId.BRAIN_AGE: 2.0,
    }
)
#: Field of view (mm) of the whole-volume tasks, centred on the brain's bounding box.
FIELD_OF_VIEW: Mapping[TaskId, tuple[float, float, float]] = MappingProxyType(
    {TaskId.GLIOMA_MULTITASK: (160.0, 192.0, 160.0), TaskId.BRAIN_AGE: (128.0, 192.0, 128.0)}
)


def _field_of_view(task: TaskId, spacing: float, divisor: Shape3) -> Shape3:
    x, y, z = (
        max(d, round(mm / spacing / d) * d)
        for mm, d in zip(FIELD_OF_VIEW[task], divisor, strict=True)
    )
    return (x, y, z)


def default_train_config(
    task: TaskId | str,
    *,
    spacing: float | None = None,
    patch_shape: Shape3 | None = None,
    base_filters: int | None = None,
    **changes: Any,
) -> TrainConfig:
    """Settings that train ``task`` on 2 mm phantom data on a CPU in a few minutes.

    See the module docstring; the comments in the code say why a task differs.

    Parameters
    ----------
    task
        The task id.
    spacing
        Isotropic voxel size in mm the cases are resampled to (default: per task).
    patch_shape
        Training patch of a segmentation task (default: 48³, ``ms-lesion`` 32³).
    base_filters
        Width of the network: U-Net base filters, or SFCN's first-block channels (default 8).
    changes
        Any other :class:`TrainConfig` field; mappings given for ``model_config`` and
        ``preprocess`` change only the fields they name.

    Examples
    --------
    >>> config = default_train_config("ms-lesion", patch_shape=(32, 32, 32), base_filters=4)
    >>> config.model_config.plan.patch_size, config.model_config.plan.filters[0]
    ((32, 32, 32), 4)
    >>> default_train_config("glioma-multitask", spacing=2.0).preprocess.spatial_shape
    (80, 96, 80)
    """
    task_id = TaskId(look_up("task", str(task), [t.value for t in TaskId]))
    mm = DEFAULT_SPACING[task_id] if spacing is None else float(spacing)
    if not 0 < mm < math.inf:
        raise ValueError(f"spacing = {spacing!r} is invalid: give a voxel size in mm, e.g. 2")
    spacing3 = (mm, mm, mm)
    # brain-age and MS scans are full heads (skull, scalp): their brain is extracted (deepbet)
    full_heads = task_id in (TaskId.BRAIN_AGE, TaskId.MS_LESION)
    preprocess = PreprocessParams(spacing=spacing3, brain_extraction=full_heads)
    filters = base_filters or 8
    model: ConfigBase
    settings: dict[str, Any] = {"augment": AugmentConfig(), "lr_schedule": LRSchedule.POLY}
    if task_id is TaskId.TUMOR_REGIONS:
        model = ResidualUNetConfig(base_filters=filters, depth=4, num_res_units=1)
        settings |= {"patch_shape": patch_shape or (48, 48, 48), "batch_size": 2}
        settings |= {"learning_rate": 3e-3, "foreground_probability": 0.5}
        settings |= {"epochs": 20, "samples_per_epoch": 64}
    elif task_id is TaskId.GLIOMA_MULTITASK:
        model = MultitaskUNetConfig(base_filters=filters, dropout=0.2)
        shape = _field_of_view(task_id, mm, model.spatial_divisor())
        preprocess = replace(preprocess, spatial_shape=shape)
        settings |= {"batch_size": 2, "learning_rate": 2e-3, "epochs": 25}
    elif task_id is TaskId.MS_LESION:
        # small lesions: small patches, many of them, most centred on a lesion
        patch = patch_shape or (32, 32, 32)
        plan = default_plan(patch, spacing3, base_filters=filters, max_filters=64)
        model = DynUNetConfig(plan=plan)
        settings |= {"patch_shape": plan.patch_size, "batch_size": 2, "learning_rate": 3e-3}
        settings |= {"foreground_probability": 0.67, "epochs": 25, "samples_per_epoch": 64}
        settings |= {"validate_every": 5}
    else:
        # 30-odd cases and a few minutes: augmentation and dropout only slow the fit down
        model = SFCNConfig(width=filters / SFCNConfig().channels[0], dropout=0.0)
        shape = _field_of_view(task_id, mm, model.spatial_divisor())
        preprocess = replace(preprocess, spatial_shape=shape)
        settings |= {"augment": None, "batch_size": 4, "learning_rate": 3e-3, "epochs": 30}
    # mappings given for nested configs change only the fields they name
    if isinstance(changes.get("model_config"), Mapping):
        changes["model_config"] = model.to_json() | dict(changes["model_config"])
    if isinstance(changes.get("preprocess"), Mapping):
        changes["preprocess"] = preprocess.to_json() | dict(changes["preprocess"])
    base = {"task": task_id, "model_config": model, "preprocess": preprocess} | settings
    return TrainConfig(**(base | changes))


def read_train_config(path: Path) -> TrainConfig:
    """A TrainConfig from a JSON file: a TrainConfig itself, or a run folder's (or its
    ``config.json``'s) ``train_config``.

    Raises
    ------
    OSError, ValueError
        The file is missing, is not JSON, or is not a TrainConfig (the message names the field).
    """
    path = Path(path)
    file = path / RUN_CONFIG if path.is_dir() else path
    data = json.loads(file.read_text(encoding="utf-8"))
    if not isinstance(data, Mapping):
        raise ValueError(f"{file}: not a TrainConfig (a JSON object) nor a run's config.json")
    return TrainConfig.from_json(data.get("train_config", data))


def build_train_config(
    task: TaskId | None,
    config_file: Path | None,
    changes: Mapping[str, Any],
    spacing: float | None,
    patch: tuple[int, int, int] | None,
    base_filters: int | None,
    augment: bool = True,
) -> TrainConfig:
    """The TrainConfig a user asks for: a saved config (``config_file``) or the task's
    defaults, changed by the settings given (``None`` = not given; ``augment=False`` turns
    augmentation off).

    Raises
    ------
    ValueError
        No task and no saved config, a task other than the saved config's, a transfer's config
        (which starts from a trained model), ``base_filters`` with a saved config, or an
        invalid value (the message names the field).

    Examples
    --------
    >>> build_train_config("brain-age", None, {"epochs": 3}, 4.0, None, None).epochs
    3
    """
    given = {k: v for k, v in changes.items() if v is not None}
    if not augment:
        given["augment"] = None
    if config_file is not None:
        config = read_train_config(config_file)
        if config.transfer is not None:
            raise ValueError(
                f"{config_file} holds a {config.transfer.value} transfer's config, which starts "
                "from a trained model: use `neurofed train transfer --from MODEL`"
            )
        if task is not None and task is not config.task:
            raise ValueError(
                f"--task {task.value} differs from {config_file}'s {config.task.value}"
            )
        if spacing is not None:
            given["preprocess"] = config.preprocess.to_json() | {"spacing": [spacing] * 3}
        if patch is not None:
            given["patch_shape"] = patch
        if base_filters is not None:
            raise ValueError("--base-filters cannot change a saved config; use --model-config")
        if isinstance(given.get("model_config"), Mapping):
            given["model_config"] = config.model_config.to_json() | given["model_config"]
        return config.with_changes(**given) if given else config
    if task is None:
        raise ValueError("give --task (or --config with a saved TrainConfig)")
    return default_train_config(
        task,
        spacing=spacing,
        patch_shape=patch,
        base_filters=base_filters,
        **given,
    )
