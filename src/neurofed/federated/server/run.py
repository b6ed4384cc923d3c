"""The server's bookkeeping of a federated run, without NVFlare: rounds, quorum, selection.

:class:`FederatedRun` is what the NVFlare controller
(:class:`~neurofed.federated.engine.controller.StudyController`) drives, kept free of the FL
engine so it is tested directly: it builds the initial global model from the study seed (or
resumes from the newest round checkpoint), turns the sites' replies of a round into an
aggregation (:func:`~neurofed.federated.round.aggregate_round`) and a federated validation
(merged :class:`~neurofed.tasks.MetricState`), drops sites that did not answer, writes each
round's metrics and checkpoint, and at the end writes the best round's model (selected by the
study's metric and explicit direction) and the last round's. A site whose custodian refused the
study (its reply carries ``refused``) is recorded under ``refused`` — in the round's metrics and
in the summary (every site refused in some round, with its latest reason) — not as a failure;
it stays targeted, so a site that approves the study mid-run joins the next round. Ditto sites
also send the metric state of their personalised models; it is merged the same way into the
round's ``personalised`` validation and the summary's ``personalised`` entry (the last round
that has one) — both absent for other strategies.

Examples
--------
>>> import numpy as np
>>> reply = SiteReply("site-1", {}, {"error": "OSError: disk"})
>>> reply.error
'OSError: disk'
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.artifacts import versions, write_json_atomically
from neurofed.federated.protocol import MetaField, answer_error, answer_refused
from neurofed.federated.round import QuorumError, aggregate_round
from neurofed.federated.selection import best_round
from neurofed.federated.server.planning import (
    PlanningError,
    copy_plan_files,
    plan_from_replies,
    plan_meta,
    read_run_plan,
    write_run_plan,
)
from neurofed.federated.server.run_folder import (
    LAST_MODEL,
    MODEL,
    RUN_JSON,
    SUMMARY,
    RoundCheckpoint,
    RoundRecord,
    latest_round_checkpoint,
    load_round_checkpoint,
    round_metrics_path,
    save_round_checkpoint,
)
from neurofed.federated.state import StrategyState
from neurofed.federated.study import STUDY_FILE, Study
from neurofed.federated.update import Parameters, SiteUpdate
from neurofed.preprocess.plan import Plan
from neurofed.tasks import MetricState, merge_states
from neurofed.training import LocalTrainer, save_model
from neurofed.training.config import TrainConfig
from neurofed.training.parameters import check_arrays, load_arrays
from neurofed.training.records import finalize_metrics, json_number

__all__ = ["FederatedRun", "RunFolderError", "SiteReply"]

logger = logging.getLogger(__name__)


class RunFolderError(ValueError):
    """The run folder holds another study; the message names both hashes and the fix."""


@dataclass(frozen=True)
class SiteReply:
    """One site's answer to a task, as the controller received it."""

    site_id: str
    params: Mapping[str, Any] = field(default_factory=dict)
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return answer_error(self.meta)

    @property
    def refused(self) -> bool:
        """Whether the site's custodian refused the study (the reason is :attr:`error`)."""
        return answer_refused(self.meta)


def _update(reply: SiteReply) -> SiteUpdate:
    meta = reply.meta
    metrics = meta.get(MetaField.TRAIN_METRICS.value) or {}
    return SiteUpdate(
        reply.site_id,
        {str(k): np.asarray(v) for k, v in reply.params.items()},
        num_examples=meta.get(MetaField.NUM_EXAMPLES.value, 0),
        label_counts={
            str(k): int(v) for k, v in (meta.get(MetaField.LABEL_COUNTS.value) or {}).items()
        },
        metrics={str(k): float(v) for k, v in metrics.items()},
    )


