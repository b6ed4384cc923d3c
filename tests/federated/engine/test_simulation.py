"""Studies in NVFlare's simulator: a full run, resume, a silent site, and what leaves a site.

Each simulation takes ~20-30 s (process start-up of one server and one worker per site); the
2-site, 2-round run is made once per module and read by several tests.
"""

from __future__ import annotations

import json
import os
import shutil
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from safetensors.numpy import load_file
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.data.manifest import load_manifest
from neurofed.federated.engine import SimulationError, SimulationResult, run_simulation
from neurofed.federated.engine.simulation import _finished
from neurofed.federated.server import FederatedRun
from neurofed.federated.server.run_folder import latest_round_checkpoint
from neurofed.training import RunFolderError, load_model
from tests.federated.conftest import scored, tiny_study

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def finished(
    tmp_path_factory: pytest.TempPathFactory, age_sites: list[Path]
) -> Iterator[tuple[SimulationResult, Path]]:
    """A 2-site, 2-round FedAvg run, every site payload recorded under ``audit/``."""
    base = tmp_path_factory.mktemp("simulated")
    seen: list[tuple[int, int, str]] = []
    result = run_simulation(
        tiny_study(rounds=2, min_sites=2),
        age_sites,
        base / "run",
        progress=lambda done, total, label: seen.append((done, total, label)),
        audit_dir=base / "audit",
        site_settings=scored(2),
    )
    assert [(d, t) for d, t, _ in seen] == [(1, 2), (2, 2)]
    # each round is reported once validated, with the selection metric's value
    metric = tiny_study().selection.metric
    assert all(label.startswith(f"round {d}: {metric} ") for d, _, label in seen), seen
    yield result, base / "audit"


def _copy_of_run(result: SimulationResult, tmp_path: Path) -> Path:
    """A copy of the finished run's folder, without the simulator's workspace."""
    run = tmp_path / "run"
    shutil.copytree(result.run_dir, run, ignore=shutil.ignore_patterns("simulator"))
    return run


def test_a_simulated_study_writes_rounds_checkpoints_and_models(
    finished: tuple[SimulationResult, Path],
) -> None:
    result, _ = finished
    run = result.run_dir
    assert result.summary.rounds_done == 2 and result.summary.dropped == ()
    for k in (1, 2):
        record = json.loads((run / "rounds" / str(k) / "metrics.json").read_text())
        assert record["accepted"] == ["site-1", "site-2"] and record["aggregated"]
        assert record["failed"] == {} and record["dropped"] == []
        per_site = record["validation_per_site"]
        assert per_site and set(per_site) <= {"site-1", "site-2"}
        merged = sum(v["num_examples"] for v in per_site.values())
        assert record["validation"]["num_examples"] == merged >= 1  # summed, not averaged
        assert {"global.safetensors", "strategy.safetensors", "history.json"} <= {
            p.name for p in (run / "checkpoints" / f"round-{k}").iterdir()
        }
    selected = result.summary.selected
    assert selected is not None
    maes = {
        k: json.loads((run / "rounds" / str(k) / "metrics.json").read_text())["validation"]["mae"]
        for k in (1, 2)
    }
    assert selected.direction == "min" and selected.round == min(maes, key=maes.__getitem__)
    model = load_model(result.model_dir)
    assert model.epoch == selected.round and model.task.task_id.value == "brain-age"
    best = load_file(str(run / "checkpoints" / f"round-{selected.round}" / "global.safetensors"))
    state = model.model.state_dict()
    assert all(np.array_equal(state[k].numpy(), v.reshape(state[k].shape)) for k, v in best.items())
    assert load_model(run / "last_model").epoch == 2


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, dict):
        for k, v in value.items():
            yield str(k)
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)
    elif isinstance(value, str):
        yield value


