"""What a site does for a task, without NVFlare: check the study, train, validate, answer.

:class:`SiteWorker` is the whole site-side logic of the NVFlare executor
(:class:`~neurofed.federated.engine.site_executor.SiteExecutor`), kept free of the FL engine so
it is tested directly. It receives the global parameters and the study (as its dict and content
hash), keeps one :class:`~neurofed.engine.LocalTrainer` per study, and answers with parameter
arrays, counts and aggregate metrics only. :meth:`SiteWorker.handle` never raises: any failure
becomes an answer whose only field is an error reason, with the site's paths masked.

Determinism: the site trains with a seed derived from the study seed and the site's name, a
fresh optimiser each round and the trainer's epoch counter set to ``(round - 1) · local_epochs``,
so a round's result depends only on the global parameters, the study and the round — a restarted
site (or a resumed run) computes the same update.
"""

from __future__ import annotations

import hashlib
import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from neurofed.engine import LocalTrainer
from neurofed.engine.checkpoint import write_json_atomically
from neurofed.engine.dataset import CaseDataset
from neurofed.federated.engine.messages import MetaField, TaskName
from neurofed.federated.engine.site_config import SiteConfig
from neurofed.federated.study import Study
from neurofed.federated.update import Parameters
from neurofed.keys import ClinicalField
from neurofed.models import OutputKey

__all__ = ["SiteAnswer", "SiteWorker", "describe_payload", "label_counts", "site_seed"]

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
        value = self.meta.get(MetaField.ERROR.value)
        return None if value is None else str(value)


class SiteWorker:
    """One site's trainer and the answers it gives.

    Parameters
    ----------
    site_id
        The site's name in the federation (NVFlare's client name).
    config
        The site-only settings (data root, device).
    """

    def __init__(self, site_id: str, config: SiteConfig) -> None:
        self.site_id = str(site_id)
        self.config = config
        self._trainer: LocalTrainer | None = None
        self._study_hash: str | None = None
        self._study: Study | None = None
        self._sent = 0

    # -- the one entry point -------------------------------------------------------------------

    def handle(self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SiteAnswer:
        """Answer ``task``; any failure becomes ``SiteAnswer(meta={"error": reason})``."""
        answer = self._answer(task, params, meta)
        if self.config.audit_dir is not None:
            self._audit(task, meta, answer)
        return answer

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
            study = self._check_study(meta)
            round_number = int(meta.get(MetaField.ROUND.value, 0))
            arrays = {str(k): np.asarray(v) for k, v in params.items()}
            if task == TaskName.TRAIN.value:
                return self.train(study, round_number, arrays)
            if task == TaskName.VALIDATE.value:
                return self.validate(study, arrays)
            raise ValueError(f"unknown task {task!r}; this site runs {[t.value for t in TaskName]}")
        except Exception as exc:  # a site must answer, never crash the job
            logger.exception("site %s: task %s failed", self.site_id, task)
            return SiteAnswer(meta={MetaField.ERROR.value: self._reason(exc)})

    def _reason(self, exc: BaseException) -> str:
        """The exception as one line, with this site's folder masked (paths never leave)."""
        text = f"{type(exc).__name__}: {exc}"
        root = self.config.data_root
        for form in {str(root.resolve()), str(root)}:
            text = text.replace(form, "<site data>")
        return text.splitlines()[0][:500] if text else type(exc).__name__

    # -- tasks ---------------------------------------------------------------------------------

    def _check_study(self, meta: Mapping[str, Any]) -> Study:
        sent = meta.get(MetaField.STUDY.value)
        claimed = meta.get(MetaField.STUDY_HASH.value)
        if not isinstance(sent, Mapping) or not isinstance(claimed, str):
            raise ValueError("the task carries no study and study hash; refusing it")
        if self._study is not None and claimed == self._study_hash:
            return self._study
        study = Study.from_dict(sent, source="the study sent by the server")
        if study.content_hash != claimed:
            raise ValueError(
                f"the study's content hash is {study.content_hash}, not the claimed {claimed}; "
                "refusing it"
            )
        self._study, self._study_hash, self._trainer = study, claimed, None
        return study

    def trainer(self, study: Study) -> LocalTrainer:
        """This site's trainer for ``study`` (loads its cases once)."""
        if self._trainer is None:
            config = study.train_config(device=self.config.device).with_changes(
                seed=site_seed(study.seed, self.site_id), validate_every=0
            )
            self._trainer = LocalTrainer.from_sites(config, self.config.data_root)
        return self._trainer

    def train(self, study: Study, round_number: int, params: Parameters) -> SiteAnswer:
        """Load the global parameters, train ``local_epochs``, answer with the new ones."""
        if round_number < 1:
            raise ValueError(f"round {round_number} is invalid: rounds start at 1")
        trainer = self.trainer(study)
        trainer.set_parameters(params)  # local entries (FedBN) stay as they are
        trainer.reset_optimizer()
        trainer.epoch = (round_number - 1) * study.local_epochs
        records = trainer.fit(study.local_epochs, resume=False)
        losses = [r.train_loss for r in records if r.train_loss is not None]
        metrics = {
            "train_loss": float(np.mean(losses)) if losses else math.nan,
            "steps": float(sum(r.steps for r in records)),
            "seconds": float(sum(r.seconds for r in records)),
        }
        return SiteAnswer(
            params=trainer.get_parameters(),
            meta={
                MetaField.NUM_EXAMPLES.value: int(trainer.num_examples),
                MetaField.LABEL_COUNTS.value: label_counts(trainer.train_data),
                MetaField.TRAIN_METRICS.value: metrics,
            },
        )

    def validate(self, study: Study, params: Parameters) -> SiteAnswer:
        """Evaluate the global parameters on the validation split; answer with sums/counts."""
        trainer = self.trainer(study)
        kept = trainer.get_parameters()
        trainer.set_parameters(params)
        try:
            state = trainer.evaluate()
        finally:
            trainer.set_parameters(kept)  # training continues from the site's own weights
        arrays = {k: np.asarray(v) for k, v in state.to_arrays().items()}
        return SiteAnswer(meta={MetaField.METRIC_STATE.value: arrays})
