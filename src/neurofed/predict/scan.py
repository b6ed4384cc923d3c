"""One clinical scan as an array on its own grid, whatever file it came in, and moves between grids.

:func:`read_scan` reads NIfTI (``.nii``, ``.nii.gz``) with neurofed's checked reader and NRRD
(``.nrrd``, ``.nhdr``) and MetaImage (``.mha``, ``.mhd``) with SimpleITK. Every scan comes out
as float32 ``(X, Y, Z)`` with a voxel-to-world affine in RAS+ millimetres (nibabel's
convention; SimpleITK's LPS geometry is converted), so a prediction written with that affine and
shape lies exactly on the scan's grid. :func:`resample` moves an array from one grid onto
another through the world coordinates both affines name (``scipy.ndimage.affine_transform``:
nearest neighbour for label maps, linear for intensities), voxel by voxel, without building a
coordinate array.

Examples
--------
>>> import numpy as np
>>> affine = np.diag([2.0, 2.0, 2.0, 1.0])
>>> labels = np.zeros((4, 4, 4), np.uint8); labels[1, 2, 3] = 5
>>> fine = resample(labels, affine, (8, 8, 8), np.eye(4), order=0)
>>> int(fine[2, 4, 6]), int(fine.sum())
(5, 40)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from neurofed.data.nifti import MAX_VOXEL_BYTES, VolumeError, format_bytes, read_image

__all__ = ["SCAN_SUFFIXES", "Scan", "ScanError", "read_scan", "resample", "scan_spacing"]

#: File endings read as one scan (lower case), and what reads them.
SCAN_SUFFIXES = {
    ".nii": "NIfTI",
    ".nii.gz": "NIfTI",
    ".nrrd": "NRRD",
    ".nhdr": "NRRD",
    ".mha": "MetaImage",
    ".mhd": "MetaImage",
}
_LPS_TO_RAS = np.diag([-1.0, -1.0, 1.0])


class ScanError(ValueError):
    """A file cannot be used as a scan; the message names the file and the fix."""


@dataclass(frozen=True, eq=False)
class Scan:
    """A 3-D scan: float32 ``(X, Y, Z)`` voxels, the RAS+ mm affine, where and what it came from."""

    array: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    path: Path
    format: str

    @property
    def shape(self) -> tuple[int, int, int]:
        x, y, z = self.array.shape
        return int(x), int(y), int(z)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return scan_spacing(self.affine)

    @property
    def voxel_ml(self) -> float:
        """The volume of one voxel in millilitres."""
        return float(abs(np.linalg.det(self.affine[:3, :3]))) / 1000.0


def scan_spacing(affine: npt.NDArray[np.float64]) -> tuple[float, float, float]:
    """Voxel size in mm along the array's three axes."""
    x, y, z = (float(v) for v in np.linalg.norm(np.asarray(affine)[:3, :3], axis=0))
    return x, y, z


def _suffix(path: Path) -> str:
    name = path.name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else path.suffix.lower()


def _sitk() -> Any:
    import SimpleITK as sitk  # noqa: N813 (the package's own name)

    return sitk


def _read_sitk(path: Path, kind: str) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float64]]:
    sitk = _sitk()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[-1][:200] if str(exc).strip() else "unreadable"
        raise ScanError(
            f"{path}: not a readable {kind} file ({first}); re-export the scan from the "
            "scanner or PACS"
        ) from None
    size = tuple(int(n) for n in reader.GetSize())
    components = int(reader.GetNumberOfComponents())
    if len(size) != 3 or components != 1:
        raise ScanError(
            f"{path}: a {len(size)}-D image of {components} component(s) per voxel (size "
            f"{size}); give one 3-D scalar scan per modality"
        )
    declared = int(np.prod(size)) * 4
    if declared > MAX_VOXEL_BYTES:
        raise ScanError(
            f"{path}: {size} voxels need {format_bytes(declared)}, more than the "
            f"{format_bytes(MAX_VOXEL_BYTES)} a scan may have; is it really one 3-D MRI?"
        )
    try:
        image = reader.Execute()
    except RuntimeError as exc:
        raise ScanError(
            f"{path}: the voxel data cannot be read ({str(exc).strip()[-200:]}); re-copy or "
            "re-export the file"
        ) from None
    array = np.ascontiguousarray(
        sitk.GetArrayFromImage(image).astype(np.float32).transpose(2, 1, 0)
    )
    direction = np.asarray(image.GetDirection(), dtype=np.float64).reshape(3, 3)
    lps = direction @ np.diag(np.asarray(image.GetSpacing(), dtype=np.float64))
    affine = np.eye(4)
    affine[:3, :3] = _LPS_TO_RAS @ lps
    affine[:3, 3] = _LPS_TO_RAS @ np.asarray(image.GetOrigin(), dtype=np.float64)
    return array, affine


