"""Load one checked case as arrays for training: channels first, labels in the internal numbering.

Examples
--------
>>> import tempfile, numpy as np
>>> from pathlib import Path, PurePosixPath
>>> from neurofed.data.nifti import write_image, write_label
>>> from neurofed.data.subject import ImageRef, Subject
>>> from neurofed.keys import LabelConvention
>>> root = Path(tempfile.mkdtemp())
>>> write_image(root / "t1.nii.gz", np.ones((4, 5, 6)), np.eye(4))
>>> write_image(root / "flair.nii.gz", np.ones((4, 5, 6)), np.eye(4))
>>> write_label(root / "seg.nii.gz", np.full((4, 5, 6), 4), np.eye(4))
>>> images = {m: ImageRef(PurePosixPath(f"{m.value.lower()}.nii.gz")) for m in Modality}
>>> case = Subject(
...     "c1",
...     {m: images[m] for m in (Modality.T1, Modality.FLAIR)},
...     label=ImageRef(PurePosixPath("seg.nii.gz")),
...     label_convention=LabelConvention.BRATS_2021,
... )
>>> loaded = load_subject(root, case)
>>> loaded.image.shape, loaded.modalities, int(loaded.label.max())  # BraTS 2021's 4 is ET = 3
((2, 4, 5, 6), (<Modality.T1: 'T1'>, <Modality.FLAIR: 'FLAIR'>), 3)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np
import numpy.typing as npt

from neurofed.data.labels import to_internal
from neurofed.data.nifti import Volume, VolumeError, read_image, read_label
from neurofed.data.subject import ImageRef, Subject
from neurofed.keys import Modality

__all__ = ["LoadedSubject", "load_subject"]


@dataclass(frozen=True)
class LoadedSubject:
    """One case in memory.

    Attributes
    ----------
    image:
        float32, shaped ``(C, X, Y, Z)`` with channels in the order of ``modalities``.
    label:
        uint8 ``(X, Y, Z)`` in the internal convention, or None when the case has no label map.
    affine:
        Voxel-to-world affine of the first modality (all modalities share the grid once checked).
    """

    subject_id: str
    image: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint8] | None
    affine: npt.NDArray[np.float64]
    modalities: tuple[Modality, ...]

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        _, x, y, z = self.image.shape
        return int(x), int(y), int(z)


def _inside(root: Path, rel: PurePosixPath, subject_id: str) -> Path:
    full = (root / rel).resolve()
    if rel.is_absolute() or not full.is_relative_to(root.resolve()):
        raise VolumeError(
            f"{subject_id}: {rel} lies outside the site root {root}; run `neurofed site check "
            f"{root}` and load subjects from its manifest"
        )
    return full


def _volume_3d(volume: Volume, ref: ImageRef, where: str) -> npt.NDArray[np.generic]:
    array = volume.array
    if ref.channel is not None:
        if array.ndim != 4 or not 0 <= ref.channel < array.shape[3]:
            raise VolumeError(
                f"{where}: channel {ref.channel} asked of an array of shape {array.shape}; "
                "re-run `neurofed site check` and load subjects from its manifest"
            )
        return array[..., ref.channel]
    while array.ndim > 3 and array.shape[-1] == 1:
        array = array[..., 0]  # (X, Y, Z, 1) is a 3-D volume
    if array.ndim != 3:
        raise VolumeError(f"{where}: shape {array.shape} is not 3-D; run `neurofed site check`")
    return array


def load_subject(
    root: Path, subject: Subject, modalities: Sequence[Modality] | None = None
) -> LoadedSubject:
    """Read a case's images (and label map) into arrays.

    Parameters
    ----------
    root:
        The site root the subject's paths are relative to.
    subject:
        A case from the site manifest (so its files have passed ``neurofed site check``).
    modalities:
        Channels to load, in this order; default ``subject.modalities``.

    Raises
    ------
    VolumeError
        When a modality is absent, a file unreadable, or the volumes disagree in shape.

    Examples
    --------
    See the module docstring.
    """
    root = Path(root)
    sid = subject.subject_id
    chosen = tuple(Modality(m) for m in (subject.modalities if modalities is None else modalities))
    if not chosen:
        raise VolumeError(f"{sid}: no modalities to load; pass at least one, e.g. (Modality.T1,)")
    missing = [m.value for m in chosen if m not in subject.images]
    if missing:
        has = ", ".join(m.value for m in subject.modalities) or "none"
        raise VolumeError(
            f"{sid}: has no {', '.join(missing)} image (it has {has}); load modalities it has, "
            "or choose cases that have them"
        )
    volumes: dict[PurePosixPath, Volume] = {}  # a 4-D file holding several channels is read once
    channels: list[npt.NDArray[np.generic]] = []
    for modality in chosen:
        ref = subject.images[modality]
        if ref.path not in volumes:
            volumes[ref.path] = read_image(_inside(root, ref.path, sid))
        array = _volume_3d(volumes[ref.path], ref, f"{sid}: {ref.path}")
        if channels and array.shape != channels[0].shape:
            raise VolumeError(
                f"{sid}: {modality.value} has shape {array.shape} but {chosen[0].value} has "
                f"{channels[0].shape}; run `neurofed site check`, which excludes such cases"
            )
        channels.append(array)
    affine = volumes[subject.images[chosen[0]].path].affine
    volumes.clear()
    image = np.stack(channels).astype(np.float32, copy=False)  # (C, X, Y, Z)
    label = _load_label(root, subject, image.shape[1:])
    return LoadedSubject(sid, image, label, affine, chosen)


def _load_label(
    root: Path, subject: Subject, spatial_shape: tuple[int, ...]
) -> npt.NDArray[np.uint8] | None:
    ref, convention = subject.label, subject.label_convention
    if ref is None or convention is None:  # a Subject never has a label without its convention
        return None
    sid = subject.subject_id
    where = f"{sid}: {ref.path}"
    raw = _volume_3d(read_label(_inside(root, ref.path, sid)), ref, where)
    if raw.shape != spatial_shape:
        raise VolumeError(
            f"{where}: label shape {raw.shape} differs from the image shape {spatial_shape}; "
            "run `neurofed site check`, which excludes such cases"
        )
    try:
        return to_internal(np.asarray(raw, dtype=np.uint8), convention)
    except ValueError as exc:
        raise VolumeError(f"{where}: {exc}; relabel the file or fix its convention") from exc
