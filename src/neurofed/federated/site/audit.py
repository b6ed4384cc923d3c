"""A site's audit log: append-only, hash-chained JSON lines of what the site did and sent.

Every line is one JSON object (keys sorted, compact, ASCII) with at least ``time`` (UTC, ISO
8601), ``site``, ``event`` (:class:`AuditEvent`) and ``prev_sha256``: the SHA-256 (hex) of the
previous line's exact text (without its newline; :data:`GENESIS` for the first line). Editing,
removing or inserting a line breaks the chain at the next line, and :func:`verify_audit_log`
names it. The last line has no successor: note the head hash ``neurofed site audit`` prints
(:attr:`AuditCheck.head`) somewhere else to make a truncated or edited tail evident too.

Events (with their extra fields)::

    study-accepted   study_hash, study, dataset      a study passed the site's approval check
    study-refused    study_hash, study, round, task, reason
    round-train      study_hash, study, round (+ error when the site's training failed)
    round-validate   study_hash, study, round (+ error)
    payload-sent     study_hash, study, round, task, bytes, sha256   every answer that left

``bytes`` and ``sha256`` of a payload are those of :func:`payload_bytes`: the safetensors
serialisation of the parameter arrays (``safetensors.numpy.save``, no metadata: tensors ordered
by dtype then name, so the bytes do not depend on dict order) followed by the canonical JSON of
``meta`` (keys sorted, ``","``/``":"`` separators, ASCII, arrays written as
``{"dtype", "shape", "values"}`` with ``values`` the nested list of the array's values;
``NaN``/``Infinity`` as JSON extensions). The same arrays and fields always give the same bytes.

Lines are appended under an exclusive ``flock`` (several job processes of one site may write),
flushed and ``fsync``'d. A line cut by a crash is left as it is (the next append starts a new
line) and reported by :func:`verify_audit_log`.

Examples
--------
>>> import tempfile
>>> path = Path(tempfile.mkdtemp()) / "audit.jsonl"
>>> log = AuditLog(path, "site-1")
>>> _ = log.append(AuditEvent.STUDY_ACCEPTED, study_hash="ab" * 32, study="fets")
>>> _ = log.append(AuditEvent.PAYLOAD_SENT, round=1, **payload_fields({}, {"n": 3}))
>>> check = verify_audit_log(path)
>>> check.ok, check.lines
(True, 2)
>>> payload_digest({}, {"n": 3}) == payload_digest({}, {"n": 3})
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import IO, Any

import numpy as np

__all__ = [
    "GENESIS",
    "AuditCheck",
    "AuditEvent",
    "AuditField",
    "AuditHead",
    "AuditLog",
    "AuditLogError",
    "line_digest",
    "payload_bytes",
    "payload_digest",
    "payload_fields",
    "read_audit_log",
    "verify_audit_log",
]

#: ``prev_sha256`` of the first line.
GENESIS = "0" * 64
_TAIL_CHUNK = 4096


class AuditEvent(StrEnum):
    """What a line of the audit log records."""

    STUDY_ACCEPTED = "study-accepted"
    STUDY_REFUSED = "study-refused"
    ROUND_TRAIN = "round-train"
    ROUND_VALIDATE = "round-validate"
    PAYLOAD_SENT = "payload-sent"


class AuditField(StrEnum):
    """Keys of an audit line."""

    TIME = "time"
    SITE = "site"
    EVENT = "event"
    STUDY_HASH = "study_hash"
    STUDY = "study"
    DATASET = "dataset"
    ROUND = "round"
    TASK = "task"
    REASON = "reason"
    ERROR = "error"
    BYTES = "bytes"
    SHA256 = "sha256"
    PREV = "prev_sha256"
    SEQ = "seq"  # 1, 2, 3, … : the line's place in the log


class AuditLogError(ValueError):
    """The audit log cannot be read; the message names the file."""


def line_digest(text: str) -> str:
    """SHA-256 (hex) of one line's text, without its newline."""
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _encode(record: Mapping[str, Any]) -> str:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True)


# -- payloads --------------------------------------------------------------------------------


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    if isinstance(value, np.ndarray):
        return {"dtype": str(value.dtype), "shape": list(value.shape), "values": value.tolist()}
    if isinstance(value, np.generic):
        return value.item()
    return value


