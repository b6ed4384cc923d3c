"""Deliberately broken cases, one :class:`~neurofed.keys.ProblemKind` each, for ``site check``.

A broken case is first written correctly, then one of its files is damaged (or, for
``CLINICAL_RANGE``, its table row: see :mod:`neurofed.phantom.writers`). Which file is chosen is
a deterministic function of the case number.

Examples
--------
>>> import numpy as np, tempfile
>>> from pathlib import Path, PurePosixPath
>>> from neurofed.data.nifti import write_image
>>> root = Path(tempfile.mkdtemp())
>>> write_image(root / "a.nii.gz", np.ones((3, 3, 3)), np.eye(4))
>>> files = {Modality.T1: PurePosixPath("a.nii.gz")}
>>> break_case(root, files, ProblemKind.EMPTY_FILE, case=1, affine=np.eye(4), images={}, label=None)
'a.nii.gz'
>>> (root / "a.nii.gz").stat().st_size
0
"""

from __future__ import annotations

import gzip
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

import numpy as np
import numpy.typing as npt

from neurofed.data.nifti import write_image, write_label
from neurofed.keys import Modality, ProblemKind

__all__ = ["NOT_NIFTI_TEXT", "break_case"]

NOT_NIFTI_TEXT = b"neurofed phantom: this is a text report, not a NIfTI image.\n"
_LABEL_KEY = "label"


def _centre_block(shape: tuple[int, ...], size: int = 2) -> tuple[slice, ...]:
    return tuple(slice(max(n // 2 - size, 0), n // 2 + size) for n in shape[:3])


def break_case(
    site_dir: Path,
    files: Mapping[Modality | str, PurePosixPath],
    kind: ProblemKind,
    case: int,
    affine: npt.NDArray[np.float64],
    images: Mapping[Modality, npt.NDArray[np.float32]],
    label: npt.NDArray[np.uint8] | None,
    invalid_label: int = 3,
) -> str | None:
    """Damage one file of a written case; returns its site-relative path (None: table only)."""
    if kind is ProblemKind.CLINICAL_RANGE:
        return None
    modalities = [key for key in files if isinstance(key, Modality)]
    if kind in (ProblemKind.LABEL_VALUES, ProblemKind.LABEL_GRID):
        key: Modality | str = _LABEL_KEY
    else:
        key = modalities[case % len(modalities)]
    relative = files[key]
    path = site_dir / relative
    image = images.get(key) if isinstance(key, Modality) else None
    if kind is ProblemKind.UNREADABLE:
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    elif kind is ProblemKind.NOT_NIFTI:
        path.write_bytes(gzip.compress(NOT_NIFTI_TEXT, mtime=0))
    elif kind is ProblemKind.EMPTY_FILE:
        path.write_bytes(b"")
    elif kind is ProblemKind.MISSING_MODALITY:
        path.unlink()
    elif kind is ProblemKind.WRONG_DIMENSIONS:
        assert image is not None
        write_image(path, np.stack([image, image], axis=-1), affine)  # (X, Y, Z, 2)
    elif kind is ProblemKind.NON_FINITE:
        assert image is not None
        damaged = image.copy()
        damaged[_centre_block(damaged.shape)] = np.nan
        write_image(path, damaged, affine)
    elif kind is ProblemKind.ALL_ZERO:
        assert image is not None
        write_image(path, np.zeros_like(image), affine)
    elif kind is ProblemKind.GRID_MISMATCH:
        assert image is not None
        shifted = affine.copy()
        shifted[:3, 3] += affine[:3, :3] @ np.array([2.0, 2.0, 0.0])
        write_image(path, image[2:-2, 2:-2, :], shifted)  # smaller field of view
    elif kind is ProblemKind.LABEL_VALUES:
        assert label is not None
        damaged_label = label.copy()
        damaged_label[_centre_block(label.shape, 1)] = invalid_label
        write_label(path, damaged_label, affine)
    elif kind is ProblemKind.LABEL_GRID:
        assert label is not None
        write_label(path, label[:-3, :-3, :], affine)  # cropped: not the image grid
    else:
        raise ValueError(f"broken kind {kind.value!r} is not one the phantom can produce")
    return str(relative)
