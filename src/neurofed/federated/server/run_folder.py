"""A federated run folder on disk: per-round metrics, per-round checkpoints, the final models.

::

    <run>/study.toml                 the study (with its content hash in the header)
    <run>/run.json                   study hash, sites, versions (a planned study adds ``plan``:
                                     which sites' fingerprints the plan was made from)
    <run>/plan.json, fingerprint.json  a study with ``[plan]``: the plan and the merged
                                     fingerprint of the fingerprint round
                                     (:mod:`~neurofed.federated.server.planning`)
    <run>/rounds/<k>/metrics.json    round k: accepted / rejected / failed / refused /
                                     dropped sites, training numbers and the federated
                                     validation (merged and per site); Ditto adds
                                     ``personalised`` (and
                                     ``personalised_per_site``): the sites' own models
    <run>/checkpoints/round-<k>/     global.safetensors, strategy.safetensors, history.json
    <run>/model/                     the selected (best-round) model, loadable by
                                     :func:`neurofed.training.load_model` (with ``plan.json`` and
                                     ``fingerprint.json`` beside ``model.json`` when planned)
    <run>/last_model/                the model after the last round
    <run>/summary.json               rounds done, the selection, where the models are

A checkpoint folder is written under a temporary name and renamed, so the newest complete one is
always usable after a crash.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.artifacts import atomic_folder, settle_folders, versions, write_json_atomically
from neurofed.federated.state import StrategyState
from neurofed.federated.study import STUDY_FILE, Study
from neurofed.federated.update import Parameters
from neurofed.training import RunFolderError
from neurofed.training.records import json_number, number

__all__ = [
    "CHECKPOINTS",
    "EVALUATION",
    "LAST_MODEL",
    "MODEL",
    "ROUNDS",
    "RUN_JSON",
    "SUMMARY",
    "RoundCheckpoint",
    "RoundRecord",
    "check_run_folder",
    "latest_round_checkpoint",
    "load_round_checkpoint",
    "open_run_folder",
    "read_round_records",
    "round_metrics_path",
    "save_round_checkpoint",
    "settle_round_checkpoints",
]

ROUNDS = "rounds"
CHECKPOINTS = "checkpoints"
MODEL = "model"
LAST_MODEL = "last_model"
RUN_JSON = "run.json"
SUMMARY = "summary.json"
#: An evaluation study's results, per model (see ``FederatedRun.evaluation``).
EVALUATION = "evaluation.json"
_GLOBAL = "global.safetensors"
_STRATEGY = "strategy.safetensors"
_HISTORY = "history.json"
_ROUND_DIR = re.compile(r"^round-(\d+)$")


def _metrics_json(values: Mapping[str, float]) -> dict[str, float | None]:
    return {k: json_number(float(v)) for k, v in values.items()}


def _metrics_read(values: Mapping[str, Any]) -> dict[str, float]:
    return {k: number(v) for k, v in values.items()}


@dataclass
class RoundRecord:
    """What happened in one round (written to ``rounds/<k>/metrics.json``).

    Attributes
    ----------
    round
        1-based round number.
    targets
        Sites the round's training task was sent to.
    accepted
        Sites whose updates were aggregated.
    rejected
        Site → why its update was refused by validation.
    failed
        Site → the error reason it reported (its training raised).
    refused
        Site → why its custodian refused the study (not approved there, dataset not allowed);
        such a site is asked again next round, so approving it mid-run lets it join.
    dropped
        Sites that did not answer in time (left out of later rounds).
    late
        Under the deadline policy: sites whose training answer came after the deadline (left
        out of this round only); empty (and left out of the JSON) otherwise.
    aggregated
        Whether the global model changed (``False`` when the quorum was not met).
    quorum_error
        Why the round was not aggregated.
    train
        Site → its training numbers (``num_examples``, ``train_loss``, ``steps``, ``seconds``).
    validation
        The federated validation of the new global model (merged over sites).
    validation_per_site
        The same, per site.
    validation_per_split
        An evaluation whose sites score different splits (``[evaluate.site_splits]``): the
        sites' metrics merged by the split they scored (``"validation"``, ``"all"`` …); empty
        (and left out of the JSON) otherwise.
    personalised
        Ditto: the validation of the sites' personalised models, each on its own site's
        validation split (merged over sites); empty (and left out of the JSON) otherwise.
    personalised_per_site
        The same, per site.
    validation_seconds
        Site → wall time of its validation task (training times are in ``train``).
    withheld
        Site → what it did not send with its validation (too few cases behind it).
    cases_per_site
        Site → per-case metric → one value per case (no identifiers), only from a site whose
        custodian allows per-case values for the study's dataset; empty (and left out of the
        JSON) otherwise.
    audit_heads
        Site → task → the head (``seq``, ``sha256``) of the site's audit log after it, as the
        site sent it: a copy of each log's tail its custodian can check the log against.
    seconds
        Wall time of the round on the server.
    """

    round: int
    targets: list[str] = field(default_factory=list)
    accepted: list[str] = field(default_factory=list)
    rejected: dict[str, str] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    refused: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    late: list[str] = field(default_factory=list)
    aggregated: bool = False
    quorum_error: str | None = None
    train: dict[str, dict[str, float]] = field(default_factory=dict)
    validation: dict[str, float] = field(default_factory=dict)
    validation_per_site: dict[str, dict[str, float]] = field(default_factory=dict)
    validation_per_split: dict[str, dict[str, float]] = field(default_factory=dict)
    personalised: dict[str, float] = field(default_factory=dict)
    personalised_per_site: dict[str, dict[str, float]] = field(default_factory=dict)
    validation_seconds: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0
    audit_heads: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    withheld: dict[str, list[str]] = field(default_factory=dict)
    cases_per_site: dict[str, dict[str, list[float | None]]] = field(default_factory=dict)

    def note_withheld(self, site: str, lines: Sequence[str]) -> None:
        """Keep what ``site`` did not send with its validation, and why (if anything)."""
        if lines:
            self.withheld[site] = list(lines)

    def note_audit_head(self, site: str, task: str, head: tuple[int, str] | None) -> None:
        """Keep the audit-log head ``site`` sent with its answer to ``task`` (if any)."""
        if head is not None:
            self.audit_heads.setdefault(site, {})[task] = {"seq": head[0], "sha256": head[1]}

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "round": self.round,
            "targets": list(self.targets),
            "accepted": list(self.accepted),
            "rejected": dict(self.rejected),
            "failed": dict(self.failed),
            "refused": dict(self.refused),
            "dropped": list(self.dropped),
            "aggregated": self.aggregated,
            "quorum_error": self.quorum_error,
            "train": {s: _metrics_json(v) for s, v in self.train.items()},
            "validation": _metrics_json(self.validation),
            "validation_per_site": {
                s: _metrics_json(v) for s, v in self.validation_per_site.items()
            },
            "validation_seconds": dict(self.validation_seconds),
            "seconds": self.seconds,
        }
        if self.late:
            out["late"] = list(self.late)
        if self.audit_heads:
            out["audit_heads"] = {s: dict(v) for s, v in self.audit_heads.items()}
        if self.withheld:
            out["withheld"] = {s: list(v) for s, v in self.withheld.items()}
        if self.validation_per_split:
            out["validation_per_split"] = {
                k: _metrics_json(v) for k, v in self.validation_per_split.items()
            }
        if self.personalised_per_site:
            out["personalised"] = _metrics_json(self.personalised)
            out["personalised_per_site"] = {
                s: _metrics_json(v) for s, v in self.personalised_per_site.items()
            }
        if self.cases_per_site:
            out["cases_per_site"] = {s: dict(v) for s, v in self.cases_per_site.items()}
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RoundRecord:
        return cls(
            round=int(data["round"]),
            targets=list(data.get("targets", [])),
            accepted=list(data.get("accepted", [])),
            rejected=dict(data.get("rejected", {})),
            failed=dict(data.get("failed", {})),
            refused=dict(data.get("refused", {})),
            dropped=list(data.get("dropped", [])),
            late=list(data.get("late", [])),
            aggregated=bool(data.get("aggregated", False)),
            quorum_error=data.get("quorum_error"),
            train={s: _metrics_read(v) for s, v in data.get("train", {}).items()},
            validation=_metrics_read(data.get("validation", {})),
            validation_per_site={
                s: _metrics_read(v) for s, v in data.get("validation_per_site", {}).items()
            },
            validation_per_split={
                str(k): _metrics_read(v) for k, v in data.get("validation_per_split", {}).items()
            },
            personalised=_metrics_read(data.get("personalised", {})),
            personalised_per_site={
                s: _metrics_read(v) for s, v in data.get("personalised_per_site", {}).items()
            },
            validation_seconds={
                str(s): float(v) for s, v in data.get("validation_seconds", {}).items()
            },
            seconds=float(data.get("seconds", math.nan)),
            audit_heads={str(s): dict(v) for s, v in data.get("audit_heads", {}).items()},
            withheld={str(s): list(v) for s, v in data.get("withheld", {}).items()},
            cases_per_site={
                str(s): {str(k): list(c) for k, c in v.items()}
                for s, v in data.get("cases_per_site", {}).items()
            },
        )


def check_run_folder(run_dir: Path, study_hash: str) -> bool:
    """Whether ``run_dir`` already holds a run (``run.json``) of the study ``study_hash``.

    Raises
    ------
    RunFolderError
        It holds a run of another study (the message names both hashes and the fix).
    """
    run_json = Path(run_dir) / RUN_JSON
    if not run_json.is_file():
        return False
    stored = json.loads(run_json.read_text(encoding="utf-8")).get("study_hash")
    if stored != study_hash:
        raise RunFolderError(
            f"{run_dir} holds a run of study sha256:{stored}, not of this study "
            f"(sha256:{study_hash}); re-run the same study to resume it, or choose another --out"
        )
    return True


def open_run_folder(run_dir: Path, study: Study, sites: Sequence[str]) -> bool:
    """Create the run folder of ``study`` (``study.toml`` and ``run.json``) unless it exists;
    returns whether it existed (a run to resume).

    Raises
    ------
    RunFolderError
        It holds a run of another study.
    """
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    if check_run_folder(run_dir, study.content_hash):
        return True
    (run_dir / STUDY_FILE).write_text(study.to_toml(), encoding="utf-8")
    write_json_atomically(
        run_dir / RUN_JSON,
        {
            "study": study.name,
            "study_hash": study.content_hash,
            "sites": sorted(sites),
            "versions": versions(),
            "created": datetime.now(UTC).isoformat(timespec="seconds"),
        },
    )
    return False


def round_metrics_path(run_dir: Path, round_number: int) -> Path:
    """``<run>/rounds/<k>/metrics.json``."""
    return Path(run_dir) / ROUNDS / str(round_number) / "metrics.json"


def read_round_records(run_dir: Path) -> list[RoundRecord]:
    """Every ``rounds/<k>/metrics.json`` of the run folder, in round order.

    Raises
    ------
    RunFolderError
        A round's file is unreadable or not a round's record (the error names it).
    """
    folder = Path(run_dir) / ROUNDS
    numbers = sorted(int(p.name) for p in folder.glob("*") if p.name.isdigit())
    records = []
    for k in numbers:
        path = round_metrics_path(run_dir, k)
        try:
            records.append(RoundRecord.from_json(json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError, TypeError, KeyError, AttributeError) as error:
            raise RunFolderError(
                f"{path}: not a readable round record ({type(error).__name__}: {error}); "
                "the run may still be writing it, or the file was damaged"
            ) from None
    return records


@dataclass(frozen=True)
class RoundCheckpoint:
    """The server's state after a round: global parameters, strategy state, history."""

    round: int
    params: Parameters
    state: StrategyState
    history: tuple[RoundRecord, ...]
    dropped: tuple[str, ...]
    study_hash: str


