"""How one site trains: a frozen, validated :class:`TrainConfig` that round-trips through JSON.

A :class:`TrainConfig` names the task (and its config), the model config, the preprocessing, the
augmentation and the optimisation settings. It is parsed once, at the boundary (the CLI, a run
folder's ``config.json``, a federated study), and only read afterwards. Mappings are accepted for
every nested config and parsed here, so errors name the field, the value and the fix.

:func:`~neurofed.training.defaults.default_train_config` gives per-task settings that train on
2 mm phantom data on a CPU in a few minutes.

Examples
--------
>>> config = TrainConfig(task="brain-age", model_config={"width": 0.125}, epochs=2)
>>> TrainConfig.from_json(config.to_json()) == config
True
>>> config.model_config.width, config.preprocess.spacing is None
(0.125, True)
>>> TrainConfig(task="tumor-regions", batch_size=0)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: TrainConfig.batch_size = 0 is invalid: use a whole number in 1..4096
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from enum import StrEnum
from typing import Any

from neurofed.config import ConfigBase, is_positive_int, look_up, require
from neurofed.keys import Optimizer, TaskId
from neurofed.models import TransferMode, get_model_spec, parse_model_config
from neurofed.models.registry import ModelConfig
from neurofed.preprocess import AugmentConfig, PreprocessParams
from neurofed.tasks import Task, get_task

__all__ = [
    "RESUMABLE_FIELDS",
    "LRSchedule",
    "Optimizer",
    "TrainConfig",
    "differing_settings",
    "resolve_device",
]

#: TrainConfig fields a run may change when it resumes (more epochs, another device, validation
#: more or less often); any other difference means another run.
RESUMABLE_FIELDS = frozenset({"epochs", "device", "validate_every"})
#: Upper bounds of a TrainConfig's sizes (far above any real run; below them nothing overflows).
MAX_EPOCHS = 100_000
MAX_BATCH_SIZE = 4096
MAX_SAMPLES_PER_EPOCH = 10_000_000
MAX_PATCH_EDGE = 2048
MAX_SEED = 2**63 - 1

Shape3 = tuple[int, int, int]


class LRSchedule(StrEnum):
    """Learning rate over the epochs of :attr:`TrainConfig.epochs` (a function of the epoch,
    so a resumed run follows the same schedule)."""

    CONSTANT = "constant"
    POLY = "poly"  # nnU-Net: lr · (1 - (epoch - 1) / epochs) ** 0.9

    def factor(self, epoch: int, epochs: int) -> float:
        """Multiplier of the base learning rate in 1-based ``epoch`` of ``epochs``.

        >>> [round(LRSchedule.POLY.factor(e, 4), 3) for e in (1, 2, 3, 4, 5)]
        [1.0, 0.772, 0.536, 0.287, 0.0]
        """
        if self is LRSchedule.CONSTANT:
            return 1.0
        return float(max(0.0, 1.0 - (epoch - 1) / epochs) ** 0.9)


def _shape(owner: object, name: str, value: Any) -> Shape3 | None:
    if value is None:
        return None
    ok = (
        isinstance(value, tuple | list)
        and len(value) == 3
        and all(is_positive_int(v) and v <= MAX_PATCH_EDGE for v in value)
    )
    fix = f"give three whole numbers of voxels in 1..{MAX_PATCH_EDGE}, e.g. (64, 64, 64)"
    require(ok, owner, name, fix)
    x, y, z = (int(v) for v in value)
    return (x, y, z)


def _number(owner: object, name: str, low: float, high: float, fix: str) -> None:
    value = getattr(owner, name)
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    require(ok and low <= float(value) <= high, owner, name, fix)
    object.__setattr__(owner, name, float(value))


def resolve_device(device: str) -> str:
    """``"auto"`` → ``"cuda"`` when a GPU is usable, else ``"cpu"``; other values unchanged.

    >>> resolve_device("cpu")
    'cpu'
    """
    if device != "auto":
        return device
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides how a model is trained on one site's data (or on pooled data).

    Parameters
    ----------
    task
        The task id (:class:`~neurofed.keys.TaskId`).
    task_config
        The task's config (instance, mapping of its fields, or ``None`` for its defaults).
    model_config
        Config of the task's model (instance, mapping, or ``None`` for the task's default).
    preprocess
        How cases are preprocessed (and cached) before training.
    augment
        Training augmentation; ``None`` switches it off.
    epochs
        Epochs :meth:`LocalTrainer.fit <neurofed.training.LocalTrainer.fit>` runs by default.
    batch_size
        Cases (patches) per optimiser step.
    learning_rate, optimizer, momentum, weight_decay
        The optimiser (``momentum`` is used by SGD only).
    lr_schedule
        How the learning rate changes over :attr:`epochs` (a federation keeps it constant).
    patch_shape
        Training patch ``(X, Y, Z)`` for segmentation tasks, and the sliding-window ROI at
        inference; ``None`` trains and infers on whole volumes (zero-padded to a common shape
        that the model accepts).
    samples_per_epoch
        Patches (or volumes) per epoch; ``None`` = the number of training cases.
    foreground_probability
        Chance that a training patch is centred on a labelled voxel (nnU-Net: 0.33).
    seed
        Fixes the initial weights, the data order, patches, augmentation and dropout.
    fedprox_mu
        Weight ``mu`` of FedProx's proximal term ``mu/2·||w - w_global||²`` (0 = off).
    local_parameters
        Glob patterns (``fnmatch``) of state-dict names that stay local: never overwritten by
        ``set_parameters`` nor sent by ``get_parameters`` (e.g. ``("*norm*",)`` for FedBN).
    sliding_window_overlap
        Overlap of neighbouring windows in sliding-window inference, in [0, 1).
    validate_every
        Validate after every this many epochs (0 = never; the last epoch is always validated
        when the trainer has validation data and this is not 0).
    device
        ``"auto"`` (GPU if available, else CPU), ``"cpu"``, ``"cuda"`` or ``"cuda:<n>"``.
    transfer
        ``None`` for ordinary training; a :class:`~neurofed.models.TransferMode` when the model
        is moved to a new target from given initial weights: ``head`` trains only its last layer
        (the rest frozen, batch norm in evaluation behaviour), ``full`` trains everything.
    batches_by_site
        Draw every batch from one site's cases, the sites in turn, as each federated site's
        batches are (:func:`~neurofed.training.sampling.epoch_order_by_site`). A control for
        pooled training: batch norm then normalises within a site, as under FedAvg. Off (the
        default) mixes the sites in every batch; with one site it changes nothing.
    """

    task: TaskId
    task_config: Any = None
    model_config: Any = None
    preprocess: PreprocessParams = field(default_factory=PreprocessParams)
    augment: AugmentConfig | None = field(default_factory=AugmentConfig)
    epochs: int = 10
    batch_size: int = 2
    learning_rate: float = 1e-3
    optimizer: Optimizer = Optimizer.ADAM
    lr_schedule: LRSchedule = LRSchedule.CONSTANT
    momentum: float = 0.9
    weight_decay: float = 0.0
    patch_shape: Shape3 | None = None
    samples_per_epoch: int | None = None
    foreground_probability: float = 0.33
    seed: int = 0
    fedprox_mu: float = 0.0
    local_parameters: tuple[str, ...] = ()
    sliding_window_overlap: float = 0.25
    validate_every: int = 1
    device: str = "auto"
    transfer: TransferMode | None = None
    batches_by_site: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        set_(self, "task", TaskId(look_up("task", str(self.task), [t.value for t in TaskId])))
        task = get_task(self.task, self.task_config)
        model = task.default_model_config() if self.model_config is None else self.model_config
        set_(self, "model_config", parse_model_config(task.model_name, model))
        for name, kind in (("preprocess", PreprocessParams), ("augment", AugmentConfig)):
            value = getattr(self, name)
            if isinstance(value, Mapping):
                set_(self, name, kind.from_json(value))
        require(isinstance(self.preprocess, PreprocessParams), self, "preprocess", "give a dict")
        task_config = task.config
        spacing = self.preprocess.spacing
        if spacing is not None and "spacing" in {f.name for f in fields(task_config)}:
            # distances (HD95) are measured on the preprocessed grid
            task_config = task_config.from_json(task_config.to_json() | {"spacing": spacing})
        set_(self, "task_config", task_config)
        require(
            self.augment is None or isinstance(self.augment, AugmentConfig),
            self,
            "augment",
            "give an AugmentConfig mapping, or null for no augmentation",
        )
        for name, most in (("epochs", MAX_EPOCHS), ("batch_size", MAX_BATCH_SIZE)):
            value = getattr(self, name)
            ok = is_positive_int(value) and value <= most
            require(ok, self, name, f"use a whole number in 1..{most}")
        _number(self, "learning_rate", 1e-12, 10.0, "use a positive step size, e.g. 1e-3")
        if not isinstance(self.optimizer, Optimizer):
            names = [o.value for o in Optimizer]
            require(str(self.optimizer) in names, self, "optimizer", f"use one of {names}")
            set_(self, "optimizer", Optimizer(str(self.optimizer)))
        if not isinstance(self.lr_schedule, LRSchedule):
            names = [o.value for o in LRSchedule]
            require(str(self.lr_schedule) in names, self, "lr_schedule", f"use one of {names}")
            set_(self, "lr_schedule", LRSchedule(str(self.lr_schedule)))
        _number(self, "momentum", 0.0, 0.999999, "use a number in [0, 1), e.g. 0.9")
        _number(self, "weight_decay", 0.0, 1.0, "use a number >= 0, e.g. 1e-5 (0 = off)")
        set_(self, "patch_shape", _shape(self, "patch_shape", self.patch_shape))
        if self.samples_per_epoch is not None:
            require(
                is_positive_int(self.samples_per_epoch)
                and self.samples_per_epoch <= MAX_SAMPLES_PER_EPOCH,
                self,
                "samples_per_epoch",
                f"use a whole number in 1..{MAX_SAMPLES_PER_EPOCH}, or null for one per case",
            )
        _number(self, "foreground_probability", 0.0, 1.0, "use a probability in [0, 1]")
        require(
            isinstance(self.seed, int)
            and not isinstance(self.seed, bool)
            and 0 <= self.seed <= MAX_SEED,
            self,
            "seed",
            f"use a whole number in 0..{MAX_SEED} (2**63 - 1)",
        )
        _number(self, "fedprox_mu", 0.0, 1e6, "use a number >= 0 (0 = plain local training)")
        patterns = self.local_parameters
        if isinstance(patterns, str):
            patterns = (patterns,)
        require(
            isinstance(patterns, tuple | list) and all(isinstance(p, str) and p for p in patterns),
            self,
            "local_parameters",
            "give glob patterns of parameter names, e.g. ['*norm*']",
        )
        set_(self, "local_parameters", tuple(patterns))
        _number(self, "sliding_window_overlap", 0.0, 0.95, "use a fraction in [0, 0.95]")
        require(
            isinstance(self.validate_every, int)
            and not isinstance(self.validate_every, bool)
            and self.validate_every >= 0,
            self,
            "validate_every",
            "use a whole number of epochs >= 0 (0 = never)",
        )
        require(
            isinstance(self.device, str)
            and (self.device in ("auto", "cpu", "cuda") or self.device.startswith("cuda:")),
            self,
            "device",
            "use auto, cpu, cuda or cuda:<n>",
        )
        if self.transfer is not None and not isinstance(self.transfer, TransferMode):
            names = [m.value for m in TransferMode]
            fix = f"use one of {names}, or null for ordinary training"
            require(str(self.transfer) in names, self, "transfer", fix)
            set_(self, "transfer", TransferMode(str(self.transfer)))
        require(
            isinstance(self.batches_by_site, bool),
            self,
            "batches_by_site",
            "use true (every batch from one site) or false (sites mixed)",
        )
        self._check_patch(task)

    def _check_patch(self, task: Task) -> None:
        divisor = self.spatial_divisor()
        if self.patch_shape is not None:
            require(
                task.needs_label_map,
                self,
                "patch_shape",
                f"task {self.task.value!r} trains on whole volumes; set patch_shape to null",
            )
            require(
                all(p % d == 0 for p, d in zip(self.patch_shape, divisor, strict=True)),
                self,
                "patch_shape",
                f"use multiples of the model's spatial divisor {divisor} on every axis",
            )

    # -- derived -------------------------------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The registered model the task uses."""
        return str(self.build_task().model_name)

    def build_task(self) -> Task:
        """A fresh task object configured by :attr:`task_config`."""
        return get_task(self.task, self.task_config)

    def spatial_divisor(self) -> Shape3:
        """Per-axis multiple the model's inputs must have."""
        spec = get_model_spec(str(get_task(self.task).model_name))
        config: ModelConfig = spec.config_type.parse(self.model_config)  # type: ignore[assignment]
        x, y, z = config.spatial_divisor()
        return (x, y, z)

    def with_changes(self, **changes: Any) -> TrainConfig:
        """A copy with ``changes`` applied (and validated again)."""
        return replace(self, **changes)

    # -- JSON ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; :meth:`from_json` gives back an equal config."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "batches_by_site" and not value:
                continue  # written only when on: configs written before it stay equal
            if isinstance(value, ConfigBase | PreprocessParams | AugmentConfig):
                value = value.to_json()
            elif isinstance(value, StrEnum):
                value = value.value
            elif isinstance(value, tuple):
                value = list(value)
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> TrainConfig:
        """Parse :meth:`to_json` output; unknown fields are an error with a "did you mean"."""
        if not isinstance(data, Mapping):
            raise TypeError(f"TrainConfig: expected a mapping, got {type(data).__name__}")
        names = [f.name for f in fields(cls)]
        for key in data:
            if key not in names:
                close = difflib.get_close_matches(str(key), names, n=1)
                hint = f" (did you mean {close[0]!r}?)" if close else ""
                raise ValueError(
                    f"TrainConfig: unknown field {key!r}{hint}; allowed fields: {', '.join(names)}"
                )
        if "task" not in data:
            raise ValueError("TrainConfig: the field 'task' is required, e.g. 'tumor-regions'")
        values = dict(data)
        for name in ("patch_shape", "local_parameters"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)


def differing_settings(theirs: Mapping[str, Any], mine: Mapping[str, Any]) -> list[str]:
    """Names of the fields (of two ``TrainConfig.to_json()``) that differ, sorted, leaving out
    :data:`RESUMABLE_FIELDS`.

    >>> differing_settings({"epochs": 2, "seed": 0}, {"epochs": 9, "seed": 1})
    ['seed']
    """
    return sorted(
        k
        for k in theirs.keys() | mine.keys()
        if k not in RESUMABLE_FIELDS and theirs.get(k) != mine.get(k)
    )
