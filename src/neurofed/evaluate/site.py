"""A saved model scored on one site's cases, as it was trained to see them."""

from __future__ import annotations

from pathlib import Path

from neurofed.keys import Split
from neurofed.tasks import MetricState
from neurofed.training.dataset import CaseDataset
from neurofed.training.model_folder import TrainedModel, load_model
from neurofed.training.site_data import SiteData
from neurofed.types import ProgressCallback

__all__ = ["evaluate_model"]


def evaluate_model(
    model: Path | TrainedModel,
    site: Path,
    split: Split | None = Split.VALIDATION,
    *,
    progress: ProgressCallback | None = None,
    load_progress: ProgressCallback | None = None,
) -> tuple[MetricState, CaseDataset, TrainedModel]:
    """Score a saved model on ``split`` of ``site`` (``None``: every case).

    Cases are preprocessed as the model was trained (and cached at the site). Returns the metric
    state, the cases scored and the loaded model.

    Raises
    ------
    SiteDataError
        The site cannot serve the model's task.
    ModelFolderError
        The model folder is unusable.
    """
    trained = model if isinstance(model, TrainedModel) else load_model(Path(model))
    source = SiteData(site, trained.task, trained.preprocess, progress=load_progress)
    dataset = source.split(split)
    return trained.evaluate(dataset, progress=progress), dataset, trained
