"""Tiny BIDS sites whose cases differ in spacing, shape and axis order, for fingerprint tests.

Each case is an ellipsoidal "brain" (exact-zero background, so the NONZERO brain mask applies,
and its bounding box is known) with T1w, FLAIR and a lesion mask. The same :class:`CaseSpec`
always gives the same arrays, so a pooled site holding every case of several sites holds exactly
their voxels.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from neurofed.data.manifest import check_site
from neurofed.data.nifti import write_image, write_label

__all__ = ["THREE_SITES", "CaseArrays", "CaseSpec", "case_arrays", "write_site", "write_sites"]


@dataclass(frozen=True)
class CaseSpec:
    """One case: array shape and spacing as stored, and the RAS axis each array axis points to."""

    subject_id: str
    shape: tuple[int, int, int]
    spacing: tuple[float, float, float]
    axes: tuple[int, int, int] = (0, 1, 2)
    seed: int = 0

    @property
    def ras_spacing(self) -> tuple[float, float, float]:
        out = [0.0, 0.0, 0.0]
        for array_axis, ras_axis in enumerate(self.axes):
            out[ras_axis] = self.spacing[array_axis]
        return (out[0], out[1], out[2])

    @property
    def ras_brain_shape(self) -> tuple[int, int, int]:
        """Bounding box of the brain in voxels, in RAS axis order."""
        box = brain(self.shape).nonzero()
        sizes = [int(b.max() - b.min() + 1) for b in box]
        out = [0, 0, 0]
        for array_axis, ras_axis in enumerate(self.axes):
            out[ras_axis] = sizes[array_axis]
        return (out[0], out[1], out[2])


@dataclass(frozen=True)
class CaseArrays:
    t1: npt.NDArray[np.float32]
    flair: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint8]
    affine: npt.NDArray[np.float64]


def brain(shape: Sequence[int]) -> npt.NDArray[np.bool_]:
    grids = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    terms = [((g - (n - 1) / 2) / (0.42 * n)) ** 2 for g, n in zip(grids, shape, strict=True)]
    inside = sum(terms, np.zeros(tuple(shape)))
    return np.asarray(inside <= 1.0)


def case_arrays(spec: CaseSpec) -> CaseArrays:
    rng = np.random.default_rng(spec.seed)
    mask = brain(spec.shape)
    label = np.zeros(spec.shape, np.uint8)
    centre = tuple(n // 2 for n in spec.shape)
    label[tuple(slice(c - 1, c + 1) for c in centre)] = 1  # a 2x2x2 lesion at the centre
    t1 = np.where(mask, rng.normal(800.0, 40.0, spec.shape), 0.0).astype(np.float32)
    flair = np.where(mask, rng.normal(600.0, 30.0, spec.shape), 0.0).astype(np.float32)
    flair[label > 0] = 1500.0
    affine = np.eye(4)
    affine[:3, :3] = 0.0
    for array_axis, ras_axis in enumerate(spec.axes):
        affine[ras_axis, array_axis] = spec.spacing[array_axis]
    affine[:3, 3] = -0.5 * np.array(spec.shape, dtype=float).mean()
    return CaseArrays(t1, flair, label, affine)


def write_site(root: Path, specs: Sequence[CaseSpec]) -> Path:
    """Write ``specs`` as a BIDS site (T1w, FLAIR, lesion masks) and check it."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "fingerprint", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    rows = ["participant_id\tage\tsex"]
    for index, spec in enumerate(specs):
        arrays = case_arrays(spec)
        anat = root / spec.subject_id / "anat"
        write_image(anat / f"{spec.subject_id}_T1w.nii.gz", arrays.t1, arrays.affine)
        write_image(anat / f"{spec.subject_id}_FLAIR.nii.gz", arrays.flair, arrays.affine)
        masks = root / "derivatives" / "lesions" / spec.subject_id / "anat"
        mask_name = f"{spec.subject_id}_label-lesion_mask.nii.gz"
        write_label(masks / mask_name, arrays.label, arrays.affine)
        rows.append(f"{spec.subject_id}\t{30 + index}.0\t{'FM'[index % 2]}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    check_site(root)
    return root


#: 9 cases over 3 sites: mostly thick slices (the anisotropy rule applies to them pooled), two
#: finer ones, and one stored with its thick axis first. RAS z spacings, sorted:
#: 1.5, 2, 4, 4, 5, 5, 5, 6, 6 mm (median 5, 10th percentile 1.9); brains of about 16-20 voxels
#: in plane and 5 (most), 7 or 16 voxels along z (median 5).
THREE_SITES: dict[str, tuple[CaseSpec, ...]] = {
    "site-a": (
        CaseSpec("sub-a0", (20, 24, 20), (1.0, 1.0, 1.5), seed=1),
        CaseSpec("sub-a1", (22, 24, 5), (1.0, 1.0, 5.0), seed=2),
        CaseSpec("sub-a2", (5, 22, 24), (4.0, 1.0, 1.0), axes=(2, 0, 1), seed=3),
    ),
    "site-b": (
        CaseSpec("sub-b0", (24, 24, 7), (1.0, 1.0, 4.0), seed=4),
        CaseSpec("sub-b1", (20, 22, 5), (1.0, 1.0, 5.0), seed=5),
        CaseSpec("sub-b2", (22, 20, 5), (1.0, 1.0, 6.0), seed=6),
    ),
    "site-c": (
        CaseSpec("sub-c0", (24, 22, 20), (1.0, 1.0, 2.0), seed=7),
        CaseSpec("sub-c1", (22, 24, 5), (1.0, 1.0, 5.0), seed=8),
        CaseSpec("sub-c2", (20, 20, 5), (1.0, 1.0, 6.0), seed=9),
    ),
}


def write_sites(base: Path) -> dict[str, Path]:
    """:data:`THREE_SITES` under ``base``, and "pooled": one site holding all their cases."""
    roots = {name: write_site(base / name, specs) for name, specs in THREE_SITES.items()}
    every = [spec for specs in THREE_SITES.values() for spec in specs]
    roots["pooled"] = write_site(base / "pooled", every)
    return roots
