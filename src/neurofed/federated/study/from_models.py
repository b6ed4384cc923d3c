"""An evaluation study written from the model folders it scores.

An evaluation must preprocess, cut patches and score exactly as the models were trained, so its
``[task]``, ``[model]`` and ``[train]`` tables are those of the model folders (``model.json``),
not typed again by hand. Every model must share the network, the task settings and the
preprocessing and patching it is scored with (the local-only, pooled and federated models of one
study do): one study sends one network.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from neurofed.artifacts import sha256_file
from neurofed.federated.selection import Selection
from neurofed.federated.study.evaluation import split_label
from neurofed.federated.study.parse import SETTABLE_TRAIN_FIELDS
from neurofed.federated.study.study import Study, StudyError
from neurofed.keys import Split
from neurofed.training.model_folder import MODEL_WEIGHTS, load_model

__all__ = ["SCORED_TRAIN_FIELDS", "evaluation_study"]

#: The ``[train]`` settings a model's scores depend on (the rest — learning rate, samples per
#: epoch … — only shaped its training, and its first folder's values are written as they are).
SCORED_TRAIN_FIELDS = ("preprocess", "patch_shape", "sliding_window_overlap")


def _settings(folder: Path) -> dict[str, Any]:
    """The ``[task]``, ``[model]`` and ``[train]`` tables of the model in ``folder``."""
    config = load_model(folder).config
    train = config.to_json()
    return {
        "task": {"id": config.task.value}
        | {k: v for k, v in config.task_config.to_json().items() if v is not None},
        "model": config.model_config.to_json(),
        "train": {k: train[k] for k in SETTABLE_TRAIN_FIELDS if train.get(k) is not None},
    }


def evaluation_study(
    models: Mapping[str, Path],
    *,
    name: str,
    selection: Selection,
    split: Split | None = None,
    site_splits: Mapping[str, Split | None] | None = None,
    seed: int = 0,
    dataset: str | None = None,
    min_sites: int = 1,
    round_timeout_s: float = 3600.0,
) -> Study:
    """A study of ``kind = "evaluate"`` scoring ``models`` (name → model folder), one per round,
    on each site's ``split`` (``None``: every case) or, for a site ``site_splits`` names, on the
    split given there; the weights are named by their SHA-256.

    Raises
    ------
    StudyError
        No model, or models trained with different settings (naming the first that differs).
    """
    if not models:
        raise StudyError(f"evaluation study {name!r}: give at least one model folder")
    folders = {k: Path(v).resolve() for k, v in models.items()}
    first, *others = folders.items()
    settings = _settings(first[1])

    def scored(tables: dict[str, Any]) -> tuple[Any, ...]:
        train = tables["train"]
        return tables["task"], tables["model"], [train.get(k) for k in SCORED_TRAIN_FIELDS]

    for other, folder in others:
        if scored(_settings(folder)) != scored(settings):
            raise StudyError(
                f"evaluation study {name!r}: {folder} ({other!r}) differs from {first[1]} "
                f"({first[0]!r}) in [task], [model] or [train] {list(SCORED_TRAIN_FIELDS)}; "
                "score models of one network and preprocessing in one study"
            )
    data: dict[str, Any] = {
        "name": name,
        "kind": "evaluate",
        "rounds": len(folders),
        "min_sites": min_sites,
        "round_timeout_s": round_timeout_s,
        "seed": seed,
        **settings,
        "strategy": {"name": "fedavg"},
        "selection": {"metric": selection.metric, "direction": selection.direction.value},
        "evaluate": {
            "split": split_label(split),
            "models": [
                {"name": k, "path": str(v), "sha256": sha256_file(v / MODEL_WEIGHTS)}
                for k, v in folders.items()
            ],
        },
    }
    if site_splits:
        data["evaluate"]["site_splits"] = {k: split_label(v) for k, v in site_splits.items()}
    if dataset is not None:
        data["dataset"] = dataset
    return Study.from_dict(data, source=f"evaluation study {name!r}")
