"""Training checkpoints: tensors in safetensors, everything else in JSON beside them. No pickle.

One checkpoint per epoch in a run's ``checkpoints/`` folder::

    epoch-0003.safetensors   model/<name>, optimizer/<index>/<key>, reference/<name> tensors
    epoch-0003.json          epoch, step, task + config, model + config, preprocessing, the
                             TrainConfig, optimiser hyper-parameters and scalar state, the epoch
                             records so far, versions, and the SHA-256 of the tensor file

Both files are written to a temporary name and moved into place (the JSON last), so an
interrupted write never leaves a checkpoint that looks complete; a JSON whose tensor file is
missing or has another hash is ignored. ``torch.load`` is never used.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> from torch import nn
>>> from neurofed.training.config import TrainConfig
>>> config = TrainConfig(task="brain-age", model_config={"width": 0.0625})
>>> net = nn.Linear(2, 1)
>>> optimizer = torch.optim.Adam(net.parameters())
>>> folder = Path(tempfile.mkdtemp())
>>> path = save_checkpoint(folder, epoch=1, step=5, model=net, optimizer=optimizer, config=config)
>>> path.name, latest_checkpoint(folder) == path
('epoch-0001.json', True)
>>> load_checkpoint(path, model=nn.Linear(2, 1), optimizer=None).step
5
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from neurofed.artifacts import atomic_path, sha256_file, versions, write_json_atomically
from neurofed.training.config import TrainConfig
from neurofed.training.parameters import check_arrays, load_arrays
from neurofed.training.records import EpochRecord

__all__ = [
    "CHECKPOINT_FORMAT",
    "Checkpoint",
    "CheckpointError",
    "checkpoint_epoch",
    "latest_checkpoint",
    "load_checkpoint",
    "load_verified_tensors",
    "save_checkpoint",
]

CHECKPOINT_FORMAT = 1
_NAME = re.compile(r"^epoch-(\d{4,})\.json$")
_MODEL, _OPTIMIZER, _REFERENCE = "model/", "optimizer/", "reference/"


class CheckpointError(ValueError):
    """A checkpoint cannot be used; the message names the file and the fix."""


def write_tensors_atomically(path: Path, tensors: Mapping[str, torch.Tensor]) -> str:
    """Write ``tensors`` as safetensors to ``path`` atomically; returns the file's SHA-256."""
    plain = {k: v.detach().cpu().clone().contiguous() for k, v in tensors.items()}
    with atomic_path(Path(path)) as tmp:
        save_file(plain, str(tmp))
    return sha256_file(Path(path))


def load_verified_tensors(path: Path, sha256: str) -> dict[str, torch.Tensor]:
    """Load a safetensors file after checking it against its recorded SHA-256.

    Raises
    ------
    ValueError
        The file's SHA-256 differs from ``sha256`` (OSError / SafetensorError pass through).
    """
    if sha256_file(Path(path)) != sha256:
        raise ValueError(f"{Path(path).name}: its SHA-256 differs from the recorded one")
    return load_file(str(path))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_plain(v) for v in value]
    if isinstance(value, torch.Tensor):
        return value.item()
    return value


def _optimizer_parts(
    optimizer: torch.optim.Optimizer,
) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entries in state["state"].items():
        for key, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{_OPTIMIZER}{index}/{key}"] = value
            else:
                scalars.setdefault(str(index), {})[key] = _plain(value)
    groups = [{k: _plain(v) for k, v in group.items()} for group in state["param_groups"]]
    return tensors, {"type": type(optimizer).__name__, "param_groups": groups, "scalars": scalars}


def _optimizer_state(tensors: Mapping[str, torch.Tensor], record: Mapping[str, Any]) -> Any:
    state: dict[int, dict[str, Any]] = {}
    for name, tensor in tensors.items():
        if name.startswith(_OPTIMIZER):
            index, key = name.removeprefix(_OPTIMIZER).split("/", 1)
            state.setdefault(int(index), {})[key] = tensor
    for index, entries in record["scalars"].items():
        state.setdefault(int(index), {}).update(entries)
    groups = [
        {k: tuple(v) if isinstance(v, list) and k != "params" else v for k, v in group.items()}
        for group in record["param_groups"]
    ]
    return {"state": state, "param_groups": groups}


def checkpoint_json(folder: Path, epoch: int) -> Path:
    return Path(folder) / f"epoch-{epoch:04d}.json"