def payload_bytes(params: Mapping[str, Any], meta: Mapping[str, Any]) -> bytes:
    """The canonical bytes of a site's answer (see the module docstring).

    >>> a = payload_bytes({"w": np.ones(2, np.float32), "b": np.zeros(1)}, {"n": 1, "m": [2]})
    >>> a == payload_bytes({"b": np.zeros(1), "w": np.ones(2, np.float32)}, {"m": [2], "n": 1})
    True
    """
    from safetensors.numpy import save

    # np.ascontiguousarray would turn 0-d arrays into shape (1,)
    arrays = {str(k): np.array(v, order="C") for k, v in params.items()}
    text = json.dumps(
        _plain(meta), sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=True
    )
    return bytes(save(arrays)) + text.encode("ascii")


def payload_digest(params: Mapping[str, Any], meta: Mapping[str, Any]) -> tuple[int, str]:
    """``(size in bytes, SHA-256 hex)`` of :func:`payload_bytes`."""
    data = payload_bytes(params, meta)
    return len(data), hashlib.sha256(data).hexdigest()


def payload_fields(params: Mapping[str, Any], meta: Mapping[str, Any]) -> dict[str, Any]:
    """The ``bytes`` and ``sha256`` fields of a ``payload-sent`` line."""
    size, digest = payload_digest(params, meta)
    return {AuditField.BYTES.value: size, AuditField.SHA256.value: digest}


# -- writing ---------------------------------------------------------------------------------


@contextlib.contextmanager
def _locked(handle: IO[bytes]) -> Iterator[None]:
    try:
        import fcntl
    except ImportError:  # not POSIX: one writer per site is assumed
        yield
        return
    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
    try:
        yield
    finally:
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


def _tail(handle: IO[bytes]) -> tuple[bytes | None, bool]:
    """The file's last line (without newline; ``None``: empty) and whether it ends a line."""
    handle.seek(0, os.SEEK_END)
    size = handle.tell()
    if size == 0:
        return None, True
    handle.seek(size - 1)
    complete = handle.read(1) == b"\n"
    position = size - 1 if complete else size  # the last line ends here
    chunks: list[bytes] = []
    while position > 0:
        step = min(_TAIL_CHUNK, position)
        position -= step
        handle.seek(position)
        chunk = handle.read(step)
        cut = chunk.rfind(b"\n")
        if cut >= 0:
            chunks.append(chunk[cut + 1 :])
            break
        chunks.append(chunk)
    return b"".join(reversed(chunks)), complete


@dataclass(frozen=True)
class AuditHead:
    """A line of the log by its place (``seq``) and its SHA-256: noted elsewhere, it proves the
    log up to that line was not edited, cut or replaced since."""

    seq: int
    sha256: str

    def to_json(self) -> dict[str, Any]:
        return {AuditField.SEQ.value: self.seq, AuditField.SHA256.value: self.sha256}


def _next_seq(handle: IO[bytes], last: bytes | None) -> int:
    """The next line's ``seq``: one more than the last line's (or than the lines' count)."""
    if last is None:
        return 1
    try:
        seq = json.loads(last.decode("utf-8")).get(AuditField.SEQ.value)
    except (ValueError, AttributeError):
        seq = None
    if isinstance(seq, int) and not isinstance(seq, bool):
        return seq + 1
    handle.seek(0)
    return sum(1 for _ in handle) + 1  # an older log without seq, or a cut line


class AuditLog:
    """The append-only audit log of one site.

    Parameters
    ----------
    path
        The log file (created with its folder on the first append).
    site_id
        The site's name, written on every line.
    """

    def __init__(self, path: Path, site_id: str) -> None:
        self.path = Path(path)
        self.site_id = str(site_id)
        self.head: AuditHead | None = None  # the line this object appended last

    def append(self, event: AuditEvent | str, **fields: Any) -> dict[str, Any]:
        """Append one line (``None`` fields are left out); returns the record written.

        Raises
        ------
        OSError
            The file cannot be written (the caller decides whether that stops anything).
        """
        record: dict[str, Any] = {
            AuditField.TIME.value: datetime.now(UTC).isoformat(timespec="milliseconds"),
            AuditField.SITE.value: self.site_id,
            AuditField.EVENT.value: AuditEvent(event).value,
        }
        record.update({k: _plain(v) for k, v in fields.items() if v is not None})
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a+b") as handle, _locked(handle):
            last, complete = _tail(handle)
            previous = GENESIS if last is None else line_digest(last.decode("utf-8", "replace"))
            record[AuditField.PREV.value] = previous
            record[AuditField.SEQ.value] = _next_seq(handle, last)
            text = _encode(record)
            handle.seek(0, os.SEEK_END)
            handle.write((b"" if complete else b"\n") + text.encode("ascii") + b"\n")
            handle.flush()
            os.fsync(handle.fileno())
        self.head = AuditHead(record[AuditField.SEQ.value], line_digest(text))
        return record


