"""A plan becomes each task's training settings; a task's fingerprint covers its usable cases."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from neurofed.data.loading import load_subject
from neurofed.data.manifest import load_manifest
from neurofed.data.splits import load_splits
from neurofed.keys import Modality, Split, TaskId
from neurofed.models import DynUNetConfig
from neurofed.preprocess.fingerprint import case_fingerprint
from neurofed.preprocess.plan import Plan, PlanError, PlannerSettings, make_plan
from neurofed.training import default_train_config
from neurofed.training.planning import compute_task_fingerprint, train_config_from_plan

GLIOMA = (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)


def plan_for(modalities: tuple[Modality, ...], spacing: float = 1.5) -> Plan:
    """The plan of one box-shaped brain of 40 x 48 x 36 voxels."""
    image = np.zeros((len(modalities), 42, 50, 38), np.float32)
    image[:, 1:-1, 1:-1, 1:-1] = 1.0
    affine = np.diag([spacing, spacing, spacing, 1.0])
    fingerprint = case_fingerprint(image, None, affine, modalities)
    return make_plan(fingerprint, PlannerSettings(memory_budget_gb=0.05, base_filters=8))


def test_ms_lesion_takes_its_whole_network_from_the_plan() -> None:
    # Prepare
    plan = plan_for((Modality.FLAIR, Modality.T1))

    # Execute
    config = train_config_from_plan(plan, "ms-lesion", epochs=3)

    # Assert
    assert isinstance(config.model_config, DynUNetConfig)
    network = config.model_config.plan
    assert (network.patch_size, network.strides) == (plan.patch_size, plan.strides)
    assert (network.kernel_sizes, network.filters) == (plan.kernel_sizes, plan.filters)
    assert (config.patch_shape, config.batch_size) == (plan.patch_size, plan.batch_size)
    assert config.preprocess.spacing == (1.5, 1.5, 1.5)
    assert config.preprocess.spatial_shape is None
    assert config.epochs == 3


def test_fixed_config_tasks_take_only_spacing_and_shape() -> None:
    # Prepare
    plan = plan_for(GLIOMA)
    fixed_regions = default_train_config("tumor-regions")
    fixed_multitask = default_train_config("glioma-multitask")

    # Execute
    regions = train_config_from_plan(plan, "tumor-regions")
    multitask = train_config_from_plan(plan, "glioma-multitask")

    # Assert: networks and patches unchanged; spacing (and the whole-volume shape) from the plan
    assert regions.model_config == fixed_regions.model_config
    assert regions.patch_shape == fixed_regions.patch_shape == (48, 48, 48)
    assert (regions.preprocess.spacing, regions.preprocess.spatial_shape) == ((1.5,) * 3, None)
    assert multitask.model_config == fixed_multitask.model_config
    divisor = multitask.spatial_divisor()
    assert plan.volume_shape == (40, 48, 36)
    assert multitask.preprocess.spatial_shape == tuple(
        -(-v // d) * d for v, d in zip(plan.volume_shape, divisor, strict=True)
    )
    assert multitask.preprocess.spacing == (1.5, 1.5, 1.5)


def test_a_plan_of_other_modalities_is_refused() -> None:
    # Execute / Assert
    with pytest.raises(PlanError, match="also needs T1CE, T2"):
        train_config_from_plan(plan_for((Modality.FLAIR, Modality.T1)), "tumor-regions")


def test_a_task_fingerprint_covers_the_usable_training_cases(bids_site: Path) -> None:
    # Prepare: training cases whose lesion mask is not empty
    train = load_splits(bids_site).subject_ids(Split.TRAIN)
    subjects = [s for s in load_manifest(bids_site).subjects if s.subject_id in train]
    with_lesions = sum(
        int(np.any(load_subject(bids_site, s, [Modality.FLAIR]).label)) for s in subjects
    )

    # Execute
    fingerprint = compute_task_fingerprint(bids_site, "ms-lesion")

    # Assert
    assert fingerprint.modalities == (Modality.FLAIR, Modality.T1)
    assert fingerprint.num_cases == len(train) == 9
    assert fingerprint.num_label_foreground == with_lesions
    assert fingerprint.spacing_percentile(50) == (2.0, 2.0, 2.0)


def test_full_head_tasks_extract_the_brain_by_default_and_glioma_tasks_do_not() -> None:
    extract = {t: default_train_config(t).preprocess.brain_extraction for t in TaskId}
    assert extract == {
        TaskId.TUMOR_REGIONS: False,
        TaskId.GLIOMA_MULTITASK: False,
        TaskId.MS_LESION: True,
        TaskId.BRAIN_AGE: True,
    }
