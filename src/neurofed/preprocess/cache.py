"""An on-disk cache of preprocessed cases, so that training epochs never re-read NIfTI files.

Layout::

    <folder>/<params_id>/params.json            the PreprocessParams and the neurofed version
    <folder>/<params_id>/<safe subject id>.npz  one case, written with numpy.savez (no pickle)

A file is used only if it loads (with ``allow_pickle=False``), holds the subject and params it is
named for, and its ``source_stamp`` equals the one the caller passes (e.g. a hash of the source
files' sizes and modification times). Anything else (missing, truncated, stale) is recomputed.
Writes go to a temporary file in the same folder and are moved into place with ``os.replace``,
so a reader never sees half a file, whether two processes race or a run is interrupted.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path
>>> from neurofed.preprocess.ops import preprocess_case
>>> params = PreprocessParams()
>>> cache = PreprocessedCache(Path(tempfile.mkdtemp()), params)
>>> image = np.zeros((1, 4, 4, 4), np.float32)
>>> image[0, 1:3, 1:3, 1:3] = [[[1, 2], [3, 4]], [[5, 6], [7, 8]]]
>>> compute = lambda: preprocess_case(image, None, np.eye(4), params)
>>> first = cache.get_or_compute("sub/01", "stamp-1", compute)
>>> again = cache.get_or_compute("sub/01", "stamp-1", lambda: 1 / 0)  # a hit: never computed
>>> np.array_equal(first.image, again.image), cache.path_for("sub/01").name
(True, 'sub_01-e0fb83a2496a.npz')
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import zipfile
import zlib
from collections.abc import Callable, Sequence
from enum import StrEnum
from pathlib import Path
from typing import IO

import numpy as np
import numpy.typing as npt

from neurofed import __version__
from neurofed.artifacts import atomic_path
from neurofed.data.subject import Subject
from neurofed.keys import Modality, SiteFile
from neurofed.preprocess.params import (
    BrainMaskMethod,
    PreprocessedCase,
    PreprocessError,
    PreprocessParams,
)

__all__ = [
    "PREPROCESSED_FOLDER",
    "PreprocessedCache",
    "cache_key",
    "safe_file_stem",
    "site_cache_root",
    "source_stamp",
]

logger = logging.getLogger(__name__)

#: ``<site>/neurofed/preprocessed/``: every preprocessing of the site, one folder per params id.
PREPROCESSED_FOLDER = "preprocessed"
CACHE_FORMAT = 1
PARAMS_FILE = "params.json"
CASE_SUFFIX = ".npz"
#: What a truncated or otherwise broken ``.npz`` raises on loading.
_UNREADABLE = (OSError, EOFError, KeyError, IndexError, ValueError, zipfile.BadZipFile, zlib.error)
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


class _Field(StrEnum):
    """Arrays stored in each case file."""

    FORMAT = "format"
    SUBJECT_ID = "subject_id"
    PARAMS_ID = "params_id"
    SOURCE_STAMP = "source_stamp"
    IMAGE = "image"
    LABEL = "label"
    AFFINE = "affine"
    BRAIN_MASK_METHOD = "brain_mask_method"
    ORIGINAL_SPACING = "original_spacing"
    ORIGINAL_SHAPE = "original_shape"
    ORIGINAL_AFFINE = "original_affine"


def safe_file_stem(subject_id: str) -> str:
    """A file name stem for ``subject_id``: readable, portable and distinct for distinct ids.

    Characters other than ``A-Z a-z 0-9 . _ -`` become ``_`` (at most 64 are kept, no leading
    dot) and 12 hex digits of the id's SHA-256 are appended, so ids that differ only in unsafe
    characters or in case (on case-insensitive file systems) still get different files.

    Examples
    --------
    >>> safe_file_stem("BraTS2021_00001")
    'BraTS2021_00001-0dd0be975485'
    >>> safe_file_stem("a/b") != safe_file_stem("a_b")
    True
    """
    readable = _UNSAFE.sub("_", subject_id)[:64].lstrip(".")
    digest = hashlib.sha256(subject_id.encode("utf-8")).hexdigest()[:12]
    return f"{readable}-{digest}" if readable else digest


def _write_atomically(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write through ``write(handle)`` to ``path`` atomically (see :mod:`neurofed.artifacts`)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        write(handle)


def site_cache_root(root: Path) -> Path:
    """The folder of a site's preprocessed cases: ``<root>/neurofed/preprocessed``."""
    return Path(root) / SiteFile.FOLDER.value / PREPROCESSED_FOLDER


def cache_key(subject_id: str, modalities: Sequence[Modality]) -> str:
    """The cache key of a case: its arrays depend on the channels loaded.

    >>> cache_key("BraTS2021_00001", (Modality.T1, Modality.FLAIR))
    'BraTS2021_00001[T1+FLAIR]'
    """
    return f"{subject_id}[{'+'.join(Modality(m).value for m in modalities)}]"


def source_stamp(root: Path, subject: Subject) -> str:
    """A hash of the subject's files (path, size, modification time) and the neurofed version.

    A cached preprocessed case is valid while this stamp is unchanged.
    """
    digest = hashlib.sha256(__version__.encode())
    for rel in subject.files():
        stat = (Path(root) / rel).stat()
        digest.update(f"\0{rel}\0{stat.st_size}\0{stat.st_mtime_ns}".encode())
    return digest.hexdigest()[:32]


