"""``neurofed monitor``: a local web page that follows a federated run live.

Its status comes from one of two sources, and it needs nothing from the engine and never writes:

- a run folder (``neurofed simulate --out``, a deployed server's run folder, or a downloaded
  one), read each time the page asks (:func:`run_status`, :func:`start_monitor`);
- a deployed job, asked for its progress through the admin API every two seconds by a
  background :class:`JobPoller` (the caller hands it the asking function), so a page request
  never waits on the server; when the server does not answer, the page keeps the last status
  and says why (:func:`deployed_status`, :func:`start_job_monitor`).

It serves:

- ``GET /`` — the page: the round counter (``rounds done / planned``), each site's state in the
  latest round (answered / rejected / failed / refused / dropped, with the reason), the merged
  and per-site validation curves (drawn as SVG by a few lines of script, nothing fetched from
  the internet), time per round and the estimated time left;
- ``GET /status.json`` — the same as JSON (the same keys from either source).

A site's custodian may run it with ``site=`` its own name: the page then shows that site and the
merged curve only, never another site's numbers. The server binds to 127.0.0.1 unless told
otherwise.

Examples
--------
>>> status = run_status(Path("/nonexistent"))
>>> status["state"], status["rounds_done"]
('waiting', 0)
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Mapping
from enum import StrEnum
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, NamedTuple, Protocol

__all__ = [
    "JobPoller",
    "JobStatus",
    "MonitorServer",
    "PageState",
    "RoundPoint",
    "deployed_status",
    "page_status",
    "run_status",
    "serve_monitor",
    "start_job_monitor",
    "start_monitor",
]

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neurofed monitor</title>
<style>
body { font-family: sans-serif; max-width: 56rem; margin: 1.5rem auto; color: #111; }
table { border-collapse: collapse; font-size: 0.9rem; }
th, td { border: 1px solid #999; padding: 0.2rem 0.5rem; text-align: left; }
#round { font-size: 1.6rem; font-weight: bold; }
svg { border: 1px solid #ccc; background: #fff; }
</style></head>
<body>
<h1 id="study">neurofed monitor</h1>
<p>round <span id="round">–</span> · <span id="state">waiting</span> ·
<span id="timing"></span></p>
<p id="error" role="alert" style="color: #a00; font-weight: bold;"></p>
<h2>Sites in the latest round</h2>
<table id="sites"><tr><th>site</th><th>state</th><th>why</th></tr></table>
<h2 id="metric">validation</h2>
<svg id="chart" width="640" height="260" role="img" aria-label="validation per round"></svg>
<script>
var DASH = ["", "6,3", "2,3", "8,3,2,3"];
function text(id, value) { document.getElementById(id).textContent = value; }
function esc(s) {
  return String(s).replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/"/g, "&quot;");
}
function draw(series) {
  var svg = document.getElementById("chart"), w = 640, h = 260, pad = 30, html = "";
  var points = [];
  Object.keys(series).forEach(function (k) { series[k].forEach(function (p) {
    if (p[1] !== null) points.push(p); }); });
  if (!points.length) { svg.innerHTML = ""; return; }
  var xs = points.map(function (p) { return p[0]; });
  var ys = points.map(function (p) { return p[1]; });
  var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs) || 1;
  var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
  if (y1 === y0) { y1 = y0 + 1; }
  function X(v) { return pad + (w - 2 * pad) * (x1 === x0 ? 0.5 : (v - x0) / (x1 - x0)); }
  function Y(v) { return h - pad - (h - 2 * pad) * (v - y0) / (y1 - y0); }
  Object.keys(series).forEach(function (name, k) {
    var pts = series[name].filter(function (p) { return p[1] !== null; })
      .map(function (p) { return X(p[0]) + "," + Y(p[1]); }).join(" ");
    var width = name === "all sites" ? 3 : 1.5;
    html += '<polyline fill="none" stroke="' + (name === "all sites" ? "black" : "grey") +
      '" stroke-width="' + width + '" stroke-dasharray="' + DASH[k % DASH.length] +
      '" points="' + pts + '"><title>' + esc(name) + "</title></polyline>";
    var last = series[name].filter(function (p) { return p[1] !== null; }).pop();
    if (last) html += '<text x="' + (X(last[0]) + 4) + '" y="' + Y(last[1]) +
      '" font-size="10">' + esc(name) + "</text>";
  });
  html += '<text x="' + pad + '" y="' + (h - 8) + '" font-size="10">round ' + x0 + "</text>";
  html += '<text x="' + (w - pad - 40) + '" y="' + (h - 8) + '" font-size="10">round ' + x1 +
    "</text>";
  html += '<text x="2" y="' + (pad - 8) + '" font-size="10">' + y1.toFixed(3) + "</text>";
  html += '<text x="2" y="' + (h - pad) + '" font-size="10">' + y0.toFixed(3) + "</text>";
  svg.innerHTML = html;
}
function show(s) {
  text("study", "neurofed monitor: " + (s.study || "waiting for the run"));
  text("round", s.rounds_done + " / " + (s.rounds || "?"));
  text("state", s.state + (s.reason ? ": " + s.reason : ""));
  text("error", s.error || "");
  var t = s.seconds_per_round ? s.seconds_per_round.toFixed(1) + " s per round" : "";
  if (s.eta_seconds !== null) t += " · about " + Math.round(s.eta_seconds) + " s left";
  text("timing", t);
  text("metric", (s.metric || "validation") + " per round");
  var rows = "<tr><th>site</th><th>state</th><th>why</th></tr>";
  Object.keys(s.sites).forEach(function (site) {
    var cell = document.createElement("td"); cell.textContent = s.sites[site].why || "";
    var name = document.createElement("td"); name.textContent = site;
    var state = document.createElement("td"); state.textContent = s.sites[site].state;
    rows += "<tr>" + name.outerHTML + state.outerHTML + cell.outerHTML + "</tr>";
  });
  document.getElementById("sites").innerHTML = rows;
  draw(s.curves);
}
function poll() {
  fetch("status.json", {cache: "no-store"}).then(function (r) { return r.json(); })
    .then(show).catch(function () { text("state", "monitor not answering"); });
}
poll();
setInterval(poll, 2000);
</script>
</body></html>
"""


