"""Keep OpenVINO and NNCF from sending usage telemetry: nothing leaves the hospital's machine.

Both ``openvino`` (its model converter, ``openvino.tools.ovc``) and ``nncf`` report usage to
Google Analytics through the ``openvino-telemetry`` package, which they install. Its
``Telemetry`` is created by both with ``enable_opt_in_dialog=False``, which means *opt-out*: it
sends unless the consent file ``~/intel/openvino_telemetry`` holds ``0`` (what
``opt_in_out --opt_out`` writes) or, with ``disable_in_ci=True``, ``CI=true`` is set. Both
packages fall back to a do-nothing stub when ``import openvino_telemetry`` fails
(``openvino.tools.ovc.telemetry_stub``; NNCF's ``NNCFTelemetryStub``).

:func:`disable_telemetry` makes that import fail in this process — ``sys.modules
["openvino_telemetry"] = None`` — before openvino or nncf is imported, so the stubs are used and
no telemetry object exists; it touches no file in the user's home and no process-wide setting
other code reads. If openvino's converter or nncf was already imported with telemetry, its
``Telemetry`` singleton is switched off too (``consent = False`` and its send methods replaced
by no-ops). Every function of :mod:`neurofed.export` calls it before importing openvino or
nncf.

Examples
--------
>>> disable_telemetry()
>>> import importlib
>>> try:
...     importlib.import_module("openvino_telemetry")
... except ImportError:
...     print("blocked")
blocked
"""

from __future__ import annotations

import sys
from typing import Any

__all__ = ["TELEMETRY_MODULE", "disable_telemetry"]

#: The package openvino and nncf send usage data with.
TELEMETRY_MODULE = "openvino_telemetry"
_SENDERS = (
    "send_event",
    "send_error",
    "send_stack_trace",
    "send_opt_in_event",
    "start_session",
    "end_session",
    "force_shutdown",
)


def _silent(*args: Any, **kwargs: Any) -> None:
    return None


def disable_telemetry() -> None:
    """Block ``openvino_telemetry`` in this process (see the module docstring); idempotent."""
    loaded = sys.modules.get(TELEMETRY_MODULE)
    if loaded is not None:  # imported already (by openvino's converter or nncf): switch it off
        telemetry = getattr(loaded, "Telemetry", None)
        if telemetry is not None:
            for name in _SENDERS:
                if hasattr(telemetry, name):
                    setattr(telemetry, name, _silent)
            instance = getattr(telemetry, "_SingletonMetaClass__single_instance", None)
            if instance is not None:
                instance.consent = False
    sys.modules[TELEMETRY_MODULE] = None  # type: ignore[assignment]
