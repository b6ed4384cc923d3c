"""Many sites in few processes: 4 sites hosted by 2 NVFlare worker processes give the run that 4
processes give (same seed), under partial participation with a late joiner; one trip per round
(``validate_incoming``) gives the run of two; ``simulate --report-time`` prints the estimated
duration at real sites."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.federated.engine import SimulationError, run_simulation
from neurofed.federated.study.participation import ParticipationConfig
from neurofed.training import load_model
from tests.federated.conftest import scored, tiny_study, write_site

pytestmark = pytest.mark.slow

PARTICIPATION = ParticipationConfig(policy="fraction", fraction=0.5, join={"site-4": 2})


@pytest.fixture(scope="module")
def four_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    base = tmp_path_factory.mktemp("four-sites")
    return [write_site(base / f"hospital-{k}", seed=k) for k in (1, 2, 3, 4)]


def _rounds(run: Path, count: int) -> list[dict]:
    return [
        json.loads((run / "rounds" / str(k) / "metrics.json").read_text())
        for k in range(1, count + 1)
    ]


def test_four_sites_in_two_processes_give_the_run_of_four_processes(
    four_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare
    study = dataclasses.replace(tiny_study(rounds=2, min_sites=2), participation=PARTICIPATION)
    # Execute
    apart = run_simulation(study, four_sites, tmp_path / "apart", site_settings=scored(4))
    pooled = run_simulation(
        study, four_sites, tmp_path / "pooled", processes=2, site_settings=scored(4)
    )
    # Assert: the same sites asked and aggregated each round, the same model
    for one, other in zip(_rounds(apart.run_dir, 2), _rounds(pooled.run_dir, 2), strict=True):
        assert one["targets"] == other["targets"] and one["accepted"] == other["accepted"]
        assert len(one["accepted"]) == 2 and one["aggregated"], one
        assert one["validation"]["num_examples"] == other["validation"]["num_examples"] > 0
    # two long-lived workers, each hosting two of the sites
    clients = {p.name for p in (pooled.run_dir / "simulator").iterdir() if p.is_dir()}
    assert {"host-1", "host-2"} <= clients and not {"site-1", "site-2"} & clients, clients
    first = _rounds(apart.run_dir, 1)[0]
    assert "site-4" not in first["targets"]  # joins at round 2
    assert "site-4" in first["validation_per_site"]  # it validates before it trains
    assert apart.model_dir is not None and pooled.model_dir is not None
    a = load_model(apart.model_dir).model.state_dict()
    b = load_model(pooled.model_dir).model.state_dict()
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-6)


def test_one_trip_rounds_on_the_simulator_give_the_two_trip_run(
    four_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: the same study, validated after each round or by the next round's training
    study = tiny_study(rounds=3, min_sites=2)
    incoming = ParticipationConfig(validate_incoming=True)
    one_trip = dataclasses.replace(study, participation=incoming)
    # Execute
    two = run_simulation(study, four_sites[:2], tmp_path / "two", site_settings=scored(2))
    one = run_simulation(one_trip, four_sites[:2], tmp_path / "one", site_settings=scored(2))
    # Assert: every round's model scored by the same sites with the same result, same model
    for a, b in zip(_rounds(two.run_dir, 3), _rounds(one.run_dir, 3), strict=True):
        assert b["validation_per_site"] and not b["failed"], b
        assert b["validation_per_site"].keys() == a["validation_per_site"].keys()
        assert b["validation"]["mae"] == pytest.approx(a["validation"]["mae"], rel=1e-5)
    assert one.summary.selected is not None and two.summary.selected is not None
    assert one.summary.selected.round == two.summary.selected.round
    assert one.model_dir is not None and two.model_dir is not None
    a = load_model(two.model_dir).model.state_dict()
    b = load_model(one.model_dir).model.state_dict()
    for name in a:
        np.testing.assert_allclose(a[name].numpy(), b[name].numpy(), rtol=1e-5, atol=1e-6)
    print(
        f"[measured] 3 rounds, 2 sites: {two.seconds:.1f} s with two trips per round, "
        f"{one.seconds:.1f} s with one"
    )


def test_simulate_reports_the_estimated_time_at_real_sites(
    four_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare
    study = dataclasses.replace(tiny_study(rounds=2, min_sites=2), participation=PARTICIPATION)
    (tmp_path / "study.toml").write_text(study.to_toml(), encoding="utf-8")
    sites = [arg for s in four_sites for arg in ("--site", str(s))]
    args = ["simulate", str(tmp_path / "study.toml"), *sites, "--out", str(tmp_path / "run")]
    # Execute
    outcome = CliRunner().invoke(
        app, [*args, "--report-time", "--processes", "2", "--sites-in-memory", "2"]
    )
    # Assert
    assert outcome.exit_code == 0, outcome.output
    text = " ".join(outcome.output.split())
    assert "estimated time at real sites (FeTS speeds, clock seed 3)" in text
    assert "estimated total" in text and "for 2 round(s); slowest sites: site-" in text
    # the same estimate again from the finished run folder, by another clock seed
    again = CliRunner().invoke(app, [*args, "--report-time", "--clock-seed", "9"])
    assert again.exit_code == 0, again.output
    assert "clock seed 9" in again.output


def test_secure_aggregation_needs_a_process_per_site(
    four_sites: list[Path], tmp_path: Path
) -> None:
    study = tiny_study(min_sites=2)
    secure = dataclasses.replace(
        study, strategy_params=dataclasses.replace(study.strategy_params, secagg=True)
    )
    with pytest.raises(SimulationError, match="secure aggregation keeps each site's round"):
        run_simulation(secure, four_sites, tmp_path / "run", processes=2)
    with pytest.raises(SimulationError, match=r"processes = 9: give 1 to 4"):
        run_simulation(study, four_sites, tmp_path / "run", processes=9)
    with pytest.raises(SimulationError, match=r"sites_in_memory = 0: give 1 or more"):
        run_simulation(study, four_sites, tmp_path / "run", processes=2, sites_in_memory=0)