def _json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not written yet, or being written: the next poll reads it
    return data if isinstance(data, dict) else None


def _finite(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and math.isfinite(value) else None


def _site_states(record: Mapping[str, Any], only: str | None) -> dict[str, dict[str, str]]:
    states: dict[str, dict[str, str]] = {}
    for site in record.get("targets", []):
        states[str(site)] = {"state": "asked", "why": ""}
    for site in record.get("accepted", []):
        states[str(site)] = {"state": "answered", "why": ""}
    for kind in ("rejected", "failed", "refused"):
        for site, why in (record.get(kind) or {}).items():
            states[str(site)] = {"state": kind, "why": str(why)}
    for site in record.get("dropped", []):
        states[str(site)] = {"state": "dropped", "why": "did not answer in time"}
    return {s: v for s, v in states.items() if only is None or s == only}


class PageState(StrEnum):
    """Where the run is, as the page says it."""

    WAITING = "waiting"
    STARTING = "starting"
    RUNNING = "running"
    PAUSED = "paused"
    FINISHED = "finished"
    STOPPED = "stopped"


class RoundPoint(NamedTuple):
    """One round as the curves need it (values as read: ``None``, NaN or junk are not drawn)."""

    round: int
    value: Any
    per_site: Mapping[str, Any]
    seconds: Any


def page_status(
    *,
    study: str | None,
    rounds: int | None,
    metric: str | None,
    state: PageState,
    points: list[RoundPoint],
    last: Mapping[str, Any] | None,
    site: str | None,
    reason: str | None = None,
) -> dict[str, Any]:
    """The JSON the page draws (the same keys whatever the source)."""
    curves: dict[str, list[tuple[int, float | None]]] = {"all sites": []}
    for point in points:
        curves["all sites"].append((point.round, _finite(point.value)))
        for s, value in sorted(point.per_site.items()):
            if site is None or s == site:
                curves.setdefault(s, []).append((point.round, _finite(value)))
    seconds = [float(p.seconds) for p in points if _finite(p.seconds) is not None]
    per_round = sum(seconds) / len(seconds) if seconds else None
    ended = state in (PageState.FINISHED, PageState.STOPPED)
    left = (
        None if ended or per_round is None or rounds is None else per_round * (rounds - len(points))
    )
    return {
        "study": study,
        "rounds": rounds,
        "rounds_done": len(points),
        "state": state.value,
        "reason": reason,
        "metric": metric,
        "sites": _site_states(last, site) if last is not None else {},
        "curves": curves,
        "seconds_per_round": per_round,
        "eta_seconds": left,
        "site_view": site,
        "error": None,
    }


def _study_file(folder: Path) -> tuple[int | None, str | None, str | None]:
    """The run's planned rounds, selection metric and study name from its ``study.toml``."""
    try:
        import tomllib

        study = tomllib.loads((folder / "study.toml").read_text(encoding="utf-8"))
        name = study.get("name")
        return int(study.get("rounds", 0)) or None, study.get("selection", {}).get("metric"), name
    except (OSError, ValueError, TypeError):
        return None, None, None


def _records(folder: Path) -> list[dict[str, Any]]:
    """The run folder's ``rounds/<k>/metrics.json`` in round order (unreadable ones skipped)."""
    rounds_dir = folder / "rounds"
    if not rounds_dir.is_dir():
        return []
    numbered = sorted(
        (p for p in rounds_dir.iterdir() if p.name.isdigit()), key=lambda p: int(p.name)
    )
    return [r for r in (_json(p / "metrics.json") for p in numbered) if r is not None]


def run_status(folder: Path, site: str | None = None) -> dict[str, Any]:
    """The run's progress as the page shows it; ``site`` limits per-site data to that site."""
    folder = Path(folder)
    run = _json(folder / "run.json") or {}
    summary = _json(folder / "summary.json")
    study_rounds, metric, name = _study_file(folder)
    records = _records(folder)
    points = [
        RoundPoint(
            int(r.get("round", 0)),
            r.get("validation", {}).get(metric),
            {s: v.get(metric) for s, v in r.get("validation_per_site", {}).items()},
            r.get("seconds"),
        )
        for r in records
    ]
    done = len(records)
    finished = summary is not None and summary.get("rounds_done") == done and done > 0
    state = (
        PageState.FINISHED
        if finished
        else (PageState.RUNNING if done or run else PageState.WAITING)
    )
    return page_status(
        study=name or run.get("study"),
        rounds=study_rounds,
        metric=metric,
        state=state,
        points=points,
        last=records[-1] if records else None,
        site=site,
    )


class JobStatus(Protocol):
    """What the admin API says of a deployed job
    (:class:`~neurofed.federated.engine.submit.StudyStatus` is one)."""

    @property
    def job_id(self) -> str: ...

    @property
    def status(self) -> str: ...

    @property
    def progress(self) -> dict[str, Any]: ...

    @property
    def done(self) -> bool: ...


#: The run's states (``RunState`` in ``federated/engine/run_progress.py``, not imported: it
#: would bring torch) as the page names them.
_RUN_STATES = {
    "training": PageState.RUNNING,
    "paused": PageState.PAUSED,
    "finished": PageState.FINISHED,
}
_ENDED_EARLY = "it ended before its last round; submitting the study again resumes it"


def _job_state(job: JobStatus) -> tuple[PageState, str | None]:
    """The page's state of a job and why it is there (``None``: nothing to add)."""
    run = job.progress.get("state")
    if run == "stopped":
        return PageState.STOPPED, job.progress.get("reason") or _ENDED_EARLY
    if run in _RUN_STATES:
        return _RUN_STATES[run], None
    if job.done:
        why = "no run progress: it did not start, or its run folder cannot be downloaded"
        return PageState.STOPPED, f"job {job.status}; {why}"
    if job.status == "RUNNING":
        return PageState.STARTING, None
    return PageState.WAITING, f"job {job.status}" if job.status else None


def deployed_status(job: JobStatus, site: str | None = None) -> dict[str, Any]:
    """A deployed job's progress (live from its controller, or from the run folder a finished
    job left) as the page shows it: the same keys as :func:`run_status`. With ``site``, only
    that site's data, the merged curve, and no stop reason (it may name other sites).

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> entry = {"round": 1, "accepted": ["site-1"], "metric": "mae", "value": 4.0,
    ...          "per_site": {"site-1": 4.0}, "seconds": 3.0}
    >>> job = SimpleNamespace(job_id="42", status="RUNNING", done=False, progress={
    ...     "study": "age", "rounds": 3, "state": "training", "history": [entry]})
    >>> status = deployed_status(job)
    >>> status["state"], status["rounds_done"], status["eta_seconds"], status["curves"]["site-1"]
    ('running', 1, 6.0, [(1, 4.0)])
    """
    progress = job.progress
    history = [h for h in progress.get("history") or [] if isinstance(h, Mapping)]
    summary = progress.get("summary") or {}
    named = [h.get("metric") for h in history if h.get("metric")]
    metric = named[-1] if named else (summary.get("selected") or {}).get("metric")
    state, reason = _job_state(job)
    points = [
        RoundPoint(
            int(h.get("round") or 0), h.get("value"), h.get("per_site") or {}, h.get("seconds")
        )
        for h in history
    ]
    return page_status(
        study=progress.get("study") or summary.get("study") or f"job {job.job_id}",
        rounds=progress.get("rounds") or summary.get("rounds"),
        metric=metric,
        state=state,
        points=points,
        last=history[-1] if history else None,
        site=site,
        reason=None if site is not None else reason,
    )


class JobPoller:
    """Follows a deployed job in a background thread: every ``interval_s`` it asks ``fetch``
    (the admin API) and keeps the page's status, so a page request never waits on the server.

    When ``fetch`` fails, or a running job's controller stops answering, the last status stays,
    with ``error`` saying why; once the job ended with its run's progress, polling stops.

    Examples
    --------
    >>> from types import SimpleNamespace
    >>> poller = JobPoller(lambda: SimpleNamespace(
    ...     job_id="42", status="SUBMITTED", done=False, progress={}), interval_s=0.01)
    >>> poller.start()
    >>> poller.wait_for(lambda s: s["reason"] == "job SUBMITTED")["state"]
    'waiting'
    >>> poller.stop()
    """

    def __init__(
        self, fetch: Callable[[], JobStatus], *, site: str | None = None, interval_s: float = 2.0
    ) -> None:
        self._fetch, self._site, self._interval = fetch, site, interval_s
        self._changed = threading.Condition()
        self._latest = page_status(
            study=None,
            rounds=None,
            metric=None,
            state=PageState.WAITING,
            points=[],
            last=None,
            site=site,
        )
        self._as_of = "never"
        self._had_progress = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="neurofed-job-poller", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout_s: float = 5.0) -> None:
        """Stop polling (a request to the admin API under way is left to its own timeout)."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout_s)

    @property
    def running(self) -> bool:
        """Whether the background thread still asks (it ends with the job, or on :meth:`stop`)."""
        return self._thread.is_alive()

    def latest(self) -> dict[str, Any]:
        """The status from the last answer (with ``error`` when the latest ask failed)."""
        with self._changed:
            return dict(self._latest)

    def wait_for(
        self, check: Callable[[dict[str, Any]], bool], timeout_s: float = 60.0
    ) -> dict[str, Any]:
        """Wait until ``check(status)`` holds; returns that status.

        Raises
        ------
        TimeoutError
            It did not hold within ``timeout_s``.
        """
        with self._changed:
            if not self._changed.wait_for(lambda: check(self._latest), timeout_s):
                raise TimeoutError(
                    f"the monitor's status did not change as expected: {self._latest}"
                )
            return dict(self._latest)

    def poll(self) -> bool:
        """Ask once and keep the answer; ``True`` once the job ended with its run's progress."""
        try:
            job = self._fetch()
            status = deployed_status(job, self._site)
        except Exception as error:  # the server is down, restarting, or answered nonsense
            self._publish(dict(self.latest(), error=self._failed(str(error) or repr(error))))
            return False
        if not job.progress and self._had_progress and not job.done:
            why = f"job {job.job_id} is {job.status} but its run does not answer"
            self._publish(dict(self.latest(), error=self._failed(why)))
            return False
        self._had_progress = self._had_progress or bool(job.progress)
        self._as_of = time.strftime("%H:%M:%S")
        self._publish(status)
        return job.done and bool(job.progress)

    def _failed(self, why: str) -> str:
        return (
            f"{why} — showing the status received at {self._as_of}; asking again every "
            f"{self._interval:g} s"
        )

    def _publish(self, status: dict[str, Any]) -> None:
        with self._changed:
            self._latest = status
            self._changed.notify_all()

    def _run(self) -> None:
        while not self._stop.is_set():
            if self.poll() or self._stop.wait(self._interval):
                return


