"""A task's fingerprint at a site, and a task's training settings from a plan.

The planner (:mod:`neurofed.preprocess.plan`) works on the data alone and returns plain tuples;
this module is where a plan meets a task and a model:

* :func:`compute_task_fingerprint` — site side: the fingerprint of the cases ``task`` can use
  (:func:`~neurofed.training.site_data.usable_cases`) in a split, over the task's modalities.
* :func:`train_config_from_plan` — ``ms-lesion`` takes its whole network (a
  :class:`~neurofed.models.NetworkPlan` for ``dynunet``: patch, strides, kernels, filters) and
  batch size from the plan; ``tumor-regions`` keeps its fixed network and patch and takes the
  target spacing; ``glioma-multitask`` and ``brain-age`` keep their fixed networks and take the
  target spacing and the whole-volume shape (rounded up to the model's divisor). Everything
  else comes from :func:`~neurofed.training.defaults.default_train_config`, whose
  preprocessing (crop to the brain, z-score inside it) is what a plan made without a study's
  settings records (:attr:`Plan.preprocessing <neurofed.preprocess.plan.Plan.preprocessing>`).

Examples
--------
>>> import numpy as np
>>> from neurofed.preprocess.fingerprint import case_fingerprint, merge_fingerprints
>>> from neurofed.preprocess.plan import PlannerSettings, make_plan
>>> image = np.zeros((2, 42, 50, 42), np.float32)
>>> image[:, 1:-1, 1:-1, 1:-1] = 1.0  # a brain of 40 x 48 x 40 voxels of 2 mm
>>> one = case_fingerprint(image, None, np.diag([2.0, 2.0, 2.0, 1.0]), ["FLAIR", "T1"])
>>> settings = PlannerSettings(memory_budget_gb=0.05, base_filters=8, max_filters=64)
>>> plan = make_plan(merge_fingerprints([one]), settings)
>>> config = train_config_from_plan(plan, "ms-lesion")
>>> config.patch_shape == plan.patch_size, config.model_config.plan.filters
(True, (8, 16, 32, 64))
>>> config.preprocess.spacing
(2.0, 2.0, 2.0)
>>> plan.volume_shape  # whole-volume tasks: rounded up to their model's divisor (SFCN: 32)
(40, 48, 40)
>>> train_config_from_plan(plan, "brain-age").preprocess.spatial_shape
(64, 64, 64)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from neurofed.config import look_up
from neurofed.data.manifest import ManifestError, load_manifest
from neurofed.keys import Split, TaskId
from neurofed.models import DynUNetConfig, NetworkPlan
from neurofed.preprocess.fingerprint import Fingerprint, FingerprintError, compute_site_fingerprint
from neurofed.preprocess.plan import Plan, PlanError
from neurofed.tasks import get_task
from neurofed.training.config import TrainConfig
from neurofed.training.defaults import default_train_config
from neurofed.training.site_data import usable_cases

__all__ = ["compute_task_fingerprint", "train_config_from_plan"]


def compute_task_fingerprint(
    site_dir: Path | str,
    task: TaskId | str,
    split: Split | None = Split.TRAIN,
    **kwargs: Any,
) -> Fingerprint:
    """The site's fingerprint of the cases of ``split`` that ``task`` can use.

    ``kwargs`` go to :func:`~neurofed.preprocess.fingerprint.compute_site_fingerprint`
    (``spec``, ``min_cases``, ``progress``).

    Raises
    ------
    FingerprintError
        As :func:`~neurofed.preprocess.fingerprint.compute_site_fingerprint`.
    """
    root = Path(site_dir)
    task_object = get_task(task)
    try:
        manifest = load_manifest(root)
    except ManifestError as exc:
        raise FingerprintError(str(exc)) from exc
    usable, _ = usable_cases(manifest, task_object, site_id=root.name)
    return compute_site_fingerprint(
        root,
        task_object.modalities,
        split,
        subject_ids=[s.subject_id for s in usable],
        **kwargs,
    )


def _network(plan: Plan) -> NetworkPlan:
    return NetworkPlan(
        patch_size=plan.patch_size,
        spacing=plan.spacing,
        kernel_sizes=plan.kernel_sizes,
        strides=plan.strides,
        filters=plan.filters,
    )


def train_config_from_plan(plan: Plan, task: TaskId | str, **changes: Any) -> TrainConfig:
    """``task``'s training settings under ``plan`` (see the module docstring for what comes
    from the plan); ``changes`` set any other :class:`TrainConfig` field last.

    Raises
    ------
    PlanError
        When the plan was made from other modalities than the task uses.
    """
    task_id = TaskId(look_up("task", str(task), [t.value for t in TaskId]))
    needed: Sequence[Any] = get_task(task_id).modalities
    missing = [m.value for m in needed if m not in plan.modalities]
    if missing:
        have = ", ".join(m.value for m in plan.modalities)
        raise PlanError(
            f"plan {plan.plan_id} was made from a fingerprint of {have}, but task "
            f"{task_id.value!r} also needs {', '.join(missing)}; fingerprint the task's "
            "modalities (compute_task_fingerprint) and plan again"
        )
    config = default_train_config(task_id)
    updates: dict[str, Any]
    if task_id is TaskId.MS_LESION:
        assert isinstance(config.model_config, DynUNetConfig)
        updates = {
            "model_config": replace(config.model_config, plan=_network(plan)),
            "patch_shape": plan.patch_size,
            "batch_size": plan.batch_size,
            "preprocess": replace(config.preprocess, **plan.preprocess_params().to_json()),
        }
    elif task_id is TaskId.TUMOR_REGIONS:
        updates = {"preprocess": replace(config.preprocess, spacing=plan.spacing)}
    else:
        params = plan.preprocess_params(spatial_divisor=config.spatial_divisor())
        updates = {"preprocess": replace(config.preprocess, **params.to_json())}
    return replace(config, **(updates | changes))