def read_scan(path: Path, channel: int | None = None) -> Scan:
    """Read one 3-D scan (see the module docstring); ``channel`` picks a volume of a 4-D NIfTI
    file (the MSD layout).

    Raises
    ------
    ScanError
        Not a file of a known kind, unreadable, not 3-D scalar, too large, or with voxels that
        are not finite or a geometry no scan has; the message names the file and the fix.
    """
    path = Path(path)
    if path.is_dir():
        raise ScanError(
            f"{path} is a folder; give one scan file per modality (a DICOM folder: convert it "
            "with `neurofed site import-dicom`, or give it as --input)"
        )
    if not path.is_file():
        raise ScanError(f"{path}: no such file")
    kind = SCAN_SUFFIXES.get(_suffix(path))
    if kind is None:
        known = ", ".join(SCAN_SUFFIXES)
        raise ScanError(
            f"{path}: {path.suffix or 'no ending'} is not a scan file neurofed reads ({known}); "
            "export the scan as NIfTI or NRRD, or give a DICOM folder"
        )
    if channel is not None and kind != "NIfTI":
        raise ScanError(f"{path}: a {kind} file holds one volume; no channel {channel} in it")
    if kind == "NIfTI":
        try:
            volume = read_image(path, channel)
        except VolumeError as exc:
            raise ScanError(str(exc)) from None
        array = np.asarray(volume.array, dtype=np.float32)
        if array.ndim == 4 and array.shape[3] == 1:
            array = array[..., 0]
        if array.ndim != 3:
            raise ScanError(
                f"{path}: an array of shape {array.shape}; give one 3-D scan per modality"
            )
        affine = np.asarray(volume.affine, dtype=np.float64)
    else:
        array, affine = _read_sitk(path, kind)
    if not np.isfinite(array).all():
        raise ScanError(f"{path}: voxels that are not finite numbers; re-export the scan")
    if min(array.shape) < 2 or not np.isfinite(affine).all() or abs(np.linalg.det(affine)) < 1e-9:
        raise ScanError(
            f"{path}: shape {array.shape} with a degenerate geometry; a scan is a 3-D volume "
            "with a valid orientation"
        )
    return Scan(np.ascontiguousarray(array), affine, path, kind)


def resample(
    array: npt.NDArray[Any],
    source_affine: npt.NDArray[np.float64],
    shape: tuple[int, ...],
    target_affine: npt.NDArray[np.float64],
    *,
    order: int,
) -> npt.NDArray[Any]:
    """``array`` (on the grid of ``source_affine``) on the grid ``shape`` / ``target_affine``:
    each target voxel takes the value at its world position (0 outside ``array``). ``order`` 0
    for label maps (the dtype is kept), 1 for intensities (float32)."""
    step = np.linalg.inv(np.asarray(source_affine, dtype=np.float64)) @ np.asarray(
        target_affine, dtype=np.float64
    )
    source = array if order == 0 else np.asarray(array, dtype=np.float32)
    moved: npt.NDArray[Any] = ndimage.affine_transform(
        source,
        step[:3, :3],
        offset=step[:3, 3],
        output_shape=tuple(int(n) for n in shape),
        order=order,
        mode="constant",
        cval=0.0,
        prefilter=False,
    )
    return moved
