"""A deployed run as the coordinator sees it: where its folder is, and its progress per round.

On a deployed server a study's run folder lives in the server's workspace,
``<server kit>/neurofed/runs/<run name>/`` (:func:`deployed_run_dir`; the run name defaults to
``<study name>-<first 12 hex digits of its hash>``), not in the NVFlare job's folder: NVFlare 2.9
does not resume a job that was running when the server stopped (it leaves it ``RUNNING`` in its
job store with nothing behind it), so the study is resumed by a new job (``neurofed study submit``
again), which finds the same folder and continues at the round after the last checkpoint. A job
holds the run folder's lock while it runs (:func:`run_lock`), so two jobs of the same run never
write it at once. When a job ends, the run folder (without its checkpoints) is copied into the
job's workspace as ``neurofed_run/`` (:func:`publish_run`), which is what
``download_job_result`` hands to the coordinator.

While a job runs, its controller answers the FLARE API app command :data:`PROGRESS_TOPIC` with
:meth:`RunProgress.to_json` (per round: targets, accepted, failed with the site's reason,
rejected, dropped, the selection metric merged and per site, seconds) and :data:`PAUSE_TOPIC`
by stopping after the current round (a site restarted after it was dropped can only join a new
job: NVFlare 2.9 never deploys a running job to a site that registers again).

Examples
--------
>>> deployed_run_dir(Path("/srv/kit"), "tiny-age-0123456789ab").as_posix()
'/srv/kit/neurofed/runs/tiny-age-0123456789ab'
"""

from __future__ import annotations

import contextlib
import fcntl
import re
import shutil
import threading
from collections.abc import Iterator, Sequence
from enum import StrEnum
from pathlib import Path
from typing import Any

from neurofed.federated.protocol import RunSummary
from neurofed.federated.server.run_folder import CHECKPOINTS, RoundRecord
from neurofed.federated.study import Study
from neurofed.training.records import json_number

__all__ = [
    "PAUSE_TOPIC",
    "PROGRESS_TOPIC",
    "RESULT_FOLDER",
    "RUNS_FOLDER",
    "RunProgress",
    "RunState",
    "check_run_name",
    "default_run_name",
    "deployed_run_dir",
    "publish_run",
    "round_summary",
    "run_lock",
]

#: ``<server kit>/neurofed/runs/<run name>``.
RUNS_FOLDER = "runs"
#: The run folder's copy inside the NVFlare job's workspace (what a download holds).
RESULT_FOLDER = "neurofed_run"
PROGRESS_TOPIC = "neurofed.progress"
PAUSE_TOPIC = "neurofed.pause"
_KIT_FOLDER = "neurofed"
_LOCK = ".lock"
_RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class RunState(StrEnum):
    """Where a running study is."""

    STARTING = "starting"
    TRAINING = "training"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"


def default_run_name(study: Study) -> str:
    """``<study name>-<first 12 hex digits of the study hash>``."""
    return f"{study.name}-{study.content_hash[:12]}"


def check_run_name(name: str) -> str:
    """``name`` if it can name a folder on the server (no separators, no leading dot)."""
    if not _RUN_NAME.match(name) or ".." in name:
        raise ValueError(
            f"run name {name!r}: use letters, digits, '.', '-' and '_' (no leading dot, at most "
            "128 characters)"
        )
    return name


def deployed_run_dir(workspace_root: Path, run_name: str) -> Path:
    """The run folder of ``run_name`` in a server's workspace."""
    return Path(workspace_root) / _KIT_FOLDER / RUNS_FOLDER / check_run_name(run_name)


def publish_run(run_dir: Path, destination: Path) -> Path:
    """Copy the run folder, without ``checkpoints/``, to ``destination`` (replaced)."""
    destination = Path(destination)
    if destination.exists():
        shutil.rmtree(destination)
    ignore = shutil.ignore_patterns(CHECKPOINTS, _LOCK)
    shutil.copytree(Path(run_dir), destination, ignore=ignore)
    return destination


