"""Every broken kind is produced, recorded in phantom.json, and really broken on disk."""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest

from neurofed.data.nifti import VolumeError, read_header, read_image
from neurofed.keys import ProblemKind
from neurofed.phantom import BROKEN_KINDS
from neurofed.phantom.broken import NOT_NIFTI_TEXT

from .conftest import Federation


def _broken_files(fed: Federation) -> dict[ProblemKind, tuple[str, str | None]]:
    manifest = fed.manifest
    details = {c["subject_id"]: c["broken_file"] for c in manifest["cases"]}
    return {ProblemKind(kind): (sid, details[sid]) for sid, kind in manifest["broken"].items()}


def _siblings(path: Path) -> list[Path]:
    return [p for p in path.parent.glob("*.nii.gz") if p != path and "_seg" not in p.name]


@pytest.mark.parametrize("name", ["broken_glioma", "broken_bids"])
def test_every_kind_is_produced_and_damaged(name: str, request: pytest.FixtureRequest) -> None:
    # Prepare
    fed: Federation = request.getfixturevalue(name)
    site = fed.summary.site_dirs[0]
    broken = _broken_files(fed)
    # Assert: one case per kind, each recorded with the file it damaged
    assert set(broken) == set(BROKEN_KINDS)
    assert len(fed.manifest["broken"]) == 11
    for kind, (sid, relative) in broken.items():
        if kind is ProblemKind.CLINICAL_RANGE:
            assert relative is None
            continue
        assert relative is not None and sid in relative
        path = site / relative
        if kind is ProblemKind.MISSING_MODALITY:
            assert not path.exists()
        elif kind is ProblemKind.EMPTY_FILE:
            assert path.stat().st_size == 0
        elif kind is ProblemKind.UNREADABLE:
            with pytest.raises((VolumeError, EOFError, OSError, zlib.error)):
                read_image(path)
        elif kind is ProblemKind.NOT_NIFTI:
            assert gzip.decompress(path.read_bytes()) == NOT_NIFTI_TEXT
            with pytest.raises(VolumeError):
                read_image(path)
        elif kind is ProblemKind.WRONG_DIMENSIONS:
            assert len(read_header(path)[0]) == 4
        elif kind is ProblemKind.NON_FINITE:
            assert np.isnan(read_image(path).array).any()
        elif kind is ProblemKind.ALL_ZERO:
            assert not read_image(path).array.any()
        elif kind is ProblemKind.GRID_MISMATCH:
            other = _siblings(path)[0]
            assert read_header(path)[0] != read_header(other)[0]
        elif kind is ProblemKind.LABEL_VALUES:
            values = set(np.unique(np.asarray(nib.load(path).dataobj)).tolist())
            bad = 3 if "BraTS" in sid else 2  # outside {0,1,2,4} / {0,1}
            assert bad in values
        elif kind is ProblemKind.LABEL_GRID:
            image = next(p for p in (site / sid).rglob("*.nii.gz") if p != path)
            assert read_header(path)[0] != read_header(image)[0]


def test_clinical_range_is_written_out_of_range(
    broken_glioma: Federation, broken_bids: Federation
) -> None:
    sid, _ = _broken_files(broken_glioma)[ProblemKind.CLINICAL_RANGE]
    csv = (broken_glioma.summary.site_dirs[0] / "clinical.csv").read_text().splitlines()
    row = next(line.split(",") for line in csv if line.startswith(sid))
    assert row[3] == "V"
    sid, _ = _broken_files(broken_bids)[ProblemKind.CLINICAL_RANGE]
    tsv = (broken_bids.summary.site_dirs[0] / "participants.tsv").read_text().splitlines()
    row = next(line.split("\t") for line in tsv if line.startswith(sid))
    assert row[1] == "-3"
    # the ground truth in phantom.json stays valid
    truth = next(c for c in broken_bids.manifest["cases"] if c["subject_id"] == sid)
    assert truth["params"]["clinical"]["age"] >= 20


def test_unbroken_cases_read_cleanly(broken_glioma: Federation) -> None:
    # Prepare: rebuild the same site without broken cases is not needed; the kinds cover 11 of 11
    # cases, so check that nothing else was damaged: every file not named as broken reads.
    broken = {relative for _, relative in _broken_files(broken_glioma).values() if relative}
    site = broken_glioma.summary.site_dirs[0]
    for path in sorted(site.rglob("*.nii.gz")):
        if str(path.relative_to(site)) not in broken:
            image = read_image(path)
            assert image.array.ndim == 3 and np.isfinite(image.array).all() and image.array.any()
