"""The study lead's side of a deployed federation: submit a study, follow it, download its run.

Everything goes through the FLARE API with the coordinator's admin kit
(``nvflare.fuel.flare_api.flare_api.new_secure_session``: mutual TLS with the admin's
certificate):

- :func:`submit_study` exports the study's config-only job
  (:func:`~neurofed.federated.engine.job.build_job`, tuned for dead-site detection) and
  submits it; the server keeps the run folder in its workspace under the run name, so
  submitting the same study again resumes it;
- :func:`study_status` is the job's NVFlare status plus the run's progress per round and site:
  while the job runs, straight from its controller (FLARE API app command
  ``neurofed.progress``, the controller's memory — no log parsing); once it ended, from the run
  folder the job left (downloaded), so the answer does not depend on log formats or on the job
  still running;
- :func:`download_run` puts the run folder (``model/``, ``rounds/``, ``summary.json`` …) of a
  finished job under a folder of the coordinator's;
- :func:`follow_study` waits for a run to finish and keeps it going: a site that was dropped and
  has registered again (restarted) is brought back by pausing the job after the current round
  and submitting the study again (NVFlare 2.9 never deploys a running job to a site that
  registers again), and a job abandoned because the server restarted is resubmitted once the
  server is back; both resume at the round after the last checkpoint.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurofed.federated.engine.job import build_job, job_name
from neurofed.federated.engine.run_progress import (
    PAUSE_TOPIC,
    PROGRESS_TOPIC,
    RESULT_FOLDER,
    check_run_name,
    default_run_name,
    round_summary,
)
from neurofed.federated.server.run_folder import ROUNDS, SUMMARY, RoundRecord
from neurofed.federated.study import Study

__all__ = [
    "AdminKit",
    "StudyStatus",
    "SubmitError",
    "admin_session",
    "download_run",
    "follow_study",
    "pause_study",
    "read_admin_kit",
    "read_run_progress",
    "readmissible_sites",
    "study_status",
    "submit_study",
    "wait_for_job",
]

#: NVFlare job states after which a job never runs again.
_DONE_PREFIX = "FINISHED"
_ABANDONED = "ABANDONED"


class SubmitError(RuntimeError):
    """The FLARE API refused or failed; the message says why and what to do."""


@dataclass(frozen=True)
class AdminKit:
    """An admin's startup kit (the folder holding ``startup/fed_admin.json``)."""

    path: Path
    username: str
    host: str
    port: int


def read_admin_kit(path: Path) -> AdminKit:
    """Read an admin kit.

    Raises
    ------
    SubmitError
        ``path`` is no admin kit.
    """
    path = Path(path).resolve()
    config = path / "startup" / "fed_admin.json"
    try:
        admin = json.loads(config.read_text(encoding="utf-8"))["admin"]
    except (OSError, ValueError, KeyError):
        raise SubmitError(
            f"{path} is not an admin kit ({config} is missing or unreadable); give the admin "
            "folder written by `neurofed federation init`"
        ) from None
    return AdminKit(path, str(admin["username"]), str(admin["host"]), int(admin["port"]))


@contextmanager
def admin_session(kit_path: Path, *, timeout_s: float = 20.0) -> Iterator[Any]:
    """An open FLARE API session as the kit's admin (closed on exit).

    Raises
    ------
    SubmitError
        The server cannot be reached or refused the admin's certificate.
    """
    from nvflare.fuel.flare_api.api_spec import AuthenticationError, NoConnection
    from nvflare.fuel.flare_api.flare_api import new_secure_session

    kit = read_admin_kit(kit_path)
    try:
        session = new_secure_session(kit.username, str(kit.path), timeout=timeout_s)
    except (NoConnection, TimeoutError, ConnectionError) as error:
        raise SubmitError(
            f"cannot reach the server at {kit.host}:{kit.port} ({error}); is it running "
            "(`neurofed server status`) and is the admin port open to this machine?"
        ) from None
    except AuthenticationError as error:
        raise SubmitError(
            f"the server refused the admin {kit.username!r} ({error}); use the admin kit of "
            "this federation"
        ) from None
    try:
        yield session
    finally:
        with contextlib.suppress(Exception):  # the session may be gone (server stopped)
            session.close()


