"""``LocalTrainer``: one model, one task, one site's data (or pooled data) — train and evaluate.

The trainer is everything a site does with its own data; a federation only moves weights in and
out of it (:meth:`LocalTrainer.get_parameters` / :meth:`LocalTrainer.set_parameters`) and collects
its metric states. It imports nothing from an FL engine.

Determinism: the initial weights come from ``config.seed``; epoch ``e`` draws its data from
``(seed, e)`` (see :mod:`neurofed.training.sampling`) and seeds torch (dropout) from ``(seed, e)``
inside :func:`torch.random.fork_rng`, so the process's global random state is untouched, the
same seed gives the same weights on CPU, and a run resumed from its checkpoint of epoch ``e``
ends with the same weights as one never interrupted.

Examples
--------
>>> import numpy as np
>>> from neurofed.data.subject import Clinical
>>> from neurofed.training.config import TrainConfig
>>> from neurofed.training.dataset import CaseDataset, TrainingCase
>>> cases = CaseDataset(
...     TrainingCase(f"c{i}", "site-1", np.full((1, 32, 32, 32), i, np.float32), None,
...                  Clinical(age=40.0 + 10 * i))
...     for i in range(4)
... )
>>> config = TrainConfig(task="brain-age", model_config={"width": 0.0625}, epochs=2,
...                      augment=None, device="cpu")
>>> trainer = LocalTrainer(config, cases, validation_data=cases)
>>> records = trainer.fit()
>>> [r.epoch for r in records], trainer.num_examples, sorted(records[-1].validation)
([1, 2], 4, ['mae', 'num_examples', 'pearson_r'])
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch.nn.modules.batchnorm import _BatchNorm

from neurofed.config import is_local
from neurofed.keys import Split
from neurofed.models import prepare_transfer
from neurofed.tasks import MetricState
from neurofed.tasks.batch import Batch
from neurofed.training.batch_norm import refresh_batch_norm
from neurofed.training.checkpoint import (
    CheckpointError,
    checkpoint_epoch,
    latest_checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from neurofed.training.config import Optimizer, TrainConfig, differing_settings, resolve_device
from neurofed.training.dataset import CaseDataset
from neurofed.training.inference import evaluate_dataset
from neurofed.training.model_folder import TrainedModel
from neurofed.training.parameters import check_arrays, load_arrays, model_arrays, proximal_term
from neurofed.training.private import PrivateSGD, private_batches
from neurofed.training.records import EpochRecord, finalize_metrics
from neurofed.training.sampling import epoch_batches, steps_per_epoch
from neurofed.training.site_data import SiteData, SiteDataError
from neurofed.types import ProgressCallback

__all__ = ["CHECKPOINTS", "LocalTrainer"]

#: Sub-folder of a run folder holding one checkpoint per epoch.
CHECKPOINTS = "checkpoints"
#: Fields of a TrainConfig that may change when a run is resumed.


def _derived_seed(*values: int) -> int:
    return int(np.random.SeedSequence(list(values)).generate_state(1, dtype=np.uint64)[0] >> 1)


@contextmanager
def _own_rng(device: torch.device) -> Iterator[None]:
    """Fork torch's global generators (CPU, and the GPU in use) for the duration."""
    devices = [device.index or 0] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices, device_type=device.type):
        yield


