"""Participants as background services: start, stop and inspect a server or site from its kit.

:func:`start_service` runs NVFlare's own entry point the way the kit's ``startup/sub_start.sh``
does (``nvflare.private.fed.app.server.server_train`` or ``…client.client_train`` with
``-m <kit> -s fed_server.json|fed_client.json --set secure_train=true …``), but from Python with
the current interpreter, in a new session (its own process group), without ``sub_start.sh``'s
restart loop. A site sends its heartbeat every 5 s instead of NVFlare's 10 s
(``heart_beat_interval``): the server's ``heart_beat_timeout`` must outlast a few late
heartbeats, so this is what lets a federation notice a dead site within 15-20 s without dropping
live ones. What it leaves in the kit::

    <kit>/neurofed/service.json   pid, command, start time, log paths (the "pid file")
    <kit>/neurofed/console.txt    the process's stdout and stderr
    <kit>/log.txt                 NVFlare's log (rotated by NVFlare at 20 MB)

:func:`stop_service` ends the whole tree: NVFlare starts every job in a new session of its own
(``posix_spawn(..., setsid=True)``), so signalling the participant's process group alone would
leave its job processes running; the descendants are collected first, then sent ``SIGTERM``, and
whatever is left after the grace period ``SIGKILL``. :func:`service_status` says whether the
participant runs, with its pid, log and last log lines.

A server is ready when NVFlare logs ``Server started`` (both ports listen); a site when it logs
that it registered with the server (its certificate chained to the project CA and the server's
to its own).
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.federated.engine.provision import (
    CLIENT_HEARTBEAT_INTERVAL_S as SITE_HEARTBEAT_S,
)
from neurofed.federated.engine.provision import KIT_FOLDER, configure_server_kit

__all__ = [
    "SERVICE_FILE",
    "Kit",
    "Role",
    "ServiceError",
    "ServiceStatus",
    "descendants",
    "inspect_kit",
    "kill_tree",
    "service_status",
    "start_service",
    "stop_processes",
    "stop_service",
    "wait_ready",
]

SERVICE_FILE = "service.json"
CONSOLE_FILE = "console.txt"
NVFLARE_LOG = "log.txt"
_FORMAT = 1
#: Lines NVFlare 2.9 logs when a participant is up.
_READY = {"server": "Server started", "site": "Successfully registered client"}
_ENTRY = {
    "server": "nvflare.private.fed.app.server.server_train",
    "site": "nvflare.private.fed.app.client.client_train",
}
# Processes started by this Python process: polled so that a dead one is reaped, not a zombie.
_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}


class Role(StrEnum):
    """What a kit runs."""

    SERVER = "server"
    SITE = "site"


class ServiceError(RuntimeError):
    """A participant cannot be started or stopped; the message says why and what to do."""


@dataclass(frozen=True)
class Kit:
    """An NVFlare startup kit of a server or a site."""

    path: Path
    role: Role
    name: str
    org: str

    @property
    def service_file(self) -> Path:
        return self.path / KIT_FOLDER / SERVICE_FILE

    @property
    def console(self) -> Path:
        return self.path / KIT_FOLDER / CONSOLE_FILE

    @property
    def log(self) -> Path:
        return self.path / NVFLARE_LOG

    def command(self, python: str = sys.executable) -> list[str]:
        """The command that runs this participant (as ``startup/sub_start.sh`` does)."""
        config = "fed_server.json" if self.role is Role.SERVER else "fed_client.json"
        options = ["secure_train=true", "config_folder=config", f"org={self.org}"]
        if self.role is Role.SITE:
            options[1:1] = [f"uid={self.name}", f"heart_beat_interval={SITE_HEARTBEAT_S:g}"]
        return [
            python,
            "-u",
            "-m",
            _ENTRY[self.role.value],
            "-m",
            str(self.path),
            "-s",
            config,
            "--set",
            *options,
        ]


@dataclass(frozen=True)
class ServiceStatus:
    """Whether a participant runs, and where to look."""

    kit: Kit
    running: bool
    pid: int | None
    started: str | None
    log: Path
    console: Path
    last_lines: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return {
            "kit": str(self.kit.path),
            "role": self.kit.role.value,
            "name": self.kit.name,
            "running": self.running,
            "pid": self.pid,
            "started": self.started,
            "log": str(self.log),
            "console": str(self.console),
            "last_lines": list(self.last_lines),
        }


def _certificate_names(path: Path) -> tuple[str, str]:
    from cryptography import x509
    from cryptography.x509.oid import NameOID

    cert = x509.load_pem_x509_certificate(path.read_bytes())

    def first(oid: x509.ObjectIdentifier) -> str:
        values = cert.subject.get_attributes_for_oid(oid)
        return str(values[0].value) if values else ""

    return first(NameOID.COMMON_NAME), first(NameOID.ORGANIZATION_NAME)


def inspect_kit(path: Path) -> Kit:
    """What the kit at ``path`` runs (read from its ``startup/`` folder).

    Raises
    ------
    ServiceError
        ``path`` is no server or site kit.
    """
    path = Path(path).resolve()
    startup = path / "startup"
    if (startup / "fed_server.json").is_file():
        role, cert = Role.SERVER, startup / "server.crt"
    elif (startup / "fed_client.json").is_file():
        role, cert = Role.SITE, startup / "client.crt"
    else:
        raise ServiceError(
            f"{path} is not a server or site kit (no startup/fed_server.json or "
            "startup/fed_client.json); give the folder that holds startup/"
        )
    if not cert.is_file():
        raise ServiceError(f"{cert} is missing: the kit is incomplete; ask for a new bundle")
    name, org = _certificate_names(cert)
    if not name or not org:
        raise ServiceError(f"{cert} names no participant (common name and organisation)")
    return Kit(path, role, name, org)


# -- processes ---------------------------------------------------------------------------------


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """(state, parent pid) of ``pid`` from ``/proc``; ``None`` if there is no such process."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    child = _CHILDREN.get(pid)
    if child is not None and child.poll() is not None:
        return False
    if Path("/proc").is_dir():
        stat = _proc_stat(pid)
        return stat is not None and stat[0] not in ("Z", "X")
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (Linux ``/proc``; empty elsewhere)."""
    proc = Path("/proc")
    if not proc.is_dir():
        return []
    children: dict[int, list[int]] = {}
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        stat = _proc_stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[1], []).append(int(entry.name))
    found: list[int] = []
    todo = [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def _signal(pids: Sequence[int], sig: signal.Signals) -> None:
    for pid in pids:
        for send in (os.killpg, os.kill):  # its group (a session leader's) first, then itself
            with contextlib.suppress(ProcessLookupError, PermissionError):
                send(pid, sig)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid``, whatever session it started (Linux ``/proc``)."""
    return _descendants(pid)


