"""Contrasts follow the signal equations: CSF, lesions, oedema and gadolinium behave physically."""

from __future__ import annotations

import pytest

from neurofed.keys import Modality
from neurofed.phantom import PhantomConfig, sample_site
from neurofed.phantom.physics import (
    RELAXATION_1_5T,
    RELAXATION_3T,
    Sequence,
    Tissue,
    flair_null_ti,
    inversion_recovery,
    relaxation_at,
    tissue_signal,
)

SEEDS = range(6)


def _sites() -> list:
    configs = [PhantomConfig(preset="glioma", sites=4, cases=1, seed=seed) for seed in SEEDS]
    return [sample_site(config, k) for config in configs for k in range(1, 5)]


@pytest.mark.parametrize("site", _sites(), ids=lambda s: f"site{s.site}")
def test_tissue_contrasts_at_every_sampled_site(site) -> None:
    # Prepare
    acq = site.acquisition
    field = acq.field_t

    def s(tissue: Tissue, modality: Modality, gd: float = 0.0) -> float:
        return tissue_signal(tissue, acq.sequences[modality], field, gd)

    # Assert: CSF dark on T1w and FLAIR, bright on T2w
    assert s(Tissue.CSF, Modality.T1) < 0.6 * s(Tissue.WM, Modality.T1)
    assert s(Tissue.CSF, Modality.FLAIR) < 0.5 * s(Tissue.WM, Modality.FLAIR)
    assert s(Tissue.CSF, Modality.T2) > 2.0 * s(Tissue.WM, Modality.T2)
    # white matter brighter than grey matter on T1w, darker on T2w
    assert s(Tissue.WM, Modality.T1) > s(Tissue.GM, Modality.T1)
    assert s(Tissue.WM, Modality.T2) < s(Tissue.GM, Modality.T2)
    # lesions and oedema FLAIR/T2-bright, T1-dark
    for tissue in (Tissue.MS_LESION, Tissue.OEDEMA):
        assert s(tissue, Modality.FLAIR) > 1.3 * s(Tissue.WM, Modality.FLAIR)
        assert s(tissue, Modality.T2) > 1.3 * s(Tissue.WM, Modality.T2)
        assert s(tissue, Modality.T1) < s(Tissue.WM, Modality.T1)
    # gadolinium: enhancing tumour brighter on T1ce than T1, other tissues unchanged
    assert s(Tissue.ENHANCING, Modality.T1CE, 0.5) > 1.5 * s(Tissue.ENHANCING, Modality.T1)
    assert s(Tissue.WM, Modality.T1CE) == pytest.approx(s(Tissue.WM, Modality.T1))
    # calcification is dark on T2w; scalp fat bright on T1w
    assert s(Tissue.CALCIFICATION, Modality.T2) < 0.5 * s(Tissue.WM, Modality.T2)
    assert s(Tissue.FAT, Modality.T1) > 1.5 * s(Tissue.WM, Modality.T1)


def test_flair_inversion_time_nulls_csf() -> None:
    csf = relaxation_at(Tissue.CSF, 3.0)
    ti = flair_null_ti(csf.t1, 9000.0)
    assert ti == pytest.approx(csf.t1 * 0.5826, rel=0.01)  # ~ T1 ln 2 at finite TR
    assert inversion_recovery(csf.pd, csf.t1, csf.t2, 9000.0, 120.0, ti) == pytest.approx(0.0)
    assert inversion_recovery(csf.pd, csf.t1, csf.t2, 9000.0, 120.0, 0.8 * ti) > 0.05


@pytest.mark.parametrize("tissue", [Tissue.WM, Tissue.GM, Tissue.TUMOUR, Tissue.MS_LESION])
def test_t1_lengthens_at_3_tesla(tissue: Tissue) -> None:
    ratio = RELAXATION_3T[tissue].t1 / RELAXATION_1_5T[tissue].t1
    assert 1.1 <= ratio <= 1.4
    assert relaxation_at(tissue, 1.5) == RELAXATION_1_5T[tissue]


def test_spin_echo_t1_weighting_needs_short_tr() -> None:
    short = Sequence(tr=500.0, te=12.0)
    long = Sequence(tr=6000.0, te=12.0)
    ratio_short = tissue_signal(Tissue.WM, short, 3.0) / tissue_signal(Tissue.GM, short, 3.0)
    ratio_long = tissue_signal(Tissue.WM, long, 3.0) / tissue_signal(Tissue.GM, long, 3.0)
    assert ratio_short > 1.1 > ratio_long
