"""What a site did and sent, written where its custodian looks.

:class:`TaskRecorder` writes, for every task a site answers:

- to the site's audit log (:class:`~neurofed.federated.site.audit.AuditLog`, when the site
  config names one): ``study-accepted`` the first time a study passes the site's check in this
  process, ``study-refused`` with the reason, ``round-train`` / ``round-validate``, and
  ``payload-sent`` with the size and SHA-256 of exactly what the answer carried;
- to the site's payload folder (``audit_dir``, when set): one JSON file per answer with every
  string and number as sent and every array described by dtype and shape
  (:func:`describe_payload`).

A record that cannot be written is reported in the site's log and never stops the task.

Examples
--------
>>> import numpy as np
>>> describe_payload({"w": np.zeros((2, 3), np.float32), "n": 3})
{'w': {'array': {'dtype': 'float32', 'shape': [2, 3]}}, 'n': 3}
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from neurofed.artifacts import write_json_atomically
from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName, round_of
from neurofed.federated.site.audit import AuditEvent, AuditHead, AuditLog, payload_fields
from neurofed.federated.site.config import SiteConfig

__all__ = ["TaskRecorder", "describe_payload"]

logger = logging.getLogger(__name__)

_ROUND_EVENTS = {
    TaskName.TRAIN.value: AuditEvent.ROUND_TRAIN,
    TaskName.VALIDATE.value: AuditEvent.ROUND_VALIDATE,
}


def describe_payload(value: Any) -> Any:
    """``value`` as JSON: arrays become ``{"array": {"dtype", "shape"}}``, all else is kept."""
    if isinstance(value, Mapping):
        return {str(k): describe_payload(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [describe_payload(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"array": {"dtype": str(value.dtype), "shape": list(value.shape)}}
    if isinstance(value, np.generic):
        return value.item()
    return value


def _claimed_hash(meta: Mapping[str, Any]) -> str | None:
    claimed = meta.get(MetaField.STUDY_HASH.value)
    return claimed if isinstance(claimed, str) else None


class TaskRecorder:
    """The audit log and payload records of one site.

    Parameters
    ----------
    site_id
        The site's name in the federation.
    config
        Returns the site's current config (it names the audit log and the payload folder, and
        may be re-read between tasks).
    """

    def __init__(self, site_id: str, config: Callable[[], SiteConfig]) -> None:
        self.site_id = site_id
        self._config = config
        self._sent = 0  # answers recorded in the payload folder by this process
        self.head: AuditHead | None = None  # the line this recorder appended last

    def event(self, event: AuditEvent, **fields: Any) -> None:
        """Append one line to the audit log (if the site keeps one)."""
        path = self._config().audit_log
        if path is None:
            return
        log = AuditLog(path, self.site_id)
        try:
            log.append(event, **fields)
        except (OSError, ValueError):
            logger.exception("site %s: could not append to the audit log %s", self.site_id, path)
            return
        self.head = log.head

    def refused(
        self, task: str, meta: Mapping[str, Any], reason: str, study: str | None = None
    ) -> None:
        """A ``study-refused`` line: the study of this task does not run here, and why."""
        self.event(
            AuditEvent.STUDY_REFUSED,
            study_hash=_claimed_hash(meta),
            study=study,
            round=round_of(meta),
            task=task,
            reason=reason,
        )

    def accepted(self, study_hash: str, name: str, dataset: str | None) -> None:
        """A ``study-accepted`` line (the first time a study passes in this process)."""
        self.event(AuditEvent.STUDY_ACCEPTED, study_hash=study_hash, study=name, dataset=dataset)

    def begin(self) -> None:
        """A new task: forget the head of the previous one."""
        self.head = None

    def _fields(
        self, meta: Mapping[str, Any], answer: SiteAnswer, study: tuple[str, str] | None
    ) -> dict[str, Any]:
        claimed = _claimed_hash(meta)
        same = study is not None and claimed == study[0] and not answer.refused
        return {
            "study_hash": claimed,
            "study": study[1] if same and study is not None else None,
            "round": round_of(meta),
        }

    def task_done(
        self,
        task: str,
        meta: Mapping[str, Any],
        answer: SiteAnswer,
        study: tuple[str, str] | None,
    ) -> AuditHead | None:
        """The ``round-*`` line of one answered task; returns the log's head after this task's
        lines (``None``: no log, or nothing appended since :meth:`begin`), which the answer
        carries.

        ``study`` is the ``(content hash, name)`` of the study the task ran for, if any.
        """
        if self._config().audit_log is not None and not answer.refused and task in _ROUND_EVENTS:
            fields = self._fields(meta, answer, study)
            self.event(_ROUND_EVENTS[task], **fields, error=answer.error)
        return self.head

    def answered(
        self,
        task: str,
        meta: Mapping[str, Any],
        answer: SiteAnswer,
        study: tuple[str, str] | None,
    ) -> None:
        """Record what one answer sent: its payload record and its ``payload-sent`` line."""
        params, sent = answer.encode()
        config = self._config()
        if config.audit_dir is not None:
            self._write_payload(config, task, meta, params, sent)
        if config.audit_log is None:
            return
        fields = self._fields(meta, answer, study)
        try:
            payload = payload_fields(params, sent)
        except Exception:  # never stop a task for its record
            logger.exception("site %s: could not serialise the answer to record it", self.site_id)
            return
        self.event(AuditEvent.PAYLOAD_SENT, **fields, task=task, **payload)

    def _write_payload(
        self,
        config: SiteConfig,
        task: str,
        meta: Mapping[str, Any],
        params: Mapping[str, Any],
        sent: Mapping[str, Any],
    ) -> None:
        assert config.audit_dir is not None
        self._sent += 1
        name = f"{self._sent:04d}-{task}-round-{meta.get(MetaField.ROUND.value, 0)}.json"
        try:
            write_json_atomically(
                config.audit_dir / name,
                {"params": describe_payload(params), "meta": describe_payload(sent)},
            )
        except (OSError, ValueError):
            logger.exception("site %s: could not write the audit record %s", self.site_id, name)
