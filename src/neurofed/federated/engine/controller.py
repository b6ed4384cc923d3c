"""The NVFlare controller of a neurofed study: rounds with a quorum, a timeout and resume.

:class:`StudyController` runs on the server. Its arguments are the study (as the validated
study's dict) and the run folder; everything else is decided by
:class:`~neurofed.federated.engine.coordinator.FederatedRun`. Each round:

1. ``train`` goes to the live sites; the round waits for all of them, at most
   ``round_timeout_s`` (NVFlare ends a broadcast as soon as ``min_responses`` answers arrive and
   discards the later ones, so the quorum ``min_sites`` is checked on the answers by
   :func:`~neurofed.federated.round.aggregate_round` instead);
2. error answers are logged with the site's reason, the others validated and aggregated (a
   missed quorum leaves the global model unchanged);
3. ``validate`` sends the new global model to the live sites; their metric states are merged;
4. sites that did not answer in time are dropped from later rounds; the round's metrics and
   checkpoint are written.

At the end the best round (by the study's metric and direction) is written as ``model/``.
"""

from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any

from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.workflows.model_controller import ModelController

from neurofed.federated.engine.coordinator import FederatedRun, SiteReply
from neurofed.federated.engine.messages import MetaField, TaskName
from neurofed.federated.engine.run_folder import RoundRecord
from neurofed.federated.study import Study

__all__ = ["StudyController"]


class StudyController(ModelController):  # type: ignore[misc]
    """Runs a neurofed study (see the module docstring).

    Parameters
    ----------
    study
        ``Study.to_dict()`` of the validated study (re-validated here).
    run_dir
        The run folder on the server (created; resumed when it holds checkpoints).
    """

    def __init__(self, study: dict[str, Any], run_dir: str) -> None:
        super().__init__(persistor_id="", ignore_result_error=True)
        self.study = study
        self.run_dir = run_dir

    def _send(
        self, task: TaskName, run: FederatedRun, targets: list[str], round_number: int
    ) -> list[SiteReply]:
        if not targets:
            return []
        data = FLModel(
            params_type=ParamsType.FULL,
            params=dict(run.params),
            current_round=round_number,
            total_rounds=run.study.rounds,
            meta=run.task_meta(round_number),
        )
        results = self.send_model_and_wait(
            task_name=task.value,
            data=data,
            targets=targets,
            min_responses=len(targets),
            timeout=math.ceil(run.study.round_timeout_s),
        )
        replies = []
        for result in results:
            meta = dict(result.meta or {})
            site = str(meta.pop(MetaField.CLIENT_NAME.value, ""))
            meta.pop("props", None)
            replies.append(SiteReply(site, dict(result.params or {}), meta))
        return replies

    def run(self) -> None:
        study = Study.from_dict(self.study, source="the job's study")
        run = FederatedRun(study, Path(self.run_dir))
        first = run.start(self.sample_clients())
        if first > 1:
            self.info(f"resuming {self.run_dir} at round {first}")
        for round_number in range(first, study.rounds + 1):
            if self.abort_signal is not None and self.abort_signal.triggered:
                self.warning("aborted")
                return
            if not run.live:
                self.error("no live site is left; the run stops")
                break
            began = time.perf_counter()
            record = RoundRecord(round=round_number)
            self.info(f"round {round_number}/{study.rounds}: training at {run.live}")
            targets = list(run.live)
            replies = self._send(TaskName.TRAIN, run, targets, round_number)
            if run.record_training(record, targets, replies):
                targets = list(run.live)
                replies = self._send(TaskName.VALIDATE, run, targets, round_number)
                run.record_validation(record, targets, replies)
            for site, reason in record.failed.items():
                self.warning(f"round {round_number}: site {site} failed: {reason}")
            if record.dropped:
                self.warning(f"round {round_number}: dropped {record.dropped} (no answer in time)")
            if record.quorum_error:
                self.warning(f"round {round_number} not aggregated: {record.quorum_error}")
            record.seconds = time.perf_counter() - began
            run.end_round(record)
            self.info(f"round {round_number} done: {record.validation}")
        summary = run.finish()
        self.info(f"run finished: {summary}")