class FederatedRun:
    """Rounds of one study in one run folder (see :mod:`~neurofed.federated.server.run_folder`).

    Parameters
    ----------
    study
        The validated study.
    run_dir
        The run folder; a folder holding checkpoints of the same study is resumed.
    """

    def __init__(self, study: Study, run_dir: Path) -> None:
        self.study = study
        self.run_dir = Path(run_dir)
        self.strategy = study.build_strategy()
        self.task = study.build_task()
        self.params: Parameters = {}
        self.state = StrategyState.empty()
        self.history: list[RoundRecord] = []
        self.live: list[str] = []
        self.dropped: list[str] = []
        self.next_round = 1
        self.plan: Plan | None = None  # a study with [plan]: the run's plan.json
        self.planning: dict[str, Any] = {}  # who contributed to it (run.json's "plan")

    # -- start / resume ------------------------------------------------------------------------

    def start(self, sites: Sequence[str]) -> int:
        """Prepare the run for ``sites``; returns the first round to run (``rounds + 1`` = done).

        Resuming gives every site a new chance: the sites of the federation as it is now are all
        targeted again.

        Raises
        ------
        RunFolderError
            The run folder holds a run of another study.
        """
        self.run_dir.mkdir(parents=True, exist_ok=True)
        run_json = self.run_dir / RUN_JSON
        digest = self.study.content_hash
        if run_json.is_file():
            stored = json.loads(run_json.read_text(encoding="utf-8")).get("study_hash")
            if stored != digest:
                raise RunFolderError(
                    f"{self.run_dir} holds a run of study sha256:{stored}, not of this study "
                    f"(sha256:{digest}); re-run the same study to resume it, or choose another "
                    "--out"
                )
        else:
            (self.run_dir / STUDY_FILE).write_text(self.study.to_toml(), encoding="utf-8")
            write_json_atomically(
                run_json,
                {
                    "study": self.study.name,
                    "study_hash": digest,
                    "sites": sorted(sites),
                    "versions": versions(),
                    "created": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        self.live = sorted(sites)
        latest = latest_round_checkpoint(self.run_dir)
        self._read_plan(resuming=latest is not None)
        if latest is None:
            self.params = self.initial_parameters()  # seeded by the study
            self.next_round = 1
        else:
            checkpoint = load_round_checkpoint(latest)
            self.params = dict(checkpoint.params)
            self.state = checkpoint.state
            self.history = list(checkpoint.history)
            self.next_round = checkpoint.round + 1
            logger.info("resuming %s after round %d", self.run_dir, checkpoint.round)
        return self.next_round

    def task_meta(self, round_number: int) -> dict[str, Any]:
        """The ``meta`` of a task of ``round_number``: the study, its hash, the round."""
        return {
            MetaField.STUDY.value: self.study.to_dict(),
            MetaField.STUDY_HASH.value: self.study.content_hash,
            MetaField.ROUND.value: round_number,
        } | plan_meta(self.plan)

    # -- the plan of a study with [plan] (see planning_round) ----------------------------------

    def train_config(self) -> TrainConfig:
        """The study's engine config on the server (CPU), under the run's plan if planned."""
        return self.study.train_config(device="cpu", plan=self.plan)

    def initial_parameters(self) -> Parameters:
        """The seeded initial global model; ``{}`` while a planned study waits for its plan."""
        if self.needs_fingerprint():
            return {}
        return LocalTrainer(self.train_config()).get_parameters(include_local=True)

    def needs_fingerprint(self) -> bool:
        """Whether the fingerprint round must run before round 1 (planned, no plan.json)."""
        return self.study.plan is not None and self.plan is None

    def _read_plan(self, *, resuming: bool) -> None:
        try:
            self.plan = read_run_plan(self.run_dir, self.study)
        except PlanningError as error:
            raise RunFolderError(str(error)) from None
        if self.needs_fingerprint() and resuming:
            raise RunFolderError(
                f"{self.run_dir} holds round checkpoints of a planned study but no plan.json; "
                "copy the run's plan.json back, or choose another --out"
            )
        if self.plan is not None:
            stored = json.loads((self.run_dir / RUN_JSON).read_text(encoding="utf-8"))
            self.planning = dict(stored.get("plan") or {})
            logger.info("%s: read plan %s back", self.run_dir, self.plan.plan_id)

    def record_fingerprints(self, targets: Sequence[str], replies: Sequence[SiteReply]) -> Plan:
        """Merge the fingerprint round's replies into the run's plan and build the initial
        global model under it; sites that did not answer are dropped from the rounds.

        Raises
        ------
        PlanningError
            Fewer than ``min_sites`` sites sent a fingerprint, or no plan fits it.
        """
        answers = [(r.site_id, r.meta) for r in replies]
        plan, merged, record = plan_from_replies(self.study, targets, answers)
        write_run_plan(self.run_dir, plan, merged, record)
        self.plan, self.planning = plan, record.to_json()
        for site in record.dropped:
            if site in self.live:
                logger.warning("fingerprint round: %s did not answer in time; dropped", site)
                self.live.remove(site)
                self.dropped.append(site)
        self.params = self.initial_parameters()
        logger.info(
            "plan %s from %d case(s) of %s: spacing %s, patch %s",
            plan.plan_id,
            merged.num_cases,
            record.contributed,
            plan.spacing,
            plan.patch_size,
        )
        return plan

    def _plan_summary(self) -> dict[str, Any]:
        """The summary's ``plan`` entry (none for a study without [plan])."""
        if self.plan is None:
            return {}
        return {
            "plan": {
                "plan_id": self.plan.plan_id,
                "spacing": list(self.plan.spacing),
                "patch_size": list(self.plan.patch_size),
                "volume_shape": list(self.plan.volume_shape),
                "batch_size": self.plan.batch_size,
                "num_cases": self.plan.num_cases,
                "fingerprint_id": self.plan.fingerprint_id,
                "sites": list(self.planning.get("sites", [])),
                "failed": dict(self.planning.get("failed", {})),
            }
        }

    # -- one round -----------------------------------------------------------------------------

    def _drop(
        self, record: RoundRecord, targets: Sequence[str], replies: Sequence[SiteReply]
    ) -> None:
        answered = {r.site_id for r in replies}
        for site in targets:
            if site not in answered and site in self.live:
                logger.warning(
                    "round %d: %s did not answer within %g s; dropped from later rounds",
                    record.round,
                    site,
                    self.study.round_timeout_s,
                )
                self.live.remove(site)
                self.dropped.append(site)
                record.dropped.append(site)

    def record_training(
        self, record: RoundRecord, targets: Sequence[str], replies: Sequence[SiteReply]
    ) -> bool:
        """Aggregate the training replies of a round; returns whether the global model changed."""
        record.targets = list(targets)
        self._drop(record, targets, replies)
        updates = []
        for reply in sorted(replies, key=lambda r: r.site_id):  # order-independent result
            if reply.error is not None and reply.refused:
                logger.warning("round %d: %s %s", record.round, reply.site_id, reply.error)
                record.refused[reply.site_id] = reply.error
                continue
            if reply.error is not None:
                logger.warning("round %d: %s failed: %s", record.round, reply.site_id, reply.error)
                record.failed[reply.site_id] = reply.error
                continue
            update = _update(reply)
            updates.append(update)
            record.train[reply.site_id] = {"num_examples": float(update.num_examples)} | dict(
                update.metrics
            )
        try:
            result = aggregate_round(
                self.strategy,
                self.params,
                updates,
                self.state,
                min_sites=self.study.min_sites,
                max_update_norm=self.study.max_update_norm,
            )
        except QuorumError as error:
            logger.warning("round %d not aggregated: %s", record.round, error)
            record.quorum_error = str(error)
            record.rejected = {r.site_id: r.line() for r in error.rejections}
            return False
        record.rejected = {r.site_id: r.line() for r in result.rejections}
        for site, reason in record.rejected.items():
            logger.warning("round %d: update of %s rejected: %s", record.round, site, reason)
        record.accepted = list(result.accepted)
        record.aggregated = True
        self.params, self.state = dict(result.params), result.state
        return True

    def record_validation(
        self, record: RoundRecord, targets: Sequence[str], replies: Sequence[SiteReply]
    ) -> None:
        """Merge the sites' validation metric states of the new global model (and, from Ditto
        sites, of their personalised models)."""
        self._drop(record, targets, replies)
        states = []
        personalised = []
        for reply in sorted(replies, key=lambda r: r.site_id):
            if reply.error is not None and reply.refused:
                record.refused.setdefault(reply.site_id, reply.error)
                continue
            if reply.error is not None:
                logger.warning(
                    "round %d: validation at %s failed: %s",
                    record.round,
                    reply.site_id,
                    reply.error,
                )
                record.failed.setdefault(reply.site_id, f"validation: {reply.error}")
                continue
            own = MetricState.from_arrays(
                reply.meta.get(MetaField.PERSONALISED_METRIC_STATE.value) or {}
            )
            if not own.is_empty:
                personalised.append(own)
                record.personalised_per_site[reply.site_id] = finalize_metrics(self.task, own)
            seconds = reply.meta.get(MetaField.VALIDATE_SECONDS.value)
            if isinstance(seconds, int | float) and not isinstance(seconds, bool):
                record.validation_seconds[reply.site_id] = float(seconds)
            arrays = reply.meta.get(MetaField.METRIC_STATE.value) or {}
            state = MetricState.from_arrays(arrays)
            if state.is_empty:
                continue
            states.append(state)
            record.validation_per_site[reply.site_id] = finalize_metrics(self.task, state)
        record.validation = finalize_metrics(self.task, merge_states(states))
        if personalised:
            record.personalised = finalize_metrics(self.task, merge_states(personalised))

    def end_round(self, record: RoundRecord) -> None:
        """Write the round's metrics and checkpoint; the next round follows."""
        self.history.append(record)
        write_json_atomically(round_metrics_path(self.run_dir, record.round), record.to_json())
        save_round_checkpoint(
            self.run_dir,
            RoundCheckpoint(
                round=record.round,
                params=self.params,
                state=self.state,
                history=tuple(self.history),
                dropped=tuple(self.dropped),
                study_hash=self.study.content_hash,
            ),
        )
        self.next_round = record.round + 1

    # -- the end -------------------------------------------------------------------------------

    def selection(self) -> tuple[int, float] | None:
        """The best round by the study's metric and direction (``None``: no round validated)."""
        history = {r.round: r.validation for r in self.history if r.aggregated and r.validation}
        selection = self.study.selection
        try:
            return best_round(history, selection.metric, selection.direction)
        except ValueError:
            return None

    def _save(self, folder: Path, params: Parameters, record: RoundRecord | None) -> Path:
        config = self.train_config().with_changes(device=self.study.train.device)
        model = self.task.build_model(config.model_config)
        load_arrays(model, check_arrays(model, params))
        saved = save_model(
            folder,
            model,
            config,
            metrics=record.validation if record else {},
            epoch=None if record is None else record.round,
            provenance={
                "run": "federated",
                "study": self.study.name,
                "study_hash": self.study.content_hash,
                "strategy": self.study.strategy.value,
                "round": None if record is None else record.round,
                "sites": sorted({s for r in self.history for s in r.targets}),
            }
            | ({} if self.plan is None else {"plan_id": self.plan.plan_id}),
        )
        copy_plan_files(self.run_dir, saved)  # model/ = weights + study + plan + fingerprint
        return saved

    def finish(self) -> dict[str, Any]:
        """Write ``model/`` (the selected round), ``last_model/`` and ``summary.json``."""
        by_round = {r.round: r for r in self.history}
        last = self.history[-1] if self.history else None
        self._save(self.run_dir / LAST_MODEL, self.params, last)
        chosen = self.selection()
        selected: dict[str, Any] | None = None
        if chosen is not None:
            round_number, value = chosen
            path = self.run_dir / "checkpoints" / f"round-{round_number}"
            self._save(
                self.run_dir / MODEL, load_round_checkpoint(path).params, by_round[round_number]
            )
            selected = {
                "round": round_number,
                "metric": self.study.selection.metric,
                "direction": self.study.selection.direction.value,
                "value": json_number(value),
            }
        else:  # nothing validated: the last model is the only candidate
            self._save(self.run_dir / MODEL, self.params, last)
        summary = {
            "study": self.study.name,
            "study_hash": self.study.content_hash,
            "rounds_done": len(self.history),
            "rounds": self.study.rounds,
            "selected": selected,
            "dropped": list(self.dropped),
            "refused": {site: reason for r in self.history for site, reason in r.refused.items()},
            "model": MODEL,
            "last_model": LAST_MODEL,
        }
        personalised = [r for r in self.history if r.personalised_per_site]
        if personalised:  # Ditto: the sites' own models after the last round that validated
            written = personalised[-1].to_json()
            summary["personalised"] = {
                "round": written["round"],
                "validation": written["personalised"],
                "validation_per_site": written["personalised_per_site"],
            }
        summary |= self._plan_summary()
        write_json_atomically(self.run_dir / SUMMARY, summary)
        return summary
