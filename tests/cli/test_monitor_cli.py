"""``neurofed monitor --job`` and ``--site-kit``: options, errors that say the fix, and SIGTERM
stopping the poller and the server; the admin API is a fake session (no server)."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
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


def _until_sigterm(
    monkeypatch: pytest.MonkeyPatch,
    module: Any,
    start_name: str,
    look: Callable[[MonitorServer], None],
    *args: str,
) -> tuple[Any, MonitorServer]:
    """Run ``neurofed monitor ARGS``; once it serves (``module.start_name`` patched to keep
    the server), ``look`` at it, then stop it with SIGTERM as a service manager would. A
    placeholder SIGTERM handler stands until the command installs its own."""
    started: list[MonitorServer] = []
    ready = threading.Event()
    real_start = getattr(module, start_name)

    def start(*a: Any, **k: Any) -> Any:
        server, thread = real_start(*a, **k)
        started.append(server)
        ready.set()
        return server, thread

    monkeypatch.setattr(module, start_name, start)
    placeholder = signal.signal(signal.SIGTERM, signal.SIG_IGN)

    failures: list[BaseException] = []
    returned = threading.Event()

    def helper() -> None:
        try:  # whatever happens, the command is stopped (a failure is raised below)
            if not ready.wait(CAP_S):
                raise AssertionError(f"the monitor did not start within {CAP_S} s")
            look(started[0])
        except BaseException as error:
            failures.append(error)
        # SIGTERM once the command's own handler is in place, again until the command returned
        # (the test restores the placeholder only after this thread ended)
        began = time.monotonic()
        while not returned.wait(0.05) and time.monotonic() - began < CAP_S:
            if signal.getsignal(signal.SIGTERM) is not signal.SIG_IGN:
                os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=helper, daemon=True)
    thread.start()
    try:
        result = _run(*args)
    finally:
        returned.set()
        thread.join(CAP_S)
        signal.signal(signal.SIGTERM, placeholder)
    if failures:
        raise failures[0]
    return result, started[0]


@pytest.mark.parametrize(
    "args",
    [
        [],
        ["run-folder", "--job", "job-7", "--admin-kit", "kit"],
        ["--job", "job-7", "--site-kit", "kit"],
    ],
)
def test_exactly_one_of_a_run_folder_a_job_and_a_site_kit(args: list[str]) -> None:
    result = _run(*args)
    assert result.exit_code == 2
    assert "give a run folder (RUN), a deployed job (--job JOB_ID) or a site's kit" in " ".join(
        result.output.split()
    )


def test_a_site_kit_without_a_site_config_names_the_file_and_the_fix(tmp_path: Path) -> None:
    result = _run("--site-kit", str(tmp_path))
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "neurofed_site.json: no site config" in output
    assert "give --site-kit the site's kit folder or its site config" in output


def test_a_custodian_sees_its_sites_progress_from_its_kit(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a kit whose site config points at a state folder with one study's progress
    import neurofed.evaluate.monitor_site as site_module
    from neurofed.federated.site import SiteConfig
    from neurofed.federated.site.progress import SiteProgress

    config = SiteConfig(tmp_path / "data", state_dir=tmp_path / "state")
    config.write(tmp_path / "kit" / "local" / "neurofed_site.json")
    view = SiteProgress(
        tmp_path / "state" / "ab",
        "site-4",
        study="age",
        study_hash="ab" * 32,
        rounds=2,
        metric="mae",
    )
    view.begin(1, "validate")
    view.done(1, "validate", error=None, seconds=1.0, numbers={"value": 3.0})
    seen: dict[str, Any] = {}

    def custodian(server: MonitorServer) -> None:
        with urllib.request.urlopen(server.url + "status.json", timeout=CAP_S) as answer:
            seen.update(json.loads(answer.read()))

    # Execute
    result, server = _until_sigterm(
        monkeypatch,
        site_module,
        "start_site_monitor",
        custodian,
        "--site-kit",
        str(tmp_path / "kit"),
        "--port",
        "0",
    )

    # Assert
    assert result.exit_code == 0, result.output
    assert "monitoring site kit" in result.output
    assert seen["study"] == "age" and set(seen["sites"]) == {"site-4"}
    assert seen["curves"]["site-4"] == [[1, 3.0]]
    with pytest.raises(urllib.error.URLError):  # SIGTERM stopped it
        urllib.request.urlopen(server.url + "status.json", timeout=5)


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
    seen: dict[str, Any] = {}

    def lead(server: MonitorServer) -> None:
        """The lead looks at the status (then the service manager stops the monitor)."""
        assert server.poller is not None
        seen.update(server.poller.wait_for(lambda s: s["rounds_done"] == 1, CAP_S))
        with urllib.request.urlopen(server.url + "status.json", timeout=CAP_S) as answer:
            seen["page"] = json.loads(answer.read())

    # Execute
    result, started = _until_sigterm(
        monkeypatch,
        monitor_module,
        "start_job_monitor",
        lead,
        "--job",
        "job-7",
        "--admin-kit",
        str(tmp_path),
        "--port",
        "0",
    )

    # Assert: it followed the job, and SIGTERM ended the poller and the server
    assert result.exit_code == 0, result.output
    assert "monitoring job job-7 through" in result.output
    assert seen["page"]["study"] == "age" and seen["page"]["rounds_done"] == 1
    poller = started.poller
    assert poller is not None and not poller.running
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(started.url + "status.json", timeout=5)
