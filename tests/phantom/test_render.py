"""Rendering: lesions drawn as specified, images behave physically, atrophy, replay from JSON."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy import ndimage

from neurofed.data.nifti import read_image, read_label
from neurofed.keys import Modality
from neurofed.phantom import CaseRecord, PhantomConfig, render_case, sample_case, sample_site
from neurofed.phantom.anatomy import Lattice
from neurofed.phantom.glioma import Enhancement, GliomaParams, draw_glioma
from neurofed.phantom.physics import Relaxation, Tissue, relaxation_at
from neurofed.phantom.population import Ageing, LesionSite, MSLesion
from neurofed.phantom.writers import LABEL, case_paths

from .conftest import SPACING, Federation

TISSUES = {t: relaxation_at(t, 3.0) for t in Tissue}


def _tumour(**changes: object) -> GliomaParams:
    params = GliomaParams(
        centre_mm=(0.0, 0.0, 0.0),
        left=True,
        frontal=True,
        radius_mm=12.0,
        oedema_ratio=1.8,
        inner_ratio=0.55,
        necrotic=True,
        enhancement=Enhancement.RING,
        enhancing_fraction=0.95,
        gd_mmol=0.6,
        mismatch=False,
        calcifications=2,
        margin_mm=1.0,
        irregularity=0.1,
        texture=0.1,
        mass_effect=0.2,
        tumour=TISSUES[Tissue.TUMOUR],
        shape_seed=3,
    )
    return dataclasses.replace(params, **changes)


def test_glioma_drawing_nests_compartments_and_conserves_tissue() -> None:
    # Prepare: pure white matter, 1 mm
    lattice = Lattice((-40.0, -40.0, -40.0), 1.0, (81, 81, 81))
    gm = np.zeros(lattice.shape, np.float32)
    wm = np.ones(lattice.shape, np.float32)
    # Execute
    drawing = draw_glioma(_tumour(), np.zeros(3), 1.0, lattice, gm, wm, TISSUES)
    # Assert
    labels = drawing.labels
    assert set(np.unique(labels).tolist()) == {0, 1, 2, 4}
    core = np.isin(labels, (1, 4))
    whole = labels > 0
    assert (ndimage.binary_dilation(core, iterations=2) <= whole).all()  # oedema wraps the core
    assert labels[np.unravel_index(np.argmin(drawing.box.radius()), labels.shape)] == 1
    radius = drawing.box.radius()  # (X, Y, Z) mm from the tumour centre
    assert radius[labels == 4].mean() > radius[labels == 1].mean() + 3.0  # ring around necrosis
    total = sum(inc.fraction for inc in drawing.inclusions) + wm[drawing.box.slices]
    np.testing.assert_allclose(total, 1.0, atol=1e-4)  # partial volumes still sum to 1
    assert all((inc.fraction >= 0).all() for inc in drawing.inclusions)


def test_grade_ii_without_enhancement_has_no_et() -> None:
    lattice = Lattice((-40.0, -40.0, -40.0), 1.0, (81, 81, 81))
    wm = np.ones(lattice.shape, np.float32)
    params = _tumour(enhancement=Enhancement.NONE, necrotic=False, gd_mmol=0.0)
    drawing = draw_glioma(params, np.zeros(3), 1.0, lattice, np.zeros_like(wm), wm, TISSUES)
    assert set(np.unique(drawing.labels).tolist()) == {0, 1, 2}


def test_rendered_glioma_contrasts(glioma_fed: Federation) -> None:
    # Prepare: every labelled case of site 1, read back from disk
    site_dir = glioma_fed.summary.site_dirs[0]
    checked = 0
    for case_dir in sorted(p for p in site_dir.iterdir() if p.is_dir()):
        sid = case_dir.name
        img = {
            m: read_image(case_dir / f"{sid}_{m}.nii.gz").array
            for m in ("t1", "t1ce", "t2", "flair")
        }
        label = read_label(case_dir / f"{sid}_seg.nii.gz").array
        brain = (img["t1"] > 0) & (label == 0)
        # Assert: CSF (the T2-brightest normal voxels) is dark on FLAIR and T1
        csf = brain & (img["t2"] >= np.quantile(img["t2"][brain], 0.97))
        for m in ("flair", "t1"):
            assert np.median(img[m][csf]) < np.median(img[m][brain]), (sid, m)
        # oedema is FLAIR-bright
        oedema = label == 2
        assert np.median(img["flair"][oedema]) > np.median(img["flair"][brain])
        # enhancing tumour is brighter on T1ce than on T1, relative to normal tissue
        et = label == 4
        if et.sum() >= 3:
            post = np.median(img["t1ce"][et]) / np.median(img["t1ce"][brain])
            pre = np.median(img["t1"][et]) / np.median(img["t1"][brain])
            assert post > 1.2 * pre
            checked += 1
    assert checked >= 1


def test_ms_lesions_are_flair_bright_and_t1_dark() -> None:
    # Prepare: one subject with three big periventricular-style lesions
    config = PhantomConfig(preset="ms", sites=1, cases=1, seed=4, spacing=SPACING)
    site = sample_site(config, 1)
    case = sample_case(config, site, 1)
    lesions = tuple(
        MSLesion(LesionSite.DEEP, centre, (0.0, 0.0, 1.0), (12.0, 7.0), 0.5)
        for centre in ((-26.0, -10.0, 20.0), (26.0, -10.0, 20.0), (-24.0, 10.0, 30.0))
    )
    case = dataclasses.replace(case, lesions=lesions)
    # Execute
    rendered = render_case(site, case, SPACING)
    # Assert
    lesion = rendered.label == 1
    assert lesion.sum() >= 6
    ring = ndimage.binary_dilation(lesion, iterations=2) & ~lesion
    flair, t1 = rendered.images[Modality.FLAIR], rendered.images[Modality.T1]
    assert flair[lesion].mean() > 1.2 * flair[ring].mean()
    assert t1[lesion].mean() < t1[ring].mean()
    assert rendered.measures["lesion_ml"] > 1.0


def test_older_subjects_have_more_ventricular_csf() -> None:
    # Prepare: the same subject, young and old
    config = PhantomConfig(preset="brain-age", sites=1, cases=1, seed=1, spacing=SPACING)
    site = sample_site(config, 1)
    case = sample_case(config, site, 1)

    def aged(expansion: float, thinning: float) -> dict:
        spatial = dataclasses.replace(case.spatial, ventricle_expansion_mm=expansion)
        changed = dataclasses.replace(case, spatial=spatial, ageing=Ageing(expansion, thinning))
        return dict(render_case(site, changed, SPACING).measures)

    # Execute
    young, old = aged(0.0, 0.0), aged(4.0, 0.8)
    # Assert
    assert old["ventricles_ml"] > 1.5 * young["ventricles_ml"]
    assert old["csf_ml"] > young["csf_ml"] + 50.0
    assert old["gm_ml"] < young["gm_ml"] - 25.0


def test_cases_replay_from_phantom_json(glioma_fed: Federation) -> None:
    # Prepare
    manifest = glioma_fed.manifest
    record = CaseRecord.from_json(manifest["cases"][1])
    site = sample_site(glioma_fed.config, record.params.site)
    # Execute
    replayed = render_case(site, record.params, glioma_fed.config.spacing)
    # Assert: the recorded parameters reproduce the written files exactly
    assert record.params == sample_case(glioma_fed.config, site, record.params.case)
    site_dir = glioma_fed.root / site.name
    paths = case_paths(glioma_fed.config.preset, record.params.subject_id)
    for modality, image in replayed.images.items():
        np.testing.assert_array_equal(read_image(site_dir / paths[modality]).array, image)
    np.testing.assert_array_equal(read_label(site_dir / paths[LABEL]).array, replayed.label)
    assert dict(replayed.measures) == record.measures


@pytest.mark.parametrize("preset", ["glioma", "brain-age"])
def test_whole_numbers_in_scanner_units(preset: str) -> None:
    config = PhantomConfig(preset=preset, sites=1, cases=1, seed=0, spacing=SPACING)
    site = sample_site(config, 1)
    rendered = render_case(site, sample_case(config, site, 1), SPACING)
    for image in rendered.images.values():
        assert image.dtype == np.float32 and (image >= 0).all()
        np.testing.assert_array_equal(image, np.rint(image))
        assert image.max() > 50.0
    assert isinstance(Relaxation(1.0, 1.0, 1.0).scaled(t1=2.0).t1, float)