def submit_study(session: Any, study: Study, *, run_name: str = "") -> str:
    """Submit ``study`` as a config-only job; returns the NVFlare job id.

    The server's run folder is ``<server kit>/neurofed/runs/<run_name>`` (default
    ``<study name>-<hash[:12]>``): submitting the same study again resumes it.
    """
    name = check_run_name(run_name) if run_name else default_run_name(study)
    job = build_job(study, run_name=name, deployed=True)
    with tempfile.TemporaryDirectory(prefix="neurofed-job-") as folder:
        job.export_job(folder)
        path = Path(folder) / job_name(study)
        try:
            return str(session.submit_job(str(path)))
        except Exception as error:
            raise SubmitError(f"the server refused the job: {error}") from None


@dataclass(frozen=True)
class StudyStatus:
    """A job's NVFlare status and its run's progress.

    Attributes
    ----------
    job_id
        The NVFlare job.
    status
        NVFlare's job status (``SUBMITTED``, ``RUNNING``, ``FINISHED:COMPLETED`` …).
    progress
        The run's state: ``state``, ``round``, ``rounds``, ``live`` sites and ``history`` (one
        entry per finished round: ``accepted``, ``failed``, ``refused``, ``rejected``,
        ``dropped``, the metric's ``value`` merged and ``per_site``, ``seconds``); empty before
        the run started.
    """

    job_id: str
    status: str
    progress: dict[str, Any] = field(default_factory=dict)

    @property
    def running(self) -> bool:
        return self.status == "RUNNING"

    @property
    def done(self) -> bool:
        return self.status.startswith(_DONE_PREFIX) or self.status == _ABANDONED


def _job_status(session: Any, job_id: str) -> str:
    try:
        meta = session.get_job_meta(job_id)
    except Exception as error:
        raise SubmitError(f"no job {job_id} on this server ({error})") from None
    return str(meta.get("status", "UNKNOWN"))


def _live_progress(session: Any, job_id: str) -> dict[str, Any]:
    try:
        reply = session.do_app_command(job_id, PROGRESS_TOPIC, {})
    except Exception:  # not running (yet / any more)
        return {}
    return dict(reply) if isinstance(reply, dict) else {}


def _round_entry(record: dict[str, Any], metric: str | None) -> dict[str, Any]:
    """A round of ``rounds/<k>/metrics.json`` as the live answer shows it."""
    return round_summary(RoundRecord.from_json(record), metric)


def read_run_progress(run_dir: Path) -> dict[str, Any]:
    """The progress of a run folder on disk (the same shape as the live answer)."""
    run_dir = Path(run_dir)
    summary_path = run_dir / SUMMARY
    summary = json.loads(summary_path.read_text()) if summary_path.is_file() else None
    metric = (summary or {}).get("selected", {}) or {}
    metric_name = metric.get("metric")
    records = []
    for path in (run_dir / ROUNDS).glob("*/metrics.json"):
        if path.parent.name.isdigit():
            records.append(json.loads(path.read_text(encoding="utf-8")))
    records.sort(key=lambda r: int(r.get("round", 0)))
    if metric_name is None:
        study = run_dir / "study.toml"
        if study.is_file():
            metric_name = Study.from_toml(study.read_text(encoding="utf-8")).selection.metric
    return {
        "state": "finished" if summary is not None else "stopped",
        "round": records[-1]["round"] if records else 0,
        "history": [_round_entry(r, metric_name) for r in records],
        "summary": summary,
    }


def study_status(session: Any, job_id: str) -> StudyStatus:
    """The job's status and the run's progress (live while it runs, from its folder after)."""
    status = _job_status(session, job_id)
    if status == "RUNNING":
        return StudyStatus(job_id, status, _live_progress(session, job_id))
    if status.startswith(_DONE_PREFIX):
        with tempfile.TemporaryDirectory(prefix="neurofed-status-") as folder:
            try:
                run = download_run(session, job_id, Path(folder) / "run")
            except SubmitError:
                return StudyStatus(job_id, status)
            return StudyStatus(job_id, status, read_run_progress(run))
    return StudyStatus(job_id, status)


