"""Tiny sites written in milliseconds: BraTS-2021 glioma folders and BIDS sites with lesions.

Images are a bright ellipsoidal "brain" on an exact-zero background (so the NONZERO brain mask
applies). Glioma cases carry a spherical tumour (NCR core, ET ring, ED shell) that is bright on
T1CE / T2 / FLAIR, so a tiny network learns it in a few steps; BIDS cases carry small FLAIR-bright
lesions and a dark "ventricle" whose size grows with age, and an SDMT score that falls with age
and lesion count (so a brain-age model transfers to it).
"""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt

from neurofed.data.manifest import check_site
from neurofed.data.nifti import write_image, write_label
from neurofed.data.splits import load_or_create_splits

__all__ = ["prepare_site", "write_bids_site", "write_glioma_site"]

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])
GLIOMA_PARTS = ("t1", "t1ce", "t2", "flair")


def _grid(shape: Sequence[int]) -> tuple[npt.NDArray[np.float64], ...]:
    return tuple(np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij"))


def _brain(shape: Sequence[int]) -> npt.NDArray[np.bool_]:
    x, y, z = _grid(shape)
    cx, cy, cz = ((n - 1) / 2 for n in shape)
    rx, ry, rz = (0.42 * n for n in shape)
    return ((x - cx) / rx) ** 2 + ((y - cy) / ry) ** 2 + ((z - cz) / rz) ** 2 <= 1.0


def write_glioma_site(
    root: Path,
    cases: int = 8,
    *,
    shape: tuple[int, int, int] = (24, 24, 24),
    seed: int = 0,
    labels: bool = True,
    parts: Sequence[str] = GLIOMA_PARTS,
    unlabelled: Sequence[int] = (),
) -> Path:
    """A BraTS-2021 site with ``clinical.csv`` (IDH-mutant = small tumour, grade from size)."""
    rng = np.random.default_rng(seed)
    brain = _brain(shape)
    x, y, z = _grid(shape)
    rows = []
    for index in range(cases):
        case = f"BraTS2021_{seed * 100 + index + 1:05d}"
        radius = float(rng.uniform(2.5, 5.0))
        centre = [rng.uniform(0.35 * n, 0.65 * n) for n in shape]
        distance = np.sqrt((x - centre[0]) ** 2 + (y - centre[1]) ** 2 + (z - centre[2]) ** 2)
        label = np.zeros(shape, np.uint8)
        label[(distance <= radius) & brain] = 2  # ED
        label[(distance <= 0.7 * radius) & brain] = 4  # ET
        label[(distance <= 0.35 * radius) & brain] = 1  # NCR
        base = 100.0 + 5.0 * rng.standard_normal(shape)
        tumour, enhancing = label > 0, label == 4
        images = {
            "t1": np.where(tumour, 60.0, base),
            "t1ce": np.where(enhancing, 220.0, base),
            "t2": np.where(tumour, 180.0, base),
            "flair": np.where(label == 2, 210.0, np.where(tumour, 160.0, base)),
        }
        folder = root / case
        for part in parts:
            write_image(folder / f"{case}_{part}.nii.gz", np.where(brain, images[part], 0), AFFINE)
        if labels and index not in unlabelled:
            write_label(folder / f"{case}_seg.nii.gz", label, AFFINE)
        small = radius < 3.75
        rows.append(
            {
                "subject_id": case,
                "age": f"{40 + 3 * index:.1f}",
                "grade": "2" if small else "4",
                "idh": "mutant" if small else "wildtype",
                "codel_1p19q": "codeleted" if small and index % 2 else "intact",
                "mgmt": "" if index == 0 else ("methylated" if index % 2 else "unmethylated"),
            }
        )
    with open(root / "clinical.csv", "w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return root


def write_bids_site(
    root: Path,
    cases: int = 8,
    *,
    shape: tuple[int, int, int] = (32, 32, 32),
    seed: int = 0,
    lesions: bool = True,
    lesion_radius: float = 2.0,
) -> Path:
    """A BIDS site with T1w + FLAIR, lesion masks and ``participants.tsv`` (age, sex, sdmt).

    ``lesion_radius`` (voxels) changes only the lesions' size, not the random draws.
    """
    rng = np.random.default_rng(seed)
    brain = _brain(shape)
    x, y, z = _grid(shape)
    centre = [(n - 1) / 2 for n in shape]
    centred = np.sqrt(sum((g - c) ** 2 for g, c in zip((x, y, z), centre, strict=True)))
    rows = ["participant_id\tage\tsex\tsdmt"]
    (root / "dataset_description.json").parent.mkdir(parents=True, exist_ok=True)
    (root / "dataset_description.json").write_text(
        json.dumps({"Name": "tiny", "BIDSVersion": "1.9.0", "DatasetType": "raw"})
    )
    for index in range(cases):
        subject = f"sub-t{seed}c{index:03d}"
        age = float(rng.uniform(20, 80))
        ventricle = centred <= 2.0 + 6.0 * (age - 20) / 60  # grows with age
        lesion = np.zeros(shape, np.uint8)
        count = int(rng.integers(1, 4))
        for _ in range(count):
            c = [rng.uniform(0.3 * n, 0.7 * n) for n in shape]
            d = np.sqrt(sum((g - v) ** 2 for g, v in zip((x, y, z), c, strict=True)))
            lesion[(d <= lesion_radius) & brain & ~ventricle] = 1
        base = 100.0 + 5.0 * rng.standard_normal(shape)
        t1 = np.where(ventricle, 30.0, np.where(lesion > 0, 70.0, base))
        flair = np.where(ventricle, 20.0, np.where(lesion > 0, 220.0, base))
        anat = root / subject / "anat"
        write_image(anat / f"{subject}_T1w.nii.gz", np.where(brain, t1, 0), AFFINE)
        write_image(anat / f"{subject}_FLAIR.nii.gz", np.where(brain, flair, 0), AFFINE)
        if lesions:
            masks = root / "derivatives" / "lesions" / subject / "anat"
            write_label(masks / f"{subject}_label-lesion_mask.nii.gz", lesion, AFFINE)
        sdmt = 65.0 - 0.4 * (age - 20.0) - 3.0 * count  # no draw: the random stream is unchanged
        rows.append(f"{subject}\t{age:.1f}\t{'FM'[index % 2]}\t{sdmt:.0f}")
    (root / "participants.tsv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def prepare_site(root: Path, *, validation_fraction: float = 0.25) -> Path:
    """Check the site (writes its manifest) and fix its splits."""
    report = check_site(root)
    load_or_create_splits(root, report.manifest.subjects, validation_fraction=validation_fraction)
    return root
