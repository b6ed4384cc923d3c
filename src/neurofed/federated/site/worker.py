"""What a site does for a task, without NVFlare: check the study, train, validate, answer.

:class:`SiteWorker` is the whole site-side logic of the NVFlare executor
(:class:`~neurofed.federated.engine.site_executor.SiteExecutor`), kept free of the FL engine so
it is tested directly. It receives the global parameters and the study (as its dict and content
hash), keeps one :class:`~neurofed.training.LocalTrainer` per study, and answers with parameter
arrays, counts and aggregate metrics only. :meth:`SiteWorker.handle` never raises: any failure
becomes an answer whose only field is an error reason, with the site's paths masked.

Ditto (the study's client settings carry ``ditto_lambda``): besides the global model it trains
and sends, the site keeps a personalised model ``v``, a second trainer on the same cases with
FedProx's proximal term at ``mu = lambda`` against the round's global weights
(``loss + lambda/2·||v - w_global||²``), trained for the same local epochs each round. ``v``
starts as the site's view of the first global model it sees and never leaves the site: a
validation answer adds only its metric state (sums and counts,
:attr:`~neurofed.federated.protocol.MetaField.PERSONALISED_METRIC_STATE`). After the last
round's training it is saved as a model folder in the study's state folder
(:data:`~neurofed.federated.site.state.PERSONALISED_MODEL`); the path goes to the site's
log only.

Determinism: the site trains with a seed derived from the study seed and the site's name, a
fresh optimiser each round and the trainer's epoch counter set to ``(round - 1) · local_epochs``,
so a round's result depends only on the global parameters, the study, the round and what the
site keeps itself — its local parameters (FedBN) and its personalised model (Ditto). Those are
written to the study's state folder after every training round
(:mod:`~neurofed.federated.site.state`) and read back by a restarted worker before it
trains round ``r`` (the state after round ``r - 1``) or validates round ``r`` (after ``r``), so
a restarted site (or a resumed run) computes the same update. A damaged state folder is refused
with a logged reason and the site starts from the global model.

The custodian's control: before any task runs, the study is checked against the site config
(:meth:`~neurofed.federated.site.config.SiteConfig.refusal`): with ``require_approval``
its content hash must be approved, and a non-empty ``allowed_datasets`` must hold its
``dataset``. A refused task is answered with the reason in ``error`` and ``refused: true``
(:attr:`~neurofed.federated.protocol.MetaField.REFUSED`), logged, and nothing is trained.
Given ``config_path``, the worker re-reads its config whenever the file changed since it was
read (one ``stat`` per task — modification time, size and inode; neurofed writes the file
atomically, so every change is a new inode — and no read while it is unchanged, whatever study
or round arrives), so approving takes effect without restarting the site and a revoked study is
refused from its next task on. An unreadable or missing config refuses every study.

With ``audit_log`` set, every task appends to the site's audit log
(:mod:`neurofed.federated.site.audit`): ``study-accepted`` the first time a study passes the check
in this process, ``study-refused`` with the reason, ``round-train`` / ``round-validate``, and
``payload-sent`` with the size and SHA-256 of what the answer carried. A log that cannot be
written is reported in the site's log and does not stop the task.
"""

from __future__ import annotations

import hashlib
import logging
import math
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.artifacts import write_json_atomically
from neurofed.federated.protocol import MetaField, TaskName, answer_error, answer_refused
from neurofed.federated.server.planning import PLAN_FILE, plan_from_meta
from neurofed.federated.site.audit import AuditEvent, AuditLog, payload_fields
from neurofed.federated.site.config import SiteConfig, SiteConfigError
from neurofed.federated.site.state import (
    PERSONALISED_MODEL,
    SiteState,
    SiteStateError,
    StatePart,
    latest_state_round,
    load_site_state,
    save_site_state,
)
from neurofed.federated.study import Study
from neurofed.federated.study.plan import check_plan
from neurofed.federated.update import Parameters
from neurofed.keys import ClinicalField, OutputKey, Split
from neurofed.preprocess.plan import Plan, PlanError
from neurofed.training import LocalTrainer, save_model
from neurofed.training.config import TrainConfig
from neurofed.training.dataset import CaseDataset
from neurofed.training.parameters import ParameterError, check_arrays, load_arrays
from neurofed.training.planning import compute_task_fingerprint