@contextlib.contextmanager
def run_lock(run_dir: Path) -> Iterator[bool]:
    """Hold ``<run>/.lock`` while a job writes the run folder; yields whether it was free.

    An advisory ``flock``: the operating system releases it when the job's process ends, so a
    job abandoned by a server restart never leaves the run folder locked.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    with (run_dir / _LOCK).open("a") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            yield False
            return
        try:
            yield True
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def round_summary(record: RoundRecord, metric: str | None) -> dict[str, Any]:
    """What the coordinator sees of one round (JSON-ready): the sites' states, the selection
    metric merged (``value``) and per site (``per_site``; a site that withheld it, or has no
    finite value, is left out), and the round's seconds. Aggregates only: no case, no subject.

    Examples
    --------
    >>> record = RoundRecord(round=2, validation={"mae": 4.0},
    ...                      validation_per_site={"site-1": {"mae": 3.5}, "site-2": {}})
    >>> entry = round_summary(record, "mae")
    >>> entry["value"], entry["per_site"]
    (4.0, {'site-1': 3.5})
    """
    value = record.validation.get(metric) if metric else None
    return {
        "round": record.round,
        "targets": list(record.targets),
        "accepted": list(record.accepted),
        "failed": dict(record.failed),
        "refused": dict(getattr(record, "refused", {})),
        "rejected": dict(record.rejected),
        "dropped": list(record.dropped),
        "aggregated": record.aggregated,
        "quorum_error": record.quorum_error,
        "metric": metric,
        "value": None if value is None else json_number(float(value)),
        "per_site": _per_site(record, metric),
        "seconds": json_number(float(record.seconds)),
    }


def _per_site(record: RoundRecord, metric: str | None) -> dict[str, float]:
    """Site → its finite value of ``metric`` in the round's validation."""
    values = {
        site: json_number(float(metrics[metric]))
        for site, metrics in record.validation_per_site.items()
        if metric and metrics.get(metric) is not None
    }
    return {site: value for site, value in values.items() if value is not None}


class RunProgress:
    """The live state of a run on the server (thread-safe: the FLARE API reads it)."""

    def __init__(self, study: Study, run_name: str) -> None:
        self._lock = threading.Lock()
        self._metric = study.selection.metric
        self._data: dict[str, Any] = {
            "study": study.name,
            "study_hash": study.content_hash,
            "run": run_name,
            "rounds": study.rounds,
            "state": RunState.STARTING.value,
            "round": 0,
            "live": [],
            "history": [],
            "summary": None,
        }
        self._pause = threading.Event()

    def start(self, first_round: int, live: Sequence[str], history: Sequence[RoundRecord]) -> None:
        with self._lock:
            self._data["state"] = RunState.TRAINING.value
            self._data["round"] = first_round
            self._data["live"] = list(live)
            self._data["history"] = [round_summary(r, self._metric) for r in history]

    def begin_round(self, round_number: int, live: Sequence[str]) -> None:
        with self._lock:
            self._data["round"] = round_number
            self._data["live"] = list(live)

    def end_round(self, record: RoundRecord, live: Sequence[str]) -> None:
        with self._lock:
            self._data["history"].append(round_summary(record, self._metric))
            self._data["live"] = list(live)

    def update_round(self, record: RoundRecord) -> None:
        """A finished round's entry again, once its model was scored (``validate_incoming``:
        at the start of the next round)."""
        with self._lock:
            entry = round_summary(record, self._metric)
            history = self._data["history"]
            self._data["history"] = [entry if e["round"] == record.round else e for e in history]

    def finish(
        self, state: RunState, summary: RunSummary | None = None, reason: str | None = None
    ) -> None:
        """The run ended (``reason``: why a run stopped before finishing, shown to the lead)."""
        with self._lock:
            self._data["state"] = state.value
            self._data["summary"] = None if summary is None else summary.to_json()
            if reason is not None:
                self._data["reason"] = reason

    def request_pause(self) -> None:
        """Stop after the current round (the run resumes when the study is submitted again)."""
        self._pause.set()

    @property
    def pause_requested(self) -> bool:
        return self._pause.is_set()

    def to_json(self) -> dict[str, Any]:
        with self._lock:
            data = dict(self._data)
            data["history"] = [dict(r) for r in self._data["history"]]
            data["live"] = list(self._data["live"])
            data["pause_requested"] = self._pause.is_set()
            return data
