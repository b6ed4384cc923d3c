"""NIfTI read/write that keeps the affine and header, with images as float32 and labels as uint8.

Examples
--------
>>> import numpy as np, tempfile, pathlib
>>> path = pathlib.Path(tempfile.mkdtemp()) / "t1.nii.gz"
>>> write_image(path, np.zeros((4, 5, 6)), np.diag([2.0, 2.0, 2.0, 1.0]))
>>> volume = read_image(path)
>>> volume.spatial_shape, volume.spacing, volume.array.dtype == np.float32
((4, 5, 6), (2.0, 2.0, 2.0), True)
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

__all__ = [
    "Volume",
    "VolumeError",
    "read_header",
    "read_image",
    "read_label",
    "voxel_spacing",
    "write_image",
    "write_label",
]

NIFTI_SUFFIXES = (".nii.gz", ".nii")


class VolumeError(ValueError):
    """A file could not be used as a volume; the message names the file and the fix."""


@dataclass(frozen=True)
class Volume:
    """A 3-D (or 4-D) array with its voxel-to-world affine and the header it came with."""

    array: npt.NDArray[np.generic]
    affine: npt.NDArray[np.float64]
    header: nib.Nifti1Header | None = None

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        x, y, z = self.array.shape[:3]
        return int(x), int(y), int(z)

    @property
    def spacing(self) -> tuple[float, float, float]:
        return voxel_spacing(self.affine)


def voxel_spacing(affine: npt.NDArray[np.floating]) -> tuple[float, float, float]:
    """Voxel size in mm along each array axis, from the columns of the affine."""
    sizes = np.sqrt((np.asarray(affine)[:3, :3] ** 2).sum(axis=0))
    return float(sizes[0]), float(sizes[1]), float(sizes[2])


def _load(path: Path) -> nib.Nifti1Image:
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: file not found; check the path in the site manifest")
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeError(f"{path}: not a readable NIfTI ({exc}); re-export the scan") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise VolumeError(
            f"{path}: is a {type(image).__name__}, not NIfTI; convert it (e.g. dcm2niix)"
        )
    return image


def read_header(path: Path) -> tuple[tuple[int, ...], npt.NDArray[np.float64]]:
    """Shape and affine of a NIfTI file without reading its voxels."""
    image = _load(path)
    return tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=np.float64)


def read_image(path: Path, channel: int | None = None) -> Volume:
    """Read an image as float32; ``channel`` picks one volume of a 4-D file (MSD layout)."""
    image = _load(path)
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # truncated gzip, short file, ...
        raise VolumeError(
            f"{path}: voxel data unreadable ({exc}); re-copy or re-export the file"
        ) from exc
    if channel is not None:
        if data.ndim != 4 or not 0 <= channel < data.shape[3]:
            raise VolumeError(
                f"{path}: asked for channel {channel} of an array of shape {data.shape}; "
                "check the modality order in dataset.json"
            )
        data = np.ascontiguousarray(data[..., channel])
    return Volume(data, np.asarray(image.affine, dtype=np.float64), image.header)


def read_label(path: Path) -> Volume:
    """Read a label map as uint8; non-integer or out-of-range values are an error."""
    volume = read_image(path)
    data = volume.array
    rounded = np.rint(data)
    if not np.allclose(data, rounded, atol=1e-3):
        raise VolumeError(f"{path}: label map has non-integer values; save it as integer labels")
    if rounded.min() < 0 or rounded.max() > 255:
        raise VolumeError(
            f"{path}: label values span {rounded.min():g}..{rounded.max():g}, outside 0..255"
        )
    return Volume(rounded.astype(np.uint8), volume.affine, volume.header)


def _write(
    path: Path,
    array: npt.NDArray[np.generic],
    affine: npt.NDArray[np.floating],
    header: nib.Nifti1Header | None,
) -> None:
    path = Path(path)
    if not path.name.endswith(NIFTI_SUFFIXES):
        raise VolumeError(f"{path}: NIfTI files must end in .nii or .nii.gz")
    path.parent.mkdir(parents=True, exist_ok=True)
    new_header = header.copy() if header is not None else None
    image = nib.Nifti1Image(array, np.asarray(affine, dtype=np.float64), header=new_header)
    image.set_data_dtype(array.dtype)
    # Keep both qform and sform consistent with the affine we were given.
    qcode = int(new_header["qform_code"]) if new_header is not None else 1
    scode = int(new_header["sform_code"]) if new_header is not None else 1
    image.set_qform(affine, code=qcode or 1)
    image.set_sform(affine, code=scode or 1)
    image.header.set_xyzt_units("mm", "sec")
    image.to_filename(path)


def write_image(
    path: Path,
    array: npt.ArrayLike,
    affine: npt.NDArray[np.floating],
    header: nib.Nifti1Header | None = None,
) -> None:
    """Write an image as float32, keeping ``header`` fields other than data type and scaling."""
    data = np.asarray(array, dtype=np.float32)
    _write(path, data, affine, header)


def write_label(
    path: Path,
    array: npt.ArrayLike,
    affine: npt.NDArray[np.floating],
    header: nib.Nifti1Header | None = None,
) -> None:
    """Write a label map as uint8."""
    data = np.asarray(array)
    if data.size and (data.min() < 0 or data.max() > 255):
        raise VolumeError(f"{path}: label values must lie in 0..255 to be written as uint8")
    _write(path, data.astype(np.uint8), affine, header)