__all__ = [
    "SiteAnswer",
    "SiteWorker",
    "StudyRefusedError",
    "describe_payload",
    "label_counts",
    "site_seed",
]

logger = logging.getLogger(__name__)


def site_seed(study_seed: int, site_id: str) -> int:
    """A seed for ``site_id`` derived from the study's seed (stable across processes).

    >>> site_seed(0, "site-1") == site_seed(0, "site-1") != site_seed(0, "site-2")
    True
    """
    digest = hashlib.sha256(f"{study_seed}\0{site_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def label_counts(dataset: CaseDataset) -> dict[str, int]:
    """Known labels per label kind (:class:`~neurofed.models.OutputKey` values) in ``dataset``."""
    counts = {OutputKey.SEGMENTATION.value: sum(c.label is not None for c in dataset)}
    for key in OutputKey:
        if key is OutputKey.SEGMENTATION:
            continue
        name = ClinicalField(key.value)
        counts[key.value] = sum(c.clinical.get(name) is not None for c in dataset)
    return counts


def describe_payload(value: Any) -> Any:
    """``value`` as JSON: arrays become ``{"array": {"dtype", "shape"}}``, all else is kept.

    >>> describe_payload({"w": np.zeros((2, 3), np.float32), "n": 3})
    {'w': {'array': {'dtype': 'float32', 'shape': [2, 3]}}, 'n': 3}
    """
    if isinstance(value, Mapping):
        return {str(k): describe_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe_payload(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"array": {"dtype": str(value.dtype), "shape": list(value.shape)}}
    if isinstance(value, np.generic):
        return value.item()
    return value


@dataclass(frozen=True)
class SiteAnswer:
    """A site's answer to one task: parameter arrays (training only) and ``meta`` fields."""

    params: Parameters = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def error(self) -> str | None:
        return answer_error(self.meta)

    @property
    def refused(self) -> bool:
        """Whether the site refused the study (the reason is :attr:`error`)."""
        return answer_refused(self.meta)


class StudyRefusedError(Exception):
    """This site does not run the study; the message is the reason sent to the server."""


class SiteWorker:
    """One site's trainer(s) and the answers it gives.

    Parameters
    ----------
    site_id
        The site's name in the federation (NVFlare's client name).
    config
        The site-only settings (data root, device, state folder, approvals, audit log).
    config_path
        The file ``config`` was read from; given, approvals are re-read from it when a new study
        arrives or the file changed (see the module docstring).
    """

    def __init__(
        self, site_id: str, config: SiteConfig, *, config_path: Path | None = None
    ) -> None:
        self.site_id = str(site_id)
        self.config = config
        self.config_path = None if config_path is None else Path(config_path)
        self._config_stamp = self._stamp()
        self._config_error: str | None = None
        self._accepted: set[str] = set()  # study hashes logged as accepted by this process
        self._trainer: LocalTrainer | None = None
        self._personal: LocalTrainer | None = None
        self._personal_ready = False  # v holds a model (the first global one seen, or restored)
        self._state_round: int | None = None  # the round after which the kept state was made
        self._study_hash: str | None = None
        self._study: Study | None = None
        self._ditto_lambda: float | None = None
        self._sent = 0
        self._plan: Plan | None = None  # the plan of a planned study's tasks
        self._plan_key: tuple[str, str] | None = None  # (study hash, plan id) it was checked for

    # -- the one entry point -------------------------------------------------------------------

    def handle(self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SiteAnswer:
        """Answer ``task``; any failure becomes ``SiteAnswer(meta={"error": reason})``."""
        answer = self._answer(task, params, meta)
        if self.config.audit_dir is not None:
            self._audit(task, meta, answer)
        if self.config.audit_log is not None:
            self._log_task(task, meta, answer)
        return answer

    def _log(self, event: AuditEvent, **fields: Any) -> None:
        if self.config.audit_log is None:
            return
        try:
            AuditLog(self.config.audit_log, self.site_id).append(event, **fields)
        except (OSError, ValueError):
            logger.exception(
                "site %s: could not append to the audit log %s", self.site_id, self.config.audit_log
            )

    def _log_task(self, task: str, meta: Mapping[str, Any], answer: SiteAnswer) -> None:
        """``round-*`` (unless refused) and ``payload-sent`` lines of one answered task."""
        study = self._study
        claimed = meta.get(MetaField.STUDY_HASH.value)
        same = study is not None and claimed == self._study_hash and not answer.refused
        fields: dict[str, Any] = {
            "study_hash": str(claimed) if isinstance(claimed, str) else None,
            "study": study.name if same and study is not None else None,
            "round": _round_of(meta),
        }
        events = {TaskName.TRAIN.value: AuditEvent.ROUND_TRAIN}
        events[TaskName.VALIDATE.value] = AuditEvent.ROUND_VALIDATE
        if not answer.refused and task in events:
            self._log(events[task], **fields, error=answer.error)
        try:
            sent = payload_fields(answer.params, answer.meta)
        except Exception:  # never stop a task for its record
            logger.exception("site %s: could not serialise the answer to record it", self.site_id)
            return
        self._log(AuditEvent.PAYLOAD_SENT, **fields, task=task, **sent)

    def _audit(self, task: str, meta: Mapping[str, Any], answer: SiteAnswer) -> None:
        assert self.config.audit_dir is not None
        self._sent += 1
        name = f"{self._sent:04d}-{task}-round-{meta.get(MetaField.ROUND.value, 0)}.json"
        try:
            write_json_atomically(
                self.config.audit_dir / name,
                {"params": describe_payload(answer.params), "meta": describe_payload(answer.meta)},
            )
        except (OSError, ValueError):
            logger.exception("site %s: could not write the audit record %s", self.site_id, name)

    def _answer(self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SiteAnswer:
        try:
            study = self._check_study(task, meta)
            if task == TaskName.FINGERPRINT.value:
                return self.fingerprint(study)
            if task in (TaskName.TRAIN.value, TaskName.VALIDATE.value):
                self._check_plan(study, meta)
            round_number = int(meta.get(MetaField.ROUND.value, 0))
            arrays = {str(k): np.asarray(v) for k, v in params.items()}
            if task == TaskName.TRAIN.value:
                return self.train(study, round_number, arrays)
            if task == TaskName.VALIDATE.value:
                return self.validate(study, round_number, arrays)
            raise ValueError(f"unknown task {task!r}; this site runs {[t.value for t in TaskName]}")
        except StudyRefusedError as refusal:
            logger.warning("site %s: task %s %s", self.site_id, task, refusal)
            return SiteAnswer(
                meta={MetaField.ERROR.value: str(refusal), MetaField.REFUSED.value: True}
            )
        except Exception as exc:  # a site must answer, never crash the job
            logger.exception("site %s: task %s failed", self.site_id, task)
            return SiteAnswer(meta={MetaField.ERROR.value: self._reason(exc)})

    def _reason(self, exc: BaseException) -> str:
        """The exception as one line, with this site's folders masked (paths never leave)."""
        text = f"{type(exc).__name__}: {exc}"
        for root, mask in (
            (self.config.data_root, "<site data>"),
            (self.config.state_root, "<site state>"),
        ):
            for form in sorted({str(root.resolve()), str(root)}, key=len, reverse=True):
                text = text.replace(form, mask)
        return text.splitlines()[0][:500] if text else type(exc).__name__

    # -- the study and its trainers ------------------------------------------------------------

    def _stamp(self) -> tuple[int, int, int] | None:
        """What tells whether the config file changed (``None``: unknown or missing)."""
        if self.config_path is None:
            return None
        try:
            info = os.stat(self.config_path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _refresh_config(self) -> None:
        """Re-read the config file when it changed since it was read (or could not be read)."""
        if self.config_path is None:
            return
        stamp = self._stamp()
        if stamp is not None and stamp == self._config_stamp and self._config_error is None:
            return
        try:
            config = SiteConfig.load(self.config_path)
        except SiteConfigError as exc:
            logger.error("site %s: refusing every study: %s", self.site_id, exc)
            self._config_error = (
                "refused: this site's settings file is unreadable; the custodian runs "
                "`neurofed site doctor`"
            )
        else:
            self.config, self._config_error = config, None
        self._config_stamp = stamp

    def _check_study(self, task: str, meta: Mapping[str, Any]) -> Study:
        """The task's study, verified and allowed at this site; else :class:`StudyRefusedError`."""
        sent = meta.get(MetaField.STUDY.value)
        claimed = meta.get(MetaField.STUDY_HASH.value)

        def refuse(reason: str, name: str | None = None) -> StudyRefusedError:
            self._log(
                AuditEvent.STUDY_REFUSED,
                study_hash=claimed if isinstance(claimed, str) else None,
                study=name,
                round=_round_of(meta),
                task=task,
                reason=reason,
            )
            return StudyRefusedError(reason)

        if not isinstance(sent, Mapping) or not isinstance(claimed, str):
            raise refuse("refused: the task carries no study and study hash")
        known = self._study is not None and claimed == self._study_hash
        self._refresh_config()
        if known and self._study is not None:
            study = self._study
        else:
            try:
                study = Study.from_dict(sent, source="the study sent by the server")
            except ValueError as exc:
                raise refuse(f"refused: the study sent is invalid here ({exc})") from None
            if study.content_hash != claimed:
                raise refuse(
                    f"refused: the study's content hash is sha256:{study.content_hash}, not the "
                    f"claimed sha256:{claimed}",
                    study.name,
                )
        reason = self._config_error or self.config.refusal(
            study.content_hash, study.name, study.dataset
        )
        if reason is not None:
            raise refuse(reason, study.name)
        if study.content_hash not in self._accepted:
            self._accepted.add(study.content_hash)
            self._log(
                AuditEvent.STUDY_ACCEPTED,
                study_hash=study.content_hash,
                study=study.name,
                dataset=study.dataset,
            )
        if not known:
            self._study, self._study_hash = study, claimed
            self._ditto_lambda = study.client_settings().ditto_lambda
            self._trainer, self._personal = None, None
            self._personal_ready, self._state_round = False, None
        return study

    def trainer(self, study: Study) -> LocalTrainer:
        """This site's trainer for ``study`` (loads its cases once)."""
        if self._trainer is None:
            config = self.train_config(study).with_changes(
                seed=site_seed(study.seed, self.site_id), validate_every=0
            )
            self._trainer = LocalTrainer.from_sites(config, self.config.data_root)
        return self._trainer

    # -- a planned study: the fingerprint and the plan -------------------------------------------

    def train_config(self, study: Study) -> TrainConfig:
        """The study's engine config at this site (under the tasks' plan if it is planned)."""
        return study.train_config(device=self.config.device, plan=self._plan)

    def _check_plan(self, study: Study, meta: Mapping[str, Any]) -> None:
        """Take the plan a training or validation task carries; the trainers are keyed by
        (study hash, plan id), so a new plan builds new ones. An accepted plan is kept as
        ``plan.json`` in the study's state folder, for ``neurofed site preprocess --plan``.

        Raises
        ------
        PlanError
            A planned study's task without a plan (or an unplanned one's with one), a plan whose
            ``plan_id`` is not its hash, or a plan for another task or other planner settings.
        """
        plan = plan_from_meta(meta)
        if study.plan is None:
            if plan is not None:
                raise PlanError(
                    f"the task carries plan {plan.plan_id} but study {study.name!r} has no "
                    "[plan]; refusing it"
                )
            self._plan, self._plan_key = None, None
            return
        if plan is None:
            raise PlanError(
                f"study {study.name!r} is planned ([plan]) but the task carries no plan; "
                "refusing it"
            )
        key = (study.content_hash, plan.plan_id)
        if key == self._plan_key:
            return
        check_plan(plan, study.task, study.plan.settings)
        if self._plan is not None and self._plan.plan_id != plan.plan_id:
            logger.warning(
                "site %s: study %s now comes with plan %s (was %s); building new trainers",
                self.site_id,
                study.name,
                plan.plan_id,
                self._plan.plan_id,
            )
        self._plan, self._plan_key = plan, key
        self._trainer, self._personal = None, None
        self._personal_ready, self._state_round = False, None
        kept = write_json_atomically(self.state_dir(study) / PLAN_FILE, plan.to_json())
        logger.info(
            "site %s: study %s trains under plan %s (spacing %s); plan kept in %s "
            "(preprocess for it: neurofed site preprocess DIR --study STUDY --plan %s)",
            self.site_id,
            study.name,
            plan.plan_id,
            plan.spacing,
            kept,
            kept,
        )

    def fingerprint(self, study: Study) -> SiteAnswer:
        """Answer the fingerprint round: the fingerprint of this site's training split for the
        study's task — fixed-length histograms, counts and integer sums only.

        Raises
        ------
        ValueError
            The study has no ``[plan]`` (a site fingerprints its data only for a planned study).
        FingerprintError
            Fewer than :data:`~neurofed.preprocess.fingerprint.MIN_CASES` usable training cases.
        """
        if study.plan is None:
            raise ValueError(
                f"study {study.name!r} has no [plan]; this site sends a fingerprint only for a "
                "planned study"
            )
        began = time.perf_counter()
        fingerprint = compute_task_fingerprint(self.config.data_root, study.task, Split.TRAIN)
        logger.info(
            "site %s: fingerprint of %d training case(s) (%d failed) for study %s in %.1f s",
            self.site_id,
            fingerprint.num_cases,
            fingerprint.num_failed,
            study.name,
            time.perf_counter() - began,
        )
        # JSON text: its integer sums may exceed 64 bits, which NVFlare's serialiser refuses
        return SiteAnswer(meta={MetaField.FINGERPRINT.value: fingerprint.canonical_json()})

    def personalised_trainer(self, study: Study) -> LocalTrainer | None:
        """Ditto's trainer of the personalised model (``None`` unless the study is Ditto).

        It shares the cases of :meth:`trainer` and adds FedProx's proximal term with
        ``mu = ditto_lambda``.
        """
        if self._ditto_lambda is None:
            return None
        if self._personal is None:
            base = self.trainer(study)
            self._personal = LocalTrainer(
                base.config.with_changes(fedprox_mu=self._ditto_lambda),
                base.train_data,
                base.validation_data,
                source=base.source,
            )
        return self._personal

    def personalised_parameters(self) -> dict[str, np.ndarray] | None:
        """Every entry of the personalised model (``None``: no personalised model yet)."""
        if self._personal is None or not self._personal_ready:
            return None
        return self._personal.get_parameters(include_local=True)

    def state_dir(self, study: Study) -> Path:
        """This site's state folder of ``study`` (never sent anywhere)."""
        return self.config.study_state_dir(study.content_hash)

    def _keeps_state(self, study: Study) -> bool:
        return bool(study.train.local_parameters) or self._ditto_lambda is not None

    # -- the site's own state on disk ----------------------------------------------------------

    def _restore(self, study: Study, after_round: int) -> None:
        """Bring the kept state (local layers, personalised model) to the one after a round.

        A warm worker keeps it in memory; a restarted one reads the newest round folder not
        after ``after_round``. An unusable folder is logged and ignored: local layers then stay
        as the site's seed made them and the personalised model starts from the global one.
        """
        memory = self._state_round
        if not self._keeps_state(study) or memory == after_round or after_round < 1:
            return
        folder = self.state_dir(study)
        found = latest_state_round(folder, at_most=after_round)
        if found is None:
            if memory is None:
                logger.info(
                    "site %s: no saved state of study %s up to round %d in %s; starting from "
                    "the global model",
                    self.site_id,
                    study.name,
                    after_round,
                    folder,
                )
            return
        if memory is not None and found <= memory <= after_round:
            return  # what is in memory is as new
        try:
            state = load_site_state(
                folder, found, study_hash=study.content_hash, site_id=self.site_id
            )
            self._apply_state(study, state)
        except (SiteStateError, ParameterError) as exc:
            logger.warning(
                "site %s: refusing the saved state after round %d (%s); starting from the "
                "global model",
                self.site_id,
                found,
                exc,
            )
            return
        self._state_round = found
        logger.info(
            "site %s: restored its state after round %d from %s", self.site_id, found, folder
        )

    def _apply_state(self, study: Study, state: SiteState) -> None:
        """Load a state read from disk: everything is checked before anything is written."""
        trainer = self.trainer(study)
        local = trainer.local_names()
        loads: list[tuple[LocalTrainer, dict[str, Any]]] = []
        if local:
            saved = state.parts.get(StatePart.LOCAL.value, {})
            missing, extra = sorted(set(local) - set(saved)), sorted(set(saved) - set(local))
            if missing or extra:
                raise SiteStateError(
                    "its local parameters do not match the study's "
                    f"(missing {missing[:3]}, unexpected {extra[:3]})"
                )
            full = trainer.get_parameters(include_local=True) | dict(saved)
            checked = check_arrays(trainer.model, full)
            loads.append((trainer, {k: checked[k] for k in local}))
        personal = self.personalised_trainer(study)
        if personal is not None:
            whole = state.parts.get(StatePart.PERSONALISED.value)
            if whole is None:
                raise SiteStateError("it holds no personalised model")
            loads.append((personal, check_arrays(personal.model, whole)))
        for owner, tensors in loads:
            load_arrays(owner.model, tensors)
        self._personal_ready = self._personal_ready or personal is not None

    def _save_state(self, study: Study, round_number: int) -> None:
        parts: dict[str, dict[str, Any]] = {}
        trainer = self.trainer(study)
        local = set(trainer.local_names())
        if local:
            everything = trainer.get_parameters(include_local=True)
            parts[StatePart.LOCAL.value] = {k: v for k, v in everything.items() if k in local}
        kept = self.personalised_parameters()
        if kept is not None:
            parts[StatePart.PERSONALISED.value] = kept
        if not parts:
            return
        try:
            save_site_state(
                self.state_dir(study),
                SiteState(round_number, parts),
                study_hash=study.content_hash,
                site_id=self.site_id,
            )
        except OSError:  # training went well; only a restart would lose this round's state
            logger.exception(
                "site %s: could not write its state after round %d to %s",
                self.site_id,
                round_number,
                self.state_dir(study),
            )

    def _save_personalised_model(self, study: Study, round_number: int) -> None:
        personal = self._personal
        if personal is None or not self._personal_ready:
            return
        folder = self.state_dir(study) / PERSONALISED_MODEL
        try:
            save_model(
                folder,
                personal.model,
                study.train_config(plan=self._plan),
                epoch=round_number,
                provenance={
                    "run": "federated-personalised",
                    "study": study.name,
                    "study_hash": study.content_hash,
                    "strategy": study.strategy.value,
                    "ditto_lambda": self._ditto_lambda,
                    "round": round_number,
                    "site": self.site_id,
                },
            )
        except OSError:
            logger.exception(
                "site %s: could not save its personalised model to %s", self.site_id, folder
            )
            return
        logger.info(
            "site %s: personalised model of study %s (round %d) saved to %s",
            self.site_id,
            study.name,
            round_number,
            folder,
        )

    # -- tasks ---------------------------------------------------------------------------------

    def train(self, study: Study, round_number: int, params: Parameters) -> SiteAnswer:
        """Load the global parameters, train ``local_epochs``, answer with the new ones.

        A Ditto site also trains its personalised model; after the study's last round it is
        saved in the state folder.
        """
        if round_number < 1:
            raise ValueError(f"round {round_number} is invalid: rounds start at 1")
        trainer = self.trainer(study)
        self._restore(study, round_number - 1)
        trainer.set_parameters(params)  # local entries (FedBN) stay as they are
        personal = self.personalised_trainer(study)
        if personal is not None and not self._personal_ready:
            # v starts as the site's view of the first global model it sees
            load_arrays(
                personal.model,
                check_arrays(personal.model, trainer.get_parameters(include_local=True)),
            )
            self._personal_ready = True
        metrics = self._fit(trainer, study, round_number)
        if personal is not None:
            personal.set_proximal_reference(params)  # lambda/2·||v - w_global||²
            own = self._fit(personal, study, round_number)
            metrics["personalised_train_loss"] = own["train_loss"]
        self._state_round = round_number
        if self._keeps_state(study):
            self._save_state(study, round_number)
        if round_number >= study.rounds:
            self._save_personalised_model(study, round_number)
        return SiteAnswer(
            params=trainer.get_parameters(),
            meta={
                MetaField.NUM_EXAMPLES.value: int(trainer.num_examples),
                MetaField.LABEL_COUNTS.value: label_counts(trainer.train_data),
                MetaField.TRAIN_METRICS.value: metrics,
            },
        )

    @staticmethod
    def _fit(trainer: LocalTrainer, study: Study, round_number: int) -> dict[str, float]:
        """One round of local training from a fresh optimiser; its aggregate numbers."""
        trainer.reset_optimizer()
        trainer.epoch = (round_number - 1) * study.local_epochs
        records = trainer.fit(study.local_epochs, resume=False)
        losses = [r.train_loss for r in records if r.train_loss is not None]
        return {
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "steps": float(sum(r.steps for r in records)),
            "seconds": float(sum(r.seconds for r in records)),
        }

    def validate(self, study: Study, round_number: int, params: Parameters) -> SiteAnswer:
        """Evaluate the global parameters on the validation split; answer with sums/counts.

        A Ditto site adds the metric state of its personalised model.
        """
        began = time.perf_counter()
        trainer = self.trainer(study)
        self._restore(study, round_number)
        kept = trainer.get_parameters()
        trainer.set_parameters(params)
        try:
            state = trainer.evaluate()
        finally:
            trainer.set_parameters(kept)  # training continues from the site's own weights
        meta: dict[str, Any] = {MetaField.METRIC_STATE.value: _arrays(state.to_arrays())}
        personal = self.personalised_trainer(study)
        if personal is not None:
            if self._personal_ready:
                personalised = personal.evaluate()
                meta[MetaField.PERSONALISED_METRIC_STATE.value] = _arrays(personalised.to_arrays())
            else:
                logger.warning(
                    "site %s: no personalised model to validate in round %d (it has not trained "
                    "yet); validating the global model only",
                    self.site_id,
                    round_number,
                )
        meta[MetaField.VALIDATE_SECONDS.value] = time.perf_counter() - began
        return SiteAnswer(meta=meta)


def _round_of(meta: Mapping[str, Any]) -> int | None:
    value = meta.get(MetaField.ROUND.value)
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


def _arrays(values: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {str(k): np.asarray(v) for k, v in values.items()}