def pause_study(session: Any, job_id: str) -> dict[str, Any]:
    """Ask the running job to stop after its current round (resume: submit the study again)."""
    try:
        reply = session.do_app_command(job_id, PAUSE_TOPIC, {})
    except Exception as error:
        raise SubmitError(f"job {job_id} cannot be paused: {error}") from None
    return dict(reply) if isinstance(reply, dict) else {}


def wait_for_job(session: Any, job_id: str, *, timeout_s: float = 0.0) -> str:
    """Wait until the job ended; returns its final NVFlare status.

    Raises
    ------
    SubmitError
        Still not done after ``timeout_s`` (``0``: wait for ever).
    """
    began = time.monotonic()
    while True:
        status = _job_status(session, job_id)
        if status.startswith(_DONE_PREFIX) or status == _ABANDONED:
            return status
        if timeout_s and time.monotonic() - began > timeout_s:
            raise SubmitError(f"job {job_id} is still {status} after {timeout_s:g} s")
        time.sleep(1.0)


def download_run(session: Any, job_id: str, out: Path) -> Path:
    """Download the run folder a finished job left into ``out`` (which must not exist).

    Raises
    ------
    SubmitError
        ``out`` exists, the job has not finished, or it left no run folder.
    """
    out = Path(out).resolve()
    if out.exists() and any(out.iterdir()):
        raise SubmitError(f"{out} exists and is not empty; choose a new --out")
    with tempfile.TemporaryDirectory(prefix="neurofed-download-") as folder:
        try:
            location = session.download_job_result(job_id, destination=folder)
        except Exception as error:
            raise SubmitError(
                f"job {job_id} cannot be downloaded (has it finished?): {error}"
            ) from None
        found = sorted(Path(location).rglob(RESULT_FOLDER)) if location else []
        found = [p for p in found if p.is_dir()]
        if not found:
            raise SubmitError(
                f"job {job_id} left no run folder ({RESULT_FOLDER}/ in its workspace): it did "
                "not start, or it is not a neurofed study"
            )
        out.parent.mkdir(parents=True, exist_ok=True)
        if out.exists():
            out.rmdir()
        shutil.copytree(found[0], out)
    return out


def _run_sites(progress: dict[str, Any]) -> set[str]:
    """Every site that took part in a round of the run so far."""
    history = progress.get("history") or []
    return {s for r in history for s in r.get("targets", [])} | set(progress.get("live") or [])


def _connected(session: Any) -> set[str]:
    try:
        return {str(c.name) for c in session.get_connected_client_list()}
    except Exception:
        return set()


def _wait_for_sites(session: Any, sites: set[str], timeout_s: float = 60.0) -> None:
    """Wait (at most ``timeout_s``) until ``sites`` are connected: a restarted server needs its
    sites back before the resumed job is deployed to them."""
    began = time.monotonic()
    while sites - _connected(session) and time.monotonic() - began < timeout_s:
        time.sleep(1.0)


def readmissible_sites(session: Any, job_id: str, progress: dict[str, Any]) -> list[str]:
    """Sites that took part in the run, are not in it now, and are connected without running
    the job: restarted after they were dropped (or after the job started without them)."""
    outside = _run_sites(progress) - set(progress.get("live") or [])
    if not outside:
        return []
    candidates = sorted(outside & _connected(session))
    if not candidates:
        return []
    try:
        jobs = session.get_client_job_status(candidates) or []
    except Exception:
        return []
    running = {
        str(entry.get("client_name", entry.get("client", "")))
        for entry in jobs
        if isinstance(entry, dict) and str(entry.get("job_id", "")) == job_id
    }
    return [s for s in candidates if s not in running]


def _running_on_server(session: Any, job_id: str) -> bool | None:
    """Whether the server runs ``job_id`` now (``None``: cannot tell). NVFlare 2.9 leaves a job
    that ran when its server stopped as ``RUNNING`` in the job store for ever."""
    try:
        jobs = session.get_system_info().job_info
    except Exception:
        return None
    return any(str(j.job_id) == job_id for j in jobs)


