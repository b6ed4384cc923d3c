"""The NVFlare controller of a neurofed study: rounds with a quorum, a timeout and resume.

:class:`StudyController` runs on the server. Its arguments are the study (as the validated
study's dict) and the run folder; everything else is decided by
:class:`~neurofed.federated.server.run.FederatedRun`. Each round:

1. ``train`` goes to the live sites (under secure aggregation, four steps around it:
   :meth:`~neurofed.federated.server.run.FederatedRun.record_secure_training`); the round
   waits for all of them, at most
   ``round_timeout_s`` (NVFlare ends a broadcast as soon as ``min_responses`` answers arrive and
   discards the later ones, so the quorum ``min_sites`` is checked on the answers by
   :func:`~neurofed.federated.round.aggregate_round` instead);
2. error answers are logged with the site's reason, the others validated and aggregated (a
   missed quorum leaves the global model unchanged);
3. ``validate`` sends the new global model to the live sites; their metric states are merged
   (and, for Ditto, those of the sites' personalised models). Under ``[participation]
   validate_incoming`` this trip is saved: the next round's ``train`` asks its sites to score
   the model it carries first (their answers carry that validation, merged into the previous
   round's metrics), the live sites that do not train get ``validate`` before it, and only the
   last round's model gets a ``validate`` of its own;
4. sites that did not answer in time are dropped from later rounds; the round's metrics and
   checkpoint are written.

A study with ``[plan]`` first runs the fingerprint round when the run folder has no
``plan.json`` (:mod:`~neurofed.federated.server.planning`): ``fingerprint`` goes to the
live sites, at least ``min_sites`` fingerprints are merged into the plan, and the initial global
model is built under it; without a plan the run stops with the reason logged.

In simulation with hosts (``neurofed simulate --processes K``), the NVFlare clients are hosts of
several sites each (:mod:`~neurofed.federated.engine.hosting`): the run is still over the
sites; each task goes once to the hosts of its sites, and every site's answer is read out of its
host's.

At the end the best round (by the study's metric and direction) is written as ``model/``.

Deployed (``run_dir`` empty), the run folder is ``<server workspace>/neurofed/runs/<run_name>/``
so that resubmitting the study resumes it, the run answers the FLARE API app commands
``neurofed.progress`` and ``neurofed.pause``, and when the job ends the run folder is copied into
the job's workspace for ``download_job_result`` (:mod:`~neurofed.federated.engine.run_progress`).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from pathlib import Path
from typing import Any

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from neurofed.federated.engine.hosting import read_answer, unpack_answers
from neurofed.federated.engine.run_progress import (
    PAUSE_TOPIC,
    PROGRESS_TOPIC,
    RESULT_FOLDER,
    RunProgress,
    RunState,
    check_run_name,
    default_run_name,
    deployed_run_dir,
    publish_run,
    run_lock,
)
from neurofed.federated.protocol import (
    MetaField,
    SecAggRequest,
    SiteAnswer,
    TaskName,
)
from neurofed.federated.server.planning import PlanningError
from neurofed.federated.server.run import FederatedRun
from neurofed.federated.server.run_folder import RoundRecord
from neurofed.federated.study import Study, StudyError, StudyKind
from neurofed.federated.study.initial_model import InitialModelError
from neurofed.training import RunFolderError

__all__ = ["TASK_CHECK_S", "StudyController"]

#: Seconds between the server's checks that a task's answers are all in (NVFlare's task
#: monitor and the controller's wait each sleep this long). NVFlare 2.9's ``Controller`` hands
#: its ``task_check_period`` to the communicator as ``task_check_period``, but ``WFCommServer``
#: reads ``_task_check_period`` (default 0.2 s), so the controller's setting never takes effect;
#: :meth:`StudyController.run` sets the communicator's own.
TASK_CHECK_S = 0.05


class StudyController(ModelController):  # type: ignore[misc]
    """Runs a neurofed study (see the module docstring).

    Parameters
    ----------
    study
        ``Study.to_dict()`` of the validated study (re-validated here).
    run_dir
        The run folder on the server (created; resumed when it holds checkpoints); empty: a
        deployed server's ``<workspace>/neurofed/runs/<run_name>``.
    run_name
        The run folder's name on a deployed server (empty: ``<study name>-<hash[:12]>``).
    clock_seed
        Simulation only (>= 0): the sites get simulated speeds from this seed
        (:mod:`neurofed.federated.clock`), and the deadline policy applies to simulated time
        instead of the wall clock.
    hosts
        Simulation only: NVFlare client name → the sites it hosts
        (:mod:`~neurofed.federated.engine.hosting`); empty: every client is one site.
    """

    def __init__(
        self,
        study: dict[str, Any],
        run_dir: str = "",
        run_name: str = "",
        clock_seed: int = -1,
        hosts: dict[str, list[str]] | None = None,
    ) -> None:
        super().__init__(persistor_id="", ignore_result_error=True)
        self.study = study
        self.run_dir = run_dir
        self.run_name = check_run_name(run_name) if run_name else ""
        self.clock_seed = int(clock_seed)
        self.hosts = {str(h): [str(s) for s in sites] for h, sites in (hosts or {}).items()}
        self._host_of = {site: host for host, sites in self.hosts.items() for site in sites}
        self.progress: RunProgress | None = None

    def _run_folder(self, study: Study) -> Path:
        if self.run_dir:
            return Path(self.run_dir)
        root = Path(self.engine.get_workspace().get_root_dir())
        return deployed_run_dir(root, self.run_name or default_run_name(study))

    def _answer(self, topic: str, data: Any, fl_ctx: Any) -> dict[str, Any]:
        """The FLARE API app commands of a deployed run (progress; pause after this round)."""
        if self.progress is None:
            return {"state": RunState.STARTING.value}
        if topic == PAUSE_TOPIC:
            self.progress.request_pause()
            self.warning("pause requested: the run stops after the current round")
        return self.progress.to_json()

    def _register_commands(self) -> None:
        register = getattr(self.engine, "register_app_command", None)
        if register is None:  # the simulator's engine
            return
        for topic in (PROGRESS_TOPIC, PAUSE_TOPIC):
            try:
                register(topic, self._answer)
            except RuntimeError as error:  # registered by an earlier job of this process
                self.warning(f"app command {topic}: {error}")

    def _publish(self, run_dir: Path) -> None:
        """Copy the run folder into the job's workspace (what a download holds)."""
        try:
            publish_run(run_dir, Path(self.get_run_dir()) / RESULT_FOLDER)
        except OSError as error:
            self.error(f"could not copy {run_dir} into the job's workspace: {error}")

    def _send(
        self,
        task: TaskName,
        run: FederatedRun,
        targets: list[str],
        round_number: int,
        secagg: SecAggRequest | None = None,
        validate_round: int | None = None,
    ) -> list[SiteAnswer]:
        if not targets:
            return []
        request = dataclasses.replace(
            run.task_request(round_number), secagg=secagg, validate_round=validate_round
        )
        carries_model = task in (TaskName.TRAIN, TaskName.VALIDATE)
        timeout = run.study.round_timeout_s
        if task is TaskName.TRAIN and run.deadline_s is not None and not run.clocks:
            timeout = min(timeout, run.deadline_s)  # late answers are left out, sites kept
        meta = request.encode()
        hosted: dict[str, list[str]] = {}  # host → its sites of this task
        for site in targets if self.hosts else ():
            hosted.setdefault(self._host_of[site], []).append(site)
        clients = sorted(hosted) if hosted else list(targets)
        if hosted:  # one task per host, naming its sites, which it runs one after another
            meta[MetaField.HOSTED_SITES.value] = list(targets)
            timeout *= max(len(sites) for sites in hosted.values())
        data = FLModel(
            params_type=ParamsType.FULL,
            params=dict(run.params) if carries_model else {},
            current_round=round_number,
            total_rounds=run.study.rounds,
            meta=meta,
        )
        results = self.send_model_and_wait(
            task_name=task.value,
            data=data,
            targets=clients,
            min_responses=len(clients),
            timeout=math.ceil(timeout),
        )
        answers: list[SiteAnswer] = []
        for result in results:
            meta = dict(result.meta or {})
            site = str(meta.pop(MetaField.CLIENT_NAME.value, ""))
            meta.pop("props", None)
            if hosted:
                answers.extend(
                    unpack_answers(task, site, hosted.get(site, []), result.params, meta)
                )
            else:
                answers.append(read_answer(task, site, result.params, meta))
        return answers

    def _train(
        self, run: FederatedRun, targets: list[str], round_number: int, progress: RunProgress
    ) -> list[SiteAnswer]:
        """A round's training answers; under ``validate_incoming`` the training sites first
        score the model they receive (the previous round's) and the live sites that do not
        train score it in a validation task before, so every live site scores every model."""
        scored = run.incoming_validation(round_number)
        if scored is None:
            return self._send(TaskName.TRAIN, run, targets, round_number)
        others = [s for s in run.live if s not in targets]
        validated = self._send(TaskName.VALIDATE, run, others, scored.round)
        answers = self._send(
            TaskName.TRAIN, run, targets, round_number, validate_round=scored.round
        )
        run.record_incoming_validation(scored, [*validated, *answers])
        progress.update_round(scored)
        return answers

    def _send_step(
        self,
        run: FederatedRun,
        round_number: int,
        task: TaskName,
        targets: list[str],
        step: SecAggRequest | None,
    ) -> list[SiteAnswer]:
        """A step of a secure round (the callback of ``record_secure_training``)."""
        return self._send(task, run, targets, round_number, step)

    def _fingerprint_round(self, run: FederatedRun) -> str | None:
        """A planned study's round 0: fingerprints → plan.json; returns why there is no plan
        (the run stops), ``None`` when there is one."""
        targets = list(run.live)
        self.info(f"fingerprint round: asking {targets} for their training splits' fingerprints")
        answers = self._send(TaskName.FINGERPRINT, run, targets, 0)
        try:
            plan = run.record_fingerprints(targets, answers)
        except PlanningError as error:
            return f"no plan, so the run stopped: {error}"
        for site, reason in run.planning.get("failed", {}).items():
            self.warning(f"fingerprint round: site {site} sent no fingerprint: {reason}")
        self.info(
            f"plan {plan.plan_id} from {run.planning.get('sites')}: spacing {plan.spacing}, "
            f"patch {plan.patch_size}, batch {plan.batch_size}"
        )
        return None

    def _check_tasks_often(self) -> None:
        """The communicator checks for finished tasks every :data:`TASK_CHECK_S` seconds."""
        communicator = getattr(self, "communicator", None)
        if communicator is not None and hasattr(communicator, "_task_check_period"):
            communicator._task_check_period = TASK_CHECK_S

    def run(self) -> None:
        self._check_tasks_often()
        study = Study.from_dict(self.study, source="the job's study")
        run_dir = self._run_folder(study)
        deployed = not self.run_dir
        self.progress = RunProgress(study, run_dir.name)
        if not deployed:
            self._run(study, run_dir, self.progress)
            return
        self._register_commands()
        with run_lock(run_dir) as locked:
            if not locked:
                self.error(
                    f"another job is running the run folder {run_dir}; wait for it to end, or "
                    "submit with another run name"
                )
                self.progress.finish(RunState.STOPPED)
                return
            try:
                self._run(study, run_dir, self.progress)
            finally:
                self._publish(run_dir)

    def _sites(self, clients: list[str]) -> list[str]:
        """The sites of the connected NVFlare ``clients`` (with hosts: the sites they host)."""
        if not self.hosts:
            return list(clients)
        unknown = sorted(set(clients) - set(self.hosts))
        if unknown:
            self.warning(f"clients {unknown} host no site of this run; they are left out")
        return [site for client in clients for site in self.hosts.get(client, [])]

    def _stop(self, progress: RunProgress, why: str) -> None:
        """The run stops before finishing: in the server log and, for the lead, in its progress."""
        self.error(why)
        progress.finish(RunState.STOPPED, reason=why)

    def _run(self, study: Study, run_dir: Path, progress: RunProgress) -> None:
        run = FederatedRun(study, run_dir)
        try:
            first = run.start(self._sites(self.sample_clients()))
        except (InitialModelError, RunFolderError, StudyError) as error:  # the lead's to fix
            self._stop(progress, f"the run cannot start: {error}")
            return
        if self.clock_seed >= 0:
            run.simulate_clock(self.clock_seed)
        progress.start(first, run.live, run.history)
        if first > 1:
            self.info(f"resuming {run_dir} at round {first}")
        if run.needs_fingerprint() and (why := self._fingerprint_round(run)) is not None:
            self._stop(progress, why)
            return
        for round_number in range(first, study.rounds + 1):
            if self.abort_signal is not None and self.abort_signal.triggered:
                self.warning("aborted")
                progress.finish(RunState.STOPPED)
                return
            if progress.pause_requested:
                self.warning(f"paused before round {round_number}; submit the study to resume")
                progress.finish(RunState.PAUSED)
                return
            if not run.live:
                self.error("no live site is left; the run stops")
                break
            progress.begin_round(round_number, run.live)
            began = time.perf_counter()
            record = RoundRecord(round=round_number)
            if study.kind is StudyKind.EVALUATE:  # this round's model, scored at every site
                targets = list(run.live)
                name = study.evaluated_models()[round_number - 1].name
                try:
                    run.params = run.evaluated_parameters(round_number)
                except InitialModelError as error:  # changed on disk since the run started
                    self._stop(progress, f"model {name!r} cannot be scored: {error}")
                    return
                self.info(
                    f"evaluation {round_number}/{study.rounds}: scoring {name!r} at {targets}"
                )
                record.targets = list(targets)
                answers = self._send(TaskName.VALIDATE, run, targets, round_number)
                run.record_validation(record, targets, answers)
            else:
                targets = run.participants(round_number)  # [participation]
                self.info(f"round {round_number}/{study.rounds}: training at {targets}")
                if run.secure:  # four steps; the server sees only the masked inputs' sum
                    changed = run.record_secure_training(
                        record,
                        targets,
                        functools.partial(self._send_step, run, round_number),
                    )
                else:
                    answers = self._train(run, targets, round_number, progress)
                    changed = run.record_training(record, targets, answers)
                # under validate_incoming the next round's sites score this model first
                if changed and (round_number == study.rounds or not run.validates_incoming):
                    targets = list(run.live)
                    answers = self._send(TaskName.VALIDATE, run, targets, round_number)
                    run.record_validation(record, targets, answers)
            for site, reason in record.failed.items():
                self.warning(f"round {round_number}: site {site} failed: {reason}")
            if record.dropped:
                self.warning(f"round {round_number}: dropped {record.dropped} (no answer in time)")
            if record.quorum_error:
                self.warning(f"round {round_number} not aggregated: {record.quorum_error}")
            record.seconds = time.perf_counter() - began
            run.end_round(record)
            progress.end_round(record, run.live)
            personalised = f"; personalised: {record.personalised}" if record.personalised else ""
            self.info(f"round {round_number} done: {record.validation}{personalised}")
        summary = run.finish()
        progress.finish(RunState.FINISHED, summary)
        self.info(f"run finished: {summary.to_json()}")
