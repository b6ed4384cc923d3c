"""The model folder: ``weights.safetensors`` + ``model.json``, enough to rebuild and run a model.

``model.json`` names the task and its config, the model and its config, the input channels, the
preprocessing, how to infer (patch / sliding-window settings), the metrics the model reached, the
training settings and the versions that made it. :func:`load_model` needs nothing else.

The folder is sealed (:func:`seal_model`): one SHA-256 covers every field of ``model.json``, the
weights, and the plan files beside them (``plan.json``, ``fingerprint.json``) when a planned run
left them there. :func:`load_model` recomputes it and refuses a folder whose parts were changed,
added or removed after sealing, and a weights file named outside the folder.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from neurofed.training.config import TrainConfig
>>> config = TrainConfig(task="brain-age", model_config={"width": 0.0625}, device="cpu")
>>> model = config.build_task().build_model(config.model_config)
>>> folder = save_model(Path(tempfile.mkdtemp()) / "model", model, config, metrics={"mae": 9.5})
>>> loaded = load_model(folder)
>>> loaded.task.task_id.value, loaded.metrics, loaded.predict(np.zeros((1, 40, 40, 40))).shape
('brain-age', {'mae': 9.5}, torch.Size([1]))
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from torch import nn

from neurofed.artifacts import sha256_file, shown, versions, write_json_atomically
from neurofed.keys import TaskId
from neurofed.preprocess import PreprocessParams
from neurofed.tasks import MetricState, ModelOutput, Task
from neurofed.training.checkpoint import load_verified_tensors, write_tensors_atomically
from neurofed.training.config import TrainConfig, resolve_device
from neurofed.training.dataset import CaseDataset
from neurofed.training.inference import evaluate_dataset, predict
from neurofed.training.parameters import check_arrays, load_arrays
from neurofed.training.records import json_number, number
from neurofed.types import ProgressCallback

__all__ = [
    "FINGERPRINT_FILE",
    "MODEL_FORMAT",
    "MODEL_JSON",
    "MODEL_WEIGHTS",
    "PLAN_FILE",
    "SEALED_COMPANIONS",
    "ModelFolderError",
    "TrainedModel",
    "load_model",
    "save_model",
    "seal_model",
]

logger = logging.getLogger(__name__)

#: 2: sealed (one hash over model.json, the weights and the plan files); 1 is read, unsealed.
MODEL_FORMAT = 2
_UNSEALED_FORMAT = 1
MODEL_JSON = "model.json"
MODEL_WEIGHTS = "weights.safetensors"
#: A planned run's plan (``Plan.to_json()``): in the run folder, in every model folder trained
#: under it, and in each site's state folder of the study.
PLAN_FILE = "plan.json"
#: The merged fingerprint the plan was made from (aggregates only), beside ``plan.json``.
FINGERPRINT_FILE = "fingerprint.json"
#: Files that change how a model runs and may sit beside ``model.json`` (a planned run's plan).
SEALED_COMPANIONS = (PLAN_FILE, FINGERPRINT_FILE)
_SEAL = "seal"


class ModelFolderError(ValueError):
    """A model folder cannot be used; the message names the file and the fix."""


def save_model(
    folder: Path,
    model: nn.Module,
    config: TrainConfig,
    *,
    metrics: Mapping[str, float] | None = None,
    epoch: int | None = None,
    provenance: Mapping[str, Any] | None = None,
) -> Path:
    """Write ``model`` and what is needed to run it into ``folder``; returns the folder.

    ``provenance`` adds JSON fields describing how the model was made (e.g. the kind of run and
    the number of sites); it must hold no patient data.
    """
    folder = Path(folder)
    task = config.build_task()
    digest = write_tensors_atomically(folder / MODEL_WEIGHTS, model.state_dict())
    record = {
        "format": MODEL_FORMAT,
        "task": config.task.value,
        "task_config": task.config.to_json(),
        "model_name": str(task.model_name),
        "model_config": config.model_config.to_json(),
        "modalities": [m.value for m in task.modalities],
        "preprocess": config.preprocess.to_json(),
        "inference": {
            "patch_shape": None if config.patch_shape is None else list(config.patch_shape),
            "sliding_window_overlap": config.sliding_window_overlap,
            "spatial_divisor": list(config.spatial_divisor()),
        },
        "metrics": {k: json_number(v) for k, v in (metrics or {}).items()},
        "epoch": epoch,
        "train_config": config.to_json(),
        "provenance": dict(provenance or {}),
        "weights": {"file": MODEL_WEIGHTS, "sha256": digest},
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomically(folder / MODEL_JSON, record)
    seal_model(folder)
    return folder


def _seal_digest(folder: Path, record: Mapping[str, Any], companions: list[str]) -> str:
    digest = hashlib.sha256()
    fields = {k: v for k, v in record.items() if k != _SEAL}
    digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    digest.update(sha256_file(folder / MODEL_WEIGHTS).encode())
    for name in companions:
        digest.update(f"\0{name}\0{sha256_file(folder / name)}".encode())
    return digest.hexdigest()


def seal_model(folder: Path) -> str:
    """(Re)compute the seal of a model folder and write it into ``model.json``; returns it.

    Call it after adding a companion file (``plan.json``) to a saved folder.
    """
    folder = Path(folder)
    record = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    companions = [n for n in SEALED_COMPANIONS if (folder / n).is_file()]
    digest = _seal_digest(folder, record, companions)
    record[_SEAL] = {"sha256": digest, "files": [MODEL_JSON, MODEL_WEIGHTS, *companions]}
    write_json_atomically(folder / MODEL_JSON, record)
    return digest


def _check_seal(folder: Path, record: Mapping[str, Any]) -> None:
    """Refuse a folder whose parts changed after sealing (see the module docstring)."""
    seal = record.get(_SEAL)
    if not isinstance(seal, Mapping) or not isinstance(seal.get("files"), list):
        raise ValueError("model.json has no seal")
    companions = [n for n in SEALED_COMPANIONS if (folder / n).is_file()]
    listed = [n for n in seal["files"] if n in SEALED_COMPANIONS]
    if companions != listed:
        raise ValueError(
            f"its plan files are {companions or 'none'} but it was sealed with {listed or 'none'}"
        )
    if _seal_digest(folder, record, companions) != seal.get("sha256"):
        raise ValueError(
            "its seal does not match: model.json, the weights or a plan file was changed after "
            "the model was saved"
        )


@dataclass
class TrainedModel:
    """A model loaded from its folder, ready to predict on preprocessed arrays.

    ``predict`` takes an image preprocessed with :attr:`preprocess` (channels in the task's
    ``modalities`` order) and returns the task's post-processed outputs.
    """

    task: Task
    model: nn.Module
    config: TrainConfig
    preprocess: PreprocessParams
    metrics: dict[str, float] = field(default_factory=dict)
    epoch: int | None = None
    device: torch.device = field(default_factory=lambda: torch.device("cpu"))
    #: What made the model (``run``, ``study``, ``study_hash``, ...), as model.json records it.
    provenance: dict[str, Any] = field(default_factory=dict)

    def raw_outputs(self, image: npt.ArrayLike | torch.Tensor) -> ModelOutput:
        """Raw model outputs for one image ``(C, X, Y, Z)`` (or a batch ``(B, C, X, Y, Z)``)."""
        tensor = torch.as_tensor(np.asarray(image, dtype=np.float32))
        if tensor.dim() == 4:
            tensor = tensor[None]
        self.model.eval()
        with torch.no_grad():
            return predict(
                self.model,
                tensor.to(self.device),
                patch_shape=self.config.patch_shape,
                divisor=self.config.spatial_divisor(),
                overlap=self.config.sliding_window_overlap,
                sw_batch_size=self.config.batch_size,
            )

    def predict(self, image: npt.ArrayLike | torch.Tensor) -> ModelOutput:
        """Post-processed predictions (masks, probabilities, values in original units)."""
        return self.task.postprocess(self.raw_outputs(image))

    def evaluate(
        self, dataset: CaseDataset, *, progress: ProgressCallback | None = None
    ) -> MetricState:
        """Metric state of the model on ``dataset`` (full volumes)."""
        return evaluate_dataset(
            self.model,
            self.task,
            dataset,
            patch_shape=self.config.patch_shape,
            divisor=self.config.spatial_divisor(),
            overlap=self.config.sliding_window_overlap,
            sw_batch_size=self.config.batch_size,
            device=self.device,
            progress=progress,
        )


def load_model(
    folder: Path, *, device: str = "cpu", task: TaskId | str | None = None
) -> TrainedModel:
    """Rebuild the model saved in ``folder`` by :func:`save_model`.

    Raises
    ------
    ModelFolderError
        When ``model.json`` or the weights are missing, damaged, changed after sealing or do not
        fit each other, or (with ``task``) the model is of another task.
    """
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        hint = " (pass RUN/model, not the run folder)" if (folder / "model").is_dir() else ""
        raise ModelFolderError(f"{path}: not found; give a model folder written by training{hint}")
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record, Mapping):
            raise ValueError("model.json is not a JSON object")
        if record.get("format") not in (MODEL_FORMAT, _UNSEALED_FORMAT):
            raise ValueError(f"format {shown(record.get('format'))} is not {MODEL_FORMAT}")
        if record["weights"]["file"] != MODEL_WEIGHTS:
            raise ValueError(
                f"weights file {shown(record['weights']['file'])}: a model folder's weights are "
                f"its own {MODEL_WEIGHTS}, never a path elsewhere"
            )
        weights_path = folder / MODEL_WEIGHTS
        weights = load_verified_tensors(weights_path, record["weights"]["sha256"])
        if record["format"] == MODEL_FORMAT:
            _check_seal(folder, record)
        else:
            logger.warning("%s: an unsealed model folder (format 1); re-save it to seal it", folder)
        config = TrainConfig.from_json(record["train_config"]).with_changes(device=device)
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise ModelFolderError(
            f"{folder}: unusable model folder ({type(exc).__name__}: {exc}); copy it again "
            "from the run that made it"
        ) from exc
    if task is not None and config.task is not TaskId(task):
        raise ModelFolderError(
            f"{folder} holds a {config.task.value!r} model, not a {TaskId(task).value!r} one; "
            "give the model folder of a run of that task"
        )
    built = config.build_task()
    target = torch.device(resolve_device(device))
    model = built.build_model(config.model_config)
    try:
        load_arrays(model, check_arrays(model, {k: v.numpy() for k, v in weights.items()}))
    except ValueError as exc:
        raise ModelFolderError(f"{folder}: weights do not fit model.json: {exc}") from exc
    return TrainedModel(
        task=built,
        model=model.to(target).eval(),
        config=config,
        preprocess=config.preprocess,
        metrics={k: number(v) for k, v in record.get("metrics", {}).items()},
        epoch=record.get("epoch"),
        device=target,
        provenance=dict(given) if isinstance(given := record.get("provenance"), Mapping) else {},
    )
