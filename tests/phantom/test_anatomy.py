"""The template anatomy is nilearn's, and the derived maps make anatomical sense."""

from __future__ import annotations

import numpy as np

from neurofed.phantom.anatomy import (
    brain_box_mm,
    glioma_candidates,
    ms_candidates,
    tissue_maps,
    ventricle_roi,
)


def test_maps_equal_nilearn_api_at_1_mm() -> None:
    from nilearn import datasets

    maps = tissue_maps(1)
    gm = np.asarray(datasets.load_mni152_gm_template(resolution=1).dataobj)
    mask = datasets.load_mni152_brain_mask(resolution=1)
    brain = np.asarray(mask.dataobj) > 0
    np.testing.assert_array_equal(maps.brain, brain)
    np.testing.assert_allclose(maps.gm[brain], np.clip(gm[brain], 0, 1), atol=0.01)
    np.testing.assert_allclose(maps.lattice.affine(), mask.affine)


def test_2_mm_maps_sit_on_nilearns_2_mm_lattice() -> None:
    fine, coarse = tissue_maps(1), tissue_maps(2)
    assert coarse.lattice.shape == (99, 117, 95)
    assert coarse.lattice.origin == fine.lattice.origin
    total = coarse.gm + coarse.wm + coarse.csf
    np.testing.assert_allclose(total[coarse.brain], 1.0, atol=1e-5)
    volume_1 = fine.gm.sum() / 1000.0
    volume_2 = coarse.gm.sum() * 8.0 / 1000.0
    assert abs(volume_2 - volume_1) < 0.03 * volume_1


def test_ventricles_and_candidates_are_anatomical() -> None:
    roi = ventricle_roi(2)
    assert 15.0 < roi.sum() * 8.0 / 1000.0 < 40.0  # lateral ventricles, mL
    (x0, y0, _), (x1, y1, _) = brain_box_mm()
    assert x0 < -65 and x1 > 65 and y0 < -100 and y1 > 65
    left_frontal = glioma_candidates()[(True, True)]
    assert (left_frontal[:, 0] < 0).all() and (left_frontal[:, 1] >= 0).all()
    assert {len(v) > 1000 for v in ms_candidates().values()} == {True}