# -- reading and checking --------------------------------------------------------------------


@dataclass(frozen=True)
class AuditCheck:
    """The outcome of :func:`verify_audit_log`.

    Attributes
    ----------
    lines
        Lines in the file.
    broken_at
        The first line (1-based) that does not chain to the one before it, or is not a JSON
        object; ``None`` when the chain holds.
    problem
        What is wrong at ``broken_at`` and what it means.
    head
        SHA-256 of the last line (``GENESIS`` for an empty log).
    seq
        The last line's place in the log (0 for an empty log).
    """

    lines: int
    broken_at: int | None = None
    problem: str | None = None
    head: str = GENESIS
    seq: int = 0

    @property
    def ok(self) -> bool:
        return self.broken_at is None


def _lines(path: Path) -> list[str]:
    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise AuditLogError(f"{path}: unreadable ({exc})") from None
    text = data.decode("utf-8", "replace")
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return lines


def read_audit_log(path: Path) -> list[dict[str, Any]]:
    """Every line that is a JSON object, in order (a missing file is an empty log).

    Lines that are not JSON objects are returned as ``{"unreadable": <text>}``.
    """
    records: list[dict[str, Any]] = []
    for text in _lines(path):
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        records.append(record if isinstance(record, dict) else {"unreadable": text})
    return records


def verify_audit_log(path: Path, expect: Sequence[AuditHead | str] = ()) -> AuditCheck:
    """Check the hash chain of ``path`` and name the first line that breaks it.

    Every head in ``expect`` (an :class:`AuditHead`, or a head hash alone, noted earlier
    somewhere the log's editor cannot reach) must still be a line of the log, at its place:
    otherwise the log was edited up to it, cut, or replaced by a self-consistent forgery.
    """
    lines = _lines(path)
    previous = GENESIS
    seqs: dict[str, int] = {}
    last_seq = 0
    for number, text in enumerate(lines, start=1):
        try:
            record = json.loads(text)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            return AuditCheck(
                len(lines),
                number,
                f"{path}: line {number} is not a JSON record (cut by a crash, or edited)",
                line_digest(lines[-1]),
            )
        if record.get(AuditField.PREV.value) != previous:
            where = (
                "it should be the first line: lines were removed before it"
                if number == 1
                else f"line {number - 1} was edited, or lines were removed or inserted between "
                f"lines {number - 1} and {number}"
            )
            return AuditCheck(
                len(lines),
                number,
                f"{path}: line {number} does not chain to the line before it: {where}",
                line_digest(lines[-1]),
            )
        seq = record.get(AuditField.SEQ.value, number)
        if seq != number:
            return AuditCheck(
                len(lines),
                number,
                f"{path}: line {number} says it is line {seq}: the log was renumbered",
                line_digest(lines[-1]),
            )
        previous = line_digest(text)
        seqs[previous] = number
        last_seq = number
    for head in expect:
        digest, seq = (head, None) if isinstance(head, str) else (head.sha256, head.seq)
        found = seqs.get(str(digest).removeprefix("sha256:"))
        if found is None or (seq is not None and found != seq):
            at = "" if seq is None else f" (line {seq})"
            return AuditCheck(
                len(lines),
                len(lines),
                f"{path}: the head sha256:{str(digest)[:16]}…{at} noted earlier is not in the log: "
                "the log was edited up to it, cut, or replaced",
                previous,
                last_seq,
            )
    return AuditCheck(len(lines), head=previous, seq=last_seq)
