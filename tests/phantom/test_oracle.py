"""The oracle (best marker AUC from the glioma phantom's latents) and the shallow features."""

from __future__ import annotations

import json
import math
import runpy
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from neurofed.keys import Marker, Modality
from neurofed.phantom import PhantomConfig, PhantomPreset, sample_case, sample_site
from neurofed.phantom.oracle import (
    LATENTS,
    ORACLE_TARGETS,
    LatentDraws,
    OracleResult,
    auc_with_ci,
    case_latents,
    draw_latents,
    marker_ceiling,
    marker_targets,
    oracle_table,
    population_draws,
)
from neurofed.phantom.shallow import SHALLOW_FEATURES, case_features, read_case_features

from .conftest import Federation

#: Enough draws for stable AUCs (interval half-widths about 0.01) in a few seconds.
DRAWS = 2500


@pytest.fixture(scope="module")
def draws() -> tuple[LatentDraws, LatentDraws]:
    return population_draws(seed=0, draws=DRAWS)


@pytest.fixture(scope="module")
def table(draws: tuple[LatentDraws, LatentDraws]) -> dict[Marker, OracleResult]:
    train, test = draws
    return oracle_table(train, test, seed=0, resamples=200)


def test_draws_are_the_phantoms_cases_and_repeat_for_a_seed() -> None:
    # Prepare
    config = PhantomConfig(preset=PhantomPreset.GLIOMA, sites=2, cases=4, seed=5, site_cases={1: 3})
    # Execute
    first, again = draw_latents(config), draw_latents(config)
    other = draw_latents(PhantomConfig(preset=PhantomPreset.GLIOMA, sites=2, cases=4, seed=6))
    # Assert: the same cases generate_federation would render, row by row
    case = sample_case(config, sample_site(config, 2), 3)
    np.testing.assert_array_equal(first.latents[3 + 2], case_latents(case))
    assert first.targets[Marker.GRADE][5] == int(case.clinical.grade == 4)
    assert first.sites.tolist() == [1] * 3 + [2] * 4
    np.testing.assert_array_equal(first.latents, again.latents)
    assert all(np.array_equal(first.targets[m], again.targets[m]) for m in ORACLE_TARGETS)
    assert not np.array_equal(first.latents, other.latents)


def test_population_halves_come_from_disjoint_sites() -> None:
    train, test = population_draws(seed=1, draws=90)
    assert len(train) == len(test) == 90
    assert train.latents.shape == (90, len(LATENTS))
    assert not set(train.sites.tolist()) & set(test.sites.tolist())
    with pytest.raises(ValueError, match="draws = 0"):
        population_draws(seed=1, draws=0)


def test_oracle_is_deterministic_for_a_seed(draws: tuple[LatentDraws, LatentDraws]) -> None:
    train, test = (_head(d, 600) for d in draws)
    first = marker_ceiling(train, test, Marker.MGMT, seed=3, resamples=100)
    again = marker_ceiling(train, test, Marker.MGMT, seed=3, resamples=100)
    assert first == again
    assert first.estimate.n == 600


def test_oracle_aucs_lie_between_chance_and_one(table: dict[Marker, OracleResult]) -> None:
    assert list(table) == list(ORACLE_TARGETS)
    for marker, result in table.items():
        assert 0.5 < result.auc <= 1.0, marker
        assert result.estimate.ci[0] <= result.auc <= result.estimate.ci[1]
        assert result.aucs[result.best] == max(result.aucs.values()) == result.auc


def test_mgmt_is_the_hardest_marker_on_the_default_tables(
    table: dict[Marker, OracleResult],
) -> None:
    # a fact about the phantom's tables (glioma.py): MGMT only changes oedema and texture a little
    mgmt = table[Marker.MGMT].auc
    assert all(mgmt < table[m].auc for m in ORACLE_TARGETS if m is not Marker.MGMT)
    assert table[Marker.CODEL_1P19Q].auc > 0.99  # the co-deleted margin range is disjoint


def test_latents_without_signal_give_chance(draws: tuple[LatentDraws, LatentDraws]) -> None:
    # Prepare: break every tie between latents and the marker by shuffling the targets
    rng = np.random.default_rng(0)
    train, test = (_shuffled(d, Marker.IDH, rng) for d in draws)
    # Execute
    result = marker_ceiling(train, test, Marker.IDH, seed=0, resamples=200)
    # Assert: chance is inside the interval (the better of two models may sit a bit above it)
    assert abs(result.auc - 0.5) < 0.05
    assert result.estimate.ci[0] < 0.5 + 0.02


def test_auc_with_ci_matches_sklearn_and_handles_one_class() -> None:
    rng = np.random.default_rng(4)
    target = rng.integers(0, 2, 300)
    score = np.round(target * 0.8 + rng.normal(0.0, 1.0, 300), 1)  # with ties
    estimate = auc_with_ci(target, score, seed=1, resamples=500)
    assert estimate.auc == pytest.approx(roc_auc_score(target, score))
    assert estimate.ci[0] < estimate.auc < estimate.ci[1]
    assert estimate.ci[1] - estimate.ci[0] < 0.2
    assert (estimate.n, estimate.num_positive) == (300, int(target.sum()))
    assert auc_with_ci(target, score, seed=1, resamples=500) == estimate
    single = auc_with_ci([1, 1, 1], [0.1, 0.2, 0.3])
    assert math.isnan(single.auc) and single.to_json()["auc"] is None
    with pytest.raises(ValueError, match="3 targets but 2 scores"):
        auc_with_ci([0, 1, 1], [0.1, 0.2])


