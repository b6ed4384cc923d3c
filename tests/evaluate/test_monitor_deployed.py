"""``neurofed monitor --job``: a deployed job's progress (as the admin API gives it) on the page,
polled in the background; no network, no NVFlare: the admin API is a fake."""

from __future__ import annotations

import json
import threading
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from neurofed.evaluate.monitor import (
    JobPoller,
    MonitorServer,
    deployed_status,
    run_status,
    start_job_monitor,
)
from neurofed.federated.engine.submit import StudyStatus, read_run_progress
from tests.browser import dump_dom
from tests.evaluate.runs import run_folder

#: Only a safety cap for waits on events; a busy machine makes the tests slower, never wrong.
CAP_S = 60.0


def _round(k: int, dice: dict[str, float], **states: Any) -> dict[str, Any]:
    """One history entry as the controller's progress answer holds it."""
    entry: dict[str, Any] = {
        "round": k,
        "targets": list(dice),
        "accepted": list(dice),
        "failed": {},
        "refused": {},
        "rejected": {},
        "dropped": [],
        "aggregated": True,
        "quorum_error": None,
        "metric": "WT/dice",
        "value": sum(dice.values()) / len(dice),
        "per_site": dict(dice),
        "seconds": 2.0 * k,
    }
    return entry | states


def _live(rounds_done: int, *, state: str = "training", **extra: Any) -> dict[str, Any]:
    """The controller's progress answer after ``rounds_done`` rounds of a 5-round study."""
    history = [_round(k, {"site-1": 0.1 * k, "site-2": 0.2 * k}) for k in range(1, rounds_done + 1)]
    progress = {"study": "gliomas", "rounds": 5, "state": state, "round": rounds_done + 1}
    return progress | {"live": ["site-1", "site-2"], "history": history, "summary": None} | extra


def _get(url: str) -> dict[str, Any]:
    with urllib.request.urlopen(url, timeout=CAP_S) as answer:
        return dict(json.loads(answer.read()))


class FakeJob:
    """The admin API as the poller sees it: the test sets what the next ask returns or raises."""

    def __init__(self, status: str = "RUNNING", progress: dict[str, Any] | None = None) -> None:
        self.answer = StudyStatus("job-7", status, progress or {})
        self.error: Exception | None = None
        self.asked = 0

    def __call__(self) -> StudyStatus:
        self.asked += 1
        if self.error is not None:
            raise self.error
        return self.answer


@contextmanager
def _polling(fake: FakeJob, site: str | None = None) -> Iterator[JobPoller]:
    poller = JobPoller(fake, site=site, interval_s=0.01)
    poller.start()
    try:
        yield poller
    finally:
        poller.stop()


# -- the progress → status mapping -----------------------------------------------------------------


def test_a_running_job_shows_rounds_sites_curves_and_time_left(tmp_path: Path) -> None:
    # Prepare: two rounds of five done; site-2 failed in round 2
    progress = _live(1)
    progress["history"].append(
        _round(
            2,
            {"site-1": 0.3},
            targets=["site-1", "site-2"],
            failed={"site-2": "out of memory"},
        )
    )
    job = StudyStatus("job-7", "RUNNING", progress)

    # Execute
    status = deployed_status(job)

    # Assert: the same keys as a run folder's status, so the page draws either
    assert set(status) == set(run_status(tmp_path / "no-run"))
    assert status["study"] == "gliomas" and status["state"] == "running"
    assert status["rounds"] == 5 and status["rounds_done"] == 2 and status["metric"] == "WT/dice"
    assert status["sites"] == {
        "site-1": {"state": "answered", "why": ""},
        "site-2": {"state": "failed", "why": "out of memory"},
    }
    assert status["curves"] == {
        "all sites": [(1, pytest.approx(0.15)), (2, 0.3)],
        "site-1": [(1, 0.1), (2, 0.3)],
        "site-2": [(1, 0.2)],
    }
    assert status["seconds_per_round"] == 3.0 and status["eta_seconds"] == 9.0
    assert status["reason"] is None and status["error"] is None
    json.dumps(status)


