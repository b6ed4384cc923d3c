"""What is written: BraTS 2021 and BIDS layouts, tables, labels, site options, phantom.json."""

from __future__ import annotations

import csv
import json
import re

import nibabel as nib
import numpy as np

from neurofed.data.nifti import read_header, read_image, read_label
from neurofed.keys import LabelConvention, Layout
from neurofed.phantom import MANIFEST

from .conftest import SPACING, Federation

BRATS_ID = re.compile(r"^BraTS2021_\d{5}$")
CLINICAL_ROW = re.compile(
    r"^BraTS2021_\d{5},\d+\.\d,[FM],(II|III|IV),(mutant|wildtype),(codeleted|intact),"
    r"(methylated|unmethylated)?$"
)


def test_brats_layout_names_ids_and_files(glioma_fed: Federation) -> None:
    site1, site2 = glioma_fed.summary.site_dirs
    assert [p.name for p in glioma_fed.summary.site_dirs] == ["site-1", "site-2"]
    ids = sorted(p.name for p in site1.iterdir() if p.is_dir())
    assert ids == ["BraTS2021_01001", "BraTS2021_01002", "BraTS2021_01003"]
    assert sorted(p.name for p in site2.iterdir() if p.is_dir())[0] == "BraTS2021_02001"
    for case_dir in site1.iterdir():
        if case_dir.is_dir():
            sid = case_dir.name
            assert BRATS_ID.match(sid)
            names = sorted(p.name for p in case_dir.iterdir())
            expected = [f"{sid}_{s}.nii.gz" for s in ("flair", "seg", "t1", "t1ce", "t2")]
            assert names == expected


def test_unlabelled_site_has_no_segmentations(glioma_fed: Federation) -> None:
    site2 = glioma_fed.summary.site_dirs[1]
    assert list(site2.rglob("*_seg.nii.gz")) == []
    assert len(list(site2.rglob("*_t1ce.nii.gz"))) == 3


def test_clinical_csv_format_and_missing_markers(glioma_fed: Federation) -> None:
    for index, site_dir in enumerate(glioma_fed.summary.site_dirs, start=1):
        lines = (site_dir / "clinical.csv").read_text(encoding="utf-8").splitlines()
        assert lines[0] == "subject_id,age,sex,grade,idh,codel_1p19q,mgmt"
        assert len(lines) == 4
        for line in lines[1:]:
            assert CLINICAL_ROW.match(line), line
            if index == 2:
                assert line.endswith(","), "MGMT must be unknown (empty) at site 2"
            else:
                assert not line.endswith(",")
            row = line.split(",")
            if row[5] == "codeleted":
                assert row[4] == "mutant"


def test_brats_images_skull_stripped_on_one_grid_with_valid_labels(glioma_fed: Federation) -> None:
    site1 = glioma_fed.summary.site_dirs[0]
    for case_dir in sorted(p for p in site1.iterdir() if p.is_dir()):
        sid = case_dir.name
        images = {
            m: read_image(case_dir / f"{sid}_{m}.nii.gz") for m in ("t1", "t1ce", "t2", "flair")
        }
        label = read_label(case_dir / f"{sid}_seg.nii.gz")
        affines = [v.affine for v in images.values()] + [label.affine]
        shapes = {v.array.shape for v in images.values()} | {label.array.shape}
        assert len(shapes) == 1
        assert all(np.allclose(a, affines[0]) for a in affines)
        assert images["t1"].spacing == (SPACING, SPACING, SPACING)
        background = images["t1"].array == 0
        for image in images.values():
            assert image.array.dtype == np.float32 and np.isfinite(image.array).all()
            np.testing.assert_array_equal(image.array == 0, background)  # one brain mask
        assert 0.2 < (~background).mean() < 0.8
        values = set(np.unique(label.array).tolist())
        assert values <= {0, 1, 2, 4} and {2} <= values
        assert not (label.array[background] > 0).any()


