"""neurofed.export: a model folder as ONNX or OpenVINO (FP32, accuracy-gated INT8), and the
torch-free runtime that runs it.

Only this room imports onnx, onnxruntime, openvino and nncf, inside functions, after
:func:`~neurofed.export.telemetry.disable_telemetry`. Importing :mod:`neurofed.export` imports
neither torch nor any of them; :func:`export_model` (which needs torch) is loaded on first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from neurofed.export.folder import (
    EXPORT_FORMAT,
    ExportError,
    ExportFormat,
    MetricDropError,
    Precision,
    is_exported_folder,
    read_export,
    seal_export,
)
from neurofed.export.runtime import ExportedModel, load_exported
from neurofed.export.telemetry import disable_telemetry

if TYPE_CHECKING:
    from neurofed.export.exporter import ExportResult, export_model

__all__ = [
    "EXPORT_FORMAT",
    "ExportError",
    "ExportFormat",
    "ExportResult",
    "ExportedModel",
    "MetricDropError",
    "Precision",
    "disable_telemetry",
    "export_model",
    "is_exported_folder",
    "load_exported",
    "read_export",
    "seal_export",
]


def __getattr__(name: str) -> Any:
    if name in ("export_model", "ExportResult"):
        from neurofed.export import exporter

        return getattr(exporter, name)
    raise AttributeError(f"module 'neurofed.export' has no attribute {name!r}")
