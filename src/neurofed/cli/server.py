"""``neurofed server start / stop / status``: the coordinator's server as a background service.

The server runs from its kit (``<federation>/server``, written by ``neurofed federation init``);
``--kit`` defaults to ``$NEUROFED_SERVER_KIT``. Exit status: 0 done, 1 it failed (the message
says why and where the log is).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neurofed.cli.console import console, print_error

if TYPE_CHECKING:
    from neurofed.federated.engine.services import ServiceStatus

__all__ = ["render_service", "server_app", "service_start", "service_status", "service_stop"]

#: The environment variable naming the server's kit folder (read by the CLI only).
SERVER_KIT_ENV = "NEUROFED_SERVER_KIT"

server_app = typer.Typer(
    rich_markup_mode=None,  # plain help: option names are never cut to fit the terminal
    help="Coordinator: run the federation's server from its kit, in the background.",
)

ServerKitOption = Annotated[
    Path,
    typer.Option(
        "--kit",
        envvar=SERVER_KIT_ENV,
        help=f"The server's kit folder (<federation>/server) [env: ${SERVER_KIT_ENV}].",
    ),
]
WaitOption = Annotated[
    float,
    typer.Option("--wait", help="Seconds to wait until it is ready (0: return at once)."),
]
GraceOption = Annotated[
    float,
    typer.Option("--grace", help="Seconds between the polite stop (SIGTERM) and SIGKILL."),
]
LinesOption = Annotated[int, typer.Option("--lines", "-n", help="Last log lines to show.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def render_service(status: ServiceStatus, *, as_json: bool = False) -> None:
    """Print running/stopped, pid, log path and the last log lines."""
    if as_json:
        typer.echo(json.dumps(status.to_json(), indent=2))
        return
    kit = status.kit
    state = "[green]running[/green]" if status.running else "[yellow]stopped[/yellow]"
    pid = f" (pid {status.pid}" + (f", started {status.started})" if status.started else ")")
    console.print(
        f"{kit.role.value} {kit.name!r}: {state}{pid if status.pid else ''}", soft_wrap=True
    )
    console.print(f"  kit:     {kit.path}", soft_wrap=True)
    console.print(f"  log:     {status.log}", soft_wrap=True)
    console.print(f"  console: {status.console}", soft_wrap=True)
    if status.last_lines:
        console.print("  last log lines:")
        for line in status.last_lines:
            console.print(f"    {line}", soft_wrap=True, markup=False, highlight=False)


def _fail(message: str) -> typer.Exit:
    print_error(message)
    return typer.Exit(1)


def service_start(kit: Path, wait: float) -> None:
    """Start the participant of ``kit`` and report (shared by ``server`` and ``site``)."""
    from neurofed.federated.engine.services import ServiceError, start_service

    try:
        status = start_service(kit, wait_s=wait)
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    what = "ready" if wait > 0 else "started"
    console.print(
        f"{status.kit.role.value} {status.kit.name!r} {what} (pid {status.pid}); log: {status.log}",
        soft_wrap=True,
    )


def service_stop(kit: Path, grace: float) -> None:
    """Stop the participant of ``kit`` and its job processes."""
    from neurofed.federated.engine.services import ServiceError, stop_service

    try:
        status = stop_service(kit, grace_s=grace)
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    console.print(f"{status.kit.role.value} {status.kit.name!r} stopped", soft_wrap=True)


def service_status(kit: Path, lines: int, as_json: bool) -> None:
    """Report whether the participant of ``kit`` runs; exit 3 when it does not."""
    from neurofed.federated.engine.services import ServiceError
    from neurofed.federated.engine.services import service_status as read_status

    try:
        status = read_status(kit, lines=lines)
    except ServiceError as exc:
        raise _fail(str(exc)) from None
    render_service(status, as_json=as_json)
    if not status.running:
        raise typer.Exit(3)


@server_app.command("start")
def start(kit: ServerKitOption, wait: WaitOption = 60.0) -> None:
    """Start the server in the background (NVFlare's server, mutual TLS on both ports)."""
    service_start(kit, wait)


@server_app.command("stop")
def stop(kit: ServerKitOption, grace: GraceOption = 10.0) -> None:
    """Stop the server and its job processes (a running study resumes when resubmitted)."""
    service_stop(kit, grace)


@server_app.command("status")
def status(kit: ServerKitOption, lines: LinesOption = 10, as_json: JsonOption = False) -> None:
    """Running or stopped, pid, log path and last log lines (exit 3 when stopped)."""
    service_status(kit, lines, as_json)
