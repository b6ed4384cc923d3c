"""Tasks: model outputs, losses, mergeable metrics and the labels each workload needs.

>>> from neurofed.tasks import get_task, task_ids
>>> [t.value for t in task_ids()]
['tumor-regions', 'glioma-multitask', 'ms-lesion', 'brain-age']
>>> get_task("tumor-regions").model_name == "residual-unet"
True
"""

from neurofed.tasks.base import ModelOutput, Task
from neurofed.tasks.batch import Batch, ClinicalTarget
from neurofed.tasks.brain_age import (
    REGRESSION_TARGETS,
    BrainAgeConfig,
    BrainAgeTask,
    pearson_from_sums,
)
from neurofed.tasks.glioma_multitask import (
    BINARY_MARKERS,
    GliomaMultitaskConfig,
    GliomaMultitaskTask,
    Grade,
)
from neurofed.tasks.metric_state import MetricState, StateKey, merge_states
from neurofed.tasks.ms_lesion import MSLesionConfig, MSLesionTask
from neurofed.tasks.regions import (
    REGION_LABELS,
    REGION_ORDER,
    labels_to_regions,
    regions_to_labels,
)
from neurofed.tasks.registry import get_task, register_task, task_ids
from neurofed.tasks.tumor_regions import TumorRegionsConfig, TumorRegionsTask

__all__ = [
    "BINARY_MARKERS",
    "REGION_LABELS",
    "REGION_ORDER",
    "REGRESSION_TARGETS",
    "Batch",
    "BrainAgeConfig",
    "BrainAgeTask",
    "ClinicalTarget",
    "GliomaMultitaskConfig",
    "GliomaMultitaskTask",
    "Grade",
    "MSLesionConfig",
    "MSLesionTask",
    "MetricState",
    "ModelOutput",
    "StateKey",
    "Task",
    "TumorRegionsConfig",
    "TumorRegionsTask",
    "get_task",
    "labels_to_regions",
    "merge_states",
    "pearson_from_sums",
    "regions_to_labels",
    "register_task",
    "task_ids",
]
