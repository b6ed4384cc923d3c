"""The two baselines every federated study compares against, and transfer, as run folders.

- :func:`train_local`: a model trained on one site only;
- :func:`train_pooled`: a model trained on the union of several sites' training cases (the
  centralised upper bound that federated training tries to match);
- :func:`train_transfer`: a trained brain-age model moved to a new target (SDMT) on one site or
  several pooled, fine-tuning everything (``full``) or only its last layer (``head``);

The training functions call :class:`~neurofed.training.LocalTrainer` directly and write::

    <run>/config.json      kind of run, sites, the TrainConfig, versions (and the initial model)
    <run>/metrics.json     one record per epoch (epoch 0 = the untrained or the source model)
    <run>/checkpoints/     one checkpoint per epoch (safetensors + JSON)
    <run>/model/           weights.safetensors + model.json (:mod:`~neurofed.training.model_folder`)

Running again with the same run folder resumes from the newest checkpoint (an interrupted run
ends as if never interrupted) and a finished run is not trained again; other settings in the
same folder are refused.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.artifacts import sha256_file, versions, write_json_atomically
from neurofed.keys import ClinicalField, Split, TaskId
from neurofed.models import TransferMode
from neurofed.tasks import REGRESSION_TARGETS
from neurofed.training.checkpoint import latest_checkpoint
from neurofed.training.config import TrainConfig, differing_settings
from neurofed.training.dataset import CaseDataset, SkippedCase
from neurofed.training.defaults import RUN_CONFIG
from neurofed.training.model_folder import (
    MODEL_WEIGHTS,
    ModelFolderError,
    TrainedModel,
    load_model,
    save_model,
)
from neurofed.training.records import EpochRecord
from neurofed.training.site_data import SiteData
from neurofed.training.trainer import CHECKPOINTS, LocalTrainer
from neurofed.types import ProgressCallback

__all__ = [
    "MODEL_FOLDER",
    "RUN_METRICS",
    "RunFolderError",
    "RunKind",
    "RunResult",
    "fit_target_normalisation",
    "train_local",
    "train_pooled",
    "train_transfer",
    "transfer_config",
]

RUN_METRICS = "metrics.json"
MODEL_FOLDER = "model"
#: TrainConfig fields a transfer keeps from its source model (its weights must fit them); the
#: task config's target and normalisation are set by the transfer itself.
_TRANSFER_KEEPS = frozenset(
    {"task", "task_config", "model_config", "preprocess", "patch_shape", "transfer"}
)
_TRANSFER_IS_FOR = (
    "transfer is for brain-age models (an age regression moved to another target such as sdmt)"
)


class RunKind(StrEnum):
    """Which baseline a run folder holds."""

    LOCAL = "local"  # one site
    POOLED = "pooled"  # several sites' cases together
    TRANSFER = "transfer"  # a trained model moved to a new target, on one site or several


class RunFolderError(ValueError):
    """A run folder holds another run; the message names the differences and the fix."""


@dataclass(frozen=True)
class RunResult:
    """A finished baseline run."""

    run_dir: Path
    kind: RunKind
    history: tuple[EpochRecord, ...]
    num_examples: int
    skipped: tuple[SkippedCase, ...]

    @property
    def model_dir(self) -> Path:
        return self.run_dir / MODEL_FOLDER

    @property
    def untrained(self) -> Mapping[str, float]:
        """Validation metrics before training (epoch 0), if recorded: of the untrained model,
        or of the source model on the new target for a transfer."""
        return next((r.validation for r in self.history if r.epoch == 0), {})

    @property
    def final(self) -> Mapping[str, float]:
        """Validation metrics of the last validated epoch."""
        validated = [r for r in self.history if r.epoch > 0 and r.validation]
        return validated[-1].validation if validated else {}


@dataclass(frozen=True)
class _InitialModel:
    """The model a transfer starts from, and how ``config.json`` names it."""

    trained: TrainedModel
    path: Path
    sha256: str

    def to_json(self) -> dict[str, str]:
        return {"path": str(self.path), "sha256": self.sha256}


def _check_run_config(run_dir: Path, record: Mapping[str, Any]) -> None:
    path = run_dir / RUN_CONFIG
    if not path.is_file():
        return
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RunFolderError(f"{path}: unreadable ({exc}); use another --out") from exc
    theirs_from, mine_from = stored.get("initial_model"), record.get("initial_model")
    if (
        isinstance(theirs_from, Mapping)
        and isinstance(mine_from, Mapping)
        and theirs_from.get("sha256") != mine_from["sha256"]
    ):
        source = theirs_from.get("path")
        raise RunFolderError(
            f"{run_dir} holds a transfer from another model ({source}, weights sha256 "
            f"{str(theirs_from.get('sha256'))[:12]}…, not {mine_from['path']}); re-run with "
            f"--from {source} to resume it, or choose another --out"
        )
    differ = [k for k in ("kind", "sites") if stored.get(k) != record[k]]
    theirs, mine = stored.get("train_config", {}), record["train_config"]
    differ += differing_settings(theirs, mine)
    if differ:
        raise RunFolderError(
            f"{run_dir} holds a run with other settings ({', '.join(differ)} differ); re-run with "
            "the same settings to resume it, or choose another --out"
        )


def _write_metrics(
    run_dir: Path, kind: RunKind, config: TrainConfig, trainer: LocalTrainer
) -> None:
    write_json_atomically(
        run_dir / RUN_METRICS,
        {
            "task": config.task.value,
            "kind": kind.value,
            "num_examples": trainer.num_examples,
            "records": [r.to_json() for r in trainer.history],
        },
    )


def fit_target_normalisation(config: TrainConfig, dataset: CaseDataset) -> TrainConfig:
    """``config`` with a regression task's ``target_mean`` / ``target_std`` set from the known
    targets of ``dataset`` (rounded to 3 decimals); any other config is returned unchanged.

    Examples
    --------
    >>> import numpy as np
    >>> from neurofed.data.subject import Clinical
    >>> from neurofed.training.dataset import TrainingCase
    >>> image = np.zeros((1, 2, 2, 2), np.float32)
    >>> cases = CaseDataset(
    ...     TrainingCase(f"c{i}", "s", image, None, Clinical(age=a)) for i, a in enumerate([30, 50])
    ... )
    >>> config = fit_target_normalisation(TrainConfig(task="brain-age"), cases)
    >>> config.task_config.target_mean, config.task_config.target_std
    (40.0, 10.0)
    """
    task_config = config.task_config
    if not {"target", "target_mean", "target_std"} <= {f.name for f in fields(task_config)}:
        return config
    values = [v for case in dataset if (v := case.clinical.get(task_config.target)) is not None]
    numbers = np.asarray(values, dtype=np.float64)
    if numbers.size < 2 or float(numbers.std()) <= 0:
        return config
    mean, std = round(float(numbers.mean()), 3), round(float(numbers.std()), 3)
    return config.with_changes(
        task_config=task_config.to_json() | {"target_mean": mean, "target_std": std}
    )


def _run(
    kind: RunKind,
    config: TrainConfig,
    sites: Sequence[Path],
    run_dir: Path,
    *,
    progress: ProgressCallback | None,
    load_progress: ProgressCallback | None,
    on_epoch: Callable[[EpochRecord], None] | None,
    keep_checkpoints: int | None,
    normalise_target: bool,
    initial: _InitialModel | None = None,
) -> RunResult:
    run_dir = Path(run_dir)
    source = SiteData(sites, config.build_task(), config.preprocess, progress=load_progress)
    if normalise_target:
        config = fit_target_normalisation(config, source.split(Split.TRAIN))
    record: dict[str, Any] = {
        "kind": kind.value,
        "sites": [Path(s).name for s in sites],
        "train_config": config.to_json(),
    }
    provenance = {"run": kind.value, "sites": record["sites"]}
    if initial is not None:
        record["initial_model"] = initial.to_json()
        provenance["initial_model_sha256"] = initial.sha256
    _check_run_config(run_dir, record)
    trainer = LocalTrainer.from_source(
        config, source, run_dir=run_dir, keep_checkpoints=keep_checkpoints
    )
    run_dir.mkdir(parents=True, exist_ok=True)
    write_json_atomically(
        run_dir / RUN_CONFIG,
        record
        | {
            "site_paths": [str(Path(s).resolve()) for s in sites],
            "num_examples": trainer.num_examples,
            "skipped": [s.line() for s in trainer.train_data.skipped],
            "versions": versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    if latest_checkpoint(run_dir / CHECKPOINTS, max_epoch=config.epochs) is None:
        if initial is not None:  # on resume, the checkpoint's weights win
            trainer.load_initial_weights(initial.trained)
        trainer.record_untrained()
        _write_metrics(run_dir, kind, config, trainer)

    def epoch_done(epoch_record: EpochRecord) -> None:
        _write_metrics(run_dir, kind, config, trainer)
        if on_epoch is not None:
            on_epoch(epoch_record)

    trainer.fit(config.epochs, progress=progress, on_epoch=epoch_done)
    _write_metrics(run_dir, kind, config, trainer)
    validated = [r for r in trainer.history if r.epoch > 0 and r.validation]
    save_model(
        run_dir / MODEL_FOLDER,
        trainer.model,
        config,
        metrics=validated[-1].validation if validated else {},
        epoch=trainer.epoch,
        provenance=provenance | {"num_examples": trainer.num_examples},
    )
    return RunResult(
        run_dir=run_dir,
        kind=kind,
        history=tuple(trainer.history),
        num_examples=trainer.num_examples,
        skipped=trainer.train_data.skipped,
    )


def train_local(
    config: TrainConfig,
    site: Path,
    run_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    load_progress: ProgressCallback | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    keep_checkpoints: int | None = 3,
    normalise_target: bool = True,
) -> RunResult:
    """Train on one site's training split, validate on its validation split.

    ``progress`` reports training steps, ``load_progress`` the loading of cases, ``on_epoch``
    each finished epoch. With ``normalise_target``, a regression task's target mean and
    standard deviation come from the training cases (:func:`fit_target_normalisation`).

    Raises
    ------
    SiteDataError
        The site cannot serve the task (no manifest, missing modality, no usable case).
    RunFolderError
        ``run_dir`` holds a run made with other settings.
    """
    return _run(
        RunKind.LOCAL,
        config,
        [Path(site)],
        run_dir,
        progress=progress,
        load_progress=load_progress,
        on_epoch=on_epoch,
        keep_checkpoints=keep_checkpoints,
        normalise_target=normalise_target,
    )


def train_pooled(
    config: TrainConfig,
    sites: Sequence[Path],
    run_dir: Path,
    *,
    progress: ProgressCallback | None = None,
    load_progress: ProgressCallback | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    keep_checkpoints: int | None = 3,
    normalise_target: bool = True,
) -> RunResult:
    """Train on the union of the sites' training splits, validate on their validation splits.

    Raises as :func:`train_local`.
    """
    if len(sites) < 1:
        raise ValueError("train_pooled needs at least one site")
    return _run(
        RunKind.POOLED,
        config,
        [Path(s) for s in sites],
        run_dir,
        progress=progress,
        load_progress=load_progress,
        on_epoch=on_epoch,
        keep_checkpoints=keep_checkpoints,
        normalise_target=normalise_target,
    )


def transfer_config(
    source: TrainConfig,
    mode: TransferMode | str,
    *,
    target: ClinicalField | str = ClinicalField.SDMT,
    changes: Mapping[str, Any] | None = None,
) -> TrainConfig:
    """The TrainConfig of a transfer from a model trained with ``source`` to ``target``.

    It is ``source`` with the task config's target switched, ``transfer = mode`` and
    ``changes`` (epochs, learning rate, batch size, seed, device, …) applied; the model config,
    preprocessing and patch shape stay the source's, so that its weights fit. ``device`` is
    ``"auto"`` unless ``changes`` says otherwise. ``target_mean`` / ``target_std`` stay the
    source's until :func:`fit_target_normalisation` sets them from the new training cases (as
    :func:`train_transfer` does).

    Raises
    ------
    ValueError
        ``source`` is not a brain-age model, ``mode`` is unknown, ``target`` cannot be
        regressed, ``changes`` names a field the transfer keeps, or a value is invalid.

    Examples
    --------
    >>> source = TrainConfig(task="brain-age", model_config={"width": 0.0625}, epochs=20)
    >>> config = transfer_config(source, "head", changes={"epochs": 5})
    >>> config.task_config.target.value, config.transfer.value, config.epochs
    ('sdmt', 'head', 5)
    >>> config.model_config == source.model_config
    True
    """
    if source.task is not TaskId.BRAIN_AGE:
        raise ValueError(
            f"the source model was trained for {source.task.value!r}; {_TRANSFER_IS_FOR}"
        )
    modes = [m.value for m in TransferMode]
    if str(mode) not in modes:
        raise ValueError(f"transfer mode {mode!r} is unknown; use one of {', '.join(modes)}")
    targets = [t.value for t in REGRESSION_TARGETS]
    if str(target) not in targets:
        raise ValueError(
            f"target {str(target)!r} cannot be regressed; use one of {', '.join(targets)}"
        )
    kept = sorted(set(changes or {}) & _TRANSFER_KEEPS)
    if kept:
        raise ValueError(
            f"a transfer keeps the source model's {', '.join(kept)} (its weights must fit them); "
            "leave them out of the changes"
        )
    task_config = source.task_config.to_json() | {"target": str(target)}
    settings: dict[str, Any] = {"device": "auto"} | dict(changes or {})
    return source.with_changes(task_config=task_config, transfer=TransferMode(mode), **settings)


def train_transfer(
    source_model: Path,
    sites: Sequence[Path],
    run_dir: Path,
    *,
    mode: TransferMode | str,
    target: ClinicalField | str = ClinicalField.SDMT,
    changes: Mapping[str, Any] | None = None,
    progress: ProgressCallback | None = None,
    load_progress: ProgressCallback | None = None,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    keep_checkpoints: int | None = 3,
) -> RunResult:
    """Move a trained brain-age model to ``target`` on one site, or several sites pooled.

    The run's config is :func:`transfer_config` with the target's mean and standard deviation
    fitted on the new training cases. A fresh run starts from the source model's weights, and
    its epoch-0 record scores the source model on the new target (before transfer); a resumed
    run continues from its newest checkpoint. ``config.json`` names the source model (its path
    and weights' SHA-256), and a run folder made from another source model is refused.

    Parameters
    ----------
    source_model
        A model folder (``RUN/model``) of a brain-age run.
    sites
        The sites whose training splits the model is fine-tuned on (validation on theirs).
    run_dir
        The run folder (re-use it to resume).
    mode
        ``head`` trains only the last layer, ``full`` every parameter.
    target
        The new regression target.
    changes
        TrainConfig fields to change (``epochs``, ``learning_rate``, ``batch_size``, ``seed``,
        ``device``, …); the model config, preprocessing and patch shape are the source's.

    Raises
    ------
    ModelFolderError
        ``source_model`` is unusable or not a brain-age model.
    ValueError
        Invalid ``mode``, ``target`` or ``changes``.
    SiteDataError, RunFolderError
        As :func:`train_local`.
    """
    if len(sites) < 1:
        raise ValueError("train_transfer needs at least one site")
    folder = Path(source_model)
    trained = load_model(folder)
    if trained.config.task is not TaskId.BRAIN_AGE:
        raise ModelFolderError(
            f"{folder} holds a {trained.config.task.value!r} model; {_TRANSFER_IS_FOR}: give "
            "--from the model folder of a brain-age run"
        )
    config = transfer_config(trained.config, mode, target=target, changes=changes)
    initial = _InitialModel(trained, folder.resolve(), sha256_file(folder / MODEL_WEIGHTS))
    return _run(
        RunKind.TRANSFER,
        config,
        [Path(s) for s in sites],
        run_dir,
        progress=progress,
        load_progress=load_progress,
        on_epoch=on_epoch,
        keep_checkpoints=keep_checkpoints,
        normalise_target=True,
        initial=initial,
    )
