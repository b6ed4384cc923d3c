"""The site's audit log: the hash chain, tamper detection and canonical payload digests."""

from __future__ import annotations

import hashlib
import json
import threading
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.site.audit import (
    GENESIS,
    AuditEvent,
    AuditHead,
    AuditLog,
    line_digest,
    payload_bytes,
    payload_digest,
    read_audit_log,
    verify_audit_log,
)


def _written(path: Path, count: int = 4) -> AuditLog:
    log = AuditLog(path, "site-1")
    for k in range(1, count + 1):
        log.append(AuditEvent.ROUND_TRAIN, study_hash="ab" * 32, round=k)
    return log


def test_each_line_carries_the_hash_of_the_one_before(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "audit.jsonl"
    _written(path, 3)

    lines = path.read_text().splitlines()
    records = read_audit_log(path)
    check = verify_audit_log(path)

    assert [r["prev_sha256"] for r in records] == [GENESIS, *map(line_digest, lines[:2])]
    assert [r["round"] for r in records] == [1, 2, 3]
    assert {r["site"] for r in records} == {"site-1"} and records[0]["event"] == "round-train"
    assert check.ok and check.lines == 3 and check.head == line_digest(lines[-1])
    assert line_digest(lines[0]) == hashlib.sha256(lines[0].encode()).hexdigest()


@pytest.mark.parametrize("kind", ["edit", "remove"])
def test_an_edited_or_removed_line_is_named(tmp_path: Path, kind: str) -> None:
    path = tmp_path / "audit.jsonl"
    _written(path, 4)
    lines = path.read_text().splitlines()
    if kind == "edit":
        lines[1] = lines[1].replace('"round":2', '"round":7')
    else:
        del lines[1]
    path.write_text("\n".join(lines) + "\n")

    check = verify_audit_log(path)

    assert not check.ok and check.broken_at == 3 - (kind == "remove")
    assert check.problem is not None
    assert f"line {check.broken_at} does not chain to the line before it" in check.problem


def test_a_line_cut_by_a_crash_is_reported_and_later_lines_still_append(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"
    log = _written(path, 2)
    with open(path, "a", encoding="utf-8") as handle:
        handle.write('{"event":"round-tr')  # a crash mid-write

    log.append(AuditEvent.ROUND_VALIDATE, round=2)
    check = verify_audit_log(path)

    assert read_audit_log(path)[-1]["event"] == "round-validate"
    assert check.lines == 4 and check.broken_at == 3
    assert check.problem is not None and "line 3 is not a JSON record" in check.problem


def test_appends_from_several_writers_keep_one_chain(tmp_path: Path) -> None:
    path = tmp_path / "audit.jsonl"

    def write(site: str) -> None:
        for _ in range(20):
            AuditLog(path, site).append(AuditEvent.PAYLOAD_SENT, bytes=1)

    writers = [threading.Thread(target=write, args=(f"job-{k}",)) for k in range(4)]
    for thread in writers:
        thread.start()
    for thread in writers:
        thread.join()

    check = verify_audit_log(path)
    assert check.ok and check.lines == 80


def test_payload_bytes_are_canonical_and_cover_every_value() -> None:
    params = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "n": np.array(4, np.int64)}
    meta = {"num_examples": 3, "metric_state": {"sum": np.array([1.5, np.nan])}}
    reordered = {"n": params["n"], "w": np.asfortranarray(params["w"])}

    size, digest = payload_digest(params, meta)
    changed = payload_digest(params | {"n": np.array(5, np.int64)}, meta)
    changed_meta = payload_digest(params, meta | {"num_examples": 4})

    assert (size, digest) == payload_digest(reordered, dict(reversed(list(meta.items()))))
    assert size == len(payload_bytes(params, meta)) > 6 * 4 + 8
    assert changed[1] != digest and changed_meta[1] != digest
    data = payload_bytes({}, meta)
    tail = data[8 + int.from_bytes(data[:8], "little") :]  # after the (empty) safetensors part
    assert json.loads(tail) == json.loads(
        '{"metric_state":{"sum":{"dtype":"float64","shape":[2],"values":[1.5,NaN]}},'
        '"num_examples":3}'
    )


def test_every_line_carries_its_place_and_a_renumbered_log_is_caught(tmp_path: Path) -> None:
    # Prepare
    path = tmp_path / "audit.jsonl"
    log = AuditLog(path, "site-1")
    for k in range(3):
        log.append(AuditEvent.ROUND_TRAIN, round=k)
    # Assert: seq 1, 2, 3 and the head is the last line's
    records = read_audit_log(path)
    assert [r["seq"] for r in records] == [1, 2, 3]
    assert log.head is not None and log.head.seq == 3
    assert verify_audit_log(path, [log.head]).ok and verify_audit_log(path).seq == 3
    assert verify_audit_log(path, [log.head.sha256]).ok  # a head hash alone, as a person notes it
    # a head at another place than noted is refused too
    moved = AuditHead(2, log.head.sha256)
    assert "(line 2) noted earlier is not in the log" in str(
        verify_audit_log(path, [moved]).problem
    )
