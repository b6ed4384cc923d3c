"""What a site does for a task, without NVFlare: admit the study, run the task, answer.

:class:`SiteWorker` is the whole site-side logic of the NVFlare executor
(:class:`~neurofed.federated.engine.site_executor.SiteExecutor`), kept free of the FL engine so
it is tested directly. It only dispatches:

1. the task's ``meta`` is read as a :class:`~neurofed.federated.protocol.TaskRequest`;
2. the study it carries must pass the custodian's control
   (:class:`~neurofed.federated.site.approval.StudyGate`); a refused study is answered with the
   reason and ``refused: true``, logged, and nothing is trained;
3. the task runs on the study's :class:`~neurofed.federated.site.training.StudyTraining`
   (one per study; a planned study's tasks carry the plan it trains under);
4. the answer (:class:`~neurofed.federated.protocol.SiteAnswer`: parameter arrays, counts and
   aggregate metrics only) is recorded in the site's audit log and payload folder
   (:class:`~neurofed.federated.site.recorder.TaskRecorder`) and returned;
5. the study's ``progress.json`` (:class:`~neurofed.federated.site.progress.SiteProgress`)
   says what the site is doing and did, for its custodian's ``neurofed monitor --site-kit``.

:meth:`SiteWorker.handle` never raises: any failure becomes an answer whose only field is an
error reason, with the site's paths masked.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.data.nifti import VolumeError
from neurofed.federated.protocol import (
    Answer,
    MetaField,
    ProtocolError,
    SiteAnswer,
    TaskName,
    TaskRequest,
    round_of,
)
from neurofed.federated.secagg.masks import SecAggError
from neurofed.federated.secagg.vectors import Layout
from neurofed.federated.site.approval import StudyGate, StudyRefusedError
from neurofed.federated.site.audit import AuditHead
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.privacy import PrivacyBudgetError
from neurofed.federated.site.progress import SiteProgress
from neurofed.federated.site.recorder import TaskRecorder
from neurofed.federated.site.secagg import SecureSite
from neurofed.federated.site.state import keep_audit_head
from neurofed.federated.site.training import StudyTraining
from neurofed.keys import MetricName
from neurofed.preprocess.fingerprint import FingerprintError
from neurofed.preprocess.params import PreprocessError
from neurofed.preprocess.plan import PlanError
from neurofed.training.parameters import ParameterError
from neurofed.training.site_data import SiteDataError

__all__ = ["SiteWorker"]

#: Failures whose message names only what the server sent; told to the server in full.
_TOLD_IN_FULL: tuple[type[BaseException], ...] = (
    ParameterError,
    PlanError,
    ProtocolError,
    SecAggError,
)
#: What the server is told of any other failure, by kind (the first match wins).
_CATEGORIES: tuple[tuple[type[BaseException], str], ...] = (
    (SiteDataError, "the site cannot serve the study's task with its data"),
    (FingerprintError, "the site's data cannot be fingerprinted for this study"),
    (VolumeError, "a scan of the site could not be read"),
    (PreprocessError, "a scan of the site could not be preprocessed"),
    (MemoryError, "the site ran out of memory"),
    (OSError, "a file of the site could not be read or written"),
    (ValueError, "a value at the site was invalid"),
)

logger = logging.getLogger(__name__)


class SiteWorker:
    """One site's answers to the tasks of any study it allows.

    Parameters
    ----------
    site_id
        The site's name in the federation (NVFlare's client name).
    config
        The site-only settings (data root, device, state folder, approvals, audit log).
    config_path
        The file ``config`` was read from; given, it is re-read whenever it changes (see
        :mod:`~neurofed.federated.site.approval`).
    """

    def __init__(
        self, site_id: str, config: SiteConfig, *, config_path: Path | None = None
    ) -> None:
        self.site_id = str(site_id)
        self.gate = StudyGate(self.site_id, config, config_path=config_path)
        self.recorder = TaskRecorder(self.site_id, lambda: self.gate.config)
        self.training: StudyTraining | None = None  # the current study's
        self.secure = SecureSite(self.site_id)  # the round's secure aggregation secrets
        self._view: SiteProgress | None = None  # the current study's progress file

    @property
    def config(self) -> SiteConfig:
        """The site's settings as last read."""
        return self.gate.config

    def handle(self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SiteAnswer:
        """Answer ``task``; any failure becomes an answer with an error reason only.

        A site that keeps an audit log adds the log's head after this task to the answer (the
        server keeps it in the run folder) and to the study's state folder.

        A train task that names a ``validate_round`` (``[participation] validate_incoming``)
        is first answered as the validation task of that round, with its own audit line and
        progress; that answer travels inside the training answer.
        """
        before = self._validation_first(task, params, meta)
        self.recorder.begin()
        began = time.perf_counter()
        answer = self._answer(task, params, meta)
        if before is not None:
            answer = dataclasses.replace(answer, validation=before)
        try:
            self._progress_done(task, meta, answer, time.perf_counter() - began)
        except Exception:  # the custodian's view only: the answer still goes
            logger.exception("site %s: could not record the task's progress", self.site_id)
        study = None if self.training is None else self.training.study
        key = None if study is None else (study.content_hash, study.name)
        head = self.recorder.task_done(task, meta, answer, key)
        if head is not None:
            answer = dataclasses.replace(answer, audit_head=(head.seq, head.sha256))
            if self.training is not None and not answer.refused:
                self._keep(self.training, task, meta, head)
        self.recorder.answered(task, meta, answer, key)
        return answer

    def _validation_first(
        self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> SiteAnswer | None:
        """The answer to the validation a train task asks for first (``None``: it asks for
        none, or its ``meta`` is unreadable, which the train task itself then answers)."""
        if task != TaskName.TRAIN.value or MetaField.VALIDATE_ROUND.value not in meta:
            return None
        try:
            request = TaskRequest.decode(meta).for_validation()
        except ProtocolError:
            return None
        return self.handle(TaskName.VALIDATE.value, params, request.encode())

    def _keep(
        self, training: StudyTraining, task: str, meta: Mapping[str, Any], head: AuditHead
    ) -> None:
        try:
            keep_audit_head(training.state_dir, round_of(meta), task, head)
        except OSError:  # the answer still carries the head to the server
            logger.exception("site %s: could not keep the audit head", self.site_id)

    def _progress_begin(self, training: StudyTraining, task: str, request: TaskRequest) -> None:
        study = training.study
        try:
            view = self._view
            if view is None or view.data["study_hash"] != study.content_hash:
                view = SiteProgress(
                    training.state_dir,
                    self.site_id,
                    study=study.name,
                    study_hash=study.content_hash,
                    rounds=study.rounds,
                    metric=study.selection.metric,
                )
                self._view = view
            view.begin(request.round, task, request.progress)
        except Exception:  # the custodian's view only: the task runs
            logger.exception("site %s: could not record the task's progress", self.site_id)

    def _progress_done(
        self, task: str, meta: Mapping[str, Any], answer: SiteAnswer, seconds: float
    ) -> None:
        """Record the task in the study's progress file (not a refused one: it has none)."""
        view, training, number = self._view, self.training, round_of(meta)
        if answer.refused or view is None or training is None or number is None:
            return
        if view.data["study_hash"] != training.study.content_hash:
            return
        numbers: dict[str, float | None] = {}
        if answer.error is None and task == TaskName.VALIDATE.value:
            numbers["value"] = training.own_metrics.get(training.study.selection.metric)
        elif answer.error is None and task == TaskName.TRAIN.value:
            metrics = getattr(answer.result, "metrics", None) or {}
            numbers["train_loss"] = metrics.get("train_loss")
        view.done(number, task, error=answer.error, seconds=seconds, numbers=numbers)

    def _answer(self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SiteAnswer:
        try:
            request, training = self._admit(task, meta)
            self._progress_begin(training, task, request)
            return SiteAnswer(result=self._run(training, task, request, params))
        except StudyRefusedError as refusal:
            logger.warning("site %s: task %s %s", self.site_id, task, refusal)
            if isinstance(refusal, PrivacyBudgetError):  # admitted, then refused by the budget
                self.recorder.refused(task, meta, str(refusal), refusal.study)
            return SiteAnswer.failure(str(refusal), refused=True)
        except Exception as exc:  # a site must answer, never crash the job
            logger.exception("site %s: task %s failed", self.site_id, task)
            return SiteAnswer.failure(self._reason(exc))

    def _admit(self, task: str, meta: Mapping[str, Any]) -> tuple[TaskRequest, StudyTraining]:
        """The task and its study's training, if this site allows the study (a refusal is
        logged and raised as :class:`StudyRefusedError`)."""
        try:
            request = TaskRequest.decode(meta)
            admission = self.gate.admit(request.study, request.study_hash)
        except (ProtocolError, StudyRefusedError) as exc:
            reason = str(exc) if isinstance(exc, StudyRefusedError) else f"refused: {exc}"
            name = exc.study if isinstance(exc, StudyRefusedError) else None
            self.recorder.refused(task, meta, reason, name)
            raise StudyRefusedError(reason, name) from None
        study = admission.study
        if admission.first:
            self.recorder.accepted(study.content_hash, study.name, study.dataset)
        if admission.new or self.training is None:
            self.training = StudyTraining(self.site_id, study, lambda: self.gate.config)
        return request, self.training

    def _run(
        self, training: StudyTraining, task: str, request: TaskRequest, params: Mapping[str, Any]
    ) -> Answer:
        if task == TaskName.FINGERPRINT.value:
            return training.fingerprint()
        names = [t.value for t in TaskName if t is not TaskName.FINGERPRINT]
        if task not in names:
            names.append(TaskName.FINGERPRINT.value)
            raise ProtocolError(f"unknown task {str(task)[:40]!r}; this site runs {names}")
        training.accept_plan(request.decode_plan())
        secure = training.study.strategy_params.secagg
        if secure and task != TaskName.VALIDATE.value:
            return self._run_secure(training, TaskName(task), request, params)
        if task != TaskName.VALIDATE.value and task != TaskName.TRAIN.value:
            raise ProtocolError(
                f"task {task!r} belongs to secure aggregation, which this study has not"
            )
        arrays = {str(k): np.asarray(v) for k, v in params.items()}
        if task == TaskName.TRAIN.value:
            return training.train(request.round, arrays, request.class_logits)
        return training.validate(request.round, arrays)

    def _run_secure(
        self,
        training: StudyTraining,
        task: TaskName,
        request: TaskRequest,
        params: Mapping[str, Any],
    ) -> Answer:
        """A step of secure aggregation (:mod:`~neurofed.federated.site.secagg`); a train task
        without its secure step is refused before anything is trained."""
        digest, number, step = request.study_hash, request.round, request.secagg
        if task is TaskName.SECAGG_KEYS:
            num_examples, counts = training.weights()
            return self.secure.keys(digest, number, num_examples, counts)
        if step is None:
            raise ProtocolError(
                f"{task.value}: this study aggregates securely; the task carries no secure step"
            )
        if task is TaskName.SECAGG_SHARES:
            return self.secure.shares(digest, number, step)
        if task is TaskName.SECAGG_UNMASK:
            return self.secure.reveal(digest, number, step)
        self.secure.receive(digest, number, step)  # the others' shares open before training
        arrays = {str(k): np.asarray(v) for k, v in params.items()}
        result = training.train(number, arrays, request.class_logits)
        strategy = training.study.build_strategy()
        layout = Layout.of(arrays, strategy.client_settings().local_parameters, strategy.heads)
        clip = training.study.strategy_params.secagg_clip
        masked, clipped = self.secure.mask(digest, number, layout, result.params, arrays, clip)
        clipped_count = {MetricName.SECAGG_CLIPPED.value: float(clipped)}
        return dataclasses.replace(
            result, params={}, masked=masked, metrics={**result.metrics, **clipped_count}
        )

    def _reason(self, exc: BaseException) -> str:
        """What the server may know of a failure: its category, never a case, file or path.

        The exception itself (which may name them) goes to the site's own log only. Errors
        about what the server sent (parameters, a plan, the protocol) are told in full: they
        name the server's content, not the site's.
        """
        if isinstance(exc, _TOLD_IN_FULL):
            text = f"{type(exc).__name__}: {exc}".splitlines()[0]
            for root in (self.config.data_root, self.config.state_root):
                for form in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
                    text = text.replace(form, "<site folder>")
            return text[:500]
        category = next(
            (text for kind, text in _CATEGORIES if isinstance(exc, kind)), "an unexpected error"
        )
        return (
            f"{type(exc).__name__}: {category}; the site's custodian finds the details in its log"
        )
