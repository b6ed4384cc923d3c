"""Atomic writes, hashes and version stamps: one home for the plumbing every stage shares."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from neurofed.artifacts import (
    TEMP_SUFFIX,
    atomic_folder,
    atomic_path,
    settle_folders,
    sha256_file,
    versions,
    write_json_atomically,
    write_text_atomically,
)


class _CrashError(Exception):
    pass


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary(tmp_path: Path) -> None:
    # Prepare
    path = write_text_atomically(tmp_path / "manifest.json", "old\n")
    # Execute
    with pytest.raises(_CrashError), atomic_path(path) as tmp:
        tmp.write_text("half a fi")
        raise _CrashError
    # Assert
    assert path.read_text() == "old\n"
    assert [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


def test_json_with_nan_is_refused_unless_allowed_and_nothing_is_written(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Out of range float values"):
        write_json_atomically(tmp_path / "a.json", {"x": float("nan")})
    assert not (tmp_path / "a.json").exists()
    written = write_json_atomically(tmp_path / "b.json", {"x": float("nan")}, allow_nan=True)
    assert written.read_text() == '{\n  "x": NaN\n}\n'
    assert [p.name for p in tmp_path.iterdir()] == ["b.json"]


def test_files_get_the_permissions_the_umask_gives(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = write_text_atomically(tmp_path / "splits.json", "{}\n")
    finally:
        os.umask(old)
    assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_a_folder_is_replaced_whole_or_not_at_all(tmp_path: Path) -> None:
    # Prepare: a complete round folder
    final = tmp_path / "round-3"
    with atomic_folder(final) as tmp:
        (tmp / "global.safetensors").write_bytes(b"v1")
    # Execute: a second write that crashes half-way
    with pytest.raises(_CrashError), atomic_folder(final) as tmp:
        (tmp / "global.safetensors").write_bytes(b"v2")
        raise _CrashError
    # Assert: the first one is intact and nothing temporary is left
    assert (final / "global.safetensors").read_bytes() == b"v1"
    assert [p.name for p in tmp_path.iterdir()] == ["round-3"]
    with atomic_folder(final) as tmp:
        (tmp / "history.json").write_text("{}")
    assert sorted(p.name for p in final.iterdir()) == ["history.json"]
    assert not any(p.name.endswith(TEMP_SUFFIX) for p in tmp_path.iterdir())


@pytest.mark.parametrize(
    ("step", "expected"),
    [("old aside", b"v1"), ("new in place", b"v2"), ("old removed", b"v2")],
)
def test_a_kill_during_a_folders_replacement_leaves_one_version_the_owner_settles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, expected: bytes
) -> None:
    # Prepare: a complete folder, replaced by a writer killed at ``step``
    final = tmp_path / "round-3"
    with atomic_folder(final) as tmp:
        (tmp / "global.safetensors").write_bytes(b"v1")
    killed_at = {"old aside": (os, "replace", 1), "new in place": (os, "replace", 2)}
    module, name, nth = killed_at.get(step, (shutil, "rmtree", 1))
    real, calls = getattr(module, name), []

    def kill(*args: object, **kwargs: object) -> None:
        calls.append(args)
        if len(calls) == nth:
            raise KeyboardInterrupt  # nothing after it runs, as with SIGKILL
        real(*args, **kwargs)

    monkeypatch.setattr(module, name, kill)
    with pytest.raises(KeyboardInterrupt), atomic_folder(final) as tmp:
        (tmp / "global.safetensors").write_bytes(b"v2")
    monkeypatch.undo()
    # Execute
    settle_folders(tmp_path)
    # Assert: one complete version under the real name; the next write leaves nothing else
    assert (final / "global.safetensors").read_bytes() == expected
    with atomic_folder(final) as tmp:
        (tmp / "global.safetensors").write_bytes(b"v3")
    assert [p.name for p in tmp_path.iterdir()] == ["round-3"]


def test_sha256_file_is_the_hash_of_the_bytes(tmp_path: Path) -> None:
    data = os.urandom(3 << 20)  # more than one read block
    path = tmp_path / "weights.safetensors"
    path.write_bytes(data)
    assert sha256_file(path) == hashlib.sha256(data).hexdigest()


def test_versions_name_what_made_a_file_without_importing_torch() -> None:
    code = (
        "import json, sys; from neurofed.artifacts import versions; "
        "print(json.dumps(sorted(versions()))); "
        "print('torch' in sys.modules, 'monai' in sys.modules)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.splitlines()
    assert {"python", "neurofed", "torch", "monai", "numpy", "nvflare"} <= set(json.loads(out[0]))
    assert out[1] == "False False"
    assert versions()["torch"].startswith("2.")
