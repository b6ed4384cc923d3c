"""The task registry: a :class:`~neurofed.keys.TaskId` → a task class.

Examples
--------
>>> get_task("brain-age", {"target": "sdmt", "target_mean": 45, "target_std": 12}).clinical_fields
(<ClinicalField.SDMT: 'sdmt'>,)
>>> get_task("tumour-regions")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: unknown task 'tumour-regions' (did you mean 'tumor-regions'?); available: ...
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from neurofed.config import ConfigBase, look_up
from neurofed.keys import TaskId
from neurofed.tasks.base import Task
from neurofed.tasks.brain_age import BrainAgeTask
from neurofed.tasks.glioma_multitask import GliomaMultitaskTask
from neurofed.tasks.ms_lesion import MSLesionTask
from neurofed.tasks.tumor_regions import TumorRegionsTask

__all__ = ["get_task", "register_task", "task_ids"]

_REGISTRY: dict[str, type[Task]] = {}


def register_task(task_type: type[Task]) -> None:
    """Register ``task_type`` under its ``task_id`` (which must be new)."""
    key = str(task_type.task_id)
    if key in _REGISTRY:
        raise ValueError(f"task {key!r} is registered already")
    _REGISTRY[key] = task_type


def task_ids() -> tuple[TaskId, ...]:
    """Registered task ids, in registration order."""
    return tuple(TaskId(k) for k in _REGISTRY)


def get_task(task_id: TaskId | str, config: Mapping[str, Any] | ConfigBase | None = None) -> Task:
    """Instantiate the task ``task_id`` with ``config`` (its config, a mapping, or defaults).

    Raises
    ------
    ValueError
        Unknown task id ("did you mean"), unknown config field or invalid value.
    """
    task_type = _REGISTRY[look_up("task", str(task_id), tuple(_REGISTRY))]
    return task_type(config)


for _task_type in (TumorRegionsTask, GliomaMultitaskTask, MSLesionTask, BrainAgeTask):
    register_task(_task_type)
del _task_type