def stop_processes(pids: Sequence[int], *, grace_s: float = 5.0) -> list[int]:
    """``SIGTERM`` ``pids`` (and their process groups), ``SIGKILL`` what is left after
    ``grace_s`` seconds; returns the pids that had to be killed."""
    pids = [p for p in pids if _alive(p)]
    _signal(pids, signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    while time.monotonic() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)
    left = [p for p in pids if _alive(p)]
    _signal(left, signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(p) for p in left):
        time.sleep(0.05)
    return left


def kill_tree(pid: int, *, grace_s: float = 10.0) -> list[int]:
    """End ``pid``, its process group and every descendant; returns the pids that were signalled.

    ``SIGTERM`` first; ``SIGKILL`` to what is left after ``grace_s`` seconds (``0``: at once,
    which is how a crash looks to the rest of the federation).
    """
    tree = [pid, *_descendants(pid)]
    if grace_s > 0:
        _signal(tree, signal.SIGTERM)
        deadline = time.monotonic() + grace_s
        while time.monotonic() < deadline and any(_alive(p) for p in tree):
            time.sleep(0.1)
    left = [p for p in tree if _alive(p)]
    _signal(left + [p for p in _descendants(pid) if p not in left], signal.SIGKILL)
    deadline = time.monotonic() + 5.0
    while time.monotonic() < deadline and any(_alive(p) for p in tree):
        time.sleep(0.05)
    child = _CHILDREN.pop(pid, None)
    if child is not None:
        child.wait(timeout=5)
    return tree


# -- the service file --------------------------------------------------------------------------


