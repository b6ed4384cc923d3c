"""Plumbing every stage shares: atomic writes, content hashes and version stamps.

Every file neurofed writes goes through :func:`atomic_path` (or a writer built on it): the bytes
go to a temporary file in the same folder, are flushed to disk, and the file is moved into place
with ``os.replace``, so a crash never leaves half a file under the real name. A folder written in
several steps goes through :func:`atomic_folder` the same way. Temporary names start with a dot
and end in :data:`TEMP_SUFFIX`, so readers that list a folder can skip them.

This module imports nothing heavy (no torch, no MONAI): provisioning, the site's audit log and
the pure federated maths import it too.

Examples
--------
>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> path = write_json_atomically(folder / "a" / "run.json", {"round": 1})
>>> path.read_text()
'{\\n  "round": 1\\n}\\n'
>>> sha256_file(path) == sha256_bytes(path.read_bytes())
True
>>> sorted(p.name for p in path.parent.iterdir())  # no temporary file left behind
['run.json']
>>> versions()["neurofed"] == __version__
True
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import secrets
import shutil
from collections.abc import Iterator, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

from neurofed import __version__

__all__ = [
    "TEMP_SUFFIX",
    "atomic_folder",
    "atomic_path",
    "settle_folders",
    "sha256_bytes",
    "sha256_file",
    "shown",
    "spreadsheet_safe",
    "versions",
    "write_bytes_atomically",
    "write_json_atomically",
    "write_text_atomically",
]

#: Suffix of every temporary file or folder this module makes next to its target.
TEMP_SUFFIX = ".tmp"
#: Marks the old version :func:`atomic_folder` keeps aside while it swaps in the new one.
_PREVIOUS = ".previous"
#: Packages whose versions :func:`versions` records (what made a file, besides neurofed).
RECORDED_PACKAGES = (
    "numpy",
    "scipy",
    "SimpleITK",
    "nibabel",
    "monai",
    "torch",
    "safetensors",
    "nvflare",
)


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it replaces ``path``.

    Whatever the block writes to the yielded path is flushed to disk and moved into place with
    ``os.replace``; if the block raises, the temporary file is removed and ``path`` is left as
    it was. Parent folders are created.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:  # a fresh name, created with the permissions the umask gives (not mkstemp's 0600)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield tmp
        _fsync(tmp)
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes_atomically(path: Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns ``path``."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)
    return Path(path)


def write_text_atomically(path: Path, text: str) -> Path:
    """Write ``text`` (UTF-8) to ``path`` atomically; returns ``path``."""
    return write_bytes_atomically(path, text.encode("utf-8"))


def write_json_atomically(
    path: Path, data: Mapping[str, Any] | list[Any], *, indent: int = 2, allow_nan: bool = False
) -> Path:
    """Write ``data`` as indented JSON (and a final newline) to ``path`` atomically.

    Raises
    ------
    ValueError
        ``data`` holds NaN or infinity and ``allow_nan`` is false (nothing is written).
    """
    return write_text_atomically(path, json.dumps(data, indent=indent, allow_nan=allow_nan) + "\n")


@contextlib.contextmanager
def atomic_folder(path: Path) -> Iterator[Path]:
    """Yield an empty temporary folder next to ``path``; on success it replaces ``path``.

    A folder already at ``path`` is first renamed aside (``.<name>.previous.tmp``), the new one
    renamed into place, and the old one removed. Whenever the process is killed, the disk holds
    a complete version under the real name or, between the two renames, both versions under
    their temporary names: :func:`settle_folders` (called by the folder's owner before it reads)
    finishes that replacement. If the block raises, the temporary folder is removed and ``path``
    is left as it was.

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp()) / "round-1"
    >>> for version in ("old", "new"):
    ...     with atomic_folder(folder) as tmp:
    ...         _ = (tmp / "v.txt").write_text(version)
    >>> (folder / "v.txt").read_text(), sorted(p.name for p in folder.parent.iterdir())
    ('new', ['round-1'])
    """
    path = Path(path)
    tmp, previous = _temporary(path), _previous(path)
    settle_folders(path.parent)
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    if path.exists():
        os.replace(path, previous)
    os.replace(tmp, path)  # from here on the new version is the folder
    shutil.rmtree(previous, ignore_errors=True)


def settle_folders(parent: Path) -> None:
    """Finish every replacement by :func:`atomic_folder` in ``parent`` that was interrupted
    between its two renames.

    The new version is complete then (it is renamed only once written), so it takes the real
    name; an old version left beside a folder in place is removed. Call it only from the
    process that owns the folder (the one that writes it), before reading.
    """
    parent = Path(parent)
    if not parent.is_dir():
        return
    suffix = f"{_PREVIOUS}{TEMP_SUFFIX}"
    for previous in parent.glob(f".*{suffix}"):
        path = parent / previous.name[1 : -len(suffix)]
        if not path.exists():
            tmp = _temporary(path)
            os.replace(tmp if tmp.is_dir() else previous, path)
        shutil.rmtree(previous, ignore_errors=True)


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}{TEMP_SUFFIX}")


def _previous(path: Path) -> Path:
    return path.with_name(f".{path.name}{_PREVIOUS}{TEMP_SUFFIX}")


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of ``data`` in hex."""
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    """The SHA-256 of the file at ``path`` in hex (read in 1 MiB blocks)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def versions() -> dict[str, str]:
    """What made a file: Python, neurofed and the versions of :data:`RECORDED_PACKAGES`.

    Read from the installed packages' metadata, so nothing is imported.
    """
    out = {"python": platform.python_version(), "neurofed": __version__}
    for name in RECORDED_PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


#: The longest value echoed in an error message (data can hold anything, of any length).
SHOWN_CHARACTERS = 60
_FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


def shown(value: Any, limit: int = SHOWN_CHARACTERS) -> str:
    """``repr(value)`` for an error message, cut to ``limit`` characters.

    >>> shown("x" * 100, limit=12)
    "'xxxxxxx… (102 characters)"
    >>> shown(3.5)
    '3.5'
    """
    text = repr(value)
    if len(text) <= limit:
        return text
    return f"{text[: limit - 4]}… ({len(text)} characters)"


def spreadsheet_safe(text: str) -> str:
    """``text`` for a CSV cell a spreadsheet cannot run as a formula: a cell starting with
    ``= + - @`` (or a tab or carriage return) that is not a number gets a leading ``'``.

    >>> spreadsheet_safe("=cmd()"), spreadsheet_safe("-2.5"), spreadsheet_safe("ok")
    ("'=cmd()", '-2.5', 'ok')
    """
    if not text.startswith(_FORMULA_STARTS):
        return text
    try:
        float(text)
    except ValueError:
        return f"'{text}"
    return text
