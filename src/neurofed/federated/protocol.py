"""Names of the tasks and message fields exchanged between the controller and the sites.

Every payload is an NVFlare ``FLModel`` whose ``params`` hold plain numpy arrays and whose
``meta`` holds the fields below (JSON values and numpy arrays only — never pickled objects).

Examples
--------
>>> TaskName.TRAIN.value, MetaField.ERROR.value
('train', 'error')
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Any

__all__ = ["MetaField", "TaskName", "answer_error", "answer_refused"]


class TaskName(StrEnum):
    """Tasks the controller sends to sites."""

    TRAIN = "train"  # global params in → trained params, num_examples, label counts out
    VALIDATE = "validate"  # global params in → MetricState arrays of the validation split out
    # (a Ditto site adds those of its personalised model)
    # a planned study, before round 1: → the fingerprint of the site's training split out
    FINGERPRINT = "fingerprint"


class MetaField(StrEnum):
    """Fields of ``FLModel.meta``."""

    # controller → site
    STUDY = "study"  # the validated study as a dict (Study.to_dict())
    STUDY_HASH = "study_hash"  # its content hash; the site recomputes and compares
    ROUND = "round"  # 1-based round number
    # a planned study's train/validate tasks: the run's plan (Plan.to_json()) and its plan_id
    PLAN = "plan"
    PLAN_ID = "plan_id"
    # site → controller
    ERROR = "error"  # a reason: the site failed this task (nothing else is sent)
    REFUSED = "refused"  # true with ERROR: the site's custodian refused the study (not approved)
    NUM_EXAMPLES = "num_examples"  # training cases (the FedAvg weight)
    LABEL_COUNTS = "label_counts"  # known labels per label kind
    TRAIN_METRICS = "train_metrics"  # aggregate training numbers (loss, steps, seconds)
    METRIC_STATE = "metric_state"  # MetricState.to_arrays() of the validation split
    # Ditto only: the same for the site's personalised model (which itself never leaves)
    PERSONALISED_METRIC_STATE = "personalised_metric_state"
    VALIDATE_SECONDS = "validate_seconds"  # wall time of the site's validation (a number)
    # aggregates only: Fingerprint.canonical_json(), the text of its JSON (fixed-length
    # histograms, counts, integer sums — text, because the sums may exceed 64 bits)
    FINGERPRINT = "fingerprint"
    # added by NVFlare on the server
    CLIENT_NAME = "client_name"


def answer_error(meta: Mapping[str, Any]) -> str | None:
    """The reason a site gave for failing (or refusing) a task; ``None`` when it did not.

    >>> answer_error({"error": "OSError: disk"}), answer_error({})
    ('OSError: disk', None)
    """
    value = meta.get(MetaField.ERROR.value)
    return None if value is None else str(value)


def answer_refused(meta: Mapping[str, Any]) -> bool:
    """Whether the site's custodian refused the study (the reason is :func:`answer_error`)."""
    return bool(meta.get(MetaField.REFUSED.value, False))
