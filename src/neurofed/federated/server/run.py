"""The server's bookkeeping of a federated run, without NVFlare: rounds, quorum, selection.

:class:`FederatedRun` is what the NVFlare controller
(:class:`~neurofed.federated.engine.controller.StudyController`) drives, kept free of the FL
engine so it is tested directly: it builds the initial global model from the study seed or from
the study's ``[initial_model]`` (its weights' SHA-256, task and network checked first:
:mod:`~neurofed.federated.study.initial_model`), or resumes from the newest round checkpoint; it
turns the sites' answers of a round into an aggregation
(:func:`~neurofed.federated.round.aggregate_round`) and a federated validation
(merged :class:`~neurofed.tasks.MetricState`), drops sites that did not answer, writes each
round's metrics and checkpoint, and at the end writes the best round's model (selected by the
study's metric and explicit direction) and the last round's. A site whose custodian refused the
study (its answer carries ``refused``) is recorded under ``refused`` — in the round's metrics and
in the summary (every site refused in some round, with its latest reason) — not as a failure;
it stays targeted, so a site that approves the study mid-run joins the next round. Ditto sites'
personalised metric states are merged the same way (``personalised`` in the round and summary).

Answers arrive decoded (:class:`~neurofed.federated.protocol.SiteAnswer`) and are checked
against the study (:mod:`~neurofed.federated.server.answers`): a malformed one is that site's
failure for the round. The new global model is checkpointed right after aggregation.

Under ``[participation] validate_incoming`` a round's model is scored at the start of the next
round (:meth:`FederatedRun.incoming_validation`, :meth:`FederatedRun.record_incoming_validation`):
its metrics file is written again with the validation, before the next round aggregates, so a
run resumed at any point scores every model once.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.artifacts import write_json_atomically
from neurofed.federated.clock import SiteClock, site_clocks
from neurofed.federated.condensed import PayloadError, PayloadSpec, check_payload
from neurofed.federated.protocol import (
    MIN_SITES_FOR_CURVE,
    Answer,
    MergedRound,
    PersonalisedSummary,
    RunSummary,
    SelectedRound,
    SiteAnswer,
    TaskName,
    TaskRequest,
    TrainResult,
    encode_plan,
)
from neurofed.federated.round import QuorumError, aggregate_round
from neurofed.federated.secagg.vectors import Layout
from neurofed.federated.selection import best_round
from neurofed.federated.server.answers import (
    StateSchema,
    mergeable,
    site_update,
    state_schema,
    training_failure,
    validation_states,
)
from neurofed.federated.server.distill import (
    class_logits_of,
    payload_spec,
    proxy_mismatches,
    train_on_payloads,
)
from neurofed.federated.server.participation import past_deadline, select_sites
from neurofed.federated.server.planning import (
    PlanningError,
    copy_plan_files,
    plan_from_answers,
    plan_summary,
    read_run_plan,
    write_run_plan,
)
from neurofed.federated.server.run_folder import (
    EVALUATION,
    LAST_MODEL,
    MODEL,
    SUMMARY,
    RoundCheckpoint,
    RoundRecord,
    latest_round_checkpoint,
    load_round_checkpoint,
    open_run_folder,
    round_metrics_path,
    save_round_checkpoint,
    settle_round_checkpoints,
)
from neurofed.federated.server.secagg import SecAggError, SecureRound, Send, run_steps
from neurofed.federated.server.timing import validation_cases
from neurofed.federated.state import StrategyState
from neurofed.federated.strategies import StrategyName
from neurofed.federated.study import Study, StudyKind
from neurofed.federated.study.evaluation import split_label
from neurofed.federated.study.initial_model import InitialModelError
from neurofed.federated.update import Parameters
from neurofed.preprocess.plan import Plan
from neurofed.tasks import MetricState, merge_states
from neurofed.training import LocalTrainer, RunFolderError, save_model
from neurofed.training.config import TrainConfig
from neurofed.training.model_folder import TrainedModel
from neurofed.training.parameters import check_arrays, load_arrays
from neurofed.training.records import finalize_metrics

__all__ = ["FederatedRun"]

logger = logging.getLogger(__name__)

#: How to fix an initial model that does not fit the network a plan builds.
_PLANNED_NETWORK_FIX = (
    "give a model folder of the network the plan builds, or remove [plan] and set the network "
    "in [model]"
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
        self._schema: StateSchema | None = None  # what the sites' metric states must hold
        self._initial: TrainedModel | None = None  # the study's [initial_model], once checked
        #: in simulation: each site's simulated speeds (the deadline policy's clock), their seed
        self.clocks: dict[str, SiteClock] = {}
        self.clock_seed = 0

    # -- start / resume ------------------------------------------------------------------------

    def start(self, sites: Sequence[str]) -> int:
        """Prepare the run for ``sites``; returns the first round to run (``rounds + 1`` = done).

        Resuming gives every site a new chance: the sites of the federation as it is now are all
        targeted again.

        Raises
        ------
        RunFolderError
            The run folder holds a run of another study.
        InitialModelError
            A new run of a study with ``[initial_model]`` whose folder is missing or damaged,
            whose weights are not the study's (SHA-256), or of another task or network.
        StudyError
            ``[evaluate.site_splits]`` names a site that is not one of ``sites``.
        """
        self.study.check_evaluated_sites(sites)
        settle_round_checkpoints(self.run_dir)
        latest = latest_round_checkpoint(self.run_dir)
        if latest is None:
            # a new run: its initial model is checked before the run folder is made (a fixed
            # sha256 is another study) and, for a planned study, before its fingerprint round
            self._initial = self.study.load_initial_model()
        open_run_folder(self.run_dir, self.study, sites)
        self.live = sorted(sites)
        try:
            self.plan, self.planning = read_run_plan(
                self.run_dir, self.study, resuming=latest is not None
            )
        except PlanningError as error:
            raise RunFolderError(str(error)) from None
        if latest is None:
            self.params = self.initial_parameters()
            self.next_round = 1
        else:
            checkpoint = load_round_checkpoint(latest)
            self.params = dict(checkpoint.params)
            self.state = checkpoint.state
            self.history = list(checkpoint.history)
            self.next_round = checkpoint.round + 1
            logger.info("resuming %s after round %d", self.run_dir, checkpoint.round)
        return self.next_round

    def task_request(self, round_number: int) -> TaskRequest:
        """What a task of ``round_number`` carries: the study, its hash, the round, the plan,
        and the rounds finished so far as every site may see them (:meth:`merged_rounds`)."""
        return TaskRequest(
            study=self.study.to_dict(),
            study_hash=self.study.content_hash,
            round=round_number,
            plan=encode_plan(self.plan),
            progress=self.merged_rounds(),
            class_logits=class_logits_of(self.state.arrays) if self._distill else {},
        )

    @property
    def _distill(self) -> bool:
        return self.study.strategy is StrategyName.DISTILL

    def _payload_failure(self, result: TrainResult, spec: PayloadSpec) -> str | None:
        """Why a distill site's condensed payload is unusable (``None``: it is usable)."""
        try:
            check_payload(result.condensed, spec)
        except PayloadError as error:
            return f"malformed answer: {error}"
        return None

    def merged_rounds(self) -> tuple[MergedRound, ...]:
        """Each finished round's merged selection metric, sites merged and seconds; the value
        only where :data:`MIN_SITES_FOR_CURVE` sites validated (no site's own number)."""
        metric = self.study.selection.metric
        out = []
        for record in self.history:
            sites = len(record.validation_per_site)
            value = record.validation.get(metric)
            if value is None or not math.isfinite(value) or sites < MIN_SITES_FOR_CURVE:
                value = None
            seconds = float(record.seconds) if math.isfinite(record.seconds) else 0.0
            out.append(MergedRound(record.round, value, sites, seconds))
        return tuple(out)

    # -- the plan of a study with [plan] (see server.planning) ---------------------------------

    def train_config(self) -> TrainConfig:
        """The study's training config on the server (CPU), under the run's plan if planned."""
        return self.study.train_config(device="cpu", plan=self.plan)

    def initial_parameters(self) -> Parameters:
        """The initial global model: the weights of the study's ``[initial_model]``, else
        initialised from the study's seed; ``{}`` while a planned study waits for its plan.

        Raises
        ------
        InitialModelError
            The initial model is missing, changed, or does not fit the study's network.
        """
        if self.needs_fingerprint() or self.study.kind is StudyKind.EVALUATE:
            return {}  # an evaluation sends each round's model (evaluated_parameters)
        return self._initial_parameters(self.train_config())

    def evaluated_parameters(self, round_number: int) -> Parameters:
        """The weights an evaluation study scores in ``round_number`` (its model of that
        round), checked against the study as at the start.

        Raises
        ------
        InitialModelError
            The model folder is missing, changed or does not fit the study.
        """
        _, parameters = self.study.load_evaluated(round_number - 1)
        return parameters

    def _initial_parameters(self, config: TrainConfig) -> Parameters:
        initial = self.study.initial_model
        if initial is None:
            return LocalTrainer(config).get_parameters(include_local=True)  # seeded
        if self._initial is None:
            self._initial = self.study.load_initial_model()
        assert self._initial is not None
        if self.study.plan is None:
            return initial.parameters(self._initial, config)
        return initial.parameters(self._initial, config, fix=_PLANNED_NETWORK_FIX)

    def needs_fingerprint(self) -> bool:
        """Whether the fingerprint round must run before round 1 (planned, no plan.json)."""
        return self.study.plan is not None and self.plan is None

    def record_fingerprints(self, targets: Sequence[str], answers: Sequence[SiteAnswer]) -> Plan:
        """Merge the fingerprint round's answers into the run's plan and build the initial
        global model under it; sites that did not answer are dropped from the rounds.

        Raises
        ------
        PlanningError
            Fewer than ``min_sites`` sites sent a fingerprint, no plan fits it, or the study's
            ``[initial_model]`` does not fit the planned network (the plan is then not kept).
        """
        plan, merged, record = plan_from_answers(self.study, targets, answers)
        try:
            params = self._initial_parameters(self.study.train_config(device="cpu", plan=plan))
        except InitialModelError as error:
            raise PlanningError(
                f"plan {plan.plan_id} was not kept: the network it builds does not fit the "
                f"study's initial model ({error})"
            ) from None
        write_run_plan(self.run_dir, plan, merged, record)
        self.plan, self.planning = plan, record.to_json()
        for site in record.dropped:
            if site in self.live:
                logger.warning("fingerprint round: %s did not answer in time; dropped", site)
                self.live.remove(site)
                self.dropped.append(site)
        self.params = params
        logger.info(
            "plan %s from %d case(s) of %s: spacing %s, patch %s",
            plan.plan_id,
            merged.num_cases,
            record.contributed,
            plan.spacing,
            plan.patch_size,
        )
        return plan

    # -- one round -----------------------------------------------------------------------------

    def simulate_clock(self, seed: int) -> None:
        """Give the live sites simulated speeds from ``seed`` (the simulator's deadline clock;
        the same draws as ``neurofed simulate --report-time`` with that seed)."""
        self.clocks = site_clocks(self.live, seed)
        self.clock_seed = int(seed)

    def participants(self, round_number: int) -> list[str]:
        """The live sites ``round_number`` asks to train (the study's ``[participation]``)."""
        return select_sites(
            self.study.participation,
            self.live,
            round_number=round_number,
            seed=self.study.seed,
            min_sites=self.study.min_sites,
        )

    @property
    def deadline_s(self) -> float | None:
        """Under the deadline policy, the seconds a round waits for training answers."""
        participation = self.study.participation
        return None if participation is None else participation.deadline_s

    def _drop(
        self,
        record: RoundRecord,
        targets: Sequence[str],
        answers: Sequence[SiteAnswer],
        *,
        training: bool = False,
    ) -> None:
        answered = {a.site_id for a in answers}
        for site in targets:
            if training and self.deadline_s is not None and site not in answered:
                logger.warning(
                    "round %d: %s missed the deadline of %g s; left out of this round",
                    record.round,
                    site,
                    self.deadline_s,
                )
                record.late.append(site)
                continue
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
        self, record: RoundRecord, targets: Sequence[str], answers: Sequence[SiteAnswer]
    ) -> bool:
        """Aggregate the training answers of a round; returns whether the global model changed."""
        record.targets = list(targets)
        self._drop(record, targets, answers, training=True)
        answers = self._in_time(record, answers)
        updates = []
        # what a distill site's payload may hold, once per round
        spec = payload_spec(self.study, self.train_config()) if self._distill else None
        for answer in sorted(answers, key=lambda a: a.site_id):  # order-independent result
            site = answer.site_id
            record.note_audit_head(site, TaskName.TRAIN.value, answer.audit_head)
            if answer.error is not None and answer.refused:
                logger.warning("round %d: %s %s", record.round, site, answer.error)
                record.refused[site] = answer.error
                continue
            reason = training_failure(answer)
            if reason is not None or not isinstance(answer.result, TrainResult):
                logger.warning("round %d: %s failed: %s", record.round, site, reason)
                record.failed[site] = str(reason)
                continue
            if spec is not None:
                reason = self._payload_failure(answer.result, spec)
                if reason is not None:
                    logger.warning("round %d: %s failed: %s", record.round, site, reason)
                    record.failed[site] = reason
                    continue
            updates.append(site_update(answer, answer.result))
        if spec is not None and spec.proxy:
            mismatched = proxy_mismatches({u.site_id: u.payload for u in updates})
            for site, reason in mismatched.items():
                logger.warning("round %d: %s failed: %s", record.round, site, reason)
                record.failed[site] = reason
            updates = [u for u in updates if u.site_id not in mismatched]
        for update in updates:
            record.train[update.site_id] = {"num_examples": float(update.num_examples)} | dict(
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
        if self._distill:
            accepted = set(result.accepted)
            payloads = [u.payload for u in updates if u.site_id in accepted and u.payload]
            self.params, trained = train_on_payloads(
                self.study, self.train_config(), self.params, payloads
            )
            self.state = StrategyState(self.state.arrays, {**self.state.scalars, **trained})
        # the new global model is kept before anything else can fail (validation comes next)
        self._checkpoint(record, [*self.history, record])
        return True

    def _in_time(self, record: RoundRecord, answers: Sequence[SiteAnswer]) -> list[SiteAnswer]:
        """In simulation under the deadline policy: the answers whose simulated training trip
        ended before the deadline (the others are recorded as late)."""
        counts = {
            a.site_id: a.result.num_examples
            for a in answers
            if isinstance(a.result, TrainResult) and a.site_id in self.clocks
        }
        scored = self.incoming_validation(record.round)  # scored inside the trips
        late = past_deadline(
            self.study.participation,
            self.clocks,
            counts,
            round_number=record.round,
            seed=self.clock_seed,
            epochs=self.study.local_epochs,
            scored={
                site: validation_cases(metrics)
                for site, metrics in (scored.validation_per_site if scored else {}).items()
            },
        )
        for site in late:
            logger.warning(
                "round %d: %s's simulated training passed the deadline", record.round, site
            )
            record.train[site] = {"num_examples": float(counts[site])}  # trained, not counted
        record.late.extend(late)
        return [a for a in answers if a.site_id not in late]

    @property
    def secure(self) -> bool:
        """Whether the study aggregates securely (``secagg = true``)."""
        return self.study.strategy_params.secagg

    def _collect(
        self,
        record: RoundRecord,
        task: TaskName,
        targets: Sequence[str],
        answers: Sequence[SiteAnswer],
    ) -> dict[str, Answer]:
        """One secure step's usable results; refusals, failures and silent sites recorded."""
        self._drop(record, targets, answers)
        results: dict[str, Answer] = {}
        for answer in sorted(answers, key=lambda a: a.site_id):
            site = answer.site_id
            record.note_audit_head(site, task.value, answer.audit_head)
            reason = answer.error
            if reason is not None and answer.refused:
                record.refused.setdefault(site, reason)
                continue
            if task is TaskName.TRAIN:
                reason = training_failure(answer)
                if reason is None and getattr(answer.result, "params", None):
                    reason = "malformed answer: it sent parameters in a secure round"
            if reason is not None or answer.result is None:
                logger.warning("round %d: %s failed %s: %s", record.round, site, task.value, reason)
                record.failed.setdefault(site, f"{task.value}: {reason}")
                continue
            results[site] = answer.result
        return results

    def record_secure_training(
        self, record: RoundRecord, targets: Sequence[str], send: Send
    ) -> bool:
        """A secure round (:mod:`~neurofed.federated.server.secagg`): the four steps through
        ``send``, then the strategy's server step on the weighted mean update; returns whether
        the global model changed. The server never holds a site's update."""
        record.targets = list(targets)
        options = self.study.strategy_params
        layout = Layout.of(
            self.params, self.strategy.client_settings().local_parameters, self.strategy.heads
        )
        secure = SecureRound(
            self.study.content_hash,
            record.round,
            layout,
            options.secagg_clip,
            options.secagg_threshold,
        )
        try:
            total, trained = run_steps(
                secure, targets, send, lambda t, s, a: self._collect(record, t, s, a)
            )
        except SecAggError as error:
            logger.warning("round %d not aggregated: %s", record.round, error)
            record.quorum_error = str(error)
            return False
        for site, result in trained.items():
            record.train[site] = {"num_examples": float(result.num_examples)} | dict(result.metrics)
        for site, step in total.dropped.items():
            record.failed.setdefault(site, f"secure aggregation: no usable answer to {step}")
        if len(total.sites) < self.study.min_sites:
            record.quorum_error = (
                f"{len(total.sites)} site input(s) summed; the quorum is min_sites = "
                f"{self.study.min_sites}"
            )
            return False
        combined: Parameters = {}
        for name, current in self.params.items():
            mean = total.means.get(name)
            value = np.asarray(current)
            combined[name] = value.copy() if mean is None else (value + mean).astype(value.dtype)
        norm = math.sqrt(sum(float(np.sum(m * m)) for m in total.means.values()))
        limit = self.study.max_update_norm
        if limit is not None and norm > limit:
            record.quorum_error = (
                f"the summed update's norm {norm:.4g} exceeds max_update_norm = {limit:g}; "
                "under secure aggregation the server checks the sum, not each site"
            )
            return False
        self.params, self.state = self.strategy.server_update(
            self.params, combined, frozenset(total.means), self.state
        )
        record.accepted = list(total.sites)
        record.aggregated = True
        self._checkpoint(record, [*self.history, record])
        return True

    def record_validation(
        self, record: RoundRecord, targets: Sequence[str], answers: Sequence[SiteAnswer]
    ) -> None:
        """Merge the sites' validation metric states of the new global model (and, from Ditto
        sites, of their personalised models)."""
        self._drop(record, targets, answers)
        states = []
        by_split: dict[str, list[MetricState]] = {}  # with [evaluate.site_splits]
        personalised = []
        for answer in sorted(answers, key=lambda a: a.site_id):
            site = answer.site_id
            record.note_audit_head(site, TaskName.VALIDATE.value, answer.audit_head)
            if answer.error is not None and answer.refused:
                record.refused.setdefault(site, answer.error)
                continue
            self._schema = self._schema or state_schema(self.task, self.train_config())
            checked, reason = validation_states(answer, self._schema, self.task)
            if checked is None:
                logger.warning("round %d: validation at %s failed: %s", record.round, site, reason)
                record.failed.setdefault(site, f"validation: {reason}")
                continue
            state, own, seconds, withheld = checked
            record.note_withheld(site, withheld)
            if values := state.case_values():  # only where the site's custodian allows them
                record.cases_per_site[site] = values
            if own is not None and not own.is_empty:
                personalised.append(own)
                record.personalised_per_site[site] = finalize_metrics(self.task, own)
            if seconds is not None:
                record.validation_seconds[site] = seconds
            if state.is_empty:
                continue
            states.append(state)
            record.validation_per_site[site] = finalize_metrics(self.task, state)
            if self._splits_differ:
                by_split.setdefault(self._split_label(site), []).append(state)
        record.validation = finalize_metrics(self.task, merge_states(mergeable(states)))
        record.validation_per_split = {
            label: finalize_metrics(self.task, merge_states(mergeable(group)))
            for label, group in sorted(by_split.items())
        }
        if personalised:
            record.personalised = finalize_metrics(self.task, merge_states(mergeable(personalised)))

    @property
    def _splits_differ(self) -> bool:
        """An evaluation whose sites score different splits (``[evaluate.site_splits]``)."""
        return self.study.evaluation is not None and bool(self.study.evaluation.site_splits)

    def _split_label(self, site: str) -> str:
        return split_label(self.study.evaluation_split_for(site))

    @property
    def validates_incoming(self) -> bool:
        """Whether training sites score the model they receive first (one trip per round; a
        study refuses it with secagg)."""
        participation = self.study.participation
        return participation is not None and participation.validate_incoming

    def incoming_validation(self, round_number: int) -> RoundRecord | None:
        """Under ``[participation] validate_incoming``: the finished round whose model
        ``round_number`` carries and whose sites score it first — the previous round, when it
        changed the model (``None``: no such round, or the study validates separately)."""
        if not self.validates_incoming:
            return None
        last = self.history[-1] if self.history else None
        if last is None or last.round != round_number - 1 or not last.aggregated:
            return None
        return last

    def record_incoming_validation(
        self, record: RoundRecord, answers: Sequence[SiteAnswer]
    ) -> None:
        """Merge the validations of ``record``'s model that sites did at the start of the next
        round (each train answer's :attr:`~SiteAnswer.validation`, or a validate answer of a
        site that did not train) into ``record``, and write its metrics again.

        A site whose train answer holds no validation fails it; a site that did not answer is
        left to the training round (dropped or late there).
        """
        scored = []
        for answer in answers:
            if answer.validation is not None:
                scored.append(dataclasses.replace(answer.validation, site_id=answer.site_id))
            elif answer.error is not None or not isinstance(answer.result, TrainResult):
                scored.append(answer)  # a validate answer, or the train task's failure
            else:
                why = "the training answer holds no validation of the incoming model"
                scored.append(SiteAnswer.failure(why, site_id=answer.site_id))
        self.record_validation(record, [a.site_id for a in scored], scored)
        write_json_atomically(round_metrics_path(self.run_dir, record.round), record.to_json())

    def _checkpoint(self, record: RoundRecord, history: Sequence[RoundRecord]) -> None:
        write_json_atomically(round_metrics_path(self.run_dir, record.round), record.to_json())
        save_round_checkpoint(
            self.run_dir,
            RoundCheckpoint(
                round=record.round,
                params=self.params,
                state=self.state,
                history=tuple(history),
                dropped=tuple(self.dropped),
                study_hash=self.study.content_hash,
            ),
        )

    def end_round(self, record: RoundRecord) -> None:
        """Write the round's metrics and checkpoint; the next round follows."""
        self.history.append(record)
        self._checkpoint(record, self.history)
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

    def finish(self) -> RunSummary:
        """Write ``model/`` (the selected round), ``last_model/`` and ``summary.json``; a run
        in which no round was aggregated has no model, and its summary says so."""
        if self.study.kind is StudyKind.EVALUATE:
            write_json_atomically(self.run_dir / EVALUATION, self.evaluation())
        if not any(r.aggregated for r in self.history):
            return self._write_summary(None, has_model=False)
        by_round = {r.round: r for r in self.history}
        last = self.history[-1] if self.history else None
        self._save(self.run_dir / LAST_MODEL, self.params, last)
        chosen = self.selection()
        selected: SelectedRound | None = None
        if chosen is not None:
            round_number, value = chosen
            path = self.run_dir / "checkpoints" / f"round-{round_number}"
            self._save(
                self.run_dir / MODEL, load_round_checkpoint(path).params, by_round[round_number]
            )
            selected = SelectedRound(
                round=round_number,
                metric=self.study.selection.metric,
                direction=self.study.selection.direction.value,
                value=value,
            )
        else:  # nothing validated: the last model is the only candidate
            self._save(self.run_dir / MODEL, self.params, last)
        return self._write_summary(selected, has_model=True)

    def evaluation(self) -> dict[str, Any]:
        """An evaluation study's results (``evaluation.json``): per model, in round order, the
        metrics merged over sites, per site, per-case values where sites allowed them, and the
        sites that did not score it (failed, refused, dropped) with their reasons."""
        by_round = {r.round: r for r in self.history}
        models = []
        for k, entry in enumerate(self.study.evaluated_models(), start=1):
            record = by_round.get(k)
            row: dict[str, Any] = {"name": entry.name, "sha256": entry.model.sha256, "round": k}
            if record is not None:
                written = record.to_json()
                keys = ["validation", "validation_per_site", "cases_per_site", "failed"]
                if self._splits_differ:
                    keys.append("validation_per_split")
                row |= {key: written.get(key, {}) for key in keys}
                row |= {"refused": written["refused"], "dropped": written["dropped"]}
            models.append(row)
        out: dict[str, Any] = {
            "study": self.study.name,
            "study_hash": self.study.content_hash,
            "split": split_label(self.study.evaluation_split),
            "models": models,
        }
        if self._splits_differ:
            sites = {s for r in self.history for s in r.targets} | set(self.live)
            out["site_splits"] = {site: self._split_label(site) for site in sorted(sites)}
        return out

    def _write_summary(self, selected: SelectedRound | None, *, has_model: bool) -> RunSummary:
        personalised = None
        validated = [r for r in self.history if r.personalised_per_site]
        if validated:  # Ditto: the sites' own models after the last round that validated
            written = validated[-1].to_json()
            personalised = PersonalisedSummary(
                round=int(written["round"]),
                validation=written["personalised"],
                validation_per_site=written["personalised_per_site"],
            )
        summary = RunSummary(
            study=self.study.name,
            study_hash=self.study.content_hash,
            rounds_done=len(self.history),
            rounds=self.study.rounds,
            selected=selected,
            dropped=tuple(self.dropped),
            refused={site: reason for r in self.history for site, reason in r.refused.items()},
            model=MODEL if has_model else None,
            last_model=LAST_MODEL if has_model else None,
            personalised=personalised,
            plan=plan_summary(self.plan, self.planning),
        )
        write_json_atomically(self.run_dir / SUMMARY, summary.to_json())
        return summary
