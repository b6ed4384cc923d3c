"""``neurofed monitor --site-kit``: a site's custodian follows a study from the site's own files.

A deployed site cannot ask the server (only the lead's admin kit can), and it should not see the
other sites. So the page is built from what the site itself keeps: each study's
``progress.json`` in the site's state folder (:mod:`~neurofed.federated.site.progress`), which
the site writes with every task. It holds the site's own tasks (training / validating now,
answered or failed with the reason the server was told, its own metric on its validation cases)
and the merged curve the server sends every site with each task, withheld where too few sites
stand behind it. The page and ``/status.json`` are those of :mod:`~neurofed.evaluate.monitor`,
with this site alone in the sites table and two curves: ``all sites`` and the site's own.

The merged value of round ``k`` reaches a site with round ``k + 1``'s first task, so the merged
curve is one round behind the site's own, and the last round's merged value (the lead's report
has it) never arrives.

Examples
--------
>>> status = site_status(Path("/nonexistent"), "progress.json")
>>> status["state"], status["reason"][:28]
('waiting', 'no study has run at this sit')
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

from neurofed.evaluate.monitor import (
    MonitorServer,
    PageState,
    RoundPoint,
    page_status,
    serve_monitor,
)

__all__ = ["site_status", "start_site_monitor"]

_NOW = {"train": "training", "validate": "validating", "fingerprint": "fingerprinting"}


def _read(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # being replaced: the next poll reads it
    return data if isinstance(data, dict) and isinstance(data.get("tasks"), list) else None


def _pick(state_root: Path, progress_file: str, study: str | None) -> dict[str, Any] | None:
    """The latest updated progress of ``study`` (a name or a hash prefix; ``None``: any)."""
    found = []
    for path in Path(state_root).glob(f"*/{progress_file}"):
        data = _read(path)
        if data is None:
            continue
        digest = str(data.get("study_hash", ""))
        if study is None or data.get("study") == study or digest.startswith(study.lower()):
            found.append(data)
    return max(found, key=lambda d: str(d.get("updated", "")), default=None)


def _points(data: dict[str, Any], site: str) -> list[RoundPoint]:
    """One point per round the site validated in or the server reported merged."""
    merged = {
        int(m["round"]): m
        for m in data.get("merged", [])
        if isinstance(m, dict) and isinstance(m.get("round"), int)
    }
    own = {
        int(t["round"]): t.get("value")
        for t in data["tasks"]
        if isinstance(t, dict) and t.get("task") == "validate" and isinstance(t.get("round"), int)
    }
    return [
        RoundPoint(
            k,
            merged.get(k, {}).get("value"),
            {site: own[k]} if k in own else {},
            merged.get(k, {}).get("seconds"),
        )
        for k in sorted(set(merged) | set(own))
        if k >= 1
    ]


def site_status(state_root: Path, progress_file: str, study: str | None = None) -> dict[str, Any]:
    """What the page shows a site's custodian: the latest study (or ``study``) at this site.

    ``state_root`` is the site's state folder (``SiteConfig.state_root``), ``progress_file``
    the name each study's folder keeps its progress under.
    """
    data = _pick(state_root, progress_file, study)
    if data is None:
        which = f"no study {study!r}" if study else "no study"
        return page_status(
            study=None,
            rounds=None,
            metric=None,
            state=PageState.WAITING,
            points=[],
            last=None,
            site=None,
            reason=f"{which} has run at this site yet (its first task starts the view)",
        )
    site = str(data.get("site", "this site"))
    rounds = data.get("rounds") if isinstance(data.get("rounds"), int) else None
    tasks = [t for t in data["tasks"] if isinstance(t, dict)]
    current = data.get("current") if isinstance(data.get("current"), dict) else None
    validated = {t.get("round") for t in tasks if t.get("task") == "validate"}
    if current is not None:
        row = {
            "state": _NOW.get(str(current.get("task")), str(current.get("task"))),
            "why": f"round {current.get('round')} since {current.get('since')}",
        }
        state = PageState.RUNNING
    elif tasks:
        last = tasks[-1]
        row = {"state": str(last.get("state")), "why": str(last.get("why") or "")}
        row["why"] = row["why"] or f"round {last.get('round')} {last.get('task')}"
        finished = rounds is not None and rounds in validated
        state = PageState.FINISHED if finished else PageState.RUNNING
    else:
        row, state = {"state": "asked", "why": ""}, PageState.STARTING
    status = page_status(
        study=data.get("study"),
        rounds=rounds,
        metric=data.get("metric"),
        state=state,
        points=_points(data, site),
        last=None,
        site=site,
        reason=None if current is not None or state is PageState.FINISHED else _waiting(data),
    )
    status["sites"] = {site: row}
    return status


def _waiting(data: dict[str, Any]) -> str:
    return f"waiting for the server's next task (last heard {data.get('updated')})"


def start_site_monitor(
    state_root: Path,
    progress_file: str,
    *,
    study: str | None = None,
    port: int = 0,
    host: str = "127.0.0.1",
) -> tuple[MonitorServer, threading.Thread]:
    """Serve the site's view in a background thread (``port=0``: any free port); stop it with
    ``server.shutdown()``.

    Raises
    ------
    OSError
        The port is taken or the address cannot be bound.
    """
    root = Path(state_root)
    return serve_monitor(
        MonitorServer(lambda: site_status(root, progress_file, study), (host, port))
    )
