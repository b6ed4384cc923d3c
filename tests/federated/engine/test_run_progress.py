"""The coordinator's view of a deployed run, without a network: names, progress, lock, copy."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurofed.federated.engine.run_progress import (
    RunProgress,
    RunState,
    check_run_name,
    default_run_name,
    deployed_run_dir,
    publish_run,
    run_lock,
)
from neurofed.federated.engine.submit import read_run_progress
from neurofed.federated.server.run_folder import RoundRecord
from tests.federated.conftest import tiny_study


@pytest.mark.parametrize("name", ["../up", ".hidden", "a/b", "", "x" * 129])
def test_a_run_name_that_could_leave_the_runs_folder_is_refused(name: str) -> None:
    with pytest.raises(ValueError, match="run name"):
        check_run_name(name)


def test_the_default_run_folder_is_named_after_the_study_and_its_hash(tmp_path: Path) -> None:
    study = tiny_study()
    name = default_run_name(study)
    assert name == f"tiny-age-{study.content_hash[:12]}"
    assert deployed_run_dir(tmp_path, name) == tmp_path / "neurofed" / "runs" / name


def test_progress_reports_each_round_with_its_sites_and_metric() -> None:
    # Prepare
    progress = RunProgress(tiny_study(rounds=3), "run-a")
    record = RoundRecord(
        round=1,
        targets=["site-1", "site-2"],
        accepted=["site-1"],
        failed={"site-2": "OSError: disk"},
        aggregated=True,
        validation={"mae": 4.5},
        seconds=1.25,
    )

    # Execute
    progress.start(1, ["site-1", "site-2"], [])
    progress.begin_round(1, ["site-1", "site-2"])
    progress.end_round(record, ["site-1", "site-2"])
    progress.request_pause()
    shown = progress.to_json()

    # Assert
    assert shown["state"] == RunState.TRAINING.value and shown["rounds"] == 3
    (entry,) = shown["history"]
    assert entry["accepted"] == ["site-1"] and entry["failed"] == {"site-2": "OSError: disk"}
    assert entry["metric"] == "mae" and entry["value"] == 4.5 and entry["seconds"] == 1.25
    assert shown["pause_requested"] and progress.pause_requested
    json.dumps(shown)  # what the FLARE API sends must be JSON


def test_the_run_lock_admits_one_job_at_a_time(tmp_path: Path) -> None:
    # Execute / Assert: flock locks belong to an open file, so a second holder is refused even in
    # the same process (as a second job process would be), and admitted once it is released
    with run_lock(tmp_path) as first, run_lock(tmp_path) as second:
        assert first and not second
    with run_lock(tmp_path) as again:
        assert again


def test_a_published_run_leaves_the_checkpoints_on_the_server_and_reads_back(
    tmp_path: Path,
) -> None:
    # Prepare: a run folder with one round
    study = tiny_study(rounds=2)
    run = tmp_path / "run"
    (run / "rounds" / "1").mkdir(parents=True)
    (run / "checkpoints" / "round-1").mkdir(parents=True)
    (run / "study.toml").write_text(study.to_toml())
    record = RoundRecord(round=1, targets=["site-1"], accepted=["site-1"], aggregated=True)
    record.validation = {"mae": 3.0}
    (run / "rounds" / "1" / "metrics.json").write_text(json.dumps(record.to_json()))

    # Execute
    copy = publish_run(run, tmp_path / "published")
    progress = read_run_progress(copy)

    # Assert
    assert not (copy / "checkpoints").exists() and (copy / "rounds" / "1").is_dir()
    assert progress["state"] == "stopped" and progress["round"] == 1
    assert progress["history"][0]["value"] == 3.0 and progress["history"][0]["metric"] == "mae"


def test_a_run_that_cannot_start_stops_with_the_reason_for_the_lead(tmp_path: Path) -> None:
    # Prepare: a study whose initial model is not where it says (the server's controller,
    # without NVFlare around it)
    from neurofed.federated.engine.controller import StudyController

    study = tiny_study().to_dict() | {
        "initial_model": {"path": str(tmp_path / "nowhere"), "sha256": "ab" * 32}
    }
    controller = StudyController(study=study, run_dir=str(tmp_path / "run"))
    errors: list[str] = []
    controller.sample_clients = lambda *a, **k: ["site-1", "site-2"]  # type: ignore[method-assign]
    controller.error = errors.append  # type: ignore[method-assign]

    # Execute
    controller.run()

    # Assert: stopped, why, and no run folder of the unusable study
    assert controller.progress is not None
    shown = controller.progress.to_json()
    assert shown["state"] == RunState.STOPPED.value
    assert shown["reason"].startswith("the run cannot start: ") and "nowhere" in shown["reason"]
    assert errors == [shown["reason"]]
    assert not (tmp_path / "run" / "checkpoints").exists()
