"""A site's own progress file: what it did per task, its own metric, and the merged curve the
server may show every site (withheld where too few sites stand behind it)."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

import pytest

from neurofed.federated.protocol import (
    MIN_SITES_FOR_CURVE,
    MergedRound,
    MetaField,
    ProtocolError,
    TaskRequest,
)
from neurofed.federated.server.run import FederatedRun
from neurofed.federated.server.run_folder import RoundRecord
from neurofed.federated.site import SiteConfig, SiteWorker
from neurofed.federated.site.progress import PROGRESS_FILE, SiteProgress, read_progress
from tests.federated.conftest import tiny_study


def _run(tmp_path: Path) -> FederatedRun:
    run = FederatedRun(tiny_study(), tmp_path / "run")
    run.start(["site-1"])
    return run


def _progress(config: SiteConfig, run: FederatedRun) -> dict:
    data = read_progress(config.study_state_dir(run.study.content_hash) / PROGRESS_FILE)
    assert data is not None
    return data


def test_each_task_is_recorded_with_the_sites_own_metric_and_the_merged_curve(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: the server reports round 1 merged over 3 sites
    run = _run(tmp_path)
    config = SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "state")
    worker = SiteWorker("site-1", config)
    meta = run.task_request(2).encode() | {MetaField.PROGRESS.value: [[1, 4.5, 3, 2.0]]}

    # Execute
    trained = worker.handle("train", run.params, meta)
    validated = worker.handle("validate", run.params, meta)

    # Assert
    assert trained.error is None and validated.error is None
    data = _progress(config, run)
    assert data["site"] == "site-1" and data["study_hash"] == run.study.content_hash
    assert data["rounds"] == run.study.rounds and data["metric"] == "mae"
    assert data["current"] is None
    train, validate = data["tasks"]
    assert (train["task"], train["state"], validate["task"]) == ("train", "answered", "validate")
    assert math.isfinite(train["train_loss"]) and train["seconds"] > 0
    own = worker.training.own_metrics["mae"]  # type: ignore[union-attr]
    assert validate["value"] == pytest.approx(own) and math.isfinite(own)
    assert data["merged"] == [{"round": 1, "value": 4.5, "sites": 3, "seconds": 2.0}]
    # nothing in it names another site
    assert "site-2" not in json.dumps(data)


def test_a_failed_task_is_recorded_with_the_reason_the_server_was_told(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    run = _run(tmp_path)
    config = SiteConfig(tmp_path / "no-such-folder", device="cpu", state_dir=tmp_path / "state")

    answer = SiteWorker("site-1", config).handle("train", run.params, run.task_request(1).encode())

    entry = _progress(config, run)["tasks"][0]
    assert entry["state"] == "failed" and entry["why"] == answer.error
    assert "SiteDataError" in entry["why"]


def test_a_refused_study_leaves_no_progress_and_a_malformed_curve_never_stops_a_task(
    tmp_path: Path, age_sites: list[Path], caplog: pytest.LogCaptureFixture
) -> None:
    run = _run(tmp_path)
    state = tmp_path / "state"
    guarded = SiteConfig(age_sites[0], device="cpu", state_dir=state, require_approval=True)
    meta = run.task_request(1).encode()

    refused = SiteWorker("site-1", guarded).handle("train", run.params, meta)
    assert refused.refused and not list(state.glob(f"*/{PROGRESS_FILE}"))

    config = SiteConfig(age_sites[0], device="cpu", state_dir=state)
    junk = meta | {MetaField.PROGRESS.value: [[1, "high", 3, 2.0]]}
    with caplog.at_level(logging.WARNING):
        answer = SiteWorker("site-1", config).handle("train", run.params, junk)
    assert answer.error is None
    assert _progress(config, run)["merged"] == []
    assert "ignoring the progress the server sent" in caplog.text


@pytest.mark.parametrize(
    "junk",
    [
        "1,2,3",
        [[1, 0.5, 3]],
        [[0, 0.5, 3, 1.0]],
        [[1, float("nan"), 3, 1.0]],
        [[1, 0.5, -1, 1.0]],
        [[1, 0.5, 3, "slow"]],
        [[True, 0.5, 3, 1.0]],
    ],
)
def test_malformed_progress_is_refused_by_name(junk: object) -> None:
    with pytest.raises(ProtocolError, match="the task's progress"):
        MergedRound.decode_all(junk)


def test_the_server_shows_the_merged_metric_only_where_enough_sites_validated(
    tmp_path: Path,
) -> None:
    run = _run(tmp_path)
    many = {f"site-{k}": {"mae": 3.0 + k} for k in range(MIN_SITES_FOR_CURVE)}
    few = dict(list(many.items())[: MIN_SITES_FOR_CURVE - 1])
    run.history = [
        RoundRecord(round=1, validation={"mae": 4.0}, validation_per_site=many, seconds=2.5),
        RoundRecord(round=2, validation={"mae": 3.9}, validation_per_site=few, seconds=2.0),
        RoundRecord(round=3, validation={"mae": math.nan}, validation_per_site=many),
    ]

    sent = TaskRequest.decode(run.task_request(4).encode()).progress

    assert sent == (
        MergedRound(1, 4.0, MIN_SITES_FOR_CURVE, 2.5),
        MergedRound(2, None, MIN_SITES_FOR_CURVE - 1, 2.0),
        MergedRound(3, None, MIN_SITES_FOR_CURVE, 0.0),
    )
    # the per-site numbers never travel to the sites
    assert "3.0" not in json.dumps(run.task_request(4).encode()[MetaField.PROGRESS.value])


def test_a_restarted_site_continues_its_file_and_another_study_replaces_it(
    tmp_path: Path,
) -> None:
    def view(digest: str) -> SiteProgress:
        return SiteProgress(
            tmp_path, "site-1", study="age", study_hash=digest, rounds=2, metric="mae"
        )

    first = view("ab" * 32)
    first.begin(1, "train", [MergedRound(1, 4.0, 3, 1.0)])
    first.done(1, "train", error=None, seconds=1.0)
    first.begin(1, "train")  # asked again (the server did not get the answer)
    first.done(1, "train", error="OSError: disk", seconds=1.0)

    again = view("ab" * 32)
    assert [t["state"] for t in again.data["tasks"]] == ["failed"]
    assert again.data["merged"][0]["value"] == 4.0
    assert view("cd" * 32).data["tasks"] == []
    (tmp_path / PROGRESS_FILE).write_text("{not json")
    assert read_progress(tmp_path / PROGRESS_FILE) is None
    assert view("ab" * 32).data["tasks"] == []
