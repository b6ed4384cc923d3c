"""Partial participation and the simulated clock: each ``[participation]`` policy asks the sites
it claims, late joiners wait for their round, FedAvg weighs only the sites that trained, the
deadline leaves late sites out of the round but in the federation, and the FeTS-timed clock is
deterministic."""

from __future__ import annotations

import dataclasses
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.federated.clock import (
    DOWNLOAD_TIMES,
    TRAINING_TIMES,
    UPLOAD_TIMES,
    VALIDATION_TIMES,
    round_time,
    site_clocks,
    site_round,
)
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.server.participation import select_sites
from neurofed.federated.server.run_folder import read_round_records, round_metrics_path
from neurofed.federated.server.timing import estimate_run, validation_cases
from neurofed.federated.study import Study, StudyError
from neurofed.federated.study.participation import ParticipationConfig, Policy
from neurofed.training import RunFolderError
from tests.federated.conftest import STUDY, tiny_study, train_reply

SITES = [f"site-{k}" for k in range(1, 11)]


def _toml(participation: str) -> str:
    base = STUDY.format(
        rounds=2,
        local_epochs=1,
        min_sites=2,
        timeout=120,
        metric="mae",
        direction="min",
        strategy='name = "fedavg"',
        train="",
    )
    return base + "\n[participation]\n" + participation


def _with(participation: ParticipationConfig, min_sites: int = 2) -> Study:
    return dataclasses.replace(tiny_study(min_sites=min_sites), participation=participation)


# -- the study's table ---------------------------------------------------------------------------


def test_the_participation_table_is_parsed_kept_in_the_hash_and_described() -> None:
    # Prepare
    plain = Study.from_toml(_toml("")).content_hash  # an empty table is no table
    # Execute
    study = Study.from_toml(_toml('policy = "fraction"\nfraction = 0.3\njoin = { site-7 = 4 }\n'))
    # Assert
    assert study.participation == ParticipationConfig(
        policy=Policy.FRACTION, fraction=0.3, join={"site-7": 4}
    )
    assert study.to_dict()["participation"] == {
        "policy": "fraction",
        "fraction": 0.3,
        "join": {"site-7": 4},
    }
    assert Study.from_dict(study.to_dict()).content_hash == study.content_hash
    assert study.content_hash != plain
    assert "30 % of the eligible sites" in study.describe()
    assert "site-7 (round 4)" in study.describe()
    other = Study.from_toml(_toml('policy = "fraction"\nfraction = 0.4\n'))
    assert other.content_hash != study.content_hash
    assert "participation" not in tiny_study().to_dict()  # existing studies keep their hash


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ('policy = "fraction"\n', "ParticipationConfig.fraction = None is invalid: use a share"),
        ('policy = "fraction"\nfraction = 1.5\n', "fraction = 1.5 is invalid"),
        ("fraction = 0.5\n", 'give it with policy = "fraction" only'),
        ('policy = "deadline"\n', "the deadline policy needs deadline_s"),
        ('policy = "deadline"\ndeadline_s = -3\n', "deadline_s = -3 is invalid"),
        ('policy = "fastest"\n', "policy"),
        ("join = { site-7 = 0 }\n", "map site names to the round they join"),
        ('join = { site-7 = "late" }\n', "map site names to the round they join"),
        ("deadline = 90\n", "deadline"),
    ],
)
def test_a_wrong_participation_table_is_refused_with_its_fix(table: str, message: str) -> None:
    with pytest.raises(StudyError, match=r"\[participation\]") as error:
        Study.from_toml(_toml(table))
    assert message in str(error.value)


# -- which sites a round asks --------------------------------------------------------------------


def test_all_asks_every_live_site_and_late_joiners_from_their_round() -> None:
    config = ParticipationConfig(join={"site-9": 3, "site-10": 5})
    asked = {
        k: select_sites(config, SITES, round_number=k, seed=0, min_sites=2) for k in range(1, 7)
    }
    assert asked[1] == asked[2] == sorted(SITES[:8])
    assert asked[3] == asked[4] == sorted(SITES[:9])
    assert asked[5] == asked[6] == sorted(SITES)
    # a dropped site is not asked again
    live = [s for s in SITES if s != "site-2"]
    assert "site-2" not in select_sites(config, live, round_number=6, seed=0, min_sites=2)