class MonitorServer(ThreadingHTTPServer):
    """An HTTP server over one status source: a run folder read on each request, or a
    :class:`JobPoller`'s latest status (``daemon_threads``: Ctrl-C never waits on a page).
    :meth:`shutdown` stops the poller too."""

    daemon_threads = True

    def __init__(
        self,
        status: Callable[[], dict[str, Any]],
        address: tuple[str, int],
        poller: JobPoller | None = None,
    ) -> None:
        self.status, self.poller = status, poller
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"

    def shutdown(self) -> None:
        if self.poller is not None:
            self.poller.stop()
        super().shutdown()


class _Handler(BaseHTTPRequestHandler):
    server: MonitorServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            body, kind = _PAGE.encode(), "text/html; charset=utf-8"
        elif path == "/status.json":
            body, kind = json.dumps(self.server.status()).encode(), "application/json"
        else:
            self.send_error(404, "the monitor serves / and /status.json")
            return
        self.send_response(200)
        self.send_header("Content-Type", kind)
        self.send_header("Cache-Control", "no-store")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        return  # the console shows neurofed's lines only


def serve_monitor(server: MonitorServer) -> tuple[MonitorServer, threading.Thread]:
    thread = threading.Thread(target=server.serve_forever, name="neurofed-monitor", daemon=True)
    thread.start()
    return server, thread


def start_monitor(
    folder: Path, *, port: int = 0, host: str = "127.0.0.1", site: str | None = None
) -> tuple[MonitorServer, threading.Thread]:
    """Serve ``folder`` in a background thread (``port=0``: any free port); stop it with
    ``server.shutdown()``.

    Raises
    ------
    OSError
        The port is taken or the address cannot be bound.
    """
    folder = Path(folder)
    return serve_monitor(MonitorServer(lambda: run_status(folder, site), (host, port)))


def start_job_monitor(
    fetch: Callable[[], JobStatus],
    *,
    port: int = 0,
    host: str = "127.0.0.1",
    site: str | None = None,
    interval_s: float = 2.0,
) -> tuple[MonitorServer, threading.Thread]:
    """Serve a deployed job, asked through ``fetch`` every ``interval_s`` by a :class:`JobPoller`
    (``server.poller``); ``server.shutdown()`` stops both.

    Raises
    ------
    OSError
        The port is taken or the address cannot be bound.
    """
    poller = JobPoller(fetch, site=site, interval_s=interval_s)
    server = MonitorServer(poller.latest, (host, port), poller)
    poller.start()
    return serve_monitor(server)
