"""A study's ``[plan]`` table: training settings configured from a federated fingerprint.

A study with ``[plan]`` does not fix its target spacing (nor, for ``ms-lesion``, its network):
before round 1 the server asks every site for the fingerprint of its training split (aggregate
histograms and counts, :mod:`neurofed.preprocess.fingerprint`), merges them exactly and makes a
plan with nnU-Net v2's rules (:func:`neurofed.preprocess.plan.make_plan`), recording the study's
``[train.preprocess]`` (crop, normalisation, resampling) and each departure from nnU-Net in it.
The plan is saved with the run (``plan.json``) and sent with every training and validation
task; every site trains with
:meth:`Study.train_config(plan=...) <neurofed.federated.study.Study.train_config>`, i.e.
:func:`apply_plan`.

.. code-block:: toml

    [plan]
    source = "fingerprint"          # the only source: a fingerprint round before round 1
    memory_budget_gb = 8.0          # the rest are PlannerSettings (all optional; defaults shown)
    base_filters = 32
    max_filters = 320
    min_feature_size = 4
    anisotropy_threshold = 3.0
    min_batch_size = 2
    max_dataset_fraction = 0.05
    volume_percentile = 95.0

The planner's ``out_channels`` (counted in the memory estimate) is the task's own. What the plan
decides (after :func:`neurofed.training.planning.train_config_from_plan`) a planned study may not
set itself — the parse names the key and says so:

===================================  ===========================================================
task                                 from the plan
===================================  ===========================================================
``ms-lesion``                        ``[model] plan`` (the whole network), ``[train]``
                                     ``patch_shape`` and ``batch_size``, ``[train.preprocess]``
                                     ``spacing`` and ``spatial_shape``
``tumor-regions``                    ``[train.preprocess] spacing``
``glioma-multitask``, ``brain-age``  ``[train.preprocess] spacing`` and ``spatial_shape`` (the
                                     whole-volume shape, a multiple of the model's divisor)
===================================  ===========================================================

Every other setting of ``[model]`` and ``[train]`` still applies. A study without ``[plan]`` is
exactly what it was before plans existed (same dict, same content hash).

Examples
--------
>>> from neurofed.keys import TaskId
>>> plan = parse_plan_table({"plan": {"memory_budget_gb": 4}}, TaskId.MS_LESION)
>>> plan.source.value, plan.settings.memory_budget_gb, plan.settings.out_channels
('fingerprint', 4.0, 2)
>>> plan.to_dict()["base_filters"], "out_channels" in plan.to_dict()
(32, False)
>>> parse_plan_table({"plan": {"memory_budget": 4}}, TaskId.MS_LESION)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.federated.study.plan.PlanTableError: [plan]: unknown key 'memory_budget' (did you ...
>>> planned_keys(TaskId.TUMOR_REGIONS)
(('train', 'preprocess', 'spacing'),)
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from neurofed.keys import TaskId
from neurofed.models import DynUNetConfig
from neurofed.preprocess.plan import Plan, PlanError, PlannerSettings
from neurofed.tasks import get_task
from neurofed.training.config import TrainConfig
from neurofed.training.model_folder import FINGERPRINT_FILE, PLAN_FILE
from neurofed.training.planning import train_config_from_plan

__all__ = [
    "FINGERPRINT_FILE",
    "PLAN_FILE",
    "PLAN_TABLE_KEYS",
    "PlanSource",
    "PlanTableError",
    "StudyPlan",
    "apply_plan",
    "check_plan",
    "parse_plan_table",
    "planned_keys",
    "strip_planned",
]


class PlanTableError(ValueError):
    """The ``[plan]`` table is unusable; the message names the key and the fix."""


class PlanSource(StrEnum):
    """Where a study's plan comes from."""

    FINGERPRINT = "fingerprint"  # a federated fingerprint round before round 1


#: Planner settings a study may fix (``out_channels`` is the task's own).
_SETTINGS_KEYS: tuple[str, ...] = tuple(
    f.name for f in fields(PlannerSettings) if f.name != "out_channels"
)
#: Keys of the ``[plan]`` table.
PLAN_TABLE_KEYS: tuple[str, ...] = ("source", *_SETTINGS_KEYS)

Key = tuple[str, ...]
_SPACING: Key = ("train", "preprocess", "spacing")
_SHAPE: Key = ("train", "preprocess", "spatial_shape")
_PLANNED: Mapping[TaskId, tuple[Key, ...]] = {
    TaskId.MS_LESION: (
        ("model", "plan"),
        ("train", "patch_shape"),
        ("train", "batch_size"),
        _SPACING,
        _SHAPE,
    ),
    TaskId.TUMOR_REGIONS: (_SPACING,),
    TaskId.GLIOMA_MULTITASK: (_SPACING, _SHAPE),
    TaskId.BRAIN_AGE: (_SPACING, _SHAPE),
}


def planned_keys(task: TaskId) -> tuple[Key, ...]:
    """The study keys (table path + key) that the plan decides for ``task``."""
    return _PLANNED[TaskId(task)]


@dataclass(frozen=True)
class StudyPlan:
    """A study's ``[plan]``: where the plan comes from and the planner's settings.

    Attributes
    ----------
    source
        :class:`PlanSource` (only ``fingerprint``).
    settings
        The planner's settings; ``out_channels`` is the task's.
    """

    source: PlanSource = PlanSource.FINGERPRINT
    settings: PlannerSettings = field(default_factory=PlannerSettings)

    def to_dict(self) -> dict[str, Any]:
        """The ``[plan]`` table with every default filled (part of the study's hash)."""
        settings = self.settings.to_json()
        return {"source": self.source.value} | {k: settings[k] for k in _SETTINGS_KEYS}