def save_round_checkpoint(run_dir: Path, checkpoint: RoundCheckpoint) -> Path:
    """Write ``checkpoints/round-<k>/`` (atomically: a temporary folder renamed)."""
    from safetensors.numpy import save_file

    final = Path(run_dir) / CHECKPOINTS / f"round-{checkpoint.round}"
    with atomic_folder(final) as tmp:
        # np.ascontiguousarray would turn 0-d buffers (num_batches_tracked) into shape (1,)
        params = {k: np.array(v, order="C") for k, v in checkpoint.params.items()}
        save_file(params, str(tmp / _GLOBAL))
        checkpoint.state.save(tmp / _STRATEGY)
        write_json_atomically(
            tmp / _HISTORY,
            {
                "round": checkpoint.round,
                "study_hash": checkpoint.study_hash,
                "dropped": list(checkpoint.dropped),
                "history": [r.to_json() for r in checkpoint.history],
            },
        )
    return final


def settle_round_checkpoints(run_dir: Path) -> None:
    """Finish a checkpoint's replacement that a kill interrupted (a round is checkpointed again
    once validated; :func:`~neurofed.artifacts.settle_folders`). Only the run's owner calls it,
    before it reads the checkpoints to resume."""
    settle_folders(Path(run_dir) / CHECKPOINTS)


def latest_round_checkpoint(run_dir: Path) -> Path | None:
    """The newest complete ``checkpoints/round-<k>`` folder, or ``None`` (read only: the owner
    calls :func:`settle_round_checkpoints` first)."""
    root = Path(run_dir) / CHECKPOINTS
    if not root.is_dir():
        return None
    found = []
    for path in root.iterdir():
        match = _ROUND_DIR.match(path.name)
        if match and (path / _HISTORY).is_file() and (path / _GLOBAL).is_file():
            found.append((int(match.group(1)), path))
    return max(found)[1] if found else None


def load_round_checkpoint(path: Path) -> RoundCheckpoint:
    """Read a folder written by :func:`save_round_checkpoint`."""
    from safetensors.numpy import load_file

    path = Path(path)
    record = json.loads((path / _HISTORY).read_text(encoding="utf-8"))
    return RoundCheckpoint(
        round=int(record["round"]),
        params=dict(load_file(str(path / _GLOBAL))),
        state=StrategyState.load(path / _STRATEGY),
        history=tuple(RoundRecord.from_json(r) for r in record["history"]),
        dropped=tuple(record.get("dropped", [])),
        study_hash=str(record["study_hash"]),
    )
