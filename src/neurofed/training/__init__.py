"""The site-local training and evaluation engine (imports nothing from an FL engine).

:class:`LocalTrainer` trains and evaluates one task's model on one site's data — or on several
sites' data pooled — and exposes what a federation needs: named parameters in and out
(:meth:`~LocalTrainer.get_parameters`, :meth:`~LocalTrainer.set_parameters`, parameters that stay
local, FedProx), ``num_examples`` and metrics as mergeable :class:`~neurofed.tasks.MetricState`.
:func:`train_local` and :func:`train_pooled` are the baselines, and :func:`train_transfer` moves a
trained brain-age model to a new target, all written as run folders;
:func:`load_model` rebuilds a saved model from its folder alone.

Examples
--------
>>> from neurofed.training import default_train_config
>>> config = default_train_config("tumor-regions", epochs=1)
>>> config.patch_shape, config.preprocess.spacing
((48, 48, 48), (2.0, 2.0, 2.0))
"""

from neurofed.training.baselines import (
    MODEL_FOLDER,
    RUN_METRICS,
    RunFolderError,
    RunKind,
    RunResult,
    fit_target_normalisation,
    train_local,
    train_pooled,
    train_transfer,
    transfer_config,
)
from neurofed.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from neurofed.training.config import LRSchedule, Optimizer, TrainConfig, resolve_device
from neurofed.training.dataset import CaseDataset, SkippedCase, TrainingCase, collate
from neurofed.training.defaults import (
    DEFAULT_SPACING,
    FIELD_OF_VIEW,
    RUN_CONFIG,
    build_train_config,
    default_train_config,
    read_train_config,
)
from neurofed.training.inference import evaluate_dataset, predict
from neurofed.training.model_folder import (
    MODEL_JSON,
    MODEL_WEIGHTS,
    ModelFolderError,
    TrainedModel,
    load_model,
    save_model,
)
from neurofed.training.parameters import ParameterError
from neurofed.training.records import HEADLINE_METRICS, EpochRecord, finalize_metrics
from neurofed.training.sampling import epoch_batches, steps_per_epoch
from neurofed.training.site_data import SiteData, SiteDataError, usable_cases
from neurofed.training.trainer import CHECKPOINTS, LocalTrainer

__all__ = [
    "CHECKPOINTS",
    "DEFAULT_SPACING",
    "FIELD_OF_VIEW",
    "HEADLINE_METRICS",
    "MODEL_FOLDER",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "RUN_CONFIG",
    "RUN_METRICS",
    "CaseDataset",
    "Checkpoint",
    "CheckpointError",
    "EpochRecord",
    "LRSchedule",
    "LocalTrainer",
    "ModelFolderError",
    "Optimizer",
    "ParameterError",
    "RunFolderError",
    "RunKind",
    "RunResult",
    "SiteData",
    "SiteDataError",
    "SkippedCase",
    "TrainConfig",
    "TrainedModel",
    "TrainingCase",
    "build_train_config",
    "collate",
    "default_train_config",
    "epoch_batches",
    "evaluate_dataset",
    "finalize_metrics",
    "fit_target_normalisation",
    "latest_checkpoint",
    "load_checkpoint",
    "load_model",
    "predict",
    "read_train_config",
    "resolve_device",
    "save_checkpoint",
    "save_model",
    "steps_per_epoch",
    "train_local",
    "train_pooled",
    "train_transfer",
    "transfer_config",
    "usable_cases",
]
