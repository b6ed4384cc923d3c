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

import gzip
import io
import zlib
from dataclasses import dataclass
from pathlib import Path

import nibabel as nib
import numpy as np
import numpy.typing as npt

__all__ = [
    "FORM_TOLERANCE_MM",
    "MAX_VOXEL_BYTES",
    "HeaderError",
    "Volume",
    "VolumeError",
    "format_bytes",
    "header_warnings",
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
    warnings: tuple[str, ...] = ()  # what the header does that is allowed but suspicious

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


#: The most voxel bytes one file may declare (and neurofed will allocate) unless told otherwise:
#: 4 GiB holds a 1 mm 4-D file of four float64 contrasts several times over.
MAX_VOXEL_BYTES = 4 * 1024**3
#: How far (mm, in any entry of the affine) the sform and qform may disagree before a warning.
FORM_TOLERANCE_MM = 0.1
_GZIP_MAGIC = b"\x1f\x8b"
_MAX_INFLATION = 1032
_REEXPORT = "re-copy the file from its source or re-export the scan (e.g. `dcm2niix -z y`)"
#: NIfTI data types that are not one real number per voxel.
_NOT_REAL = {32: "complex64", 1792: "complex128", 2048: "complex256", 128: "RGB24", 2304: "RGBA32"}
_AXES = "xyz"


class HeaderError(VolumeError):
    """A header that no scan can have (or that neurofed must not trust); the message names the
    file, the field, its value and the fix."""


def _header_class(head: bytes) -> type[nib.Nifti1Header] | None:
    sizes = {int.from_bytes(head[:4], "little"), int.from_bytes(head[:4], "big")}
    if 348 in sizes and head[344:348] in (b"n+1\0", b"ni1\0"):
        return nib.Nifti1Header
    if 540 in sizes and head[4:8] in (b"n+2\0", b"ni2\0"):
        return nib.Nifti2Header
    return None


def _declared_bytes(header: nib.Nifti1Header) -> int:
    """Bytes the header says the file holds: its offset plus every voxel (exact integers)."""
    itemsize = int(header.get_data_dtype().itemsize)
    count = 1
    for size in header.get_data_shape():
        count *= int(size)
    return int(header["vox_offset"]) + count * itemsize


def _read_bytes(path: Path, max_bytes: int) -> tuple[bytes, nib.Nifti1Header]:
    """The file's bytes, decompressed and verified (gzip CRC and length) when it is gzipped;
    a header that declares more than the file holds, or than ``max_bytes``, is refused before
    anything large is allocated or decompressed."""
    try:
        raw = path.read_bytes()
    except PermissionError:
        raise VolumeError(
            f"{path}: permission denied; let the account running neurofed read it (e.g. "
            "`chmod o+r` or add it to the file's group)"
        ) from None
    except OSError as exc:
        raise VolumeError(f"{path}: cannot be read ({exc}); {_REEXPORT}") from None
    compressed = raw[:2] == _GZIP_MAGIC
    try:
        with gzip.GzipFile(fileobj=io.BytesIO(raw)) if compressed else io.BytesIO(raw) as stream:
            head = stream.read(540)
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(
            f"{path}: gzip stream broken before the header ends ({exc}); {_REEXPORT}"
        ) from None
    kind = _header_class(head)
    if kind is None:
        raise VolumeError(
            f"{path}: not a readable NIfTI (no NIfTI header at its start); convert the "
            "scan to NIfTI"
        )
    try:
        header = kind.from_fileobj(io.BytesIO(head), check=False)  # as written, not 'fixed'
    except Exception as exc:  # nibabel raises many types for a broken header
        raise HeaderError(f"{path}: unreadable NIfTI header ({exc}); {_REEXPORT}") from None
    declared = _declared_bytes(header)
    if declared > max_bytes:
        raise HeaderError(
            f"{path}: the header declares {format_bytes(declared)} of voxels (shape "
            f"{header.get_data_shape()}), above the limit of {format_bytes(max_bytes)}; the "
            "header is damaged, or raise the limit for this site"
        )
    held = len(raw)
    if compressed:
        # deflate inflates at most ~1032:1, so this bounds the decompressed length; below 4 GiB
        # the trailer's ISIZE (the length mod 2**32) is the length itself
        held = len(raw) * _MAX_INFLATION + 1024
        if held < 2**32:
            held = int.from_bytes(raw[-4:], "little")
    if declared > held:
        raise HeaderError(
            f"{path}: the header declares {format_bytes(declared)} (shape "
            f"{header.get_data_shape()}, {header.get_data_dtype()}) but the file holds "
            f"{format_bytes(held)}: it is truncated or its header damaged; {_REEXPORT}"
        )
    if not compressed:
        return raw, header
    try:
        return gzip.decompress(raw), header  # every member's CRC-32 and length are checked
    except (OSError, EOFError, zlib.error) as exc:
        raise VolumeError(
            f"{path}: gzip stream damaged ({exc}): its voxels cannot be trusted; {_REEXPORT}"
        ) from None


def format_bytes(count: int) -> str:
    """``count`` bytes for a person: ``1.5 GiB``, ``117 B``."""
    value, unit = float(count), "B"
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if value < 1024 or unit == "TiB":
            break
        value /= 1024
    return f"{int(value)} B" if unit == "B" else f"{value:.1f} {unit}"


def _check_geometry(path: Path, header: nib.Nifti1Header, image: nib.Nifti1Image) -> None:
    """Refuse what no scan can have: a non-real data type, a non-positive or non-finite voxel
    size (``header`` as written: nibabel would quietly 'fix' it), a non-finite or singular
    affine (each named with its field and value)."""
    code = int(header["datatype"])
    if code in _NOT_REAL:
        raise HeaderError(
            f"{path}: datatype {code} ({_NOT_REAL[code]}) holds {_NOT_REAL[code][:3].lower()} "
            "values, not one intensity per voxel; export the magnitude image as real numbers"
        )
    zooms = header["pixdim"][1:4]
    for axis, size in zip(_AXES, zooms, strict=True):
        if not np.isfinite(size) or size <= 0:
            raise HeaderError(
                f"{path}: pixdim (voxel size along {axis}) is {float(size)!r}; a voxel size must "
                f"be a positive number of mm: fix the header or {_REEXPORT}"
            )
    affine = np.asarray(image.affine, dtype=np.float64)
    if not np.all(np.isfinite(affine)):
        raise HeaderError(
            f"{path}: the voxel-to-world affine (sform/qform) holds NaN or infinite values; "
            f"fix the header or {_REEXPORT}"
        )
    if abs(float(np.linalg.det(affine[:3, :3]))) < 1e-9:
        raise HeaderError(
            f"{path}: the voxel-to-world affine (sform/qform) is singular (two axes coincide "
            f"or one has size 0); fix the header or {_REEXPORT}"
        )


def header_warnings(
    image: nib.Nifti1Image, *, tolerance_mm: float = FORM_TOLERANCE_MM
) -> list[str]:
    """What a header does that is allowed but suspicious: its sform and qform disagree."""
    header = image.header
    if int(header["sform_code"]) <= 0 or int(header["qform_code"]) <= 0:
        return []
    sform, qform = header.get_sform(), header.get_qform()
    gap = float(np.max(np.abs(np.asarray(sform) - np.asarray(qform))))
    if not np.isfinite(gap) or gap <= tolerance_mm:
        return []
    return [
        f"its sform and qform disagree by up to {gap:.3g} mm; neurofed uses the sform (as "
        "most tools do); check the scan's orientation in a viewer, or re-export it"
    ]


def _load(path: Path, max_bytes: int = MAX_VOXEL_BYTES) -> nib.Nifti1Image:
    path = Path(path)
    if not path.is_file():
        raise VolumeError(f"{path}: file not found; check the path in the site manifest")
    data, header = _read_bytes(path, max_bytes)
    kind = nib.Nifti2Image if _header_class(data[:540]) is nib.Nifti2Header else nib.Nifti1Image
    try:
        image = kind.from_bytes(data)
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeError(f"{path}: not a readable NIfTI ({exc}); {_REEXPORT}") from exc
    _check_geometry(path, header, image)
    return image


def read_header(path: Path) -> tuple[tuple[int, ...], npt.NDArray[np.float64]]:
    """Shape and affine from a NIfTI header alone: quick, but nothing past the header is read
    or verified (:func:`read_image` verifies the whole file)."""
    path = Path(path)
    try:
        image = nib.load(path)
    except Exception as exc:  # nibabel raises many types for broken files
        raise VolumeError(f"{path}: not a readable NIfTI ({exc}); {_REEXPORT}") from exc
    if not isinstance(image, nib.Nifti1Image | nib.Nifti2Image):
        raise VolumeError(f"{path}: is a {type(image).__name__}, not NIfTI; convert it")
    return tuple(int(s) for s in image.shape), np.asarray(image.affine, dtype=np.float64)


def read_image(
    path: Path, channel: int | None = None, *, max_bytes: int = MAX_VOXEL_BYTES
) -> Volume:
    """Read an image as float32; ``channel`` picks one volume of a 4-D file (MSD layout).

    The whole file is verified first (a gzip body checked against its CRC and length; a header
    that declares more bytes than the file holds or than ``max_bytes`` refused before anything
    is allocated), and a header no scan can have is refused (:class:`HeaderError`).
    """
    image = _load(path, max_bytes)
    try:
        data = np.asarray(image.dataobj, dtype=np.float32)
    except Exception as exc:  # a short file, a scaling that overflows, ...
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
    return Volume(
        data,
        np.asarray(image.affine, dtype=np.float64),
        image.header,
        tuple(header_warnings(image)),
    )


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
    return Volume(rounded.astype(np.uint8), volume.affine, volume.header, volume.warnings)


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
