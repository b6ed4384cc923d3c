"""``neurofed monitor``: a local web page that follows a federated run live.

It reads the run folder (``neurofed simulate --out``, a deployed server's run folder, or a
downloaded one) each time the page asks, so it needs nothing from the engine and never writes:

- ``GET /`` — the page: the round counter (``rounds done / planned``), each site's state in the
  latest round (answered / rejected / failed / refused / dropped, with the reason), the merged
  and per-site validation curves (drawn as SVG by a few lines of script, nothing fetched from
  the internet), time per round and the estimated time left;
- ``GET /status.json`` — the same as JSON (:func:`run_status`).

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
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

__all__ = ["MonitorServer", "run_status", "start_monitor"]

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
  text("state", s.state);
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
        for site, why in record.get(kind, {}).items():
            states[str(site)] = {"state": kind, "why": str(why)}
    for site in record.get("dropped", []):
        states[str(site)] = {"state": "dropped", "why": "did not answer in time"}
    return {s: v for s, v in states.items() if only is None or s == only}


def run_status(folder: Path, site: str | None = None) -> dict[str, Any]:
    """The run's progress as the page shows it; ``site`` limits per-site data to that site."""
    folder = Path(folder)
    run = _json(folder / "run.json") or {}
    summary = _json(folder / "summary.json")
    study_rounds, metric, name = None, None, run.get("study")
    study_file = folder / "study.toml"
    if study_file.is_file():
        try:
            import tomllib

            study = tomllib.loads(study_file.read_text(encoding="utf-8"))
            study_rounds = int(study.get("rounds", 0)) or None
            metric = study.get("selection", {}).get("metric")
            name = study.get("name", name)
        except (OSError, ValueError, TypeError):
            pass
    records = []
    rounds_dir = folder / "rounds"
    if rounds_dir.is_dir():
        numbered = [p for p in rounds_dir.iterdir() if p.name.isdigit()]
        for path in sorted(numbered, key=lambda p: int(p.name)):
            record = _json(path / "metrics.json")
            if record is not None:
                records.append(record)
    curves: dict[str, list[tuple[int, float | None]]] = {"all sites": []}
    seconds = []
    for record in records:
        k = int(record.get("round", 0))
        curves["all sites"].append((k, _finite(record.get("validation", {}).get(metric))))
        for s, values in sorted(record.get("validation_per_site", {}).items()):
            if site is None or s == site:
                curves.setdefault(s, []).append((k, _finite(values.get(metric))))
        if _finite(record.get("seconds")) is not None:
            seconds.append(float(record["seconds"]))
    done = len(records)
    finished = summary is not None and summary.get("rounds_done") == done and done > 0
    per_round = sum(seconds) / len(seconds) if seconds else None
    left = None if per_round is None or study_rounds is None else per_round * (study_rounds - done)
    state = "finished" if finished else ("running" if done or run else "waiting")
    return {
        "study": name,
        "rounds": study_rounds,
        "rounds_done": done,
        "state": state,
        "metric": metric,
        "sites": _site_states(records[-1], site) if records else {},
        "curves": curves,
        "seconds_per_round": per_round,
        "eta_seconds": None if finished else left,
        "site_view": site,
    }


class MonitorServer(ThreadingHTTPServer):
    """An HTTP server over one run folder (``daemon_threads``: Ctrl-C never waits on a page)."""

    daemon_threads = True

    def __init__(self, folder: Path, site: str | None, address: tuple[str, int]) -> None:
        self.folder, self.site = Path(folder), site
        super().__init__(address, _Handler)

    @property
    def url(self) -> str:
        host, port = self.server_address[:2]
        return f"http://{host!s}:{port}/"


class _Handler(BaseHTTPRequestHandler):
    server: MonitorServer

    def do_GET(self) -> None:
        path = self.path.split("?", 1)[0]
        if path == "/":
            body, kind = _PAGE.encode(), "text/html; charset=utf-8"
        elif path == "/status.json":
            status = run_status(self.server.folder, self.server.site)
            body, kind = json.dumps(status).encode(), "application/json"
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
    server = MonitorServer(folder, site, (host, port))
    thread = threading.Thread(target=server.serve_forever, name="neurofed-monitor", daemon=True)
    thread.start()
    return server, thread
