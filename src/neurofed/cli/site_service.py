"""``neurofed site start / stop / status``: a site's node as a background service.

Registered on ``neurofed site``. The kit is the folder ``neurofed site init`` installed
(``--kit``, else ``$NEUROFED_SITE_KIT``, else the current folder when it is a kit:
:func:`neurofed.cli.custodian.resolve_kit`); the process logic is
:mod:`neurofed.federated.engine.services`.
"""

from __future__ import annotations

from neurofed.cli.custodian import KitOption, resolve_kit
from neurofed.cli.server import (
    GraceOption,
    JsonOption,
    LinesOption,
    WaitOption,
    service_start,
    service_status,
    service_stop,
)
from neurofed.cli.site import site_app

__all__ = ["start", "status", "stop"]


@site_app.command("start")
def start(kit: KitOption = None, wait: WaitOption = 60.0) -> None:
    """Start this site's node in the background; ready once it registered with the server."""
    service_start(resolve_kit(kit), wait)


@site_app.command("stop")
def stop(kit: KitOption = None, grace: GraceOption = 10.0) -> None:
    """Stop this site's node and its job processes."""
    service_stop(resolve_kit(kit), grace)


@site_app.command("status")
def status(kit: KitOption = None, lines: LinesOption = 10, as_json: JsonOption = False) -> None:
    """Running or stopped, pid, log path and last log lines (exit 3 when stopped)."""
    service_status(resolve_kit(kit), lines, as_json)