def test_bids_layout_tables_and_masks(ms_fed: Federation) -> None:
    for index, site_dir in enumerate(ms_fed.summary.site_dirs, start=1):
        description = json.loads((site_dir / "dataset_description.json").read_text())
        assert description["BIDSVersion"] == "1.9.0" and description["Name"]
        rows = list(csv.reader((site_dir / "participants.tsv").open(), delimiter="\t"))
        assert rows[0] == ["participant_id", "age", "sex", "sdmt"]
        assert [r[0] for r in rows[1:]] == [f"sub-s{index}c00{c}" for c in (1, 2, 3)]
        for row in rows[1:]:
            assert 18.0 <= float(row[1]) <= 70.0 and row[2] in ("F", "M")
            if index == 1:
                assert row[3] == "n/a"
            else:
                assert 0 <= int(row[3]) <= 110
            sid = row[0]
            anat = site_dir / sid / "anat"
            names = sorted(p.name for p in anat.iterdir())
            assert names == [f"{sid}_FLAIR.nii.gz", f"{sid}_T1w.nii.gz", f"{sid}_T2w.nii.gz"]
            mask = (
                site_dir / "derivatives/lesions" / sid / "anat" / f"{sid}_label-lesion_mask.nii.gz"
            )
            label = read_label(mask)
            assert set(np.unique(label.array).tolist()) <= {0, 1}
            t1 = read_image(anat / f"{sid}_T1w.nii.gz")
            assert t1.array.shape == label.array.shape
            np.testing.assert_allclose(t1.affine, label.affine)
            for other in ("T2w", "FLAIR"):
                shape, affine = read_header(anat / f"{sid}_{other}.nii.gz")
                assert shape == t1.array.shape
                np.testing.assert_allclose(affine, t1.affine)
            assert (t1.array > 0).mean() > 0.9  # a head in Rician background, not skull-stripped


def test_bids_affines_follow_slice_thickness_and_orientation(ms_fed: Federation) -> None:
    manifest = ms_fed.manifest
    for site, site_dir in zip(manifest["sites"], ms_fed.summary.site_dirs, strict=True):
        acquisition = site["acquisition"]
        thickness = acquisition["slice_thickness_mm"]
        t1 = next(site_dir.rglob("*_T1w.nii.gz"))
        image = nib.load(t1)
        zooms = image.header.get_zooms()
        assert zooms[:2] == (SPACING, SPACING)
        assert zooms[2] == np.float32(max(thickness, SPACING))
        codes = "".join(nib.aff2axcodes(image.affine))
        assert codes == acquisition["orientation"]


def test_site_effects_recorded_and_different(glioma_fed: Federation) -> None:
    manifest = glioma_fed.manifest
    assert manifest["layout"] == Layout.BRATS_2021.value
    assert manifest["label_convention"] == LabelConvention.BRATS_2021.value
    a, b = (site["acquisition"] for site in manifest["sites"])
    assert a["field_t"] in (1.5, 3.0) and b["field_t"] in (1.5, 3.0)
    for key in ("sequences", "bias_coefficients", "noise_fraction", "intensity_scale"):
        assert a[key] != b[key]
    assert manifest["sites"][1]["labelled"] is False
    assert manifest["sites"][1]["missing"] == ["mgmt"]
    assert a["sequences"]["T1CE"]["contrast"] is True
    cases = manifest["cases"]
    assert [c["subject_id"] for c in cases][:2] == ["BraTS2021_01001", "BraTS2021_01002"]
    first = cases[0]
    assert first["params"]["clinical"]["grade"] in (2, 3, 4)
    assert first["params"]["glioma"]["enhancement"] in ("none", "patchy", "ring")
    assert first["measures"]["wt_ml"] > 0
    assert manifest["broken"] == {}


def test_summary_and_manifest(glioma_fed: Federation) -> None:
    summary = glioma_fed.summary
    assert summary.num_cases == 6
    assert summary.seconds > 0 and summary.seconds_per_case == summary.seconds / 6
    assert summary.manifest == glioma_fed.root / MANIFEST
    assert glioma_fed.manifest["config"] == glioma_fed.config.to_json()