def test_a_fraction_asks_its_share_drawn_from_the_seed_and_the_round() -> None:
    config = ParticipationConfig(policy="fraction", fraction=0.3)
    rounds = range(1, 201)
    asked = {k: select_sites(config, SITES, round_number=k, seed=5, min_sites=2) for k in rounds}
    assert all(len(a) == 3 == len(set(a)) and set(a) <= set(SITES) for a in asked.values())
    # deterministic (a resumed run asks the same sites), different per round and per seed
    assert asked == {
        k: select_sites(config, SITES, round_number=k, seed=5, min_sites=2) for k in rounds
    }
    assert len({tuple(a) for a in asked.values()}) > 50
    assert [asked[k] for k in rounds] != [
        select_sites(config, SITES, round_number=k, seed=6, min_sites=2) for k in rounds
    ]
    # every site is asked about 30 % of the rounds (binomial(200, 0.3): sd 6.5)
    counts = Counter(s for a in asked.values() for s in a)
    assert all(abs(counts[s] - 60) < 30 for s in SITES), counts
    # never fewer than min_sites, never more than are eligible
    assert len(select_sites(config, SITES, round_number=1, seed=5, min_sites=5)) == 5
    few = ParticipationConfig(policy="fraction", fraction=0.1, join={"site-1": 9})
    assert select_sites(few, ["site-1", "site-2"], round_number=1, seed=0, min_sites=2) == [
        "site-2"
    ]


def test_the_deadline_policy_asks_every_eligible_site() -> None:
    config = ParticipationConfig(policy="deadline", deadline_s=600, join={"site-3": 2})
    assert select_sites(config, SITES[:4], round_number=1, seed=0, min_sites=2) == [
        "site-1",
        "site-2",
        "site-4",
    ]


# -- what the server makes of a round ------------------------------------------------------------


def test_fedavg_weighs_only_the_sites_that_trained_in_the_round(tmp_path) -> None:
    # Prepare: site-3 joins at round 2
    run = FederatedRun(_with(ParticipationConfig(join={"site-3": 2})), tmp_path / "run")
    run.start(["site-1", "site-2", "site-3"])
    name = next(k for k, v in run.params.items() if v.dtype.kind == "f")
    before = run.params[name].copy()
    # Execute: round 1 asks two sites; round 2 all three
    first = run.participants(1)
    record = RoundRecord(round=1)
    run.record_training(
        record, first, [train_reply(run, "site-1", 1.0, 1), train_reply(run, "site-2", 4.0, 2)]
    )
    second = run.participants(2)
    middle = run.params[name].copy()
    replies = [
        train_reply(run, "site-1", 1.0, 1),
        train_reply(run, "site-2", 1.0, 2),
        train_reply(run, "site-3", 7.0, 3),
    ]
    run.record_training(RoundRecord(round=2), second, replies)
    # Assert
    assert first == ["site-1", "site-2"] and second == ["site-1", "site-2", "site-3"]
    assert record.targets == first and not record.dropped and "site-3" in run.live
    np.testing.assert_allclose(middle, before + 3.0, rtol=1e-6)  # (1·1 + 2·4) / 3
    np.testing.assert_allclose(run.params[name], middle + 4.0, rtol=1e-5)  # (1 + 2 + 21) / 6


def test_under_a_deadline_a_site_that_does_not_answer_is_late_not_dropped(tmp_path) -> None:
    run = FederatedRun(_with(ParticipationConfig(policy="deadline", deadline_s=60)), tmp_path)
    run.start(["site-1", "site-2", "site-3"])
    record = RoundRecord(round=1)

    changed = run.record_training(
        record,
        ["site-1", "site-2", "site-3"],
        [train_reply(run, "site-1", 1.0, 2), train_reply(run, "site-2", 1.0, 2)],
    )

    assert changed and record.accepted == ["site-1", "site-2"]
    assert record.late == ["site-3"] and not record.dropped
    assert run.live == ["site-1", "site-2", "site-3"]  # asked again next round
    assert RoundRecord.from_json(record.to_json()).late == ["site-3"]
    assert "late" not in RoundRecord(round=1).to_json()  # other runs' records unchanged


def test_in_simulation_the_deadline_applies_to_each_sites_simulated_trip(tmp_path) -> None:
    # Prepare: a deadline between the sites' simulated training trips
    sites = ["site-1", "site-2", "site-3", "site-4"]
    clocks = site_clocks(sites, seed=11)
    trips = {
        s: site_round(clocks[s], s, seed=11, round_number=1, train_cases=20, val_cases=0).train_trip
        for s in sites
    }
    order = sorted(sites, key=lambda s: trips[s])
    deadline = (trips[order[1]] + trips[order[2]]) / 2  # two in time, two late
    run = FederatedRun(_with(ParticipationConfig(policy="deadline", deadline_s=deadline)), tmp_path)
    run.start(sites)
    run.simulate_clock(11)
    assert run.clocks == clocks
    record = RoundRecord(round=1)
    # Execute: every site answers (the simulator itself is fast)
    changed = run.record_training(record, sites, [train_reply(run, s, 1.0, 20) for s in sites])
    # Assert
    assert changed and record.accepted == sorted(order[:2])
    assert record.late == sorted(order[2:]) and run.live == sites
    estimate = estimate_run([record], seed=11, epochs=1, deadline_s=deadline)
    ((_, timing),) = estimate.rounds
    assert timing.late == tuple(sorted(order[2:])) and timing.train_seconds == deadline
    assert timing.bound_by == order[1]


