"""``export_model``: a PyTorch model folder as an ONNX or OpenVINO model folder, optionally INT8.

1. The network is traced to ONNX (``torch.onnx.export``, TorchScript exporter, opset
   :data:`OPSET`) with one input ``image`` ``(B, C, X, Y, Z)`` whose batch and spatial axes are
   dynamic, and named outputs: ``output`` for one-tensor models, the model's keys (in order)
   for the multi-task model, whose dict is returned as a tuple.
2. Parity: the exported network, run as a clinic runs it (:mod:`neurofed.export.runtime`:
   numpy sliding windows around onnxruntime or OpenVINO), is compared with the PyTorch model's
   full-volume outputs (:meth:`~neurofed.training.TrainedModel.raw_outputs`) on real inputs —
   the site's validation cases when a site is given, else one volume of the model's input size
   drawn from a fixed seed. The export is refused when ``max |exported - torch|`` exceeds
   :data:`PARITY_TOLERANCE` ``x max(1, max |torch|)`` for any output.
3. OpenVINO FP32: ``openvino.convert_model`` of the ONNX file, saved uncompressed
   (``compress_to_fp16=False``).
4. INT8 (OpenVINO only): :func:`neurofed.export.int8.quantize` (NNCF accuracy-aware
   quantisation on the site's validation cases), refused when the headline metric drops by more
   than ``max_metric_drop``.

The folder (:mod:`neurofed.export.folder`) is written atomically: a refused export leaves no
folder behind.
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from neurofed.artifacts import atomic_folder, versions, write_json_atomically
from neurofed.export.folder import (
    EXPORT_FORMAT,
    MODEL_JSON,
    ExportError,
    ExportFormat,
    Precision,
    seal_export,
)
from neurofed.export.runtime import load_exported
from neurofed.export.telemetry import disable_telemetry
from neurofed.keys import Split
from neurofed.training.model_folder import TrainedModel, load_model
from neurofed.training.site_data import SiteData

__all__ = ["INPUT_NAME", "OPSET", "PARITY_TOLERANCE", "ExportResult", "export_model"]

logger = logging.getLogger(__name__)

INPUT_NAME = "image"
#: Name of the output of one-tensor models.
SINGLE_OUTPUT = "output"
OPSET = 17
#: Largest ``max |exported - torch|`` accepted, relative to ``max(1, max |torch|)`` per output.
PARITY_TOLERANCE = 1e-4
#: At most this many validation cases are used for the parity check.
_PARITY_CASES = 4


@dataclass(frozen=True)
class ExportResult:
    """What :func:`export_model` wrote and measured."""

    folder: Path
    format: ExportFormat
    precision: Precision
    seal: str
    parity: dict[str, Any]
    #: The PyTorch model that was exported (its provenance names the run that made it).
    source: TrainedModel
    int8: dict[str, Any] | None = None


class _TupleOutputs(nn.Module):
    """The model with its outputs as a tuple in ``names`` order (ONNX outputs are positional)."""

    def __init__(self, model: nn.Module, names: Sequence[str]) -> None:
        super().__init__()
        self.model = model
        self.names = list(names)

    def forward(self, image: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = self.model(image)  # tensor, or dict of tensors
        if isinstance(out, Mapping):
            return tuple(out[n] for n in self.names)
        return (out,)


def _sample_shape(trained: TrainedModel) -> tuple[int, int, int]:
    """The spatial shape the network is traced with (a window, or the model's volume size)."""
    config = trained.config
    if config.patch_shape is not None:
        return config.patch_shape
    if trained.preprocess.spatial_shape is not None:
        x, y, z = trained.preprocess.spatial_shape
        return (x, y, z)
    dx, dy, dz = config.spatial_divisor()
    return (dx * -(-32 // dx), dy * -(-32 // dy), dz * -(-32 // dz))


def _output_names(trained: TrainedModel, sample: torch.Tensor) -> list[str]:
    with torch.no_grad():
        out = trained.model(sample)
    return [str(k) for k in out] if isinstance(out, Mapping) else [SINGLE_OUTPUT]


def _to_onnx(trained: TrainedModel, path: Path) -> list[str]:
    channels = len(trained.task.modalities)
    sample = torch.zeros((1, channels, *_sample_shape(trained)))  # (1, C, X, Y, Z)
    names = _output_names(trained, sample)
    axes: dict[str, dict[int, str]] = {INPUT_NAME: {0: "batch", 2: "x", 3: "y", 4: "z"}}
    with torch.no_grad():
        out = _TupleOutputs(trained.model, names)(sample)
    for name, tensor in zip(names, out, strict=True):
        axes[name] = {0: "batch"} | ({2: "x", 3: "y", 4: "z"} if tensor.dim() == 5 else {})
    wrapped = _TupleOutputs(trained.model, names).eval()
    try:
        torch.onnx.export(
            wrapped,
            (sample,),
            str(path),
            input_names=[INPUT_NAME],
            output_names=names,
            dynamic_axes=axes,
            opset_version=OPSET,
            dynamo=False,
        )
    except Exception as exc:
        raise ExportError(
            f"the {trained.task.task_id.value} model cannot be exported to ONNX "
            f"({type(exc).__name__}: {exc})"
        ) from exc
    return names


def _inputs(trained: TrainedModel, site: Path | None) -> tuple[list[npt.NDArray[np.float32]], str]:
    """Volumes for the parity check: real validation cases, else one seeded volume."""
    if site is not None:
        cases = SiteData(site, trained.task, trained.preprocess).split(Split.VALIDATION)
        images = [case.image for _, case in zip(range(_PARITY_CASES), cases, strict=False)]
        if images:
            return images, f"{len(images)} validation case(s) of {Path(site).name}"
    rng = np.random.default_rng(0)
    shape = _sample_shape(trained)
    if trained.config.patch_shape is not None:  # more than one window, a partial last one
        shape = (shape[0] + shape[0] // 2, shape[1], shape[2] + 3)
    image = rng.standard_normal((len(trained.task.modalities), *shape)).astype(np.float32)
    return [image], "one volume drawn from a fixed seed (no site given)"


def _named(outputs: Any, names: Sequence[str]) -> dict[str, npt.NDArray[Any]]:
    if isinstance(outputs, Mapping):
        return {n: outputs[n].detach().cpu().numpy() for n in names}
    return {names[0]: outputs.detach().cpu().numpy()}


def check_parity(
    trained: TrainedModel, folder: Path, images: Sequence[npt.NDArray[np.float32]]
) -> dict[str, Any]:
    """Largest difference between the exported folder and PyTorch on ``images``, per output."""
    exported = load_exported(folder)
    names = list(exported.record["export"]["output_names"])
    worst: dict[str, float] = dict.fromkeys(names, 0.0)
    scale: dict[str, float] = dict.fromkeys(names, 1.0)
    for image in images:
        expected = _named(trained.raw_outputs(image), names)
        got = exported.raw_outputs(image)
        for name in names:
            if got[name].shape != expected[name].shape:
                raise ExportError(
                    f"output {name!r}: the exported model gives shape {got[name].shape}, "
                    f"PyTorch {expected[name].shape}"
                )
            worst[name] = max(worst[name], float(np.max(np.abs(got[name] - expected[name]))))
            scale[name] = max(scale[name], float(np.max(np.abs(expected[name]))))
    relative = {n: worst[n] / scale[n] for n in names}
    return {
        "max_abs_diff": worst,
        "max_relative_diff": relative,
        "tolerance": PARITY_TOLERANCE,
        "passed": all(r <= PARITY_TOLERANCE for r in relative.values()),
    }


def _record(source: Path, trained: TrainedModel, export: dict[str, Any]) -> dict[str, Any]:
    original = json.loads((source / MODEL_JSON).read_text(encoding="utf-8"))
    inference = dict(original.get("inference") or {})
    inference["batch_size"] = trained.config.batch_size
    return {
        "format": EXPORT_FORMAT,
        "task": original["task"],
        "task_config": original["task_config"],
        "model_name": original["model_name"],
        "model_config": original["model_config"],
        "modalities": original["modalities"],
        "preprocess": original["preprocess"],
        "inference": inference,
        "metrics": original.get("metrics", {}),
        "provenance": original.get("provenance", {}),
        "source": {
            "folder": source.resolve().name,
            "seal": (original.get("seal") or {}).get("sha256"),
            "format": original.get("format"),
        },
        "export": export,
        "versions": versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def _write(folder: Path, record: dict[str, Any]) -> str:
    write_json_atomically(folder / MODEL_JSON, record)
    return seal_export(folder)


def export_model(
    model_folder: Path,
    out: Path,
    format: ExportFormat | str = ExportFormat.ONNX,
    int8: bool = False,
    site: Path | None = None,
    max_metric_drop: float = 0.005,
) -> ExportResult:
    """Export the model folder ``model_folder`` into ``out`` (see the module docstring).

    Raises
    ------
    ExportError
        Bad options, a network that does not export or does not match PyTorch, or an INT8 model
        that loses more than ``max_metric_drop`` of the headline metric (the message gives the
        measured drop).
    ModelFolderError
        ``model_folder`` is unusable.
    """
    try:
        chosen = ExportFormat(str(format))
    except ValueError:
        raise ExportError(
            f"format {format!r}: use {' or '.join(f.value for f in ExportFormat)}"
        ) from None
    if int8 and chosen is not ExportFormat.OPENVINO:
        raise ExportError("INT8 export is made with OpenVINO/NNCF: use --format openvino --int8")
    if int8 and site is None:
        raise ExportError(
            "INT8 needs a site to calibrate and validate on: give --site SITE_DIR (its "
            "validation cases are used)"
        )
    if not (math.isfinite(max_metric_drop) and max_metric_drop >= 0):
        raise ExportError(
            f"max_metric_drop = {max_metric_drop}: use a drop of 0 or more (e.g. 0.005)"
        )
    source = Path(model_folder)
    out = Path(out)
    if out.resolve() == source.resolve():
        raise ExportError(f"{out}: give an output folder other than the model folder")
    trained = load_model(source)
    images, described = _inputs(trained, site)
    precision = Precision.INT8 if int8 else Precision.FP32
    with tempfile.TemporaryDirectory() as scratch, atomic_folder(out) as folder:
        onnx_path = Path(scratch) / "model.onnx"
        names = _to_onnx(trained, onnx_path)
        export: dict[str, Any] = {
            "format": chosen.value,
            "precision": precision.value,
            "input_name": INPUT_NAME,
            "output_names": names,
            "dynamic_axes": ["batch", "x", "y", "z"],
            "opset": OPSET,
        }
        int8_record: dict[str, Any] | None = None
        if chosen is ExportFormat.ONNX:
            onnx_path.replace(folder / "model.onnx")
            export["files"] = ["model.onnx"]
        else:
            disable_telemetry()
            import openvino as ov

            network = ov.convert_model(str(onnx_path))
            if int8:
                from neurofed.export.int8 import quantize

                network, int8_record = quantize(
                    trained, network, names, Path(str(site)), max_metric_drop
                )
            ov.save_model(network, str(folder / "model.xml"), compress_to_fp16=False)
            export["files"] = ["model.xml", "model.bin"]
        if int8_record is not None:
            export["int8"] = int8_record
        record = _record(source, trained, export)
        _write(folder, record)
        parity = check_parity(trained, folder, images)
        parity["inputs"] = described
        if not parity["passed"] and precision is Precision.FP32:
            raise ExportError(
                f"the exported model does not match PyTorch: max relative difference "
                f"{max(parity['max_relative_diff'].values()):.3g} > {PARITY_TOLERANCE} "
                f"({described}); report this with the model's model.json"
            )
        if precision is Precision.INT8:
            parity.pop("passed")
            parity["note"] = "INT8 differs from FP32 by design; it is gated by its metric drop"
        export["parity"] = parity
        seal = _write(folder, record)
    return ExportResult(out, chosen, precision, seal, parity, trained, int8_record)
