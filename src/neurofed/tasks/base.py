"""The task interface: what a model sees, what it predicts, how it is trained and scored.

A task fixes its input channels (``modalities``), the registered model it uses and that model's
default configuration, which labels it needs (label maps and/or ``clinical_fields``), and
implements the loss, a mergeable :class:`~neurofed.tasks.metric_state.MetricState`, the final
metrics and the post-processing of outputs into predictions. The training loop calls only
these methods, so it trains every task alike:

.. code-block:: python

    outputs = model(batch.image)
    task.loss(outputs, batch).backward()
    state = state.merge(task.metric_state(outputs, batch))
    ...
    metrics = task.finalize(state)        # {"WT/dice": 0.87, ...}

The public methods validate the batch (channels, labels, clinical fields) and the outputs before
calling the extension points a subclass implements: :meth:`Task._loss`,
:meth:`Task._metric_state`, :meth:`Task._finalize`, :meth:`Task.postprocess` and
:meth:`Task.default_model_config`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar

import torch
from torch import nn

from neurofed.config import ConfigBase
from neurofed.keys import ClinicalField, Modality, TaskId
from neurofed.models import build_model
from neurofed.tasks.batch import Batch
from neurofed.tasks.metric_state import MetricState

__all__ = ["ModelOutput", "Task"]

#: What a model returns: one tensor, or named tensors (e.g. ``multitask-unet``).
ModelOutput = torch.Tensor | Mapping[str, torch.Tensor]


class Task(ABC):
    """Base of every task.

    Class attributes
    ----------------
    task_id
        Registry key.
    modalities
        Input channels, in order.
    model_name
        Registered model (see :func:`neurofed.models.model_names`).
    out_channels
        Output channels the model is built with.
    needs_label_map
        Whether batches must carry ``label`` (cases without a mask are marked in ``has_label``).
    max_label
        Largest internal label value allowed in ``label``.
    config_type
        The task's frozen config class; ``Task(config)`` parses ``config`` (an instance, a
        mapping of its fields, or ``None`` for defaults) into ``self.config``.

    Examples
    --------
    >>> from neurofed.tasks import get_task
    >>> task = get_task("brain-age")
    >>> [m.value for m in task.modalities], task.needs_label_map, task.clinical_fields
    (['T1'], False, (<ClinicalField.AGE: 'age'>,))
    """

    task_id: ClassVar[TaskId]
    modalities: ClassVar[tuple[Modality, ...]]
    model_name: ClassVar[str]
    out_channels: ClassVar[int]
    needs_label_map: ClassVar[bool]
    max_label: ClassVar[int] = 0
    config_type: ClassVar[type[ConfigBase]]
    config: ConfigBase

    def __init__(self, config: Mapping[str, Any] | ConfigBase | None = None) -> None:
        self.config = self.config_type.parse(config)

    @property
    def clinical_fields(self) -> tuple[ClinicalField, ...]:
        """Clinical fields the task uses (each batch must carry them, with ``known`` masks)."""
        return ()

    # -- extension points -------------------------------------------------------------------

    @abstractmethod
    def default_model_config(self) -> ConfigBase:
        """The configuration of :attr:`model_name` used when a study gives none."""

    @abstractmethod
    def _loss(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        """Scalar loss of a validated batch."""

    @abstractmethod
    def _metric_state(self, outputs: ModelOutput, batch: Batch) -> MetricState:
        """Metric record of a validated batch (always the same names, even with no cases)."""

    @abstractmethod
    def _finalize(self, state: MetricState) -> dict[str, float]:
        """Numbers from a non-empty merged state."""

    @abstractmethod
    def postprocess(self, outputs: ModelOutput) -> ModelOutput:
        """Predictions from raw outputs (probabilities, thresholded masks, original units)."""

    # -- template ----------------------------------------------------------------------------

    def build_model(self, model_config: Mapping[str, Any] | ConfigBase | None = None) -> nn.Module:
        """Build :attr:`model_name` with this task's channels (default config when ``None``)."""
        config = self.default_model_config() if model_config is None else model_config
        return build_model(
            self.model_name,
            config,
            in_channels=len(self.modalities),
            out_channels=self.out_channels,
        )

    def check_batch(self, batch: Batch) -> None:
        """Raise a ``ValueError`` saying what is wrong if ``batch`` does not fit this task."""
        channels = batch.image.shape[1]
        if channels != len(self.modalities):
            names = ", ".join(m.value for m in self.modalities)
            raise ValueError(
                f"task {self.task_id.value!r} expects {len(self.modalities)} image channels "
                f"({names}); the batch has {channels}"
            )
        if self.needs_label_map:
            if batch.label is None:
                raise ValueError(
                    f"task {self.task_id.value!r} needs label maps but batch.label is None; "
                    "give zeros with has_label=False for cases without a mask"
                )
            labelled = batch.label[batch.labelled]
            if labelled.numel() and (
                int(labelled.min()) < 0 or int(labelled.max()) > self.max_label
            ):
                raise ValueError(
                    f"task {self.task_id.value!r} expects internal labels 0..{self.max_label}; "
                    f"the batch holds {int(labelled.min())}..{int(labelled.max())} "
                    "(convert with neurofed.data.labels.to_internal)"
                )
        missing = [f.value for f in self.clinical_fields if f not in batch.clinical]
        if missing:
            raise ValueError(
                f"task {self.task_id.value!r} needs clinical fields {missing} in the batch; "
                "give ClinicalTarget.unknown(batch_size) where a site has none"
            )

    def _tensor_output(self, outputs: ModelOutput) -> torch.Tensor:
        """``outputs`` as one tensor (a ``TypeError`` for named outputs)."""
        if not isinstance(outputs, torch.Tensor):
            raise TypeError(
                f"task {self.task_id.value!r} expects the model to return one tensor; "
                f"got {type(outputs).__name__}"
            )
        return outputs

    def _segmentation_output(
        self, logits: torch.Tensor, batch: Batch, channels: int
    ) -> torch.Tensor:
        """Check that ``logits`` is ``(B, channels, X, Y, Z)`` on the batch's grid."""
        expected = (batch.batch_size, channels, *batch.spatial_shape)
        if tuple(logits.shape) != expected:
            raise ValueError(
                f"task {self.task_id.value!r}: segmentation output has shape "
                f"{tuple(logits.shape)}; expected {expected} (B, C, X, Y, Z) — check the model's "
                "out_channels and that the input size is a multiple of its spatial_divisor()"
            )
        return logits

    def loss(self, outputs: ModelOutput, batch: Batch) -> torch.Tensor:
        """Scalar training loss (0, not NaN, for terms without known labels)."""
        self.check_batch(batch)
        return self._loss(outputs, batch)

    def metric_state(self, outputs: ModelOutput, batch: Batch) -> MetricState:
        """Mergeable metric record of one batch (no gradients)."""
        self.check_batch(batch)
        with torch.no_grad():
            return self._metric_state(outputs, batch)

    def finalize(self, state: MetricState) -> dict[str, float]:
        """Metric values (named ``<region or marker>/<metric>`` or ``<metric>``)."""
        if state.is_empty:
            raise ValueError(
                f"task {self.task_id.value!r}: the metric state is empty (no batch was evaluated)"
            )
        return {str(k): float(v) for k, v in self._finalize(state).items()}
