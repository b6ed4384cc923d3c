"""What a site sends back after a round: named arrays, its weight and its label counts.

Parameters travel as ``dict[str, np.ndarray]`` keyed by state-dict name (see
:func:`neurofed.training.parameters.model_arrays`). A :class:`SiteUpdate` adds the site's
``num_examples`` (its FedAvg weight), how many known labels it trained on per label kind (for
task-masked aggregation, :mod:`neurofed.federated.heads`) and its aggregate metrics. It is a plain
record: whether it may be used is decided by :func:`neurofed.federated.validation.validate_updates`,
which rejects a bad update with a reason instead of raising.

Examples
--------
>>> import numpy as np
>>> update = SiteUpdate("site-a", {"w": np.ones(2, np.float32)}, num_examples=12,
...                     label_counts={"idh": 7, "segmentation": 12})
>>> update.site_id, update.num_examples, dict(update.label_counts)
('site-a', 12, {'idh': 7, 'segmentation': 12})
>>> update.params["w"].dtype
dtype('float32')
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["Array", "Parameters", "SiteUpdate"]

#: One named parameter or buffer (any dtype; float weights, ``int64`` counters).
Array = npt.NDArray[Any]

#: A model's (shared) state: state-dict name → array.
Parameters = dict[str, Array]


@dataclass(frozen=True)
class SiteUpdate:
    """One site's result of a round.

    Attributes
    ----------
    site_id
        The site's name in the federation.
    params
        Its trained parameters (the non-local state-dict entries), by name.
    num_examples
        Training cases it used (the FedAvg weight); must be a whole number > 0 to be accepted.
    label_counts
        Known labels it trained on per label kind, keyed like
        :class:`~neurofed.models.OutputKey` values (``"segmentation"``, ``"idh"``,
        ``"codel_1p19q"``, ``"mgmt"``, ``"grade"``). A kind that is absent counts as 0. Only
        task-masked aggregation reads it.
    metrics
        Aggregate metrics the site reports with its update (never per-subject values).
    payload
        The ``distill`` strategy's condensed payload (:mod:`neurofed.federated.condensed`),
        checked; empty under every other strategy.
    """

    site_id: str
    params: Mapping[str, Array]
    num_examples: int
    label_counts: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    payload: Mapping[str, Array] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # read-only views: a strategy can never change what a site sent
        object.__setattr__(self, "site_id", str(self.site_id))
        object.__setattr__(self, "params", MappingProxyType(dict(self.params)))
        object.__setattr__(self, "label_counts", MappingProxyType(dict(self.label_counts)))
        object.__setattr__(self, "metrics", MappingProxyType(dict(self.metrics)))
        object.__setattr__(self, "payload", MappingProxyType(dict(self.payload)))

    def label_count(self, kind: str) -> int:
        """Known labels of ``kind`` (0 when the site reported none)."""
        return int(self.label_counts.get(str(kind), 0))

    def array(self, name: str) -> Array:
        """Parameter ``name`` as a numpy array."""
        return np.asarray(self.params[name])