class _LostError(Exception):
    """The session broke (the server stopped): reconnect."""


def follow_study(
    kit_path: Path,
    job_id: str,
    study: Study,
    *,
    run_name: str = "",
    readmit: bool = True,
    on_update: Callable[[StudyStatus], None] | None = None,
    poll_s: float = 2.0,
    timeout_s: float = 0.0,
    abandoned_after_s: float = 10.0,
) -> str:
    """Follow a submitted study until its run finished; returns the last job's id.

    A dropped site that registered again is brought back (pause after the current round,
    submit again) when ``readmit``; a job the server no longer runs (it was restarted: NVFlare
    keeps such a job ``RUNNING`` in its store, with nothing behind it) is submitted again once
    the server is back and the run's sites reconnected. ``on_update`` sees every new status.

    Raises
    ------
    SubmitError
        The run ended without finishing (an error in the job), or ``timeout_s`` passed.
    """
    began = time.monotonic()
    state = _Follow(job_id=job_id)

    def expired() -> bool:
        return bool(timeout_s) and time.monotonic() - began > timeout_s

    while not expired():
        try:
            with admin_session(kit_path) as session:
                fresh = True
                while not expired():
                    done = _follow_step(
                        session, state, study, run_name, readmit, on_update, abandoned_after_s
                    )
                    if done:
                        return state.job_id
                    fresh = False
                    time.sleep(poll_s)
        except _LostError as lost:
            if fresh:
                raise SubmitError(str(lost)) from None
        except SubmitError as error:
            if "cannot reach the server" not in str(error):
                raise
        time.sleep(poll_s)  # the server is restarting: try again
    raise SubmitError(f"the study did not finish within {timeout_s:g} s (job {state.job_id})")


@dataclass
class _Follow:
    job_id: str
    seen: tuple[str, str, int] | None = None
    pausing: bool = False
    last: dict[str, Any] = field(default_factory=dict)
    gone_since: float | None = None


def _follow_step(
    session: Any,
    state: _Follow,
    study: Study,
    run_name: str,
    readmit: bool,
    on_update: Callable[[StudyStatus], None] | None,
    abandoned_after_s: float,
) -> bool:
    """One look at the followed job; ``True`` when the run finished."""
    job_id = state.job_id
    try:
        status = str(session.get_job_meta(job_id).get("status", "UNKNOWN"))
    except Exception as error:
        raise _LostError(f"cannot read job {job_id}: {error}") from None
    progress = _live_progress(session, job_id) if status == "RUNNING" else {}
    if progress:
        state.last = progress
    key = (job_id, status, len(progress.get("history") or []))
    if key != state.seen:
        state.seen = key
        if on_update is not None:
            on_update(StudyStatus(job_id, status, progress))
    abandoned = status == _ABANDONED
    if status == "RUNNING" and not progress and _running_on_server(session, job_id) is False:
        state.gone_since = state.gone_since or time.monotonic()
        abandoned = time.monotonic() - state.gone_since >= abandoned_after_s
    else:
        state.gone_since = None
    if status.startswith(_DONE_PREFIX) or abandoned:
        final = study_status(session, job_id) if not abandoned else StudyStatus(job_id, status)
        if final.progress.get("summary") is not None:
            if on_update is not None:
                on_update(final)
            return True
        if not abandoned and not state.pausing:
            reason = final.progress.get("reason") or state.last.get("reason")
            because = f": {reason}" if reason else ""
            raise SubmitError(
                f"job {job_id} ended {status} before the run finished{because}; see the "
                "server's log (`neurofed server status`)"
            )
        if abandoned:
            with contextlib.suppress(Exception):
                session.abort_job(job_id)
        _wait_for_sites(session, _run_sites(final.progress or state.last))
        state.job_id = submit_study(session, study, run_name=run_name)
        state.pausing = False
        state.gone_since = None
        return False
    if (
        readmit
        and status == "RUNNING"
        and progress
        and not state.pausing
        and readmissible_sites(session, job_id, progress)
    ):
        pause_study(session, job_id)
        state.pausing = True
    return False