def _read_service(kit: Kit) -> dict[str, Any]:
    try:
        data = json.loads(kit.service_file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def _running_pid(kit: Kit) -> int | None:
    """The pid of this kit's participant if it runs (the service file's, checked live)."""
    record = _read_service(kit)
    pid = record.get("pid")
    if not isinstance(pid, int) or record.get("stopped") or not _alive(pid):
        return None
    if pid in _CHILDREN:  # ours (its cmdline may still be ours too, before its exec)
        return pid
    cmdline = Path(f"/proc/{pid}/cmdline")
    if cmdline.is_file():  # guard against a recycled pid
        try:
            words = cmdline.read_bytes().split(b"\0")
        except OSError:
            return None
        if str(kit.path).encode() not in words:
            return None
    return pid


def _tail(path: Path, lines: int) -> list[str]:
    if lines <= 0 or not path.is_file():
        return []
    with path.open("rb") as handle:
        handle.seek(0, os.SEEK_END)
        size = handle.tell()
        handle.seek(max(0, size - 200 * lines - 4096))
        text = handle.read().decode("utf-8", errors="replace")
    return text.splitlines()[-lines:]


def service_status(path: Path, *, lines: int = 10) -> ServiceStatus:
    """Whether the participant of the kit at ``path`` runs, with its last ``lines`` log lines."""
    kit = inspect_kit(path)
    pid = _running_pid(kit)
    record = _read_service(kit)
    return ServiceStatus(
        kit=kit,
        running=pid is not None,
        pid=pid if pid is not None else record.get("pid"),
        started=record.get("started"),
        log=kit.log,
        console=kit.console,
        last_lines=_tail(kit.log, lines),
    )


def _log_size(kit: Kit) -> int:
    try:
        return kit.log.stat().st_size
    except OSError:
        return 0


def wait_ready(path: Path, *, timeout_s: float = 60.0, log_offset: int = 0) -> float:
    """Wait until the participant of the kit at ``path`` is ready; returns the seconds waited.

    Raises
    ------
    ServiceError
        It stopped, or it is not ready after ``timeout_s`` (the message has its last log lines).
    """
    kit = inspect_kit(path)
    marker = _READY[kit.role.value]
    began = time.monotonic()
    while True:
        pid = _running_pid(kit)
        if kit.log.is_file():
            with kit.log.open("rb") as handle:
                handle.seek(log_offset if _log_size(kit) >= log_offset else 0)
                if marker.encode() in handle.read():
                    return time.monotonic() - began
        if pid is None:
            shown = "\n".join(_tail(kit.console, 15) or _tail(kit.log, 15))
            raise ServiceError(
                f"the {kit.role.value} {kit.name!r} stopped while starting; its output "
                f"({kit.console}):\n{shown}"
            )
        if time.monotonic() - began > timeout_s:
            what = (
                "registered with the server: is the server running and reachable, and is "
                "this kit from the same federation?"
                if kit.role is Role.SITE
                else "started"
            )
            raise ServiceError(
                f"the {kit.role.value} {kit.name!r} (pid {pid}) has not {what} after "
                f"{timeout_s:g} s; it keeps trying in the background. Last lines of {kit.log}:\n"
                + "\n".join(_tail(kit.log, 10))
            )
        time.sleep(0.2)


def start_service(
    path: Path,
    *,
    wait_s: float = 60.0,
    env: Mapping[str, str] | None = None,
    python: str = sys.executable,
) -> ServiceStatus:
    """Start the participant of the kit at ``path`` in the background.

    Parameters
    ----------
    path
        A server or site kit (the folder holding ``startup/``).
    wait_s
        Wait this long for it to be ready (``0``: return at once).
    env
        Extra environment variables of the process.
    python
        The interpreter (it must have ``nvflare`` and ``neurofed`` installed).

    Raises
    ------
    ServiceError
        It already runs, it stopped while starting, or it is not ready after ``wait_s``.
    """
    kit = inspect_kit(path)
    running = _running_pid(kit)
    if running is not None:
        raise ServiceError(
            f"the {kit.role.value} {kit.name!r} already runs (pid {running}); stop it first "
            f"with `neurofed {kit.role.value} stop --kit {kit.path}`"
        )
    if kit.role is Role.SERVER:
        configure_server_kit(kit.path)
    (kit.path / KIT_FOLDER).mkdir(parents=True, exist_ok=True)
    (kit.path / "transfer").mkdir(exist_ok=True)
    command = kit.command(python)
    offset = _log_size(kit)
    child_env = {**os.environ, "MALLOC_ARENA_MAX": os.environ.get("MALLOC_ARENA_MAX", "4")}
    child_env.update(env or {})
    started = datetime.now(UTC).isoformat(timespec="seconds")
    with kit.console.open("ab") as console:
        console.write(f"--- {started} {' '.join(command)}\n".encode())
        console.flush()
        process = subprocess.Popen(
            command,
            cwd=kit.path,
            stdin=subprocess.DEVNULL,
            stdout=console,
            stderr=subprocess.STDOUT,
            env=child_env,
            start_new_session=True,
        )
    _CHILDREN[process.pid] = process
    write_json_atomically(
        kit.service_file,
        {
            "format": _FORMAT,
            "role": kit.role.value,
            "name": kit.name,
            "pid": process.pid,
            "started": started,
            "command": command,
            "log": str(kit.log),
            "console": str(kit.console),
        },
    )
    if wait_s > 0:
        wait_ready(kit.path, timeout_s=wait_s, log_offset=offset)
    return service_status(kit.path)


def stop_service(path: Path, *, grace_s: float = 10.0) -> ServiceStatus:
    """Stop the participant of the kit at ``path`` (and its job processes); a no-op if stopped.

    ``grace_s``: seconds between ``SIGTERM`` and ``SIGKILL`` (``0``: kill at once).
    """
    kit = inspect_kit(path)
    pid = _running_pid(kit)
    if pid is not None:
        kill_tree(pid, grace_s=grace_s)
    record = _read_service(kit)
    if record and not record.get("stopped"):
        record["stopped"] = datetime.now(UTC).isoformat(timespec="seconds")
        write_json_atomically(kit.service_file, record)
    return service_status(kit.path)
