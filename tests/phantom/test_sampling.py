"""Sampled parameters: markers follow grade, imaging follows markers, sites differ, replayable.

These tests call the sampling functions only (cheap), never the volume pipeline.
"""

from __future__ import annotations

import numpy as np
import pytest

from neurofed.keys import ProblemKind
from neurofed.phantom import BROKEN_KINDS, PhantomConfig, sample_case, sample_site
from neurofed.phantom.case import CaseParams
from neurofed.phantom.codec import from_json, to_json
from neurofed.phantom.glioma import Enhancement, sample_glioma, sample_glioma_clinical
from neurofed.phantom.physics import Tissue, relaxation_at
from neurofed.phantom.population import sample_ageing
from neurofed.phantom.site import Cohort

N = 1500


@pytest.fixture(scope="module")
def gliomas() -> list:
    rng = np.random.default_rng(123)
    cohort = Cohort(grade_prevalence=(1 / 3, 1 / 3, 1 / 3))
    tumour, fluid = relaxation_at(Tissue.TUMOUR, 3.0), relaxation_at(Tissue.CSF, 3.0)
    out = []
    for _ in range(N):
        clinical = sample_glioma_clinical(rng, cohort)
        out.append((clinical, sample_glioma(rng, clinical, tumour, fluid)))
    return out


def _rate(values: list[bool]) -> float:
    assert values, "no cases in this group"
    return float(np.mean(values))


def test_markers_follow_grade(gliomas) -> None:
    by_grade = {g: [c for c, _ in gliomas if c.grade == g] for g in (2, 3, 4)}
    assert 0.7 < _rate([c.idh for c in by_grade[2]]) < 0.9
    assert 0.5 < _rate([c.idh for c in by_grade[3]]) < 0.7
    assert _rate([c.idh for c in by_grade[4]]) < 0.17
    mutant = [c for c, _ in gliomas if c.idh]
    wildtype = [c for c, _ in gliomas if not c.idh]
    assert not any(c.codel_1p19q for c in wildtype)  # 1p/19q co-deletion only if IDH-mutant
    assert 0.3 < _rate([c.codel_1p19q for c in mutant if c.grade < 4]) < 0.5
    assert _rate([c.mgmt for c in mutant]) > _rate([c.mgmt for c in wildtype]) + 0.3
    mean_age = {g: np.mean([c.age for c in by_grade[g]]) for g in by_grade}
    assert mean_age[2] < mean_age[3] < mean_age[4]


def test_imaging_follows_grade_and_markers(gliomas) -> None:
    grade = {g: [p for c, p in gliomas if c.grade == g] for g in (2, 3, 4)}
    enhancing = {g: _rate([p.enhancement is not Enhancement.NONE for p in grade[g]]) for g in grade}
    assert enhancing[2] < 0.2  # grade II rarely enhances
    assert enhancing[4] > 0.85
    assert not any(p.necrotic for p in grade[2])
    assert _rate([p.necrotic for p in grade[3]]) < 0.15
    assert _rate([p.necrotic for p in grade[4]]) > 0.6
    assert _rate([p.enhancement is Enhancement.RING for p in grade[4]]) > 0.6
    assert np.mean([p.oedema_ratio for p in grade[4]]) > np.mean([p.oedema_ratio for p in grade[2]])
    mismatch = [(c, p) for c, p in gliomas if p.mismatch]
    assert mismatch and all(c.idh for c, _ in mismatch)  # the mismatch sign implies IDH-mutant
    codel = [p for c, p in gliomas if c.codel_1p19q]
    noncodel = [p for c, p in gliomas if not c.codel_1p19q]
    assert _rate([p.frontal for p in codel]) > _rate([p.frontal for p in noncodel]) + 0.2
    assert _rate([p.calcifications > 0 for p in codel]) > 0.4
    assert np.mean([p.margin_mm for p in codel]) > np.mean([p.margin_mm for p in noncodel]) + 1
    meth = [p.texture for c, p in gliomas if c.mgmt]
    unmeth = [p.texture for c, p in gliomas if not c.mgmt]
    assert np.mean(meth) < np.mean(unmeth)  # MGMT: the weakest, subtlest signal


def test_not_trivially_separable(gliomas) -> None:
    # Prepare: grade IV looks like a low grade in some cases and vice versa
    grade4 = [p for c, p in gliomas if c.grade == 4]
    low = [p for c, p in gliomas if c.grade < 4]
    # Assert
    assert _rate([p.enhancement is Enhancement.NONE for p in grade4]) > 0.0
    assert _rate([p.enhancement is Enhancement.RING for p in low]) > 0.02


def test_sites_have_different_cohorts_and_scanners() -> None:
    config = PhantomConfig(preset="glioma", sites=10, cases=1, seed=4)
    sites = [sample_site(config, k) for k in range(1, 11)]
    grade4 = [s.cohort.grade_prevalence[2] for s in sites]
    assert max(grade4) > 0.6 and min(grade4) < 0.4  # mostly-IV and mostly-lower-grade sites
    assert len({s.acquisition.field_t for s in sites}) == 2
    noise = [s.acquisition.noise_fraction for s in sites]
    assert min(noise) >= 0.01 and max(noise) <= 0.06 and max(noise) - min(noise) > 0.01
    assert all(0.05 <= s.acquisition.bias_amplitude <= 0.30 for s in sites)
    assert all(1.0 <= s.acquisition.slice_thickness_mm <= 6.0 for s in sites)
    assert len({s.acquisition.slice_thickness_mm for s in sites}) > 3


def test_brain_age_cohorts_differ_and_ageing_grows_with_age() -> None:
    config = PhantomConfig(preset="brain-age", sites=6, cases=1, seed=1)
    shapes = {sample_site(config, k).cohort.age_shape for k in range(1, 7)}
    assert len(shapes) == 6
    rng = np.random.default_rng(0)
    young = [sample_ageing(rng, 25.0, 0.0) for _ in range(200)]
    old = [sample_ageing(rng, 80.0, 0.0) for _ in range(200)]
    assert np.mean([a.ventricle_expansion_mm for a in old]) > 2.0 + np.mean(
        [a.ventricle_expansion_mm for a in young]
    )
    assert np.mean([a.cortical_thinning_mm for a in old]) > np.mean(
        [a.cortical_thinning_mm for a in young]
    )


def test_cases_are_independent_of_order_and_replay_from_json() -> None:
    config = PhantomConfig(preset="ms", sites=2, cases=5, seed=8)
    site = sample_site(config, 2)
    forward = [sample_case(config, site, c) for c in range(1, 6)]
    backward = [sample_case(config, site, c) for c in range(5, 0, -1)][::-1]
    assert forward == backward
    assert forward[0] != forward[1]
    for case in forward:
        assert from_json(CaseParams, to_json(case)) == case


def test_broken_kinds_cycle_over_the_federation() -> None:
    config = PhantomConfig(
        preset="glioma", sites=3, cases=8, seed=0, broken_per_site=4, unlabelled_sites=(2,)
    )
    sites = [sample_site(config, k) for k in (1, 2, 3)]
    kinds = [kind for site in sites for kind in site.broken.values()]
    assert len(kinds) == 12
    assert set(kinds) == set(BROKEN_KINDS)
    assert not {ProblemKind.LABEL_VALUES, ProblemKind.LABEL_GRID} & set(sites[1].broken.values())
