"""Run an exported model folder without PyTorch: onnxruntime or OpenVINO, numpy around them.

:func:`load_exported` checks the folder's seal, opens the network with the runtime its format
needs (``onnx``: onnxruntime's CPU provider; ``openvino``: OpenVINO on the CPU) and returns an
:class:`ExportedModel`. It reads like :class:`neurofed.training.TrainedModel` where
``neurofed predict`` uses one — ``task.task_id``, ``task.modalities``, ``task.config``,
``preprocess``, ``predict(image)`` — so :func:`neurofed.predict.case.predict_case` runs either.
Inference is :func:`neurofed.export.window.infer` (the sliding windows and Gaussian blending of
training, from ``model.json``), and :func:`postprocess` is each task's post-processing in numpy:

- ``tumor-regions``: ``(B, 3, X, Y, Z)`` uint8, ``sigmoid(logits) > threshold``;
- ``ms-lesion``: ``(B, 1, X, Y, Z)`` uint8 arg-max;
- ``brain-age``: ``(B,)`` float64 in the target's units;
- ``glioma-multitask``: the segmentation mask, marker probabilities ``(B,)`` and grade
  probabilities ``(B, 3)``.

Nothing here imports torch (a test runs ``neurofed predict`` on an exported folder and checks
``sys.modules``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.export.folder import ExportError, ExportFormat, read_export
from neurofed.export.telemetry import disable_telemetry
from neurofed.export.window import Array, infer
from neurofed.keys import Modality, OutputKey, TaskId
from neurofed.preprocess import PreprocessParams

__all__ = [
    "ExportedModel",
    "ExportedTask",
    "ExportedTaskConfig",
    "load_exported",
    "open_network",
    "openvino_config",
    "postprocess",
]

Outputs = npt.NDArray[Any] | dict[str, npt.NDArray[Any]]
Network = Callable[[Array], dict[str, Array]]
_MARKERS = (OutputKey.IDH, OutputKey.CODEL_1P19Q, OutputKey.MGMT)


@dataclass(frozen=True)
class ExportedTaskConfig:
    """The task settings post-processing and the results need (from ``task_config``)."""

    threshold: float = 0.5
    target: str = "age"
    target_mean: float = 0.0
    target_std: float = 1.0
    connectivity: int = 3

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> ExportedTaskConfig:
        known = {k: data[k] for k in ("threshold", "target", "connectivity") if k in data}
        for name in ("target_mean", "target_std"):
            if name in data:
                known[name] = float(data[name])
        return cls(**known)


@dataclass(frozen=True)
class ExportedTask:
    """Which task an exported model serves and with which channels."""

    task_id: TaskId
    modalities: tuple[Modality, ...]
    config: ExportedTaskConfig


def _sigmoid(x: npt.NDArray[Any]) -> npt.NDArray[np.float32]:
    out: npt.NDArray[np.float32] = (0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, np.float32)))).astype(
        np.float32
    )
    return out


def _softmax(x: npt.NDArray[Any], axis: int) -> npt.NDArray[np.float32]:
    shifted = np.asarray(x, np.float32) - np.max(x, axis=axis, keepdims=True)
    e = np.exp(shifted)
    out: npt.NDArray[np.float32] = (e / e.sum(axis=axis, keepdims=True)).astype(np.float32)
    return out


def postprocess(task: ExportedTask, outputs: Mapping[str, Array]) -> Outputs:
    """Predictions from raw named outputs, as the task's ``postprocess`` makes them (see the
    module docstring).

    Examples
    --------
    >>> task = ExportedTask(TaskId.BRAIN_AGE, (Modality.T1,), ExportedTaskConfig(
    ...     target_mean=60.0, target_std=10.0))
    >>> postprocess(task, {"output": np.array([[0.0], [1.5]], np.float32)}).tolist()
    [60.0, 75.0]
    """
    config = task.config
    if task.task_id is TaskId.GLIOMA_MULTITASK:
        seg = _sigmoid(outputs[OutputKey.SEGMENTATION]) > config.threshold
        result: dict[str, npt.NDArray[Any]] = {str(OutputKey.SEGMENTATION): seg.astype(np.uint8)}
        for marker in _MARKERS:
            result[str(marker)] = _sigmoid(outputs[marker])
        result[str(OutputKey.GRADE)] = _softmax(outputs[OutputKey.GRADE], axis=1)
        return result
    (logits,) = outputs.values()
    if task.task_id is TaskId.TUMOR_REGIONS:
        return (_sigmoid(logits) > config.threshold).astype(np.uint8)  # (B, 3, X, Y, Z)
    if task.task_id is TaskId.MS_LESION:
        lesion: npt.NDArray[np.uint8] = np.argmax(logits, axis=1)[:, None].astype(np.uint8)
        return lesion  # (B, 1, X, Y, Z)
    normalised = np.asarray(logits, np.float64)[:, 0]  # (B,)
    values: npt.NDArray[np.float64] = normalised * config.target_std + config.target_mean
    return values


def openvino_config(threads: int | None = None) -> dict[str, Any]:
    """OpenVINO CPU settings: FP32 arithmetic where the network is not quantised (the CPU
    plugin would otherwise run FP32 layers in bf16 on CPUs that have it), ``threads`` threads."""
    config: dict[str, Any] = {"INFERENCE_PRECISION_HINT": "f32"}
    if threads:
        config["INFERENCE_NUM_THREADS"] = threads
    return config


def open_network(folder: Path, record: Mapping[str, Any], *, threads: int | None = None) -> Network:
    """The exported network of ``folder`` as a function of a batch (see ``model.json``)."""
    export = record["export"]
    names = [str(n) for n in export["output_names"]]
    input_name = str(export["input_name"])
    path = Path(folder) / export["files"][0]
    if ExportFormat(export["format"]) is ExportFormat.ONNX:
        try:
            import onnxruntime as ort
        except ImportError as exc:  # pragma: no cover - pinned dependency
            raise ExportError(
                f"onnxruntime is not installed ({exc}); pip install neurofed"
            ) from exc
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
            options.inter_op_num_threads = 1
        session = ort.InferenceSession(
            str(path), sess_options=options, providers=["CPUExecutionProvider"]
        )

        def run_onnx(batch: Array) -> dict[str, Array]:
            out = session.run(names, {input_name: np.ascontiguousarray(batch, np.float32)})
            return dict(zip(names, (np.asarray(o) for o in out), strict=True))

        return run_onnx
    disable_telemetry()
    try:
        import openvino as ov
    except ImportError as exc:  # pragma: no cover - pinned dependency
        raise ExportError(f"openvino is not installed ({exc}); pip install neurofed") from exc
    compiled = ov.Core().compile_model(str(path), "CPU", openvino_config(threads))
    ports = [compiled.output(n) for n in names]

    def run_openvino(batch: Array) -> dict[str, Array]:
        result = compiled(np.ascontiguousarray(batch, np.float32))
        return {n: np.asarray(result[p]) for n, p in zip(names, ports, strict=True)}

    return run_openvino


@dataclass
class ExportedModel:
    """An exported model ready to predict on preprocessed arrays (see the module docstring)."""

    folder: Path
    record: dict[str, Any]
    task: ExportedTask
    preprocess: PreprocessParams
    network: Network
    patch_shape: tuple[int, int, int] | None
    overlap: float
    divisor: tuple[int, int, int]
    batch_size: int = 2
    metrics: dict[str, float] = field(default_factory=dict)

    @property
    def format(self) -> ExportFormat:
        return ExportFormat(self.record["export"]["format"])

    @property
    def precision(self) -> str:
        return str(self.record["export"]["precision"])

    def raw_outputs(self, image: npt.ArrayLike) -> dict[str, Array]:
        """Raw named outputs for one image ``(C, X, Y, Z)`` (or a batch ``(B, C, X, Y, Z)``)."""
        array = np.asarray(image, dtype=np.float32)
        if array.ndim == 4:
            array = array[None]
        return infer(
            self.network,
            array,
            patch_shape=self.patch_shape,
            divisor=self.divisor,
            overlap=self.overlap,
            batch_size=self.batch_size,
        )

    def predict(self, image: npt.ArrayLike) -> Outputs:
        """Post-processed predictions (masks, probabilities, values in original units)."""
        return postprocess(self.task, self.raw_outputs(image))


def load_exported(
    folder: Path, *, task: TaskId | str | None = None, threads: int | None = None
) -> ExportedModel:
    """Open an exported folder (see the module docstring).

    Raises
    ------
    ExportError
        The folder is unusable (see :func:`~neurofed.export.folder.read_export`), or (with
        ``task``) holds a model of another task.
    """
    folder = Path(folder)
    record = read_export(folder)
    try:
        task_id = TaskId(record["task"])
        exported_task = ExportedTask(
            task_id,
            tuple(Modality(m) for m in record["modalities"]),
            ExportedTaskConfig.from_json(record.get("task_config") or {}),
        )
        inference = record["inference"]
        patch = inference.get("patch_shape")
        px, py, pz = (int(v) for v in patch) if patch is not None else (0, 0, 0)
        dx, dy, dz = (int(v) for v in inference["spatial_divisor"])
        preprocess = PreprocessParams.from_json(record["preprocess"])
    except (KeyError, TypeError, ValueError) as exc:
        raise ExportError(f"{folder}: model.json is incomplete ({exc}); export it again") from None
    if task is not None and task_id is not TaskId(task):
        raise ExportError(
            f"{folder} holds a {task_id.value!r} model, not a {TaskId(task).value!r} one; "
            "give an exported model of that task"
        )
    metrics = {
        k: math.nan if v is None else float(v) for k, v in (record.get("metrics") or {}).items()
    }
    return ExportedModel(
        folder=folder,
        record=record,
        task=exported_task,
        preprocess=preprocess,
        network=open_network(folder, record, threads=threads),
        patch_shape=None if patch is None else (px, py, pz),
        overlap=float(inference.get("sliding_window_overlap", 0.25)),
        divisor=(dx, dy, dz),
        batch_size=int(inference.get("batch_size", 2)),
        metrics=metrics,
    )
