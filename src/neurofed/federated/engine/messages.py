"""Names of the tasks and message fields exchanged between the controller and the sites.

Every payload is an NVFlare ``FLModel`` whose ``params`` hold plain numpy arrays and whose
``meta`` holds the fields below (JSON values and numpy arrays only — never pickled objects).

Examples
--------
>>> TaskName.TRAIN.value, MetaField.ERROR.value
('train', 'error')
"""

from __future__ import annotations

from enum import StrEnum

__all__ = ["MetaField", "TaskName"]


class TaskName(StrEnum):
    """Tasks the controller sends to sites."""

    TRAIN = "train"  # global params in → trained params, num_examples, label counts out
    VALIDATE = "validate"  # global params in → MetricState arrays of the validation split out


class MetaField(StrEnum):
    """Fields of ``FLModel.meta``."""

    # controller → site
    STUDY = "study"  # the validated study as a dict (Study.to_dict())
    STUDY_HASH = "study_hash"  # its content hash; the site recomputes and compares
    ROUND = "round"  # 1-based round number
    # site → controller
    ERROR = "error"  # a reason: the site failed this task (nothing else is sent)
    NUM_EXAMPLES = "num_examples"  # training cases (the FedAvg weight)
    LABEL_COUNTS = "label_counts"  # known labels per label kind
    TRAIN_METRICS = "train_metrics"  # aggregate training numbers (loss, steps, seconds)
    METRIC_STATE = "metric_state"  # MetricState.to_arrays() of the validation split
    # added by NVFlare on the server
    CLIENT_NAME = "client_name"