def test_a_finished_job_shows_what_its_run_folder_shows(tmp_path: Path) -> None:
    # Prepare: the run folder a finished job left, read as study_status reads a downloaded one
    run = run_folder(tmp_path / "run", {"site-1": [0.5, 0.6, 0.7], "site-2": [0.3, 0.35, 0.4]})
    job = StudyStatus("job-7", "FINISHED:COMPLETED", read_run_progress(run))

    # Execute
    deployed, on_disk = deployed_status(job), run_status(run)

    # Assert: what the lead sees through the admin API is what the run folder shows
    assert deployed["state"] == on_disk["state"] == "finished" and deployed["eta_seconds"] is None
    for key in ("study", "rounds_done", "metric", "sites", "curves", "seconds_per_round"):
        assert deployed[key] == on_disk[key], key
    assert deployed["rounds"] == 3  # from the run's summary


def test_a_stopped_run_says_why_and_a_job_without_a_run_says_so() -> None:
    # Prepare
    stopped = _live(1, state="stopped", reason="the run cannot start: no model at /nowhere")
    jobs = {
        "stopped": StudyStatus("job-7", "FINISHED:COMPLETED", stopped),
        "paused": StudyStatus("job-7", "FINISHED:COMPLETED", _live(2, state="stopped")),
        "no run": StudyStatus("job-8", "FINISHED:EXECUTION_EXCEPTION", {}),
        "queued": StudyStatus("job-9", "SUBMITTED", {}),
        "starting": StudyStatus("job-9", "RUNNING", {"state": "starting", "history": []}),
    }

    # Execute
    shown = {name: deployed_status(job) for name, job in jobs.items()}

    # Assert
    assert shown["stopped"]["state"] == "stopped" and shown["stopped"]["eta_seconds"] is None
    assert shown["stopped"]["reason"] == "the run cannot start: no model at /nowhere"
    assert shown["stopped"]["rounds_done"] == 1
    assert shown["paused"]["reason"] == (
        "it ended before its last round; submitting the study again resumes it"
    )
    assert shown["no run"]["state"] == "stopped" and shown["no run"]["study"] == "job job-8"
    assert shown["no run"]["reason"].startswith("job FINISHED:EXECUTION_EXCEPTION; no run progress")
    assert (shown["queued"]["state"], shown["queued"]["reason"]) == ("waiting", "job SUBMITTED")
    assert shown["starting"]["state"] == "starting" and shown["starting"]["rounds_done"] == 0


def test_a_site_view_shows_that_site_and_the_merged_curve_only() -> None:
    # Prepare: site-1 failed, with a reason naming it, and the run stopped for a reason
    progress = _live(2, state="stopped", reason="quorum not met: site-1 failed")
    progress["history"][-1]["failed"] = {"site-1": "out of memory"}
    job = StudyStatus("job-7", "FINISHED:COMPLETED", progress)

    # Execute
    custodian = deployed_status(job, site="site-2")

    # Assert: nothing of site-1, not even in the stop reason
    assert set(custodian["sites"]) == {"site-2"} and custodian["site_view"] == "site-2"
    assert set(custodian["curves"]) == {"all sites", "site-2"}
    assert custodian["reason"] is None and "site-1" not in json.dumps(custodian)


# -- the poller ------------------------------------------------------------------------------------


def test_the_status_advances_as_the_job_does_and_keeps_the_last_one_when_the_api_fails() -> None:
    fake = FakeJob(progress=_live(1))
    with _polling(fake) as poller:
        # Execute / Assert: each step waits for the poller to see it
        assert poller.wait_for(lambda s: s["rounds_done"] == 1, CAP_S)["state"] == "running"
        fake.answer = StudyStatus("job-7", "RUNNING", _live(2))
        poller.wait_for(lambda s: s["rounds_done"] == 2, CAP_S)

        fake.error = ConnectionError("server at localhost:8003 is gone")
        failing = poller.wait_for(lambda s: s["error"] is not None, CAP_S)
        assert failing["rounds_done"] == 2 and failing["state"] == "running"
        assert "server at localhost:8003 is gone" in failing["error"]
        assert "showing the status received at" in failing["error"]

        fake.error = None
        fake.answer = StudyStatus("job-7", "RUNNING", _live(3))
        back = poller.wait_for(lambda s: s["error"] is None, CAP_S)
        assert back["rounds_done"] == 3


