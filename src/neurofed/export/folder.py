"""The exported model folder: the ONNX or OpenVINO file(s) plus a sealed ``model.json``.

An exported folder is a model folder a clinic can run without PyTorch. Its ``model.json`` says
what the network reads and how to run it — the task and its config (thresholds, target units),
the input channels, the preprocessing and the sliding-window settings, all copied from the
source model folder — plus the export itself: format (``onnx`` / ``openvino``), precision
(``fp32`` / ``int8``), the input and output names, the source model's seal, and what was
measured (ONNX-vs-PyTorch parity; the INT8 metric drop).

Like a PyTorch model folder (:func:`neurofed.training.seal_model`), the folder is sealed by one
SHA-256 over every field of ``model.json`` and the SHA-256 of each exported file, and
:func:`read_export` refuses a folder whose parts were changed after export. This module imports
neither torch nor any inference runtime.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "model.onnx").write_bytes(b"onnx bytes")
>>> record = {"format": EXPORT_FORMAT, "task": "ms-lesion", "export": {"files": ["model.onnx"]}}
>>> _ = (folder / MODEL_JSON).write_text(json.dumps(record))
>>> digest = seal_export(folder)
>>> read_export(folder)["task"], is_exported_folder(folder)
('ms-lesion', True)
>>> _ = (folder / "model.onnx").write_bytes(b"changed")
>>> read_export(folder)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.export.folder.ExportError: ... (its seal does not match: ...
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path, PurePath
from typing import Any

from neurofed.artifacts import sha256_file, shown, write_json_atomically

__all__ = [
    "EXPORT_FORMAT",
    "MODEL_JSON",
    "ExportError",
    "ExportFormat",
    "MetricDropError",
    "Precision",
    "is_exported_folder",
    "read_export",
    "seal_export",
]

#: ``format`` of an exported folder's ``model.json`` (PyTorch model folders use integers).
EXPORT_FORMAT = "neurofed-export/1"
MODEL_JSON = "model.json"
_SEAL = "seal"


class ExportError(ValueError):
    """A model cannot be exported, or an exported folder cannot be used; says why and the fix."""


class MetricDropError(ExportError):
    """The INT8 model would lose more of the headline metric than allowed; nothing is written."""


class ExportFormat(StrEnum):
    """What an exported folder holds."""

    ONNX = "onnx"  # model.onnx, run with onnxruntime
    OPENVINO = "openvino"  # model.xml + model.bin, run with OpenVINO


class Precision(StrEnum):
    """Numeric precision of the exported network."""

    FP32 = "fp32"
    INT8 = "int8"


def _files(record: Mapping[str, Any]) -> list[str]:
    export = record.get("export")
    files = export.get("files") if isinstance(export, Mapping) else None
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ValueError("model.json names no exported files (export.files)")
    for name in files:
        if PurePath(name).name != name or name in ("", ".", "..", MODEL_JSON):
            raise ValueError(
                f"exported file {shown(name)}: an exported folder's files are its own, "
                "never a path elsewhere"
            )
    return list(files)


def _digest(folder: Path, record: Mapping[str, Any], files: list[str]) -> str:
    digest = hashlib.sha256()
    fields = {k: v for k, v in record.items() if k != _SEAL}
    digest.update(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode())
    for name in files:
        digest.update(f"\0{name}\0{sha256_file(folder / name)}".encode())
    return digest.hexdigest()


def seal_export(folder: Path) -> str:
    """(Re)compute the seal of an exported folder and write it into ``model.json``; returns it."""
    folder = Path(folder)
    record = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    files = _files(record)
    digest = _digest(folder, record, files)
    record[_SEAL] = {"sha256": digest, "files": [MODEL_JSON, *files]}
    write_json_atomically(folder / MODEL_JSON, record)
    return digest


def _record(folder: Path) -> dict[str, Any]:
    record = json.loads((folder / MODEL_JSON).read_text(encoding="utf-8"))
    if not isinstance(record, dict):
        raise ValueError("model.json is not a JSON object")
    return record


def is_exported_folder(folder: Path) -> bool:
    """Whether ``folder``'s ``model.json`` describes an exported model (no seal check)."""
    try:
        return _record(Path(folder)).get("format") == EXPORT_FORMAT
    except (OSError, ValueError):
        return False


def read_export(folder: Path) -> dict[str, Any]:
    """``model.json`` of an exported folder, after checking its seal.

    Raises
    ------
    ExportError
        ``model.json`` is missing or damaged, or a file was changed, removed or renamed after
        export.
    """
    folder = Path(folder)
    path = folder / MODEL_JSON
    if not path.is_file():
        raise ExportError(f"{path}: not found; give a folder written by `neurofed export`")
    try:
        record = _record(folder)
        if record.get("format") != EXPORT_FORMAT:
            raise ValueError(f"format {shown(record.get('format'))} is not {EXPORT_FORMAT!r}")
        files = _files(record)
        missing = [n for n in files if not (folder / n).is_file()]
        if missing:
            raise ValueError(f"{', '.join(missing)} missing")
        seal = record.get(_SEAL)
        if not isinstance(seal, Mapping) or _digest(folder, record, files) != seal.get("sha256"):
            raise ValueError(
                "its seal does not match: model.json or an exported file was changed after export"
            )
    except (OSError, ValueError, TypeError) as exc:
        raise ExportError(
            f"{folder}: unusable exported model ({exc}); export it again with `neurofed export`"
        ) from None
    return record
