"""A site's own view of a study while it runs: the file its custodian's monitor reads.

Every task of an admitted study updates ``<study state folder>/progress.json`` (written
atomically; :meth:`~neurofed.federated.site.config.SiteConfig.study_state_dir`)::

    {"format": 1, "site": "site-1", "study": "fets", "study_hash": "<64 hex>",
     "rounds": 20, "metric": "dice_mean", "updated": "2026-…Z",
     "current": {"round": 4, "task": "train", "since": "2026-…Z"},    (null between tasks)
     "tasks": [{"round": 3, "task": "validate", "state": "answered", "why": "",
                "seconds": 12.5, "value": 0.71}, ...],
     "merged": [{"round": 3, "value": 0.69, "sites": 4, "seconds": 41.0}, ...]}

- ``tasks``: what this site did, one entry per round and task (a task asked again replaces its
  entry): ``answered`` or ``failed`` with the reason the server was told, the seconds it took,
  and after ``validate`` the site's own ``value`` of the study's selection metric on every case
  it scored (also when it withheld the number from the server: its custodian may see it);
  after ``train``, ``train_loss``.
- ``merged``: the finished rounds as the server tells every site with each task
  (:class:`~neurofed.federated.protocol.MergedRound`): the merged metric only where enough
  sites stand behind it, never another site's own number. A site learns round ``k``'s merged
  value with the first task of round ``k + 1``, so the last round's never reaches it.

Nothing here leaves the site. A record that cannot be written is logged and never stops the
task.

Examples
--------
>>> import tempfile
>>> from neurofed.federated.protocol import MergedRound
>>> folder = Path(tempfile.mkdtemp())
>>> view = SiteProgress(folder, "site-1", study="age", study_hash="ab" * 32, rounds=3,
...                     metric="mae")
>>> view.begin(1, "train")
>>> view.done(1, "train", error=None, seconds=2.0, numbers={"train_loss": 0.5})
>>> view.begin(1, "validate", merged=[MergedRound(1, 4.0, 3, 9.0)])
>>> view.done(1, "validate", error=None, seconds=1.0, numbers={"value": 3.5})
>>> data = read_progress(folder / PROGRESS_FILE)
>>> [(t["task"], t["state"]) for t in data["tasks"]], data["merged"][0]["value"], data["current"]
([('train', 'answered'), ('validate', 'answered')], 4.0, None)
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.federated.protocol import MergedRound

__all__ = ["PROGRESS_FILE", "SiteProgress", "read_progress"]

#: The file in a study's state folder.
PROGRESS_FILE = "progress.json"
_FORMAT = 1

logger = logging.getLogger(__name__)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _finite(value: Any) -> float | None:
    number = float(value) if isinstance(value, int | float) else math.nan
    return number if math.isfinite(number) else None


def read_progress(path: Path) -> dict[str, Any] | None:
    """The progress file at ``path``, or ``None`` when it is missing, unreadable or not one."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(data, dict) or data.get("format") != _FORMAT:
        return None
    return data


class SiteProgress:
    """Keeps one study's ``progress.json`` at one site (see the module docstring).

    A file left by an earlier process of the same study and site is continued (a restarted
    site keeps its history); any other file is replaced.
    """

    def __init__(
        self,
        folder: Path,
        site_id: str,
        *,
        study: str,
        study_hash: str,
        rounds: int,
        metric: str,
    ) -> None:
        self.path = Path(folder) / PROGRESS_FILE
        kept = read_progress(self.path)
        same = kept is not None and (kept.get("study_hash"), kept.get("site")) == (
            study_hash,
            site_id,
        )
        tasks = kept.get("tasks") if same and kept is not None else None
        merged = kept.get("merged") if same and kept is not None else None
        self.data: dict[str, Any] = {
            "format": _FORMAT,
            "site": site_id,
            "study": study,
            "study_hash": study_hash,
            "rounds": rounds,
            "metric": metric,
            "updated": _now(),
            "current": None,
            "tasks": [t for t in tasks or [] if isinstance(t, dict)],
            "merged": [m for m in merged or [] if isinstance(m, dict)],
        }

    def begin(self, round_number: int, task: str, merged: Sequence[MergedRound] = ()) -> None:
        """A task started; ``merged``: the finished rounds the task carried (kept when
        empty, so a task without them never erases the curve)."""
        if merged:
            self.data["merged"] = [
                {"round": m.round, "value": m.value, "sites": m.sites, "seconds": m.seconds}
                for m in merged
            ]
        self.data["current"] = {"round": round_number, "task": task, "since": _now()}
        self._write()

    def done(
        self,
        round_number: int,
        task: str,
        *,
        error: str | None,
        seconds: float,
        numbers: Mapping[str, float | None] | None = None,
    ) -> None:
        """A task ended: answered, or failed with ``error`` (the reason the server was told);
        ``numbers``: the site's own ``value`` of the selection metric, or ``train_loss``."""
        entry: dict[str, Any] = {
            "round": round_number,
            "task": task,
            "state": "failed" if error is not None else "answered",
            "why": error or "",
            "seconds": _finite(seconds),
        }
        entry |= {k: _finite(v) for k, v in (numbers or {}).items()}
        key = (round_number, task)
        tasks = [t for t in self.data["tasks"] if (t.get("round"), t.get("task")) != key]
        tasks.append(entry)
        tasks.sort(key=lambda t: (int(t.get("round") or 0), str(t.get("task"))))
        self.data["tasks"] = tasks
        self.data["current"] = None
        self._write()

    def _write(self) -> None:
        self.data["updated"] = _now()
        try:
            write_json_atomically(self.path, self.data)
        except OSError:  # the custodian's view only: the task goes on
            logger.exception("site %s: could not write %s", self.data["site"], self.path)