def test_a_running_job_whose_run_stops_answering_keeps_its_last_status() -> None:
    # Prepare: the controller answered once, then NVFlare says RUNNING with no progress (the
    # server restarted under the job)
    fake = FakeJob(progress=_live(2))
    with _polling(fake) as poller:
        poller.wait_for(lambda s: s["rounds_done"] == 2, CAP_S)

        # Execute
        fake.answer = StudyStatus("job-7", "RUNNING", {})
        shown = poller.wait_for(lambda s: s["error"] is not None, CAP_S)

    # Assert
    assert shown["rounds_done"] == 2
    assert shown["error"].startswith("job job-7 is RUNNING but its run does not answer")


def test_polling_ends_once_the_job_ended_with_its_run() -> None:
    # Prepare: asked by hand (no thread)
    fake = FakeJob(status="SUBMITTED")
    poller = JobPoller(fake)

    # Execute / Assert: queued, running and a job that ended without a run go on; the end of a
    # job with its run's progress is final
    assert poller.poll() is False
    fake.answer = StudyStatus("job-7", "RUNNING", _live(1))
    assert poller.poll() is False
    fake.answer = StudyStatus("job-7", "FINISHED:COMPLETED", {})
    assert poller.poll() is False
    fake.answer = StudyStatus("job-7", "FINISHED:COMPLETED", _live(5, state="finished"))
    assert poller.poll() is True
    assert poller.latest()["state"] == "finished" and fake.asked == 4


def test_a_page_request_never_waits_on_the_admin_api() -> None:
    # Prepare: an admin API that hangs until the test lets it answer
    entered, release = threading.Event(), threading.Event()
    answer = StudyStatus("job-7", "RUNNING", _live(1))

    def hanging() -> StudyStatus:
        entered.set()
        release.wait(CAP_S)
        return answer

    server, thread = start_job_monitor(hanging, interval_s=0.01)
    try:
        assert entered.wait(CAP_S)

        # Execute: the page asks while the poller waits on the server
        during = _get(server.url + "status.json")
        release.set()
        assert isinstance(server, MonitorServer) and server.poller is not None
        server.poller.wait_for(lambda s: s["rounds_done"] == 1, CAP_S)
        after = _get(server.url + "status.json")
    finally:
        release.set()
        server.shutdown()
        thread.join()

    # Assert: an answer at once (the status before the first answer), then the job's
    assert during["state"] == "waiting" and during["rounds_done"] == 0
    assert after["state"] == "running" and after["rounds_done"] == 1
    assert server.poller is not None and not server.poller.running


@pytest.mark.slow
def test_the_page_shows_the_last_status_and_the_admin_api_error() -> None:
    # Prepare: two rounds seen, then the server stops answering
    fake = FakeJob(progress=_live(2))
    server, thread = start_job_monitor(fake, interval_s=0.01)
    try:
        assert server.poller is not None
        server.poller.wait_for(lambda s: s["rounds_done"] == 2, CAP_S)
        fake.error = ConnectionError("cannot reach the server at localhost:8003")
        server.poller.wait_for(lambda s: s["error"] is not None, CAP_S)

        # Execute
        page = dump_dom(server.url, virtual_time_ms=5000)
    finally:
        server.shutdown()
        thread.join()

    # Assert
    assert '<span id="round">2 / 5</span>' in page, page[:2000]
    assert '<span id="state">running</span>' in page
    assert "cannot reach the server at localhost:8003" in page.split('id="error"', 1)[1][:400]
    assert "<td>site-2</td><td>answered</td>" in page
