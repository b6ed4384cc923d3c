"""What the server accepts from a site: every decoded answer checked against the study before use.

:mod:`~neurofed.federated.protocol` decodes types and bounds any answer alike; here an answer is
checked against what *this* study's sites can send:

- a metric state must hold exactly the entries the study's task makes (names, sums or per-case
  arrays, integer or real, shapes), counts must not be negative, sums must be finite, per-case
  values finite or NaN, and no more cases than a site can hold — the expected entries come from
  running the task's own metric code once on a tiny synthetic batch through the study's network
  (:func:`state_schema`), so they can never drift from what honest sites send;
- a training answer's label counts must name the network's outputs and not exceed its number of
  examples.

A failed check raises :class:`~neurofed.federated.protocol.ProtocolError` naming the entry, the
value and what was expected; the run records it as that site's failure for the round.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch

from neurofed.data.subject import Clinical
from neurofed.federated.protocol import ProtocolError, SiteAnswer, TrainResult, ValidateResult
from neurofed.federated.update import SiteUpdate
from neurofed.keys import ClinicalField, OutputKey
from neurofed.tasks import MetricState, Task
from neurofed.tasks.sharing import share_state
from neurofed.training.config import TrainConfig
from neurofed.training.dataset import collate

__all__ = [
    "MAX_CASES",
    "Entry",
    "StateSchema",
    "check_metric_state",
    "check_train_result",
    "mergeable",
    "site_update",
    "state_schema",
    "training_failure",
    "validation_states",
]

#: The most cases one site's validation may report (per-case arrays longer than this are junk).
MAX_CASES = 100_000
#: Entries that count cases (bounded like per-case arrays).
_CASE_COUNT = "num_examples"
#: A value of every clinical field a synthetic case can hold (WHO grade 4, IDH-mutant, …).
_EXAMPLE_CLINICAL: Mapping[ClinicalField, Any] = {
    ClinicalField.IDH: True,
    ClinicalField.CODEL_1P19Q: False,
    ClinicalField.MGMT: True,
    ClinicalField.GRADE: 4,
    ClinicalField.AGE: 50.0,
    ClinicalField.SDMT: 50.0,
}


@dataclass(frozen=True)
class Entry:
    """One expected entry of a metric state: a sum or a per-case array, its kind and shape
    (a per-case array's shape without its case axis)."""

    per_case: bool
    integer: bool
    shape: tuple[int, ...]


@dataclass(frozen=True)
class StateSchema:
    """The entries (``sum/…``, ``case/…``) of the metric state a study's sites send: those
    every site sends (sums, counts, histograms), and the per-case arrays a site sends only when
    its custodian allows them (:mod:`~neurofed.tasks.sharing`)."""

    entries: Mapping[str, Entry]
    optional: Mapping[str, Entry] = field(default_factory=dict)

    @classmethod
    def of(cls, state: MetricState) -> StateSchema:
        entries = {}
        for name, array in state.to_arrays().items():
            per_case = name.startswith("case/")
            shape = tuple(array.shape[1:] if per_case else array.shape)
            entries[name] = Entry(per_case, array.dtype.kind in "iu", shape)
        return cls(entries)


def state_schema(task: Task, config: TrainConfig) -> StateSchema:
    """The entries the task's metric code makes, from one synthetic case through the network."""
    divisor = config.spatial_divisor()
    shape = tuple(2 * d for d in divisor)  # instance norm needs more than one voxel at the bottom
    image = np.zeros((len(task.modalities), *shape), np.float32)  # (C, X, Y, Z)
    label = np.zeros(shape, np.uint8) if task.needs_label_map else None
    clinical = Clinical(**{f.value: v for f, v in _EXAMPLE_CLINICAL.items()})
    batch = collate([(image, label, clinical)], task, divisor)
    model = task.build_model(config.model_config).eval()
    with torch.no_grad():
        outputs = model(batch.image)
    raw = task.metric_state(outputs, batch)
    shared, _ = share_state(raw, min_cases=0)
    cases = StateSchema.of(MetricState(sums={}, cases=dict(raw.cases)))
    return StateSchema(StateSchema.of(shared).entries, cases.entries)


def _check_array(name: str, array: np.ndarray, entry: Entry) -> None:
    where = f"metric_state[{name!r}]"
    if (array.dtype.kind in "biu") != entry.integer:
        expected = "integers" if entry.integer else "real numbers"
        raise ProtocolError(f"{where} holds {array.dtype} values; expected {expected}")
    shape = tuple(array.shape[1:]) if entry.per_case else tuple(array.shape)
    if shape != entry.shape or (entry.per_case and array.ndim == 0):
        axis = "(cases, " if entry.per_case else "("
        expected = f"{axis}{', '.join(map(str, entry.shape))})"
        raise ProtocolError(f"{where} has shape {tuple(array.shape)}; expected {expected}")
    if entry.per_case and array.shape[0] > MAX_CASES:
        raise ProtocolError(f"{where} reports {array.shape[0]} cases; at most {MAX_CASES}")
    if entry.integer:
        if array.size and int(array.min()) < 0:
            raise ProtocolError(f"{where} holds a negative count ({int(array.min())})")
        if name.endswith(_CASE_COUNT) and array.size and int(array.max()) > MAX_CASES:
            raise ProtocolError(f"{where} counts {int(array.max())} cases; at most {MAX_CASES}")
        return
    values = array.astype(np.float64)
    bad = ~np.isfinite(values) if not entry.per_case else np.isinf(values)
    if bool(bad.any()):
        what = "NaN or infinite sums" if not entry.per_case else "infinite values"
        raise ProtocolError(f"{where} holds {what}; expected finite numbers")


def check_metric_state(arrays: Mapping[str, np.ndarray], schema: StateSchema) -> MetricState:
    """``arrays`` as a metric state, if they are exactly what the schema expects (an empty
    state — a site with no validation case — is allowed).

    Raises
    ------
    ProtocolError
        A missing or unexpected entry, a wrong kind or shape, a negative count, a non-finite sum,
        or too many cases.
    """
    if not arrays:
        return MetricState.empty()
    missing = sorted(schema.entries.keys() - arrays.keys())
    extra = sorted(arrays.keys() - schema.entries.keys() - schema.optional.keys())
    if missing or extra:
        raise ProtocolError(
            f"metric_state holds other entries than the study's task makes (missing "
            f"{missing[:3]}, unexpected {[e[:40] for e in extra[:3]]})"
        )
    for name, array in arrays.items():
        entry = schema.entries.get(name) or schema.optional[name]
        _check_array(name, np.asarray(array), entry)
    try:
        return MetricState.from_arrays(arrays)
    except (ValueError, TypeError) as exc:
        raise ProtocolError(f"metric_state unusable ({exc})") from None


def check_train_result(result: TrainResult) -> None:
    """A training answer's label counts name the network's outputs and fit its examples.

    Raises
    ------
    ProtocolError
        An unknown label kind, or a count above ``num_examples``.
    """
    known = {k.value for k in OutputKey}
    for kind, count in result.label_counts.items():
        if kind not in known:
            raise ProtocolError(
                f"label_counts names {kind[:40]!r}; expected some of {sorted(known)}"
            )
        if count > result.num_examples:
            raise ProtocolError(
                f"label_counts[{kind!r}] = {count} exceeds num_examples = {result.num_examples}"
            )
    for name, value in result.metrics.items():
        if math.isinf(value):
            raise ProtocolError(f"train_metrics[{name[:40]!r}] is infinite")


def training_failure(answer: SiteAnswer) -> str | None:
    """Why a training answer cannot be aggregated (``None``: it can be)."""
    if answer.error is not None:
        return answer.error
    if not isinstance(answer.result, TrainResult):
        return "malformed answer: it answered the training task with another result"
    try:
        check_train_result(answer.result)
    except ProtocolError as error:
        return f"malformed answer: {error}"
    return None


def site_update(answer: SiteAnswer, result: TrainResult) -> SiteUpdate:
    """A checked training answer as the aggregation's input."""
    return SiteUpdate(
        answer.site_id,
        dict(result.params),
        num_examples=result.num_examples,
        label_counts=dict(result.label_counts),
        metrics=dict(result.metrics),
        payload=dict(result.condensed),
    )


def mergeable(states: list[MetricState]) -> list[MetricState]:
    """``states`` ready to merge: when some sites sent per-case arrays (their custodians allow
    it) and others did not, everyone's are left out and the histograms serve."""
    kinds = {frozenset(s.cases) for s in states}
    if len(kinds) <= 1:
        return states
    return [MetricState(sums=dict(s.sums), cases={}) for s in states]


#: A validation answer's checked metric states (global, Ditto's personalised), its seconds and
#: what the site withheld.
ValidationStates = tuple[MetricState, MetricState | None, float | None, tuple[str, ...]]


def validation_states(
    answer: SiteAnswer, schema: StateSchema, task: Task
) -> tuple[ValidationStates | None, str]:
    """A validation answer's metric states and time, or ``None`` and why they are unusable
    (each state must also finalise on its own: the numbers it gives, or it is junk)."""
    if answer.error is not None:
        return None, answer.error
    if not isinstance(answer.result, ValidateResult):
        return None, "malformed answer: it answered the validation task with another result"
    try:
        state = check_metric_state(answer.result.metric_state, schema)
        own_arrays = answer.result.personalised_metric_state
        own = None if own_arrays is None else check_metric_state(own_arrays, schema)
        for checked in (state, own):
            if checked is not None and not checked.is_empty:
                task.finalize(checked)
    except ProtocolError as error:
        return None, f"malformed answer: {error}"
    except (ValueError, TypeError, KeyError, ArithmeticError) as error:
        return None, f"malformed answer: its metric state cannot be finalised ({error})"
    return (state, own, answer.result.seconds, answer.result.withheld), ""