def test_marker_targets_use_grade_four_against_lower_grades() -> None:
    from neurofed.data.subject import Clinical

    clinical = Clinical(idh=True, codel_1p19q=False, mgmt=True, grade=3)
    assert marker_targets(clinical) == {
        Marker.IDH: 1,
        Marker.CODEL_1P19Q: 0,
        Marker.MGMT: 1,
        Marker.GRADE: 0,
    }
    with pytest.raises(ValueError, match="every marker and the grade"):
        marker_targets(Clinical(idh=True))


def test_shallow_features_of_a_generated_case(glioma_fed: Federation) -> None:
    # Prepare: the first case of the labelled site and what the phantom measured of its labels
    record = glioma_fed.manifest["cases"][0]
    site_dir = glioma_fed.root / "site-1"
    # Execute
    features = read_case_features(site_dir, record["subject_id"])
    # Assert
    assert tuple(features) == SHALLOW_FEATURES
    assert all(math.isfinite(v) for v in features.values())
    for name in ("wt_ml", "tc_ml", "et_ml"):
        assert features[name] == pytest.approx(record["measures"][name])
    assert features["wt_ml"] > 0.0
    assert 0.0 <= features["ed_share_of_wt"] <= 1.0
    assert features["flair_mean_ed"] > 1.0  # oedema is FLAIR-bright against normal brain


def test_shallow_features_without_a_tumour_are_finite() -> None:
    images = {m: np.full((8, 8, 8), 100.0, np.float32) for m in Modality}
    features = case_features(images, np.zeros((8, 8, 8), np.uint8), np.eye(4))
    assert all(math.isfinite(v) for v in features.values())
    assert features["wt_ml"] == 0.0 and features["t2_mean_tc"] == 1.0
    with pytest.raises(ValueError, match="needs FLAIR too"):
        case_features(
            {m: images[m] for m in (Modality.T1, Modality.T1CE, Modality.T2)},
            np.zeros((8, 8, 8), np.uint8),
            np.eye(4),
        )


def test_bench_writes_every_marker(
    glioma_fed: Federation, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: the session phantom (site 2 unlabelled), a few oracle draws
    out = tmp_path / "markers.json"
    argv = ["markers.py", "--phantom", str(glioma_fed.root), "--test-site", "1"]
    argv += ["--draws", "120", "--resamples", "20", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    # Execute
    runpy.run_path(str(Path(__file__).parents[2] / "bench" / "markers.py"), run_name="__main__")
    # Assert
    report = json.loads(out.read_text(encoding="utf-8"))
    assert list(report["markers"]) == [m.value for m in ORACLE_TARGETS]
    assert report["num_test_cases"] == 3  # site 2 of the session phantom has no labels
    assert set(report["markers"]["idh"]) == {
        "oracle_population",
        "oracle_test_site",
        "shallow_test_site",
        "shallow_leave_one_site_out",
    }
    assert report["markers"]["grade"]["oracle_population"]["n"] == 120


def test_bench_trains_fedavg_beside_the_pooled_model_on_the_same_cases(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: 3 sites of 8 cases at 6 mm (site 3 held out), one epoch / round at 8 mm
    out, work = tmp_path / "markers.json", tmp_path / "work"
    argv = ["markers.py", "--sites", "3", "--cases", "8", "--spacing", "6", "--work", str(work)]
    argv += ["--train-epochs", "1", "--train-spacing", "8", "--federated"]
    argv += ["--draws", "120", "--resamples", "20", "--out", str(out)]
    monkeypatch.setattr(sys, "argv", argv)
    # Execute
    runpy.run_path(str(Path(__file__).parents[2] / "bench" / "markers.py"), run_name="__main__")
    # Assert: a FedAvg run of one round beside the pooled model, paired on the same cases
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["settings"]["federated"] is True
    assert (work / "fedavg-8mm-1r" / "last_model" / "model.json").is_file()
    for marker in ORACLE_TARGETS:
        row = report["markers"][marker.value]
        pooled, fedavg = row["deep_by_epochs"]["1"], row["fedavg_by_rounds"]["1"]
        paired = row["fedavg_vs_pooled_by_budget"]["1"]
        assert paired["n"] == pooled["n"] == fedavg["n"] > 0
        if paired["auc_a"] is not None:  # both classes among the held-out cases
            assert paired["auc_a"] == pytest.approx(fedavg["auc"], abs=1e-4)
            assert paired["auc_b"] == pytest.approx(pooled["auc"], abs=1e-4)
            assert paired["difference"] == pytest.approx(
                paired["auc_a"] - paired["auc_b"], abs=1e-5
            )


def _head(draws: LatentDraws, n: int) -> LatentDraws:
    return LatentDraws(
        draws.latents[:n], {m: t[:n] for m, t in draws.targets.items()}, draws.sites[:n]
    )


def _shuffled(draws: LatentDraws, marker: Marker, rng: np.random.Generator) -> LatentDraws:
    targets = dict(draws.targets)
    targets[marker] = rng.permutation(targets[marker])
    return LatentDraws(draws.latents, targets, draws.sites)
