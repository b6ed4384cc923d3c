"""``neurofed monitor --job`` and ``--site-kit``: options, errors that say the fix, and SIGTERM
stopping the poller and the server; the admin API is a fake session (no server)."""

from __future__ import annotations

import json
import os
import queue
import re
import signal
import subprocess
import sys
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

import neurofed.federated.engine.submit as submit_module
from neurofed.cli.main import app

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


@contextmanager
def fake_admin_session(kit: Path, *, timeout_s: float = 20.0) -> Iterator[FakeSession]:
    """``admin_session``'s stand-in: the fake session, whatever the kit."""
    yield FakeSession()


@pytest.fixture
def fake_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(submit_module, "admin_session", fake_admin_session)


def _run(*args: str) -> Any:
    return CliRunner().invoke(app, ["monitor", *args])


#: ``neurofed monitor`` in a process of its own, its admin API the fake session above.
_DRIVER = """
import sys

import neurofed.federated.engine.submit as submit
from neurofed.cli.main import app
from tests.cli.test_monitor_cli import fake_admin_session

submit.admin_session = fake_admin_session
app(["monitor", *sys.argv[1:]], prog_name="neurofed")
"""
#: The repository root, where the driver imports this module from.
_ROOT = Path(__file__).resolve().parents[2]


def _until_sigterm(
    tmp_path: Path, look: Callable[[str], dict[str, Any]], *args: str
) -> tuple[int, str, str, dict[str, Any]]:
    """Run ``neurofed monitor ARGS`` as a service manager would, in a process of its own;
    once it serves, ``look`` at its page (``look(url)``), then stop it with SIGTERM. Returns
    its exit code, output, URL and what ``look`` saw. (The signal goes to that process, never
    to the test's.)"""
    driver = tmp_path / "monitor_driver.py"
    driver.write_text(_DRIVER, encoding="utf-8")
    process = subprocess.Popen(
        [sys.executable, str(driver), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": os.pathsep.join([str(_ROOT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    lines: queue.Queue[str] = queue.Queue()
    reader = threading.Thread(target=lambda: [lines.put(line) for line in process.stdout or ()])
    reader.start()
    output: list[str] = []
    try:
        url = None
        while url is None:  # the event: it says where it serves
            try:
                output.append(lines.get(timeout=CAP_S))
            except queue.Empty:
                raise AssertionError(f"the monitor did not start within {CAP_S} s") from None
            found = re.search(r"at (http://\S+/) \(Ctrl-C stops\)", output[-1])
            url = found.group(1) if found else None
            assert process.poll() is None or not lines.empty(), "".join(output)
        seen = look(url)
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=CAP_S)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        reader.join(CAP_S)
    while not lines.empty():
        output.append(lines.get())
    return code, "".join(output), url, seen


def _status(url: str, ready: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
    """The page's status once ``ready`` holds (the monitor polls its source in the
    background)."""
    began = time.monotonic()
    while True:
        with urllib.request.urlopen(url + "status.json", timeout=CAP_S) as answer:
            status = json.loads(answer.read())
        if ready(status):
            return status
        assert time.monotonic() - began < CAP_S, status
        time.sleep(0.1)


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


def test_sigterm_is_handled_before_the_monitor_starts_serving(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: see which SIGTERM handler stands when the server is started (then fail the
    # start, so the command returns); the test's own handler is restored afterwards
    import neurofed.evaluate.monitor as monitor_module

    seen: list[Any] = []

    def start(*args: Any, **kwargs: Any) -> Any:
        seen.append(signal.getsignal(signal.SIGTERM))
        raise OSError(98, "Address already in use")

    monkeypatch.setattr(monitor_module, "start_monitor", start)
    before = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        # Execute
        result = _run(str(tmp_path), "--port", "1")
    finally:
        signal.signal(signal.SIGTERM, before)
    # Assert: a SIGTERM while it starts stops it cleanly instead of killing it
    assert result.exit_code == 2, result.output
    assert seen and seen[0] not in (signal.SIG_DFL, signal.SIG_IGN, None)


def test_a_site_kit_without_a_site_config_names_the_file_and_the_fix(tmp_path: Path) -> None:
    result = _run("--site-kit", str(tmp_path))
    output = " ".join(result.output.split())
    assert result.exit_code == 2
    assert "neurofed_site.json: no site config" in output
    assert "give --site-kit the site's kit folder or its site config" in output


def test_a_custodian_sees_its_sites_progress_from_its_kit(tmp_path: Path) -> None:
    # Prepare: a kit whose site config points at a state folder with one study's progress
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

    # Execute
    code, output, url, seen = _until_sigterm(
        tmp_path,
        lambda url: _status(url, lambda s: bool(s.get("sites"))),
        "--site-kit",
        str(tmp_path / "kit"),
        "--port",
        "0",
    )

    # Assert
    assert code == 0, output
    assert "monitoring site kit" in output
    assert seen["study"] == "age" and set(seen["sites"]) == {"site-4"}
    assert seen["curves"]["site-4"] == [[1, 3.0]]
    with pytest.raises(urllib.error.URLError):  # SIGTERM stopped it
        urllib.request.urlopen(url + "status.json", timeout=5)


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


def test_sigterm_stops_the_poller_and_the_server(tmp_path: Path) -> None:
    # Execute: the lead looks at the status once the poller read round 1, then the service
    # manager stops the monitor
    code, output, url, seen = _until_sigterm(
        tmp_path,
        lambda url: _status(url, lambda s: s.get("rounds_done") == 1),
        "--job",
        "job-7",
        "--admin-kit",
        str(tmp_path),
        "--port",
        "0",
    )

    # Assert: it followed the job, and SIGTERM ended the process (poller and server with it)
    assert code == 0, output
    assert "monitoring job job-7 through" in " ".join(output.split())
    assert seen["study"] == "age" and seen["rounds_done"] == 1
    with pytest.raises(urllib.error.URLError):
        urllib.request.urlopen(url + "status.json", timeout=5)
