"""``neurofed monitor --job``: options, errors that say the fix, and SIGTERM stopping the poller
and the server; the admin API is a fake session (no server)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import neurofed.evaluate.monitor as monitor_module
import neurofed.federated.engine.submit as submit_module
from neurofed.cli.main import app
from neurofed.evaluate.monitor import MonitorServer

CAP_S = 60.0


class FakeSession:
    """The FLARE API session of a server that runs job ``job-7`` (round 1 of 3 done)."""

    def get_job_meta(self, job_id: str) -> dict[str, Any]:
        if job_id != "job-7":
            raise RuntimeError(f"job {job_id} does not exist")
        return {"status": "RUNNING"}

    def do_app_command(self, job_id: str, topic: str, data: dict[str, Any]) -> dict[str, Any]:
        entry = {"round": 1, "accepted": ["site-1"], "metric": "mae", "value": 4.0}
        return {"study": "age", "rounds": 3, "state": "training", "history": [entry]}


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> None:
    @contextmanager
    def session(kit: Path, *, timeout_s: float = 20.0) -> Iterator[FakeSession]:
        yield FakeSession()

    monkeypatch.setattr(submit_module, "admin_session", session)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["monitor", *args])


@pytest.mark.parametrize("args", [[], ["run-folder", "--job", "job-7", "--admin-kit", "kit"]])
def test_exactly_one_of_a_run_folder_and_a_job(args: list[str]) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert "give a run folder (RUN) or a deployed job (--job JOB_ID), exactly one" in result.output


def test_a_job_without_an_admin_kit_names_the_option_and_the_variable(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("NEUROFED_ADMIN_KIT", raising=False)
    result = _run("--job", "job-7")
    assert result.exit_code == 2
    assert "--job job-7 needs the admin kit" in result.output
    assert "--admin-kit" in result.output and "$NEUROFED_ADMIN_KIT" in result.output


def test_a_folder_that_is_no_admin_kit_is_refused(tmp_path: Path) -> None:
    result = _run("--job", "job-7", "--admin-kit", str(tmp_path))
    assert result.exit_code == 1
    assert "is not an admin kit" in result.output and "neurofed federation init" in result.output


def test_an_unknown_job_is_named_with_the_fix(fake_server: None, tmp_path: Path) -> None:
    result = _run("--job", "job-9", "--admin-kit", str(tmp_path))
    assert result.exit_code == 1
    assert "no job job-9 on this server" in result.output
    assert "the id `neurofed study submit` printed" in result.output


def test_sigterm_stops_the_poller_and_the_server(
    fake_server: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: keep the server the command starts; a placeholder SIGTERM handler until the
    # command installs its own
    started: list[MonitorServer] = []
    ready = threading.Event()
    real_start = monitor_module.start_job_monitor

    def start(*args: Any, **kwargs: Any) -> Any:
        server, thread = real_start(*args, **kwargs)
        started.append(server)
        ready.set()
        return server, thread

    monkeypatch.setattr(monitor_module, "start_job_monitor", start)
    placeholder = signal.signal(signal.SIGTERM, signal.SIG_IGN)
    seen: dict[str, Any] = {}

    def lead() -> None:
        """The lead looks at the status, then the service manager stops the monitor."""
        assert ready.wait(CAP_S)
        poller = started[0].poller
        assert poller is not None
        seen.update(poller.wait_for(lambda s: s["rounds_done"] == 1, CAP_S))
        with urllib.request.urlopen(started[0].url + "status.json", timeout=CAP_S) as answer:
            seen["page"] = json.loads(answer.read())
        began = time.monotonic()  # the event: the command's own handler is in place
        while signal.getsignal(signal.SIGTERM) is signal.SIG_IGN:
            assert time.monotonic() - began < CAP_S
            time.sleep(0.01)
        os.kill(os.getpid(), signal.SIGTERM)

    helper = threading.Thread(target=lead, daemon=True)
    helper.start()
    try:
        # Execute
        result = _run("--job", "job-7", "--admin-kit", str(tmp_path), "--port", "0")
    finally:
        signal.signal(signal.SIGTERM, placeholder)
    helper.join(CAP_S)

    # Assert: it followed the job, and SIGTERM ended the poller and the server
    assert result.exit_code == 0, result.output
    assert "monitoring job job-7 through" in result.output
    assert seen["page"]["study"] == "age" and seen["page"]["rounds_done"] == 1
    poller = started[0].poller
    assert poller is not None and not poller.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(started[0].url + "status.json", timeout=5)