def save_checkpoint(
    folder: Path,
    *,
    epoch: int,
    step: int,
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    config: TrainConfig,
    reference: Mapping[str, torch.Tensor] | None = None,
    history: Sequence[EpochRecord] = (),
    keep: int | None = None,
) -> Path:
    """Write the checkpoint of ``epoch``; returns its JSON path.

    ``reference`` holds FedProx's global weights, if any. With ``keep``, only the newest
    ``keep`` checkpoints stay in ``folder``.
    """
    json_path = checkpoint_json(folder, epoch)
    tensor_path = json_path.with_suffix(".safetensors")
    tensors = {f"{_MODEL}{k}": v for k, v in model.state_dict().items()}
    optimizer_record: dict[str, Any] | None = None
    if optimizer is not None:
        optimizer_tensors, optimizer_record = _optimizer_parts(optimizer)
        tensors |= optimizer_tensors
    tensors |= {f"{_REFERENCE}{k}": v for k, v in (reference or {}).items()}
    digest = write_tensors_atomically(tensor_path, tensors)
    task = config.build_task()
    record = {
        "format": CHECKPOINT_FORMAT,
        "epoch": epoch,
        "step": step,
        "task": config.task.value,
        "task_config": task.config.to_json(),
        "model_name": str(task.model_name),
        "model_config": config.model_config.to_json(),
        "preprocess": config.preprocess.to_json(),
        "train_config": config.to_json(),
        "optimizer": optimizer_record,
        "has_reference": reference is not None,
        "history": [r.to_json() for r in history],
        "tensors": {"file": tensor_path.name, "sha256": digest},
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    write_json_atomically(json_path, record)
    if keep is not None:
        for old in list_checkpoints(folder)[:-keep]:
            old.with_suffix(".safetensors").unlink(missing_ok=True)
            old.unlink(missing_ok=True)
    return json_path


def list_checkpoints(folder: Path) -> list[Path]:
    """Checkpoint JSON files in ``folder``, oldest epoch first."""
    if not Path(folder).is_dir():
        return []
    found = [(int(m.group(1)), p) for p in Path(folder).iterdir() if (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def checkpoint_epoch(path: Path) -> int:
    """The epoch a checkpoint file is named for (``epoch-0003.json`` → 3; -1 if not one)."""
    match = _NAME.match(Path(path).name)
    return int(match.group(1)) if match else -1


def latest_checkpoint(folder: Path, *, max_epoch: int | None = None) -> Path | None:
    """The newest complete checkpoint in ``folder`` (at most ``max_epoch``), or None."""
    for path in reversed(list_checkpoints(folder)):
        if max_epoch is not None and checkpoint_epoch(path) > max_epoch:
            continue
        try:
            record = json.loads(path.read_text(encoding="utf-8"))
            tensor_path = path.with_name(record["tensors"]["file"])
            if tensor_path.is_file() and sha256_file(tensor_path) == record["tensors"]["sha256"]:
                return path
        except (OSError, ValueError, KeyError, TypeError):
            continue
    return None


@dataclass(frozen=True)
class Checkpoint:
    """What :func:`load_checkpoint` restored besides the weights and optimiser state."""

    path: Path
    epoch: int
    step: int
    train_config: dict[str, Any]
    history: tuple[EpochRecord, ...]
    reference: dict[str, torch.Tensor] | None


def load_checkpoint(
    path: Path, *, model: nn.Module, optimizer: torch.optim.Optimizer | None
) -> Checkpoint:
    """Restore ``model`` (and ``optimizer``) from the checkpoint whose JSON is ``path``.

    Raises
    ------
    CheckpointError
        When the files are missing, damaged, or made for another model.
    """
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        tensor_path = path.with_name(record["tensors"]["file"])
        tensors = load_verified_tensors(tensor_path, record["tensors"]["sha256"])
    except (OSError, ValueError, KeyError, TypeError, SafetensorError) as exc:
        raise CheckpointError(
            f"{path}: unusable checkpoint ({type(exc).__name__}: {exc}); delete it to restart "
            "from the previous one"
        ) from exc
    if record.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(f"{path}: format {record.get('format')!r} is not {CHECKPOINT_FORMAT}")
    weights = {k.removeprefix(_MODEL): v for k, v in tensors.items() if k.startswith(_MODEL)}
    try:
        load_arrays(model, check_arrays(model, {k: v.numpy() for k, v in weights.items()}))
    except ValueError as exc:
        raise CheckpointError(f"{path}: does not fit this model: {exc}") from exc
    if optimizer is not None:
        if record.get("optimizer") is None:
            raise CheckpointError(f"{path}: holds no optimiser state")
        if record["optimizer"]["type"] != type(optimizer).__name__:
            raise CheckpointError(
                f"{path}: holds {record['optimizer']['type']} state, not {type(optimizer).__name__}"
            )
        optimizer.load_state_dict(_optimizer_state(tensors, record["optimizer"]))
    reference = None
    if record.get("has_reference"):
        reference = {
            k.removeprefix(_REFERENCE): v for k, v in tensors.items() if k.startswith(_REFERENCE)
        }
    return Checkpoint(
        path=path,
        epoch=int(record["epoch"]),
        step=int(record["step"]),
        train_config=dict(record["train_config"]),
        history=tuple(EpochRecord.from_json(r) for r in record.get("history", [])),
        reference=reference,
    )