def _arrays(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        if set(value) == {"array"}:
            yield value["array"]
            return
        for v in value.values():
            yield from _arrays(v)
    elif isinstance(value, list):
        for v in value:
            yield from _arrays(v)


def test_sites_send_only_parameters_metric_sums_and_counts(
    finished: tuple[SimulationResult, Path], age_sites: list[Path]
) -> None:
    result, audit = finished
    shapes = {
        k: list(v.shape)
        for k, v in load_file(
            str(result.run_dir / "checkpoints/round-1/global.safetensors")
        ).items()
    }
    subject_ids = {s.subject_id for site in age_sites for s in load_manifest(site).subjects}
    for site in ("site-1", "site-2"):
        payloads = sorted((audit / site).glob("*.json"))
        names = [p.name.split("-", 1)[1] for p in payloads]
        rounds = [f"{task}-round-{k}.json" for k in (1, 2) for task in ("train", "validate")]
        assert names == rounds
        for path in payloads:
            sent = json.loads(path.read_text())
            # parameters: exactly the model's entries and shapes
            assert set(sent["params"]) <= set(shapes)
            for name, described in sent["params"].items():
                assert described["array"]["shape"] == shapes[name]
            # metadata: small numeric arrays (sums, counts, per-case values) — no volume
            for array in _arrays(sent["meta"]):
                assert len(array["shape"]) <= 2 and array["dtype"] in {"int64", "float64"}
            for text in _strings(sent):
                assert text not in subject_ids and not any(s in text for s in subject_ids)
                assert not text.startswith(("/", "~")) and "hospital" not in text  # no path
                assert not any(str(site.parent) in text for site in age_sites)


def test_resume_after_round_one_ends_as_an_uninterrupted_run(
    finished: tuple[SimulationResult, Path], age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: the finished run, cut back to "stopped after round 1"
    result, _ = finished
    run = _copy_of_run(result, tmp_path)
    for stale in ("checkpoints/round-2", "rounds/2", "model", "last_model"):
        shutil.rmtree(run / stale)
    (run / "summary.json").unlink()
    round_one = (run / "rounds/1/metrics.json").read_text()
    # Execute
    resumed = run_simulation(
        tiny_study(rounds=2, min_sites=2), age_sites, run, site_settings=scored(2)
    )
    # Assert
    assert resumed.summary.rounds_done == 2
    assert (run / "rounds/1/metrics.json").read_text() == round_one  # round 1 not run again
    expected = load_file(str(result.run_dir / "checkpoints/round-2/global.safetensors"))
    got = load_file(str(run / "checkpoints/round-2/global.safetensors"))
    assert expected.keys() == got.keys()
    assert all(np.array_equal(expected[k], got[k]) for k in expected)


def test_a_finished_run_gives_its_result_again_without_starting_the_simulator(
    finished: tuple[SimulationResult, Path], age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: a copy of the finished run (without the simulator's workspace)
    result, _ = finished
    run = _copy_of_run(result, tmp_path)
    summary = (run / "summary.json").read_bytes()

    # Execute
    again = run_simulation(
        tiny_study(rounds=2, min_sites=2), age_sites, run, site_settings=scored(2)
    )

    # Assert: the same summary, nothing run (no simulator workspace made, no file rewritten)
    assert again.summary == result.summary and again.seconds == 0.0
    assert not (run / "simulator").exists()
    assert (run / "summary.json").read_bytes() == summary
    # without its last round's checkpoint, or for more rounds, the run is not finished (it
    # resumes, as the test above shows)
    assert _finished(run, tiny_study(rounds=3, min_sites=2), latest_round_checkpoint(run)) is None
    shutil.rmtree(run / "checkpoints/round-2")
    assert _finished(run, tiny_study(rounds=2, min_sites=2), latest_round_checkpoint(run)) is None


def test_a_finished_run_killed_while_its_last_round_was_checkpointed_again_is_finished(
    finished: tuple[SimulationResult, Path], age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: a copy of the finished run whose last checkpoint is as a kill leaves it between
    # atomic_folder's two renames (the validated round written again)
    result, _ = finished
    run = _copy_of_run(result, tmp_path)
    last = run / "checkpoints"
    (last / "round-2").rename(last / ".round-2.previous.tmp")
    shutil.copytree(last / ".round-2.previous.tmp", last / ".round-2.tmp")

    # Execute
    again = run_simulation(
        tiny_study(rounds=2, min_sites=2), age_sites, run, site_settings=scored(2)
    )

    # Assert: the checkpoint is back in place and the run is found finished; nothing is run
    assert again.summary == result.summary and again.seconds == 0.0
    assert not (run / "simulator").exists()
    assert sorted(p.name for p in last.iterdir()) == ["round-1", "round-2"]


def test_an_unchecked_site_is_refused_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "raw-site").mkdir()
    with pytest.raises(SimulationError, match=r"run `neurofed site check .*raw-site` first"):
        run_simulation(tiny_study(), [tmp_path / "raw-site"], tmp_path / "run")


def test_the_cli_names_the_fix_for_an_unchecked_site(tmp_path: Path) -> None:
    study = tmp_path / "study.toml"
    study.write_text(tiny_study().to_toml(), encoding="utf-8")
    (tmp_path / "raw-site").mkdir()

    outcome = CliRunner().invoke(
        app,
        [
            "simulate",
            str(study),
            "--site",
            str(tmp_path / "raw-site"),
            "--out",
            str(tmp_path / "run"),
        ],
    )

    assert outcome.exit_code == 1
    assert "neurofed site check" in outcome.output and "first" in outcome.output


def test_a_run_folder_of_another_study_is_refused_before_starting(
    age_sites: list[Path], tmp_path: Path
) -> None:
    FederatedRun(tiny_study(rounds=3), tmp_path / "run").start(["site-1"])

    with pytest.raises(RunFolderError, match="holds a run of study"):
        run_simulation(tiny_study(rounds=2), age_sites, tmp_path / "run")

    assert not (tmp_path / "run" / "simulator").exists()


def test_a_silent_site_is_dropped_after_the_timeout_and_not_waited_for_again(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: once the simulation starts, site-2's config file becomes a FIFO with no writer,
    # so its executor blocks on reading it (a site that never answers)
    run = tmp_path / "run"
    config = run / "sites" / "site-2.json"
    started = run / "simulator" / "local" / "resources.json"
    stop = threading.Event()

    def silence_then_release() -> None:
        while not stop.wait(0.02) and not started.is_file():
            pass
        text = config.read_text(encoding="utf-8")
        config.unlink()
        os.mkfifo(config)
        while not stop.wait(0.5) and not (run / "summary.json").is_file():
            pass
        with open(config, "w", encoding="utf-8") as fifo:  # let the site finish and exit
            fifo.write(text)

    helper = threading.Thread(target=silence_then_release, daemon=True)
    helper.start()
    # site-1 starts, loads its cases and trains in round 1: ~10 s on a busy 2-core machine, over
    # 25 s with several suites beside it; the round waits this long for site-2 only once
    timeout = 60
    # Execute
    try:
        result = run_simulation(tiny_study(rounds=2, min_sites=1, timeout=timeout), age_sites, run)
    finally:
        stop.set()
        helper.join(timeout=30)
    # Assert
    first = json.loads((run / "rounds/1/metrics.json").read_text())
    second = json.loads((run / "rounds/2/metrics.json").read_text())
    assert first["dropped"] == ["site-2"] and first["accepted"] == ["site-1"]
    assert first["seconds"] >= timeout
    assert second["targets"] == ["site-1"]  # not asked, so not waited for
    assert result.summary.dropped == ("site-2",) and result.summary.rounds_done == 2


def test_a_quorum_larger_than_the_sites_given_is_refused_before_starting(
    age_sites: list[Path], tmp_path: Path
) -> None:
    with pytest.raises(SimulationError, match=r"needs 3 sites per round \(min_sites\) but 2"):
        run_simulation(tiny_study(min_sites=3), age_sites, tmp_path / "run")
    assert not (tmp_path / "run" / "simulator").exists()


def test_the_cli_exits_non_zero_when_no_round_was_aggregated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: a simulation whose every round missed its quorum
    import neurofed.federated.engine as engine
    from neurofed.federated.protocol import RunSummary

    study = tiny_study()
    (tmp_path / "study.toml").write_text(study.to_toml(), encoding="utf-8")
    empty = RunSummary(study.name, study.content_hash, 2, 2, None, model=None, last_model=None)
    result = SimulationResult(run_dir=tmp_path / "run", summary=empty, seconds=1.0)
    monkeypatch.setattr(engine, "run_simulation", lambda *a, **k: result)
    # Execute
    args = ["simulate", str(tmp_path / "study.toml"), "--site", str(tmp_path), "--out", "x"]
    outcome = CliRunner().invoke(app, args)
    # Assert
    assert outcome.exit_code == 1
    assert "no round was aggregated, so there is no model" in outcome.output
