"""Every message between the server and a site: one typed record each, encoded and decoded here.

A task travels as an NVFlare ``FLModel`` whose ``params`` hold plain numpy arrays and whose
``meta`` holds the fields of :class:`MetaField` (JSON values and numpy arrays only — never
pickled objects). This module is the one place that knows those fields:

- :class:`TaskRequest` — what the server sends with every task (the study, its hash, the round,
  a planned study's plan); :meth:`TaskRequest.encode` / :meth:`TaskRequest.decode`;
- :class:`SiteAnswer` — what a site sends back: a :class:`TrainResult`, a
  :class:`ValidateResult`, a :class:`FingerprintResult`, under secure aggregation a
  :class:`KeysResult`, :class:`SharesResult` or :class:`RevealResult`, or an error reason
  (``refused`` when the site's custodian refused the study); :meth:`SiteAnswer.encode` /
  :meth:`SiteAnswer.decode`, per task;
- :class:`SecAggRequest` — what a step of secure aggregation tells the sites;
- the plan codec: :func:`encode_plan` / :func:`decode_plan`;
- :class:`RunSummary` — what a finished run reports (``summary.json``).

Decoding checks the types of what arrives and raises :class:`ProtocolError` naming the field,
the value and what was expected; it never evaluates anything the message carries. Importing this
module imports numpy only (the plan's class is imported when a plan is decoded).

Examples
--------
>>> request = TaskRequest(study={"name": "fets"}, study_hash="ab" * 32, round=3)
>>> TaskRequest.decode(request.encode()) == request
True
>>> answer = SiteAnswer.failure("OSError: disk")
>>> params, meta = answer.encode()
>>> SiteAnswer.decode(TaskName.TRAIN, "site-1", params, meta).error
'OSError: disk'
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from typing import TYPE_CHECKING, Any

import numpy as np

from neurofed.federated.condensed import HEAD_CLASSES, HEAD_LOGITS, MAX_PROXY_CASES
from neurofed.federated.update import Parameters

if TYPE_CHECKING:
    from neurofed.preprocess.plan import Plan

__all__ = [
    "MIN_SITES_FOR_CURVE",
    "Answer",
    "FingerprintResult",
    "KeysResult",
    "MergedRound",
    "MetaField",
    "PersonalisedSummary",
    "PlanSummary",
    "ProtocolError",
    "RevealResult",
    "RunSummary",
    "SecAggRequest",
    "SelectedRound",
    "SharesResult",
    "SiteAnswer",
    "TaskName",
    "TaskRequest",
    "TrainResult",
    "ValidateResult",
    "decode_plan",
    "encode_plan",
    "round_of",
]

logger = logging.getLogger(__name__)


class TaskName(StrEnum):
    """Tasks the controller sends to sites."""

    TRAIN = "train"  # global params in → trained params, num_examples, label counts out
    VALIDATE = "validate"  # global params in → MetricState arrays of the validation split out
    # (a Ditto site adds those of its personalised model)
    # a planned study, before round 1: → the fingerprint of the site's training split out
    FINGERPRINT = "fingerprint"
    # secure aggregation (``secagg = true``), before and after ``train`` in every round:
    SECAGG_KEYS = "secagg-keys"  # → the site's public keys of the round and its weights out
    SECAGG_SHARES = "secagg-shares"  # the sites' public keys in → a sealed share for each out
    SECAGG_UNMASK = "secagg-unmask"  # the sites whose inputs arrived in → their shares out


class MetaField(StrEnum):
    """Fields of ``FLModel.meta``."""

    # controller → site
    STUDY = "study"  # the validated study as a dict (Study.to_dict())
    STUDY_HASH = "study_hash"  # its content hash; the site recomputes and compares
    ROUND = "round"  # 1-based round number (0: the fingerprint round)
    # a planned study's train/validate tasks: the run's plan (Plan.to_json()) and its plan_id
    PLAN = "plan"
    PLAN_ID = "plan_id"
    # the finished rounds as every site may see them: [[round, merged value or None, sites,
    # seconds], ...] (MergedRound); the merged value only where MIN_SITES_FOR_CURVE sites stand
    # behind it, never another site's own number
    PROGRESS = "progress"
    # the distill strategy: the federation's class-mean logits and counts per head
    # (class_logits/<head>, class_counts/<head>; neurofed.federated.condensed)
    CLASS_LOGITS = "class_logits"
    # secure aggregation: the step's sites, keys, weight totals or sealed shares (SecAggRequest)
    SECAGG = "secagg"
    # [participation] validate_incoming: a train task's site first scores the model it carries,
    # which is this round's (the last round's result)
    VALIDATE_ROUND = "validate_round"
    # simulation with hosts (neurofed.federated.engine.hosting): the task's sites; a host
    # answers for those it hosts
    HOSTED_SITES = "hosted_sites"
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
    # what the site did not send because too few cases stand behind it (one line each)
    WITHHELD = "withheld"
    # the distill strategy: the site's condensed payload (neurofed.federated.condensed)
    CONDENSED = "condensed"
    # aggregates only: Fingerprint.canonical_json(), the text of its JSON (fixed-length
    # histograms, counts, integer sums — text, because the sums may exceed 64 bits)
    FINGERPRINT = "fingerprint"
    # a train answer to a task with VALIDATE_ROUND: the meta of the site's answer to that
    # validation, exactly as a validate answer's (metric states; or its error)
    VALIDATION = "validation"
    # any answer of a site that keeps an audit log: {"seq", "sha256"} of its log's line for
    # this task, which the server keeps in the run folder (the log's tail, anchored elsewhere)
    AUDIT_HEAD = "audit_head"
    # secure aggregation: the round's public keys {"cipher", "mask"} (32 bytes each)
    SECAGG_PUBLIC = "secagg_public"
    # its shares, sealed for each site ({site: bytes}), and the SHA-256 of its mask seed
    SECAGG_SEALED = "secagg_sealed"
    SECAGG_SEED_DIGEST = "secagg_seed_digest"
    # a train answer's masked input (uint32, instead of parameters)
    SECAGG_MASKED = "secagg_masked"
    # the shares it reveals: {"seeds": {site: bytes}, "keys": {site: bytes}}
    SECAGG_REVEAL = "secagg_reveal"
    # a host's answer: {site: that site's meta} (its arrays travel as "<site>/<name>")
    HOSTED_ANSWERS = "hosted_answers"
    # added by NVFlare on the server
    CLIENT_NAME = "client_name"


class ProtocolError(ValueError):
    """A message does not follow the protocol; the message names the field and the value."""


#: Bounds on what any answer may carry (a site's answer is hostile until checked).
MAX_NAME = 200  # characters of a parameter, metric or label name
MAX_ENTRIES = 100_000  # named arrays or numbers in one field
MAX_EXAMPLES = 10_000_000  # cases a site may claim
MAX_REASON = 1_000  # characters of an error reason kept
MAX_FINGERPRINT = 16 * 1024**2  # characters of a fingerprint's JSON
MAX_ROUNDS = 100_000  # finished rounds a task's progress may list
MAX_SEALED = 1_024  # bytes of one sealed or revealed share
#: A site is told a round's merged selection metric only when at least this many sites'
#: validations stand behind it: with two, one site's own value and the merged one would
#: bound the other site's.
MIN_SITES_FOR_CURVE = 3


def _describe(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"{text[:57]}..."


def _wrong(where: str, value: Any, expected: str) -> ProtocolError:
    return ProtocolError(f"{where} is {_describe(value)} ({type(value).__name__}); {expected}")


def _integer(where: str, value: Any, low: int | None = None, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int | np.integer):
        raise _wrong(where, value, "expected an integer")
    number = int(value)
    if (low is not None and number < low) or (high is not None and number > high):
        raise _wrong(where, value, f"expected an integer in {low}..{high}")
    return number


def _number(where: str, value: Any, *, nan: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float | np.integer | np.floating):
        raise _wrong(where, value, "expected a number")
    number = float(value)
    if math.isinf(number) or (math.isnan(number) and not nan):
        raise _wrong(where, value, "expected a finite number")
    return number


def _text(where: str, value: Any) -> str:
    if not isinstance(value, str):
        raise _wrong(where, value, "expected text")
    return value


def _table(where: str, value: Any) -> Mapping[str, Any]:
    if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
        raise _wrong(where, value, "expected a table keyed by names")
    if len(value) > MAX_ENTRIES:
        raise ProtocolError(f"{where} holds {len(value)} entries; at most {MAX_ENTRIES}")
    long = next((k for k in value if len(k) > MAX_NAME), None)
    if long is not None:
        raise ProtocolError(f"{where} names an entry of {len(long)} characters; at most {MAX_NAME}")
    return value


def _arrays(where: str, value: Any) -> dict[str, np.ndarray]:
    table = _table(where, value)
    out = {}
    for name, item in table.items():
        try:
            array = np.asarray(item)
        except (ValueError, TypeError, OverflowError):  # ragged or unconvertible junk
            raise _wrong(f"{where}[{name!r}]", item, "expected a numeric array") from None
        if array.dtype.kind not in "biuf":
            raise _wrong(f"{where}[{name!r}]", item, "expected a numeric array")
        out[name] = array
    return out


def _bytes(where: str, value: Any, size: int | None = None) -> bytes:
    """Bytes that travel as a ``uint8`` array (``size`` exactly, or at most :data:`MAX_SEALED`)."""
    array = np.asarray(value) if isinstance(value, np.ndarray | list) else None
    if array is None or array.dtype != np.uint8 or array.ndim != 1:
        raise _wrong(where, value, "expected bytes as a one-dimensional uint8 array")
    if (size is not None and array.size != size) or array.size > MAX_SEALED:
        raise _wrong(where, value, f"expected {size or f'at most {MAX_SEALED}'} bytes")
    return array.tobytes()


def _byte_table(where: str, value: Any, size: int | None = None) -> dict[str, bytes]:
    return {k: _bytes(f"{where}[{k!r}]", v, size) for k, v in _table(where, value).items()}


def _wire(data: bytes) -> np.ndarray:
    return np.frombuffer(data, dtype=np.uint8).copy()


def _wire_table(table: Mapping[str, bytes]) -> dict[str, np.ndarray]:
    return {str(k): _wire(v) for k, v in table.items()}


# -- server → site ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SecAggRequest:
    """What a step of secure aggregation tells the sites (``meta["secagg"]``); see
    :mod:`neurofed.federated.server.secagg` for the steps.

    Attributes
    ----------
    sites
        The sites of this step: those that sent keys (``secagg-shares``), that sent shares
        (``train``), whose masked inputs arrived (``secagg-unmask``).
    threshold
        Shares that recover a secret (the fewest sites the round can finish with).
    cipher_public, mask_public
        ``secagg-shares``: each site's public keys of the round (32 bytes).
    totals
        ``secagg-shares``: the weight groups' totals over :attr:`sites`.
    sealed
        ``train``: recipient → sender → the share the sender sealed for the recipient.
    """

    sites: tuple[str, ...]
    threshold: int
    cipher_public: Mapping[str, bytes] = field(default_factory=dict)
    mask_public: Mapping[str, bytes] = field(default_factory=dict)
    totals: Mapping[str, int] = field(default_factory=dict)
    sealed: Mapping[str, Mapping[str, bytes]] = field(default_factory=dict)

    def encode(self) -> dict[str, Any]:
        return {
            "sites": list(self.sites),
            "threshold": int(self.threshold),
            "cipher_public": _wire_table(self.cipher_public),
            "mask_public": _wire_table(self.mask_public),
            "totals": {str(k): int(v) for k, v in self.totals.items()},
            "sealed": {str(r): _wire_table(t) for r, t in self.sealed.items()},
        }

    @classmethod
    def decode(cls, value: Any) -> SecAggRequest:
        """Read ``meta["secagg"]``.

        Raises
        ------
        ProtocolError
            A field of the wrong type or size (the message names it).
        """
        table = _table("secagg", value)
        sites = table.get("sites")
        if not isinstance(sites, list) or len(sites) > MAX_ENTRIES:
            raise _wrong("secagg.sites", sites, "expected a list of site names")
        names = tuple(_text("secagg.sites", s)[:MAX_NAME] for s in sites)
        if len(set(names)) != len(names):
            raise _wrong("secagg.sites", sites, "expected distinct site names")
        sealed = _table("secagg.sealed", table.get("sealed") or {})
        return cls(
            sites=names,
            threshold=_integer("secagg.threshold", table.get("threshold"), 1, MAX_ENTRIES),
            cipher_public=_byte_table("secagg.cipher_public", table.get("cipher_public") or {}, 32),
            mask_public=_byte_table("secagg.mask_public", table.get("mask_public") or {}, 32),
            totals={
                k: _integer(f"secagg.totals[{k!r}]", v, 0, MAX_EXAMPLES * MAX_ENTRIES)
                for k, v in _table("secagg.totals", table.get("totals") or {}).items()
            },
            sealed={r: _byte_table(f"secagg.sealed[{r!r}]", t) for r, t in sealed.items()},
        )


def encode_plan(plan: Plan | None) -> dict[str, Any]:
    """The ``meta`` fields that carry ``plan`` to a site (none without a plan)."""
    if plan is None:
        return {}
    return {MetaField.PLAN.value: plan.to_json(), MetaField.PLAN_ID.value: plan.plan_id}


def decode_plan(meta: Mapping[str, Any]) -> Plan | None:
    """The plan a task carries (``None``: none), its ``plan_id`` checked against its JSON.

    Raises
    ------
    PlanError
        A plan without its id, an unreadable plan, or an id that is not the plan's hash.
    """
    from neurofed.preprocess.plan import Plan, PlanError

    sent, claimed = meta.get(MetaField.PLAN.value), meta.get(MetaField.PLAN_ID.value)
    if sent is None and claimed is None:
        return None
    if not isinstance(sent, Mapping) or not isinstance(claimed, str):
        raise PlanError("the task carries a plan without its plan_id (or the reverse); refusing it")
    plan = Plan.from_json(sent)
    if plan.plan_id != claimed:
        raise PlanError(
            f"the plan's id is {plan.plan_id}, not the claimed {claimed}; refusing the plan"
        )
    return plan


@dataclass(frozen=True)
class MergedRound:
    """A finished round as every site may see it (the curve its custodian's monitor draws).

    Attributes
    ----------
    round
        The round (1-based).
    value
        The study's selection metric merged over the sites' validations; ``None`` when fewer
        than :data:`MIN_SITES_FOR_CURVE` sites validated, or it is not finite.
    sites
        How many sites' validations were merged.
    seconds
        The round's wall time on the server.

    Examples
    --------
    >>> MergedRound.decode_all(MergedRound.encode_all([MergedRound(1, 0.5, 3, 2.0)]))
    (MergedRound(round=1, value=0.5, sites=3, seconds=2.0),)
    """

    round: int
    value: float | None
    sites: int
    seconds: float

    @staticmethod
    def encode_all(rounds: Sequence[MergedRound]) -> list[list[Any]]:
        return [[r.round, r.value, r.sites, r.seconds] for r in rounds]

    @classmethod
    def decode_all(cls, value: Any) -> tuple[MergedRound, ...]:
        """Read the ``progress`` field.

        Raises
        ------
        ProtocolError
            Not a list of ``[round, value or None, sites, seconds]``, or too long.
        """
        where = f"the task's {MetaField.PROGRESS.value}"
        if not isinstance(value, list | tuple):
            raise _wrong(where, value, "expected a list of [round, value, sites, seconds]")
        if len(value) > MAX_ROUNDS:
            raise ProtocolError(f"{where} lists {len(value)} rounds; at most {MAX_ROUNDS}")
        out = []
        for k, entry in enumerate(value):
            if not isinstance(entry, list | tuple) or len(entry) != 4:
                raise _wrong(f"{where}[{k}]", entry, "expected [round, value, sites, seconds]")
            number, merged, sites, seconds = entry
            out.append(
                cls(
                    round=_integer(f"{where}[{k}] round", number, 1, MAX_ROUNDS),
                    value=None if merged is None else _number(f"{where}[{k}] value", merged),
                    sites=_integer(f"{where}[{k}] sites", sites, 0, MAX_ENTRIES),
                    seconds=_number(f"{where}[{k}] seconds", seconds),
                )
            )
        return tuple(out)


@dataclass(frozen=True)
class TaskRequest:
    """What the server sends with every task (``FLModel.meta``).

    Attributes
    ----------
    study
        The validated study as a dict (``Study.to_dict()``); the site parses and hashes it again.
    study_hash
        The study's content hash (64 hex digits).
    round
        The 1-based round (0: the fingerprint round).
    plan
        A planned study's train and validate tasks: the run's plan and its id
        (:func:`encode_plan`); empty otherwise. Read it with :func:`decode_plan`.
    progress
        The rounds finished so far (:class:`MergedRound`), for the site's custodian to watch.
        Shown, never acted on: a malformed list is dropped (and logged) when decoded, and the
        task runs.
    class_logits
        The ``distill`` strategy's federation-wide class-mean logits and counts per head
        (``class_logits/<head>``, ``class_counts/<head>``); empty before any site sent some.
        A malformed table is dropped (and logged): condensation then runs without it.
    secagg
        A step of secure aggregation: what it tells the sites (``None``: the study has none,
        or this task is not part of it).
    validate_round
        A train task of a study with ``[participation] validate_incoming``: the round whose
        model the task carries, which the site scores before it trains (``None``: it does not).
    """

    study: Mapping[str, Any]
    study_hash: str
    round: int
    plan: Mapping[str, Any] = field(default_factory=dict)
    progress: tuple[MergedRound, ...] = ()
    class_logits: Mapping[str, np.ndarray] = field(default_factory=dict)
    secagg: SecAggRequest | None = None
    validate_round: int | None = None

    def encode(self) -> dict[str, Any]:
        meta = {
            MetaField.STUDY.value: dict(self.study),
            MetaField.STUDY_HASH.value: self.study_hash,
            MetaField.ROUND.value: self.round,
        } | dict(self.plan)
        if self.progress:
            meta[MetaField.PROGRESS.value] = MergedRound.encode_all(self.progress)
        if self.class_logits:
            meta[MetaField.CLASS_LOGITS.value] = {
                k: np.asarray(v) for k, v in self.class_logits.items()
            }
        if self.secagg is not None:
            meta[MetaField.SECAGG.value] = self.secagg.encode()
        if self.validate_round is not None:
            meta[MetaField.VALIDATE_ROUND.value] = int(self.validate_round)
        return meta

    @classmethod
    def decode(cls, meta: Mapping[str, Any]) -> TaskRequest:
        """Read a task's ``meta``.

        Raises
        ------
        ProtocolError
            The study or its hash is missing or of the wrong type, the round is not an
            integer, or a secure aggregation step is malformed.
        """
        study, digest = meta.get(MetaField.STUDY.value), meta.get(MetaField.STUDY_HASH.value)
        if not isinstance(study, Mapping) or not isinstance(digest, str):
            raise ProtocolError("the task carries no study and study hash")
        plan = {k: meta[k] for k in (MetaField.PLAN.value, MetaField.PLAN_ID.value) if k in meta}
        round_number = _integer("the task's round", meta.get(MetaField.ROUND.value, 0))
        progress: tuple[MergedRound, ...] = ()
        if MetaField.PROGRESS.value in meta:
            try:
                progress = MergedRound.decode_all(meta[MetaField.PROGRESS.value])
            except ProtocolError as error:  # display only: the task itself is sound
                logger.warning("ignoring the progress the server sent: %s", error)
        class_logits: dict[str, np.ndarray] = {}
        if MetaField.CLASS_LOGITS.value in meta:
            try:
                class_logits = _class_logits(meta[MetaField.CLASS_LOGITS.value])
            except ProtocolError as error:  # a hint for condensation: it runs without it
                logger.warning("ignoring the class logits the server sent: %s", error)
        secagg = meta.get(MetaField.SECAGG.value)
        validate_round = meta.get(MetaField.VALIDATE_ROUND.value)
        return cls(
            study=study,
            study_hash=digest,
            round=round_number,
            plan=plan,
            progress=progress,
            class_logits=class_logits,
            secagg=None if secagg is None else SecAggRequest.decode(secagg),
            validate_round=(
                None
                if validate_round is None
                else _integer("the task's validate_round", validate_round, 1, round_number - 1)
            ),
        )

    def for_validation(self) -> TaskRequest:
        """The validation this train task asks for first: the same task at
        :attr:`validate_round` (its model is the one the task carries)."""
        if self.validate_round is None:
            raise ProtocolError("the task asks for no validation before training")
        return dataclasses.replace(
            self, round=self.validate_round, validate_round=None, class_logits={}, secagg=None
        )

    def decode_plan(self) -> Plan | None:
        """The plan this task carries (see :func:`decode_plan`)."""
        return decode_plan(self.plan)


def _class_logits(value: Any) -> dict[str, np.ndarray]:
    """The federation's class logits (``class_logits/<head>``, ``class_counts/<head>``) or,
    in the proxy mode, its consensus on the proxy cases (``proxy_logits/<head>``, ``(P, L)``
    with the same ``P`` for every head)."""
    arrays = _arrays("class_logits", value)
    cases = {a.shape[0] for n, a in arrays.items() if n.startswith("proxy_logits/") and a.ndim}
    for name, array in arrays.items():
        kind, _, head = name.partition("/")
        if head not in HEAD_CLASSES or kind not in ("class_logits", "class_counts", "proxy_logits"):
            raise ProtocolError(f"class_logits names {name[:40]!r}; expected <kind>/<head>")
        if kind == "proxy_logits":
            count = min(cases, default=0)
            shape: tuple[int, ...] = (count, HEAD_LOGITS[head])
            ok = len(cases) == 1 and 0 < count <= MAX_PROXY_CASES
        else:
            shape = (HEAD_CLASSES[head],) + ((HEAD_LOGITS[head],) if kind == "class_logits" else ())
            ok = True
        if not ok or array.shape != shape or not np.all(np.isfinite(array)):
            raise ProtocolError(f"class_logits[{name!r}] has shape {array.shape}; expected {shape}")
    return arrays


def round_of(meta: Mapping[str, Any]) -> int | None:
    """The round a task's ``meta`` names, or ``None`` when it names none readable."""
    value = meta.get(MetaField.ROUND.value)
    if isinstance(value, bool):
        return None
    try:
        return None if value is None else int(value)
    except (TypeError, ValueError):
        return None


# -- site → server ---------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainResult:
    """A site's answer to ``train``: its trained parameters and aggregate numbers.

    Attributes
    ----------
    params
        The trained parameters (those the strategy aggregates; local layers stay at the site).
    num_examples
        Training cases (the FedAvg weight).
    label_counts
        Known labels per label kind (:class:`~neurofed.keys.OutputKey` values).
    metrics
        Aggregate training numbers: ``train_loss``, ``steps``, ``seconds`` (Ditto adds
        ``personalised_train_loss``).
    condensed
        The ``distill`` strategy's payload (:mod:`neurofed.federated.condensed`); empty
        otherwise (and then not sent).
    masked
        Under secure aggregation: the site's masked input (``uint32``), sent instead of
        :attr:`params` (then empty); ``None`` otherwise.
    """

    params: Parameters
    num_examples: int
    label_counts: Mapping[str, int] = field(default_factory=dict)
    metrics: Mapping[str, float] = field(default_factory=dict)
    condensed: Mapping[str, np.ndarray] = field(default_factory=dict)
    masked: np.ndarray | None = None

    def _encode(self) -> tuple[Parameters, dict[str, Any]]:
        meta: dict[str, Any] = {
            MetaField.NUM_EXAMPLES.value: int(self.num_examples),
            MetaField.LABEL_COUNTS.value: {str(k): int(v) for k, v in self.label_counts.items()},
            MetaField.TRAIN_METRICS.value: {str(k): float(v) for k, v in self.metrics.items()},
        }
        if self.condensed:
            meta[MetaField.CONDENSED.value] = {k: np.asarray(v) for k, v in self.condensed.items()}
        if self.masked is not None:
            meta[MetaField.SECAGG_MASKED.value] = np.asarray(self.masked, dtype=np.uint32)
        return dict(self.params), meta

    @classmethod
    def _decode(cls, params: Mapping[str, Any], meta: Mapping[str, Any]) -> TrainResult:
        counts = _table("label_counts", meta.get(MetaField.LABEL_COUNTS.value) or {})
        metrics = _table("train_metrics", meta.get(MetaField.TRAIN_METRICS.value) or {})
        return cls(
            params=_arrays("the parameters", params),
            num_examples=_integer(
                "num_examples", meta.get(MetaField.NUM_EXAMPLES.value, 0), 0, MAX_EXAMPLES
            ),
            label_counts={
                k: _integer(f"label_counts[{k!r}]", v, 0, MAX_EXAMPLES) for k, v in counts.items()
            },
            metrics={k: _number(f"train_metrics[{k!r}]", v, nan=True) for k, v in metrics.items()},
            condensed=_arrays("condensed", meta.get(MetaField.CONDENSED.value) or {}),
            masked=_masked(meta.get(MetaField.SECAGG_MASKED.value)),
        )


def _masked(value: Any) -> np.ndarray | None:
    if value is None:
        return None
    array = np.asarray(value) if isinstance(value, np.ndarray) else None
    if array is None or array.dtype != np.uint32 or array.ndim != 1:
        raise _wrong("secagg_masked", value, "expected a one-dimensional uint32 array")
    return array


@dataclass(frozen=True)
class KeysResult:
    """A site's answer to ``secagg-keys``: its fresh public keys of the round and its weights.

    Attributes
    ----------
    cipher_public
        X25519 public key that seals the shares sent to it (32 bytes).
    mask_public
        X25519 public key of its pairwise masks (32 bytes).
    num_examples, label_counts
        Its weights this round, as a training answer gives them.
    """

    cipher_public: bytes
    mask_public: bytes
    num_examples: int
    label_counts: Mapping[str, int] = field(default_factory=dict)

    def _encode(self) -> tuple[Parameters, dict[str, Any]]:
        return {}, {
            MetaField.SECAGG_PUBLIC.value: _wire_table(
                {"cipher": self.cipher_public, "mask": self.mask_public}
            ),
            MetaField.NUM_EXAMPLES.value: int(self.num_examples),
            MetaField.LABEL_COUNTS.value: {str(k): int(v) for k, v in self.label_counts.items()},
        }

    @classmethod
    def _decode(cls, params: Mapping[str, Any], meta: Mapping[str, Any]) -> KeysResult:
        keys = _byte_table("secagg_public", meta.get(MetaField.SECAGG_PUBLIC.value) or {}, 32)
        if set(keys) != {"cipher", "mask"}:
            raise _wrong("secagg_public", sorted(keys), "expected the keys 'cipher' and 'mask'")
        counts = _table("label_counts", meta.get(MetaField.LABEL_COUNTS.value) or {})
        return cls(
            cipher_public=keys["cipher"],
            mask_public=keys["mask"],
            num_examples=_integer(
                "num_examples", meta.get(MetaField.NUM_EXAMPLES.value, 0), 0, MAX_EXAMPLES
            ),
            label_counts={
                k: _integer(f"label_counts[{k!r}]", v, 0, MAX_EXAMPLES) for k, v in counts.items()
            },
        )


@dataclass(frozen=True)
class SharesResult:
    """A site's answer to ``secagg-shares``: a share of its two secrets sealed for each site,
    and the SHA-256 of its mask seed (to check the seed the server reconstructs)."""

    sealed: Mapping[str, bytes]
    seed_digest: bytes

    def _encode(self) -> tuple[Parameters, dict[str, Any]]:
        return {}, {
            MetaField.SECAGG_SEALED.value: _wire_table(self.sealed),
            MetaField.SECAGG_SEED_DIGEST.value: _wire(self.seed_digest),
        }

    @classmethod
    def _decode(cls, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SharesResult:
        return cls(
            sealed=_byte_table("secagg_sealed", meta.get(MetaField.SECAGG_SEALED.value) or {}),
            seed_digest=_bytes(
                "secagg_seed_digest", meta.get(MetaField.SECAGG_SEED_DIGEST.value), 32
            ),
        )


@dataclass(frozen=True)
class RevealResult:
    """A site's answer to ``secagg-unmask``: the shares it holds of the seeds of the sites whose
    inputs arrived, and of the mask keys of the sites that dropped out after sharing — never
    both for one site. Each share is its x (2 bytes) and its value
    (:mod:`neurofed.federated.secagg.shamir`)."""

    seeds: Mapping[str, bytes] = field(default_factory=dict)
    keys: Mapping[str, bytes] = field(default_factory=dict)

    def _encode(self) -> tuple[Parameters, dict[str, Any]]:
        reveal = {"seeds": _wire_table(self.seeds), "keys": _wire_table(self.keys)}
        return {}, {MetaField.SECAGG_REVEAL.value: reveal}

    @classmethod
    def _decode(cls, params: Mapping[str, Any], meta: Mapping[str, Any]) -> RevealResult:
        reveal = _table("secagg_reveal", meta.get(MetaField.SECAGG_REVEAL.value) or {})
        seeds = _byte_table("secagg_reveal.seeds", reveal.get("seeds") or {})
        keys = _byte_table("secagg_reveal.keys", reveal.get("keys") or {})
        both = sorted(set(seeds) & set(keys))
        if both:
            raise ProtocolError(f"secagg_reveal reveals both secrets of {both[:3]}")
        return cls(seeds=seeds, keys=keys)


@dataclass(frozen=True)
class ValidateResult:
    """A site's answer to ``validate``: metric states (sums and counts) of its validation split.

    Attributes
    ----------
    metric_state
        ``MetricState.to_arrays()`` of the global model (empty: nothing to validate).
    personalised_metric_state
        Ditto: the same for the site's personalised model (which itself never leaves the site).
    seconds
        Wall time of the site's validation.
    withheld
        What the site did not send, and why (too few cases behind it), one line each.
    """

    metric_state: Mapping[str, np.ndarray] = field(default_factory=dict)
    personalised_metric_state: Mapping[str, np.ndarray] | None = None
    seconds: float | None = None
    withheld: tuple[str, ...] = ()

    def _encode(self) -> tuple[Parameters, dict[str, Any]]:
        meta: dict[str, Any] = {MetaField.METRIC_STATE.value: _plain(self.metric_state)}
        if self.personalised_metric_state is not None:
            personalised = _plain(self.personalised_metric_state)
            meta[MetaField.PERSONALISED_METRIC_STATE.value] = personalised
        if self.seconds is not None:
            meta[MetaField.VALIDATE_SECONDS.value] = float(self.seconds)
        if self.withheld:
            meta[MetaField.WITHHELD.value] = list(self.withheld)
        return {}, meta

    @classmethod
    def _decode(cls, params: Mapping[str, Any], meta: Mapping[str, Any]) -> ValidateResult:
        state = _arrays("metric_state", meta.get(MetaField.METRIC_STATE.value) or {})
        own = meta.get(MetaField.PERSONALISED_METRIC_STATE.value)
        seconds = meta.get(MetaField.VALIDATE_SECONDS.value)
        withheld = meta.get(MetaField.WITHHELD.value, [])
        if not isinstance(withheld, list) or len(withheld) > MAX_ENTRIES:
            raise _wrong("withheld", withheld, "expected a list of lines")
        return cls(
            metric_state=state,
            personalised_metric_state=None if own is None else _arrays("personalised", own),
            seconds=None if seconds is None else abs(_number("validate_seconds", seconds)),
            withheld=tuple(_text("withheld", w)[:MAX_NAME] for w in withheld),
        )


@dataclass(frozen=True)
class FingerprintResult:
    """A site's answer to ``fingerprint``: the text of its fingerprint's canonical JSON.

    Text, because its integer sums may exceed the 64 bits NVFlare's serialiser takes; fixed-
    length histograms, counts and integer sums only
    (:class:`~neurofed.preprocess.fingerprint.Fingerprint`).
    """

    fingerprint: str

    def _encode(self) -> tuple[Parameters, dict[str, Any]]:
        return {}, {MetaField.FINGERPRINT.value: self.fingerprint}

    @classmethod
    def _decode(cls, params: Mapping[str, Any], meta: Mapping[str, Any]) -> FingerprintResult:
        text = _text("fingerprint", meta.get(MetaField.FINGERPRINT.value))
        if len(text) > MAX_FINGERPRINT:
            raise ProtocolError(f"fingerprint is {len(text)} characters; at most {MAX_FINGERPRINT}")
        return cls(fingerprint=text)


#: What a site's answer carries when it did the task.
Answer = TrainResult | ValidateResult | FingerprintResult | KeysResult | SharesResult | RevealResult
_RESULTS: dict[TaskName, type[Answer]] = {
    TaskName.TRAIN: TrainResult,
    TaskName.VALIDATE: ValidateResult,
    TaskName.FINGERPRINT: FingerprintResult,
    TaskName.SECAGG_KEYS: KeysResult,
    TaskName.SECAGG_SHARES: SharesResult,
    TaskName.SECAGG_UNMASK: RevealResult,
}


_HEX64 = re.compile(r"^[0-9a-f]{64}$")


def _audit_head(value: Any) -> tuple[int, str] | None:
    if value is None:
        return None
    table = _table("audit_head", value)
    seq = _integer("audit_head.seq", table.get("seq"), 1, 2**62)
    digest = _text("audit_head.sha256", table.get("sha256"))
    if not _HEX64.match(digest):
        raise _wrong("audit_head.sha256", digest, "expected 64 hex digits")
    return seq, digest


def _plain(arrays: Mapping[str, Any]) -> dict[str, np.ndarray]:
    return {str(k): np.asarray(v) for k, v in arrays.items()}


@dataclass(frozen=True)
class SiteAnswer:
    """One site's answer to one task: a result, or the reason it has none.

    Attributes
    ----------
    result
        What the site sends when the task succeeded; ``None`` with :attr:`error`.
    error
        Why the site failed the task (its folders masked); ``None`` when it succeeded.
    refused
        With :attr:`error`: the site's custodian refused the study (not approved here, dataset
        not allowed) — not a failure of the site.
    site_id
        The site that answered (set on the server from NVFlare's client name).
    validation
        An answer to ``train`` under ``[participation] validate_incoming``: the site's answer
        to the validation it did first (of the model the task carried).
    """

    result: Answer | None = None
    error: str | None = None
    refused: bool = False
    site_id: str = ""
    audit_head: tuple[int, str] | None = None  # (seq, sha256) of the site's audit-log line
    validation: SiteAnswer | None = None

    def __post_init__(self) -> None:
        if (self.result is None) == (self.error is None):
            raise ValueError("a site answer holds either a result or an error reason")

    @classmethod
    def failure(cls, reason: str, *, refused: bool = False, site_id: str = "") -> SiteAnswer:
        """An answer without result: the site failed (or refused) the task."""
        return cls(error=str(reason), refused=refused, site_id=site_id)

    @property
    def params(self) -> Parameters:
        """The parameter arrays the answer carries (a training result's; none otherwise)."""
        return dict(self.result.params) if isinstance(self.result, TrainResult) else {}

    @property
    def meta(self) -> dict[str, Any]:
        """The ``meta`` fields exactly as they travel (see :meth:`encode`)."""
        return self.encode()[1]

    def encode(self) -> tuple[Parameters, dict[str, Any]]:
        """``(params, meta)`` as they travel in an ``FLModel``."""
        if self.result is None:
            params: Parameters = {}
            meta: dict[str, Any] = {MetaField.ERROR.value: self.error}
            if self.refused:
                meta[MetaField.REFUSED.value] = True
        else:
            params, meta = self.result._encode()
        if self.audit_head is not None:
            seq, digest = self.audit_head
            meta[MetaField.AUDIT_HEAD.value] = {"seq": int(seq), "sha256": digest}
        if self.validation is not None:  # a validation answer travels in meta only
            meta[MetaField.VALIDATION.value] = self.validation.encode()[1]
        return params, meta

    @classmethod
    def decode(
        cls,
        task: TaskName | str,
        site_id: str,
        params: Mapping[str, Any] | None,
        meta: Mapping[str, Any] | None,
    ) -> SiteAnswer:
        """Read the answer ``site_id`` gave to ``task``.

        Raises
        ------
        ProtocolError
            An unknown task, or a field of the wrong type (the message names it).
        """
        meta = meta or {}
        head = _audit_head(meta.get(MetaField.AUDIT_HEAD.value))
        validation = None
        if MetaField.VALIDATION.value in meta:
            if task != TaskName.TRAIN.value:
                raise ProtocolError(
                    f"a {str(task)[:40]!r} answer carries a validation; only a train answer may"
                )
            table = _table("validation", meta[MetaField.VALIDATION.value])
            validation = cls.decode(TaskName.VALIDATE, site_id, {}, table)
        error = meta.get(MetaField.ERROR.value)
        if error is not None:
            refused = meta.get(MetaField.REFUSED.value, False)
            if not isinstance(refused, bool | np.bool_):
                raise _wrong("refused", refused, "expected true or false")
            reason = _text("error", error)
            if len(reason) > MAX_REASON:
                reason = f"{reason[:MAX_REASON]}… (cut at {MAX_REASON} characters)"
            answer = cls.failure(reason, refused=bool(refused), site_id=site_id)
            return dataclasses.replace(answer, audit_head=head, validation=validation)
        try:
            kind = _RESULTS[TaskName(task)]
        except (KeyError, ValueError):
            raise ProtocolError(f"unknown task {task!r}") from None
        result = kind._decode(params or {}, meta)
        return cls(result=result, site_id=site_id, audit_head=head, validation=validation)


# -- what a run reports ----------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    return None if value is None or not math.isfinite(value) else float(value)


@dataclass(frozen=True)
class SelectedRound:
    """The round whose model a run keeps as ``model/``, and why."""

    round: int
    metric: str
    direction: str
    value: float | None

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "metric": self.metric,
            "direction": self.direction,
            "value": _finite(self.value),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> SelectedRound:
        value = data.get("value")
        return cls(
            round=int(data["round"]),
            metric=str(data["metric"]),
            direction=str(data["direction"]),
            value=None if value is None else float(value),
        )


@dataclass(frozen=True)
class PlanSummary:
    """A planned run's plan and who contributed to its fingerprint round."""

    plan_id: str
    spacing: tuple[float, ...]
    patch_size: tuple[int, ...]
    volume_shape: tuple[int, ...]
    batch_size: int
    num_cases: int
    fingerprint_id: str
    sites: tuple[str, ...] = ()
    failed: Mapping[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "spacing": list(self.spacing),
            "patch_size": list(self.patch_size),
            "volume_shape": list(self.volume_shape),
            "batch_size": self.batch_size,
            "num_cases": self.num_cases,
            "fingerprint_id": self.fingerprint_id,
            "sites": list(self.sites),
            "failed": dict(self.failed),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanSummary:
        return cls(
            plan_id=str(data["plan_id"]),
            spacing=tuple(float(v) for v in data["spacing"]),
            patch_size=tuple(int(v) for v in data["patch_size"]),
            volume_shape=tuple(int(v) for v in data["volume_shape"]),
            batch_size=int(data["batch_size"]),
            num_cases=int(data["num_cases"]),
            fingerprint_id=str(data["fingerprint_id"]),
            sites=tuple(str(s) for s in data.get("sites", ())),
            failed={str(k): str(v) for k, v in dict(data.get("failed", {})).items()},
        )


@dataclass(frozen=True)
class PersonalisedSummary:
    """Ditto: the sites' own models after the last round that validated them."""

    round: int
    validation: Mapping[str, float | None]
    validation_per_site: Mapping[str, Mapping[str, float | None]]

    def to_json(self) -> dict[str, Any]:
        return {
            "round": self.round,
            "validation": dict(self.validation),
            "validation_per_site": {s: dict(v) for s, v in self.validation_per_site.items()},
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PersonalisedSummary:
        return cls(
            round=int(data["round"]),
            validation=dict(data.get("validation", {})),
            validation_per_site={
                str(s): dict(v) for s, v in dict(data.get("validation_per_site", {})).items()
            },
        )


@dataclass(frozen=True)
class RunSummary:
    """What a finished federated run reports (``<run>/summary.json``).

    Attributes
    ----------
    study, study_hash
        The study's name and content hash.
    rounds_done, rounds
        Rounds run, of the study's rounds.
    selected
        The best round by the study's metric and direction (``None``: no round validated, and
        ``model/`` is the last model).
    dropped
        Sites dropped for not answering in time.
    refused
        Site → the latest reason its custodian refused the study.
    model, last_model
        The model folders' names in the run folder; ``None`` when no round was aggregated
        (the run has no model to give, and says so).
    personalised
        Ditto only: the sites' own models' validation.
    plan
        A planned study only: its plan and who contributed to it.
    """

    study: str
    study_hash: str
    rounds_done: int
    rounds: int
    selected: SelectedRound | None
    dropped: tuple[str, ...] = ()
    refused: Mapping[str, str] = field(default_factory=dict)
    model: str | None = "model"
    last_model: str | None = "last_model"
    personalised: PersonalisedSummary | None = None
    plan: PlanSummary | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "study": self.study,
            "study_hash": self.study_hash,
            "rounds_done": self.rounds_done,
            "rounds": self.rounds,
            "selected": None if self.selected is None else self.selected.to_json(),
            "dropped": list(self.dropped),
            "refused": dict(self.refused),
            "model": self.model,
            "last_model": self.last_model,
        }
        if self.personalised is not None:
            out["personalised"] = self.personalised.to_json()
        if self.plan is not None:
            out["plan"] = self.plan.to_json()
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> RunSummary:
        """Read a ``summary.json`` (raises ``KeyError`` / ``ValueError`` on a damaged one)."""
        selected, personalised, plan = (
            data.get("selected"),
            data.get("personalised"),
            data.get("plan"),
        )
        return cls(
            study=str(data["study"]),
            study_hash=str(data["study_hash"]),
            rounds_done=int(data["rounds_done"]),
            rounds=int(data["rounds"]),
            selected=None if not selected else SelectedRound.from_json(selected),
            dropped=tuple(str(s) for s in data.get("dropped", ())),
            refused={str(k): str(v) for k, v in dict(data.get("refused", {})).items()},
            model=None if data.get("model", "model") is None else str(data.get("model", "model")),
            last_model=None
            if data.get("last_model", "last_model") is None
            else str(data.get("last_model", "last_model")),
            personalised=None if not personalised else PersonalisedSummary.from_json(personalised),
            plan=None if not plan else PlanSummary.from_json(plan),
        )