class LocalTrainer:
    """Train and evaluate one model on one site's data (or on the union of several sites').

    Parameters
    ----------
    config
        How to train (task, model, preprocessing, optimisation, seed).
    train_data
        Training cases (may be empty when the trainer only evaluates).
    validation_data
        Cases validated after each epoch (``config.validate_every``) and by :meth:`evaluate`.
    source
        Where the datasets came from; lets :meth:`evaluate` take a :class:`~neurofed.keys.Split`.
    run_dir
        Run folder: one checkpoint per epoch goes to ``run_dir/checkpoints`` and :meth:`fit`
        resumes from the newest one. ``None``: no checkpoints.
    keep_checkpoints
        Newest checkpoints kept on disk (``None`` keeps all).
    """

    def __init__(
        self,
        config: TrainConfig,
        train_data: CaseDataset | None = None,
        validation_data: CaseDataset | None = None,
        *,
        source: SiteData | None = None,
        run_dir: Path | None = None,
        keep_checkpoints: int | None = 3,
    ) -> None:
        self.config = config
        self.task = config.build_task()
        self.device = torch.device(resolve_device(config.device))
        self.divisor = config.spatial_divisor()
        self.train_data = train_data if train_data is not None else CaseDataset([])
        self.validation_data = validation_data
        self.source = source
        self.run_dir = None if run_dir is None else Path(run_dir)
        self.keep_checkpoints = keep_checkpoints
        with _own_rng(self.device):
            torch.manual_seed(config.seed)
            self.model = self.task.build_model(config.model_config).to(self.device)
        if config.transfer is not None:
            # derived from the config, so a resumed run freezes the same layers again
            prepare_transfer(self.model, config.transfer)
        self.optimizer = self._new_optimizer()
        self.epoch = 0
        self.step = 0
        self.history: list[EpochRecord] = []
        self._reference: dict[str, torch.Tensor] | None = None
        self._proximal_pairs: list[tuple[torch.Tensor, torch.Tensor]] = []
        #: DP-SGD (``None``: ordinary training); set by a site under a study's ``[privacy]``
        self.private: PrivateSGD | None = None

    @classmethod
    def from_sites(
        cls,
        config: TrainConfig,
        sites: Path | Sequence[Path],
        *,
        run_dir: Path | None = None,
        progress: ProgressCallback | None = None,
        keep_checkpoints: int | None = 3,
    ) -> LocalTrainer:
        """A trainer on the training and validation splits of one site (or several, pooled).

        Raises
        ------
        SiteDataError
            A site cannot serve the task, or no training case is usable.
        """
        source = SiteData(sites, config.build_task(), config.preprocess, progress=progress)
        return cls.from_source(config, source, run_dir=run_dir, keep_checkpoints=keep_checkpoints)

    @classmethod
    def from_source(
        cls,
        config: TrainConfig,
        source: SiteData,
        *,
        run_dir: Path | None = None,
        keep_checkpoints: int | None = 3,
    ) -> LocalTrainer:
        """A trainer on the training and validation splits of already opened site data.

        Raises
        ------
        SiteDataError
            No training case is usable.
        """
        train = source.split(Split.TRAIN)
        if len(train) == 0:
            reasons = "; ".join(s.line() for s in train.skipped[:5]) or "the train split is empty"
            raise SiteDataError(
                f"no usable training case at {', '.join(map(str, source.roots))} for task "
                f"{config.task.value!r} ({reasons})"
            )
        validation = source.split(Split.VALIDATION)
        return cls(
            config,
            train,
            validation,
            source=source,
            run_dir=run_dir,
            keep_checkpoints=keep_checkpoints,
        )

    # -- state -----------------------------------------------------------------------------------

    @property
    def num_examples(self) -> int:
        """Training cases (the site's weight in federated averaging)."""
        return self.train_data.num_examples

    @property
    def checkpoint_dir(self) -> Path | None:
        return None if self.run_dir is None else self.run_dir / CHECKPOINTS

    def _new_optimizer(self) -> torch.optim.Optimizer:
        c = self.config
        params = [p for p in self.model.parameters() if p.requires_grad]
        if c.optimizer is Optimizer.SGD:
            return torch.optim.SGD(
                params, lr=c.learning_rate, momentum=c.momentum, weight_decay=c.weight_decay
            )
        return torch.optim.Adam(params, lr=c.learning_rate, weight_decay=c.weight_decay)

    def reset_optimizer(self) -> None:
        """Forget the optimiser's state (moments, momentum), e.g. at the start of a round."""
        self.optimizer = self._new_optimizer()

    # -- parameters ------------------------------------------------------------------------------

    def get_parameters(self, *, include_local: bool = False) -> dict[str, npt.NDArray[np.generic]]:
        """Copies of the model's weights and buffers; local entries only with ``include_local``."""
        return model_arrays(
            self.model,
            local_parameters=self.config.local_parameters,
            include_local=include_local,
        )

    def set_parameters(self, params: Mapping[str, npt.ArrayLike]) -> None:
        """Load (global) parameters; entries matching ``local_parameters`` are left alone.

        The loaded values become FedProx's ``w_global``. Everything is checked before anything
        is written: on error the model is unchanged.

        Raises
        ------
        ParameterError
            Unknown or missing names, wrong shapes or dtypes, NaN or Inf values.
        """
        tensors = check_arrays(self.model, params, local_parameters=self.config.local_parameters)
        load_arrays(self.model, tensors)
        self._set_reference({k: v.to(self.device) for k, v in tensors.items()})

    def _set_reference(self, reference: Mapping[str, torch.Tensor] | None) -> None:
        if reference is None:
            self._reference, self._proximal_pairs = None, []
            return
        self._reference = {k: v.detach().clone() for k, v in reference.items()}
        self._proximal_pairs = [
            (p, self._reference[name])
            for name, p in self.model.named_parameters()
            if p.requires_grad and name in self._reference
        ]

    def proximal_term(self) -> torch.Tensor:
        """FedProx's ``mu/2·||w - w_global||²`` now (0 without a global reference or ``mu``)."""
        term = proximal_term(self._proximal_pairs, self.config.fedprox_mu)
        return torch.zeros((), device=self.device) if term is None else term

    def set_proximal_reference(self, params: Mapping[str, npt.ArrayLike]) -> None:
        """Make ``params`` FedProx's ``w_global`` without loading them into the model.

        Ditto's personalised model trains against the round's global weights this way. Entries
        matching ``local_parameters`` are ignored; the others are checked as by
        :meth:`set_parameters`, and on error the reference is unchanged.

        Raises
        ------
        ParameterError
            Unknown or missing names, wrong shapes or dtypes, NaN or Inf values.
        """
        tensors = check_arrays(self.model, params, local_parameters=self.config.local_parameters)
        self._set_reference({k: v.to(self.device) for k, v in tensors.items()})

    # -- training --------------------------------------------------------------------------------

    def fit(
        self,
        epochs: int | None = None,
        *,
        progress: ProgressCallback | None = None,
        resume: bool = True,
        on_epoch: Callable[[EpochRecord], None] | None = None,
    ) -> list[EpochRecord]:
        """Train ``epochs`` more epochs (default ``config.epochs``); returns their records.

        With ``resume`` and a run folder holding a checkpoint newer than the trainer's epoch
        (from an interrupted call), training continues from it: the result equals an
        uninterrupted run. ``progress(done, total, label)`` is called after each step and
        ``on_epoch(record)`` after each epoch (its checkpoint is on disk by then).
        """
        count = self.config.epochs if epochs is None else epochs
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise ValueError(f"epochs = {epochs!r} is invalid: use a whole number >= 0")
        start = self.epoch
        target = start + count
        if resume and self.checkpoint_dir is not None:
            path = latest_checkpoint(self.checkpoint_dir, max_epoch=target)
            if path is not None and checkpoint_epoch(path) > self.epoch:
                self.load_checkpoint(path)
        if self.epoch < target and len(self.train_data) == 0:
            raise ValueError("the trainer has no training cases; give train_data to fit")
        steps = steps_per_epoch(self.config, self.train_data) if len(self.train_data) else 0
        total = (target - self.epoch) * steps
        first = self.epoch
        with _own_rng(self.device):
            for epoch in range(self.epoch + 1, target + 1):
                offset = (epoch - first - 1) * steps
                record = self._train_epoch(epoch, target, progress, offset, total)
                if on_epoch is not None:
                    on_epoch(record)
        return [r for r in self.history if start < r.epoch <= target]

    def _train_epoch(
        self,
        epoch: int,
        target: int,
        progress: ProgressCallback | None,
        offset: int,
        total: int,
    ) -> EpochRecord:
        began = time.perf_counter()
        torch.manual_seed(_derived_seed(self.config.seed, epoch))
        rate = self.config.learning_rate
        rate *= self.config.lr_schedule.factor(epoch, max(self.config.epochs, epoch))
        for group in self.optimizer.param_groups:
            group["lr"] = rate
        self.model.train()
        losses: list[torch.Tensor] = []
        steps = self._steps(epoch, losses, progress, offset, total, f"epoch {epoch}/{target}")
        every = self.config.validate_every
        validate = bool(
            self.validation_data is not None and every and (epoch % every == 0 or epoch == target)
        )
        if steps and self.private is None and (validate or epoch == target):
            # only where the model is used (validated, or handed back by fit): the replay
            # resets the statistics, so the result is the same as refreshing every epoch
            self._refresh_batch_norm(epoch)
        validation: dict[str, float] = {}
        if validate:
            validation = finalize_metrics(self.task, self.evaluate())
        record = EpochRecord(
            epoch=epoch,
            train_loss=float(torch.stack(losses).mean()) if losses else math.nan,
            validation=validation,
            seconds=time.perf_counter() - began,
            steps=steps,
        )
        self.epoch = epoch
        self.history.append(record)
        if self.checkpoint_dir is not None:
            self.save_checkpoint()
        return record

    def _step(self, batch: Batch) -> torch.Tensor:
        """One ordinary optimiser step on ``batch``; its loss (detached)."""
        batch = batch.to(self.device)
        self.optimizer.zero_grad(set_to_none=True)
        loss = self.task.loss(self.model(batch.image), batch)
        objective = loss
        if self.config.fedprox_mu > 0 and self._proximal_pairs:
            objective = loss + self.proximal_term()
        objective.backward()
        self.optimizer.step()
        return loss.detach()

    def _refresh_batch_norm(self, epoch: int) -> None:
        """Batch-norm statistics of the epoch's own batches, replayed at its final weights
        (:mod:`~neurofed.training.batch_norm`): what the running average would hold if the
        weights had not moved during the epoch. Nothing is drawn for a model without one."""
        batches = epoch_batches(
            self.train_data, self.config, epoch, task=self.task, fill_single=True
        )
        refresh_batch_norm(self.model, (batch.image.to(self.device) for batch in batches))

    def _steps(
        self,
        epoch: int,
        losses: list[torch.Tensor],
        progress: ProgressCallback | None,
        offset: int,
        total: int,
        label: str,
    ) -> int:
        """The optimiser steps of one epoch, ordinary or DP-SGD (:attr:`private`, drawn by
        :func:`~neurofed.training.private.private_batches`); returns how many."""
        private = self.private
        step: Callable[[Any], torch.Tensor | None]
        if private is None:
            fill_single = any(isinstance(m, _BatchNorm) for m in self.model.modules())
            items: Iterator[Any] = epoch_batches(
                self.train_data, self.config, epoch, task=self.task, fill_single=fill_single
            )
            step = self._step
        else:
            fedprox = self.config.fedprox_mu > 0 and self._proximal_pairs
            extra = self.proximal_term if fedprox else None
            items = private_batches(
                self.train_data, self.config, epoch, self.task, private.sample_rate, private.seed
            )

            def step(cases: Any) -> torch.Tensor | None:
                return private.step(
                    self.model, self.task, self.optimizer, cases, self.device, extra
                )

            label += " (DP-SGD)"
        steps = 0
        for item in items:
            loss = step(item)
            if loss is not None:
                losses.append(loss)
            steps += 1
            self.step += 1
            if progress is not None:
                shown = "" if loss is None else f" loss {float(loss):.4f}"
                progress(offset + steps, total, f"{label}{shown}")
        return steps

    def record_untrained(self) -> EpochRecord:
        """Validate the model before any training and keep it as the epoch-0 record."""
        if self.epoch != 0:
            raise ValueError(f"the model has trained {self.epoch} epochs already")
        began = time.perf_counter()
        metrics = finalize_metrics(self.task, self.evaluate()) if self.validation_data else {}
        record = EpochRecord(0, None, metrics, time.perf_counter() - began, 0)
        self.history = [record, *(r for r in self.history if r.epoch != 0)]
        return record

    # -- evaluation ------------------------------------------------------------------------------

    def evaluate(
        self,
        data: Split | CaseDataset | None = None,
        *,
        progress: ProgressCallback | None = None,
    ) -> MetricState:
        """Metric state of the current model on ``data``: the validation cases by default, a
        split of the trainer's sites, or any dataset. Segmentation runs on full volumes."""
        if data is None:
            if self.validation_data is None:
                raise ValueError("the trainer has no validation data; pass a split or a dataset")
            dataset = self.validation_data
        elif isinstance(data, CaseDataset):
            dataset = data
        else:
            if self.source is None:
                raise ValueError(
                    f"evaluate({Split(data).value!r}) needs a trainer made with "
                    "LocalTrainer.from_sites; pass a CaseDataset instead"
                )
            dataset = self.source.split(Split(data))
        return evaluate_dataset(
            self.model,
            self.task,
            dataset,
            patch_shape=self.config.patch_shape,
            divisor=self.divisor,
            overlap=self.config.sliding_window_overlap,
            sw_batch_size=self.config.batch_size,
            device=self.device,
            progress=progress,
        )

    # -- checkpoints -----------------------------------------------------------------------------

    def save_checkpoint(self) -> Path:
        """Write the checkpoint of the current epoch to the run folder; returns its JSON."""
        if self.checkpoint_dir is None:
            raise ValueError("the trainer has no run folder; give run_dir to save checkpoints")
        return save_checkpoint(
            self.checkpoint_dir,
            epoch=self.epoch,
            step=self.step,
            model=self.model,
            optimizer=self.optimizer,
            config=self.config,
            reference=self._reference,
            history=self.history,
            keep=self.keep_checkpoints,
        )

    def load_checkpoint(self, path: Path) -> None:
        """Restore weights, optimiser, FedProx reference, epoch, step and history from ``path``.

        Raises
        ------
        CheckpointError
            When the checkpoint was made with other settings or is damaged.
        """
        record = json.loads(Path(path).read_text(encoding="utf-8"))
        theirs, mine = record.get("train_config", {}), self.config.to_json()
        differ = differing_settings(theirs, mine)
        if differ:
            raise CheckpointError(
                f"{path} was made with other settings ({', '.join(differ)} differ); resume with "
                "the same settings, or start a new run folder"
            )
        checkpoint = load_checkpoint(path, model=self.model, optimizer=self.optimizer)
        self.epoch, self.step = checkpoint.epoch, checkpoint.step
        self.history = list(checkpoint.history)
        reference = checkpoint.reference
        self._set_reference(
            None if reference is None else {k: v.to(self.device) for k, v in reference.items()}
        )

    def local_names(self) -> tuple[str, ...]:
        """State-dict names that stay local (match ``config.local_parameters``)."""
        patterns = self.config.local_parameters
        return tuple(n for n in self.model.state_dict() if is_local(n, patterns))

    # -- initial weights -------------------------------------------------------------------------

    def load_initial_weights(self, initial: TrainedModel | Mapping[str, npt.ArrayLike]) -> None:
        """Start training from given weights, e.g. a trained model transferred to a new target.

        Every state-dict entry is loaded, local ones included (a transfer starts from the whole
        source model). Call it before training: the optimiser starts afresh. Everything is
        checked before anything is written: on error the model is unchanged.

        Parameters
        ----------
        initial
            A model loaded with :func:`~neurofed.training.load_model` (it must be the same network:
            model name and model config), or arrays named as in the model's state dict.

        Raises
        ------
        ValueError
            ``initial`` is another network, or the trainer has trained already.
        ParameterError
            The arrays do not fit the model (names, shapes, dtypes, NaN or Inf).
        """
        if self.epoch != 0:
            raise ValueError(
                f"the model has trained {self.epoch} epochs already; load initial weights first"
            )
        if isinstance(initial, TrainedModel):
            _check_same_network(initial.config, self.config)
            arrays: Mapping[str, npt.ArrayLike] = model_arrays(initial.model, include_local=True)
        else:
            arrays = initial
        load_arrays(self.model, check_arrays(self.model, arrays))
        self.reset_optimizer()


def _check_same_network(source: TrainConfig, config: TrainConfig) -> None:
    """Raise ``ValueError`` unless ``source`` and ``config`` build the same network."""
    theirs, mine = source.model_name, config.model_name
    if theirs != mine:
        raise ValueError(
            f"the initial model is a {theirs!r} network (task {source.task.value!r}) but this "
            f"trainer builds a {mine!r} network (task {config.task.value!r}); start from a "
            f"model trained with {mine!r}"
        )
    a, b = source.model_config.to_json(), config.model_config.to_json()
    differ = [
        f"{k}: {a.get(k)!r} vs {b.get(k)!r}"
        for k in sorted(a.keys() | b.keys())
        if a.get(k) != b.get(k)
    ]
    if differ:
        raise ValueError(
            f"the initial model's {theirs!r} config differs from this trainer's "
            f"({'; '.join(differ)}, initial vs trainer); use the initial model's model_config"
        )