def _unknown(where: str, keys: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
    for key in keys:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise PlanTableError(
                f"{where}: unknown key {key!r}{hint}; allowed keys: {', '.join(allowed)}"
            )


def _given(data: Mapping[str, Any], key: Key) -> bool:
    value: Any = data
    for part in key:
        if not isinstance(value, Mapping) or part not in value:
            return False
        value = value[part]
    return True


def parse_plan_table(data: Mapping[str, Any], task: TaskId) -> StudyPlan:
    """The ``[plan]`` of parsed study TOML ``data`` (which must have one) for ``task``.

    Raises
    ------
    PlanTableError
        An unknown key or source, an invalid setting, or a key of ``[model]`` / ``[train]``
        that the plan decides (see the module docstring).
    """
    table = data["plan"]
    if not isinstance(table, Mapping):
        raise PlanTableError(f"plan = {table!r} must be a table; write it as [plan]")
    _unknown("[plan]", table, PLAN_TABLE_KEYS)
    source = table.get("source", PlanSource.FINGERPRINT.value)
    if source not in [s.value for s in PlanSource]:
        sources = ", ".join(repr(s.value) for s in PlanSource)
        raise PlanTableError(f"[plan] source = {source!r} is invalid: use one of {sources}")
    task_id = TaskId(task)
    for key in planned_keys(task_id):
        if _given(data, key):
            table_name, name = ".".join(key[:-1]), key[-1]
            raise PlanTableError(
                f"[{table_name}] {name} is set, but with [plan] task {task_id.value!r} takes it "
                f"from the federated plan; leave {name} out of [{table_name}] (steer the plan "
                "with the [plan] settings), or remove [plan] to fix it yourself"
            )
    settings = {k: v for k, v in table.items() if k != "source"}
    try:
        planner = PlannerSettings(**settings, out_channels=get_task(task_id).out_channels)
    except PlanError as error:
        raise PlanTableError(f"[plan]: {error}") from None
    return StudyPlan(PlanSource(source), planner)


def strip_planned(study: Mapping[str, Any], task: TaskId) -> dict[str, Any]:
    """``study`` (a study's dict) without the keys the plan decides for ``task``.

    >>> strip_planned({"train": {"batch_size": 2, "preprocess": {}}}, TaskId.MS_LESION)
    {'train': {'preprocess': {}}}
    """
    out = {k: dict(v) if isinstance(v, Mapping) else v for k, v in study.items()}
    for key in planned_keys(task):
        owner: Any = out
        for part in key[:-1]:
            if not isinstance(owner.get(part), Mapping):
                owner = None
                break
            owner[part] = dict(owner[part])
            owner = owner[part]
        if owner is not None:
            owner.pop(key[-1], None)
    return out


def check_plan(plan: Plan, task: TaskId, settings: PlannerSettings) -> None:
    """Refuse a plan that is not one of this study's: another task's, or other settings.

    Raises
    ------
    PlanError
        The plan was made from other modalities than ``task`` uses, or with other planner
        settings than the study's ``[plan]``.
    """
    task_id = TaskId(task)
    wanted = tuple(get_task(task_id).modalities)
    if tuple(plan.modalities) != wanted:
        have = "+".join(m.value for m in plan.modalities)
        need = "+".join(m.value for m in wanted)
        raise PlanError(
            f"plan {plan.plan_id} was made from fingerprints of {have}, but task "
            f"{task_id.value!r} uses {need}: it is a plan for another task; refusing it"
        )
    if plan.settings != settings:
        theirs, ours = plan.settings.to_json(), settings.to_json()
        differ = {k: (theirs[k], ours[k]) for k in ours if theirs[k] != ours[k]}
        raise PlanError(
            f"plan {plan.plan_id} was made with other planner settings than the study's [plan] "
            f"(plan vs study: {differ}); refusing it"
        )


def apply_plan(train: TrainConfig, plan: Plan) -> TrainConfig:
    """The study's training settings ``train`` under ``plan``.

    What the plan decides for the task (see the module docstring) comes from
    :func:`~neurofed.training.planning.train_config_from_plan`; every other setting is kept. A
    whole-volume shape is rounded up to the divisor of the study's own model.

    Raises
    ------
    PlanError
        The plan was made from other modalities than the task needs.
    """
    task = train.task
    planned = train_config_from_plan(plan, task)
    kept: dict[str, Any] = {f.name: getattr(train, f.name) for f in fields(TrainConfig)}
    del kept["task"]
    preprocess = replace(train.preprocess, spacing=plan.spacing)
    if _SHAPE in planned_keys(task):
        divisor = None if task is TaskId.MS_LESION else train.spatial_divisor()
        shape = plan.preprocess_params(spatial_divisor=divisor).spatial_shape
        preprocess = replace(preprocess, spatial_shape=shape)
    kept["preprocess"] = preprocess
    if task is TaskId.MS_LESION:
        assert isinstance(train.model_config, DynUNetConfig)
        assert isinstance(planned.model_config, DynUNetConfig)
        kept["model_config"] = replace(train.model_config, plan=planned.model_config.plan)
        kept["patch_shape"] = planned.patch_shape
        kept["batch_size"] = planned.batch_size
    return train_config_from_plan(plan, task, **kept)