# -- the clock -----------------------------------------------------------------------------------


def test_the_clock_is_deterministic_and_draws_from_the_fets_tables() -> None:
    clocks = site_clocks(SITES, seed=4)
    assert clocks == site_clocks(list(reversed(SITES)), seed=4)
    assert clocks != site_clocks(SITES, seed=5)
    for clock in clocks.values():
        compute = TRAINING_TIMES.index(clock.training)
        network = DOWNLOAD_TIMES.index(clock.download)
        assert clock.validation == VALIDATION_TIMES[compute]
        assert clock.upload == UPLOAD_TIMES[network]
    # the FeTS spread: 1.8–20.7 s per training case; 13–431 s per transfer
    assert min(m for m, _ in TRAINING_TIMES) == 1.80 and max(m for m, _ in TRAINING_TIMES) == 20.66
    assert min(m for m, _ in DOWNLOAD_TIMES) == 13.06 and max(m for m, _ in UPLOAD_TIMES) == 430.95
    one = site_round(
        clocks["site-1"], "site-1", seed=4, round_number=2, train_cases=10, val_cases=3
    )
    assert one == site_round(
        clocks["site-1"], "site-1", seed=4, round_number=2, train_cases=10, val_cases=3
    )
    assert one != site_round(
        clocks["site-1"], "site-1", seed=4, round_number=3, train_cases=10, val_cases=3
    )
    assert one.train_trip == one.download + one.train + one.upload
    idle = site_round(
        clocks["site-1"], "site-1", seed=4, round_number=2, train_cases=0, val_cases=3
    )
    assert idle.train == idle.upload == 0.0 and idle.validate == one.validate


def test_a_round_takes_the_slowest_trips_and_names_the_site_that_bounds_it() -> None:
    clocks = site_clocks(SITES, seed=0)
    rounds = {
        s: site_round(c, s, seed=0, round_number=1, train_cases=30, val_cases=8)
        for s, c in clocks.items()
    }
    timing = round_time(rounds)
    slowest = max(rounds, key=lambda s: rounds[s].train_trip)
    assert timing.bound_by == slowest and timing.train_seconds == rounds[slowest].train_trip
    assert timing.validate_seconds == max(r.validate_trip for r in rounds.values())
    assert math.isclose(timing.seconds, timing.train_seconds + timing.validate_seconds)
    assert not timing.late
    assert round_time({}).seconds == 0.0 and round_time({}).bound_by == ""


def test_validation_cases_are_read_from_any_tasks_metrics() -> None:
    assert validation_cases({"mae": 3.0, "num_examples": 4.0}) == 4
    assert validation_cases({"WT/dice": 0.5, "WT/num_examples": 6.0, "idh/num_examples": 5.0}) == 6
    assert validation_cases({"WT/num_examples": math.nan}) == 0
    assert validation_cases({}) == 0


# -- the estimate of a finished run --------------------------------------------------------------


def test_a_run_folders_rounds_are_read_in_round_order_and_a_damaged_one_is_named(
    tmp_path: Path,
) -> None:
    # Prepare: rounds 2 and 10 (numeric order, not text order)
    for number, cases in ((10, 30.0), (2, 20.0)):
        record = RoundRecord(round=number, train={"site-1": {"num_examples": cases}})
        path = round_metrics_path(tmp_path, number)
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps(record.to_json()), encoding="utf-8")
    # Execute
    records = read_round_records(tmp_path)
    # Assert
    assert [r.round for r in records] == [2, 10]
    assert records[1].train["site-1"]["num_examples"] == 30.0
    round_metrics_path(tmp_path, 10).write_text("{", encoding="utf-8")
    with pytest.raises(RunFolderError, match=r"rounds/10/metrics.json: not a readable round"):
        read_round_records(tmp_path)


def test_report_time_names_a_damaged_round_record_and_exits_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a finished simulation whose round 1 record is damaged
    import neurofed.federated.engine as engine
    from neurofed.federated.engine import SimulationResult
    from neurofed.federated.protocol import RunSummary

    study = tiny_study()
    (tmp_path / "study.toml").write_text(study.to_toml(), encoding="utf-8")
    run_dir = tmp_path / "run"
    round_metrics_path(run_dir, 1).parent.mkdir(parents=True)
    round_metrics_path(run_dir, 1).write_text("[1, 2]", encoding="utf-8")
    summary = RunSummary(study.name, study.content_hash, 2, 2, None, model=None, last_model=None)
    result = SimulationResult(run_dir=run_dir, summary=summary, seconds=1.0)
    monkeypatch.setattr(engine, "run_simulation", lambda *a, **k: result)
    # Execute
    args = ["simulate", str(tmp_path / "study.toml"), "--site", str(tmp_path), "--out", "x"]
    outcome = CliRunner().invoke(app, [*args, "--report-time"])
    # Assert
    assert outcome.exit_code == 1
    assert "metrics.json: not a readable round record" in " ".join(outcome.output.split())
