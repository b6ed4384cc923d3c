"""Ctrl-C or SIGTERM on `neurofed simulate` stops every process it started, and the run resumes.

NVFlare starts the simulator in a session of its own, so a terminal's Ctrl-C never reaches its
processes: the command must end them itself. Each test starts the real command, waits for an
event (round 1 checkpointed), signals it, and checks that nothing it started is left running.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest

from neurofed.federated.engine.services import descendants
from neurofed.federated.server import FederatedRun, latest_round_checkpoint
from tests.federated.conftest import tiny_study

pytestmark = pytest.mark.slow

#: Only a safety net: the tests wait for events, and fail fast if the command ends early.
_SAFETY_S = 420


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state not in ("Z", "X")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_a_signal_stops_every_simulator_process_and_the_run_resumes(
    sig: signal.Signals, age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: a long study, started as a user would
    study = tiny_study(rounds=40, min_sites=1)
    study_file = tmp_path / "study.toml"
    study_file.write_text(study.to_toml(), encoding="utf-8")
    run = tmp_path / "run"
    command = [shutil.which("neurofed") or "neurofed", "simulate", str(study_file)]
    command += [a for s in age_sites for a in ("--site", str(s))] + ["--out", str(run)]
    log = (tmp_path / "console.txt").open("w")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    try:
        began = time.monotonic()
        while latest_round_checkpoint(run) is None:  # the event: round 1 is on disk
            assert process.poll() is None, (tmp_path / "console.txt").read_text()[-2000:]
            assert time.monotonic() - began < _SAFETY_S, "round 1 never finished"
            time.sleep(0.2)
        started = descendants(process.pid)
        assert len(started) >= 3  # the simulator, its server and a process per site
        # Execute
        signalled = time.monotonic()
        process.send_signal(sig)
        code = process.wait(timeout=60)
        while any(_alive(p) for p in started) and time.monotonic() - signalled < 60:
            time.sleep(0.1)
        stopped_after = time.monotonic() - signalled
    finally:
        if process.poll() is None:
            process.kill()
        for pid in descendants(process.pid) if process.poll() is None else []:
            os.kill(pid, signal.SIGKILL)
        log.close()
    # Assert: everything it started is gone (how fast is measured, not asserted: a busy machine
    # only slows it), it says how to resume, and it resumes
    output = (tmp_path / "console.txt").read_text()
    assert code == 130, output[-2000:]
    assert [p for p in started if _alive(p)] == [], f"still running {stopped_after:.1f} s after"
    print(f"[measured] every process stopped {stopped_after:.1f} s after the signal")
    assert "interrupted" in output and "to resume" in output
    assert FederatedRun(study, run).start(["site-1", "site-2"]) >= 2