class PreprocessedCache:
    """Preprocessed cases of one site under one :class:`PreprocessParams`.

    Parameters
    ----------
    folder
        The site's ``preprocessed/`` folder; cases go to ``folder / params.params_id``.
    params
        The settings every cached case was made with.
    """

    def __init__(self, folder: Path, params: PreprocessParams) -> None:
        self.params = params
        self.folder = Path(folder) / params.params_id

    @classmethod
    def for_site(cls, root: Path, params: PreprocessParams) -> PreprocessedCache:
        """The cache of the site at ``root`` (:func:`site_cache_root`) under ``params``."""
        return cls(site_cache_root(root), params)

    def path_for(self, subject_id: str) -> Path:
        """The case file of ``subject_id`` (whether or not it exists)."""
        return self.folder / f"{safe_file_stem(subject_id)}{CASE_SUFFIX}"

    def get_or_compute(
        self,
        subject_id: str,
        source_stamp: str,
        compute: Callable[[], PreprocessedCase],
    ) -> PreprocessedCase:
        """The cached case if it is valid for ``source_stamp``; else ``compute()``, stored.

        A missing, unreadable or stale file is recomputed and replaced; the reason is logged.
        """
        if not subject_id:
            raise PreprocessError("subject_id must not be empty")
        path = self.path_for(subject_id)
        cached = self._load(path, subject_id, source_stamp)
        if cached is not None:
            return cached
        case = compute()
        if not isinstance(case, PreprocessedCase):
            raise PreprocessError(
                f"{subject_id}: compute() returned {type(case).__name__}, not a PreprocessedCase"
            )
        self._write_params()
        _write_atomically(path, lambda handle: self._save(handle, subject_id, source_stamp, case))
        return case

    def _write_params(self) -> None:
        path = self.folder / PARAMS_FILE
        record = {
            "params": self.params.to_json(),
            "params_id": self.params.params_id,
            "neurofed_version": __version__,
            "cache_format": CACHE_FORMAT,
        }
        if path.is_file():
            try:
                stored = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                stored = None
            if isinstance(stored, dict) and stored.get("params") == record["params"]:
                return
            if isinstance(stored, dict) and "params" in stored:
                raise PreprocessError(
                    f"{path}: holds params {stored['params']}, not {record['params']}; "
                    "move the folder away (it was written by different settings)"
                )
        text = json.dumps(record, indent=2, sort_keys=True) + "\n"

        def write(handle: IO[bytes]) -> None:
            handle.write(text.encode("utf-8"))

        _write_atomically(path, write)

    def _save(
        self, handle: IO[bytes], subject_id: str, source_stamp: str, case: PreprocessedCase
    ) -> None:
        arrays: dict[str, npt.NDArray[np.generic]] = {
            _Field.FORMAT: np.array(CACHE_FORMAT),
            _Field.SUBJECT_ID: np.array(subject_id),
            _Field.PARAMS_ID: np.array(self.params.params_id),
            _Field.SOURCE_STAMP: np.array(source_stamp),
            _Field.IMAGE: case.image,
            _Field.AFFINE: case.affine,
            _Field.BRAIN_MASK_METHOD: np.array(case.brain_mask_method.value),
            _Field.ORIGINAL_SPACING: np.array(case.original_spacing, dtype=np.float64),
            _Field.ORIGINAL_SHAPE: np.array(case.original_shape, dtype=np.int64),
            _Field.ORIGINAL_AFFINE: case.original_affine,
        }
        if case.label is not None:
            arrays[_Field.LABEL] = case.label
        np.savez(handle, allow_pickle=False, **arrays)

    def _load(self, path: Path, subject_id: str, source_stamp: str) -> PreprocessedCase | None:
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as data:
                stored = {key: data[key] for key in data.files}
            identity = (
                int(stored[_Field.FORMAT]),
                str(stored[_Field.SUBJECT_ID]),
                str(stored[_Field.PARAMS_ID]),
            )
            if identity != (CACHE_FORMAT, subject_id, self.params.params_id):
                logger.warning("%s: written for %s; recomputing", path, identity)
                return None
            if str(stored[_Field.SOURCE_STAMP]) != source_stamp:
                logger.info("%s: source files changed; recomputing", path)
                return None
            spacing = stored[_Field.ORIGINAL_SPACING].astype(float).tolist()
            shape = stored[_Field.ORIGINAL_SHAPE].astype(int).tolist()
            return PreprocessedCase(
                image=stored[_Field.IMAGE],
                label=stored.get(_Field.LABEL),
                affine=stored[_Field.AFFINE],
                brain_mask_method=BrainMaskMethod(str(stored[_Field.BRAIN_MASK_METHOD])),
                original_spacing=(spacing[0], spacing[1], spacing[2]),
                original_shape=(shape[0], shape[1], shape[2]),
                original_affine=stored[_Field.ORIGINAL_AFFINE],
            )
        except _UNREADABLE:
            logger.warning("%s: unreadable cache file; recomputing", path, exc_info=True)
            return None
