"""The server's bookkeeping without NVFlare: rounds, failures, dropped sites, selection, resume."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.protocol import SiteAnswer, TaskName
from neurofed.federated.server import (
    FederatedRun,
    RoundRecord,
    latest_round_checkpoint,
    load_round_checkpoint,
)
from neurofed.federated.study import Study, StudyError
from neurofed.tasks import MetricState
from neurofed.training import RunFolderError
from tests.federated.conftest import tiny_study, train_reply
from tests.federated.engine.test_simulation_evaluate import _model_for


def _answer(
    task: TaskName, site: str, params: dict[str, np.ndarray] | None = None, **meta: object
) -> SiteAnswer:
    """A site's answer as the server decodes it from the wire."""
    return SiteAnswer.decode(task, site, params or {}, meta)


def test_a_round_averages_answers_and_records_failures_and_silent_sites(tmp_path: Path) -> None:
    # Prepare
    run = FederatedRun(tiny_study(min_sites=2), tmp_path / "run")
    assert run.start(["site-3", "site-1", "site-2", "site-4"]) == 1
    name = next(k for k, v in run.params.items() if v.dtype.kind == "f")
    before = run.params[name].copy()
    replies = [
        train_reply(run, "site-2", 3.0, num_examples=3),
        train_reply(run, "site-1", 1.0, num_examples=1),
        _answer(TaskName.TRAIN, "site-3", error="SiteDataError: no manifest"),
    ]
    record = RoundRecord(round=1)
    # Execute
    changed = run.record_training(record, ["site-1", "site-2", "site-3", "site-4"], replies)
    # Assert
    assert changed and record.aggregated
    assert record.accepted == ["site-1", "site-2"]
    assert record.failed == {"site-3": "SiteDataError: no manifest"}
    assert record.dropped == ["site-4"] and run.live == ["site-1", "site-2", "site-3"]
    np.testing.assert_allclose(run.params[name], before + 2.5, rtol=1e-6)  # (1·1 + 3·3) / 4


def test_a_missed_quorum_keeps_the_global_model(tmp_path: Path) -> None:
    run = FederatedRun(tiny_study(min_sites=2), tmp_path / "run")
    run.start(["site-1", "site-2"])
    before = {k: v.copy() for k, v in run.params.items()}
    record = RoundRecord(round=1)
    replies = [
        train_reply(run, "site-1", 1.0),
        _answer(TaskName.TRAIN, "site-2", error="OSError: x"),
    ]

    assert not run.record_training(record, ["site-1", "site-2"], replies)

    assert record.quorum_error is not None and "min_sites = 2" in record.quorum_error
    assert not record.aggregated
    assert all(np.array_equal(before[k], run.params[k]) for k in before)


@pytest.mark.parametrize(
    ("metric", "direction", "expected"), [("mae", "min", 2), ("pearson_r", "max", 3)]
)
def test_selection_uses_the_metric_and_its_direction(
    tmp_path: Path, metric: str, direction: str, expected: int
) -> None:
    run = FederatedRun(tiny_study(metric=metric, direction=direction), tmp_path / "run")
    run.start(["site-1"])
    values = {1: (5.0, 0.2), 2: (3.0, 0.1), 3: (4.0, 0.5), 4: (1.0, 0.9)}
    for k, (mae, r) in values.items():
        # round 4 was not aggregated (its quorum failed): never selected
        record = RoundRecord(round=k, aggregated=k != 4, validation={"mae": mae, "pearson_r": r})
        run.history.append(record)

    assert run.selection() == (expected, values[expected][0 if metric == "mae" else 1])


def test_checkpoints_resume_the_round_and_keep_zero_d_buffers(tmp_path: Path) -> None:
    # Prepare: one round done
    study = tiny_study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1", "site-2"])
    record = RoundRecord(round=1)
    run.record_training(record, ["site-1", "site-2"], [train_reply(run, "site-1", 0.5)])
    run.end_round(record)
    # Execute
    again = FederatedRun(study, tmp_path / "run")
    first = again.start(["site-1", "site-2"])
    # Assert
    assert first == 2
    assert [r.round for r in again.history] == [1] and again.history[0].dropped == ["site-2"]
    assert again.params.keys() == run.params.keys()
    for k, v in run.params.items():
        assert again.params[k].shape == v.shape and again.params[k].dtype == v.dtype
        np.testing.assert_array_equal(again.params[k], v)
    assert any(v.ndim == 0 for v in again.params.values())  # num_batches_tracked stayed 0-d
    path = latest_round_checkpoint(tmp_path / "run")
    assert path is not None and load_round_checkpoint(path).round == 1
    assert (tmp_path / "run" / "rounds" / "1" / "metrics.json").is_file()


def test_a_kill_while_a_validated_round_is_checkpointed_again_resumes_after_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare: round 1 checkpointed after aggregation, then killed as its validated record is
    # checkpointed again, between the old folder's rename and the new one's (found by CI)
    study = tiny_study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    record = RoundRecord(round=1)
    run.record_training(record, ["site-1"], [train_reply(run, "site-1", 0.5)])
    record.validation = {"mae": 3.0}
    real = os.replace

    def killed(source: object, target: object) -> None:
        if Path(str(target)).name == "round-1":  # the new folder's rename into place
            raise KeyboardInterrupt
        real(source, target)  # type: ignore[arg-type]

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        run.end_round(record)
    monkeypatch.undo()
    assert latest_round_checkpoint(tmp_path / "run") is None  # what a reader saw before
    # Execute
    again = FederatedRun(study, tmp_path / "run")
    first = again.start(["site-1"])
    # Assert: resumed after round 1, with its validation; nothing temporary left
    assert first == 2 and again.history[0].validation == {"mae": 3.0}
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["round-1"]


def test_a_run_folder_of_another_study_is_refused(tmp_path: Path) -> None:
    FederatedRun(tiny_study(rounds=2), tmp_path / "run").start(["site-1"])

    with pytest.raises(RunFolderError, match="holds a run of study sha256:"):
        FederatedRun(tiny_study(rounds=3), tmp_path / "run").start(["site-1"])


def _metric_arrays(num_examples: int, abs_error: float) -> dict[str, np.ndarray]:
    """A brain-age metric state (sums only) as a site sends it."""
    sums = {"num_examples": num_examples, "sum_abs_error": abs_error, "sum_x": 1.0}
    sums |= {"sum_y": 2.0, "sum_xx": 3.0, "sum_yy": 5.0, "sum_xy": 3.5}
    return MetricState(sums=sums, cases={}).to_arrays()


def test_personalised_validations_are_merged_next_to_the_global_one(tmp_path: Path) -> None:
    # Prepare: two Ditto sites and one that sends no personalised state
    run = FederatedRun(tiny_study(strategy="ditto", ditto_lambda=0.1), tmp_path / "run")
    run.start(["site-1", "site-2", "site-3"])
    replies = [
        _answer(
            TaskName.VALIDATE,
            "site-1",
            metric_state=_metric_arrays(1, 9.0),
            personalised_metric_state=_metric_arrays(1, 3.0),
        ),
        _answer(
            TaskName.VALIDATE,
            "site-2",
            metric_state=_metric_arrays(2, 8.0),
            personalised_metric_state=_metric_arrays(2, 6.0),
        ),
        _answer(TaskName.VALIDATE, "site-3", metric_state=_metric_arrays(1, 3.0)),
    ]
    record = RoundRecord(round=1, aggregated=True)
    # Execute
    run.record_validation(record, ["site-1", "site-2", "site-3"], replies)
    run.end_round(record)
    summary = run.finish()
    # Assert
    assert (
        record.validation["mae"] == pytest.approx(20.0 / 4)
        and record.validation["num_examples"] == 4
    )
    assert record.personalised["mae"] == pytest.approx(9.0 / 3)  # summed, then divided
    assert set(record.personalised_per_site) == {"site-1", "site-2"}
    assert record.personalised_per_site["site-2"]["mae"] == pytest.approx(3.0)
    written = json.loads((tmp_path / "run" / "rounds" / "1" / "metrics.json").read_text())
    assert written["personalised"]["num_examples"] == 3
    assert RoundRecord.from_json(written).personalised == record.personalised
    assert summary.personalised is not None and summary.personalised.round == 1
    assert summary.personalised.validation["mae"] == pytest.approx(3.0)
    assert set(summary.personalised.validation_per_site) == {"site-1", "site-2"}
    assert json.loads((tmp_path / "run" / "summary.json").read_text()) == summary.to_json()


def test_without_personalised_states_the_round_record_is_unchanged(tmp_path: Path) -> None:
    run = FederatedRun(tiny_study(), tmp_path / "run")
    run.start(["site-1"])
    record = RoundRecord(round=1, aggregated=True)
    reply = _answer(TaskName.VALIDATE, "site-1", metric_state=_metric_arrays(1, 2.0))

    run.record_validation(record, ["site-1"], [reply])
    run.end_round(record)
    summary = run.finish()

    assert record.personalised == {} and record.personalised_per_site == {}
    assert not {"personalised", "personalised_per_site"} & record.to_json().keys()
    assert summary.personalised is None and "personalised" not in summary.to_json()


def test_a_run_in_which_no_round_was_aggregated_writes_no_model(tmp_path: Path) -> None:
    # Prepare: every site fails every round
    run = FederatedRun(tiny_study(rounds=2, min_sites=1), tmp_path / "run")
    run.start(["site-1"])
    for k in (1, 2):
        record = RoundRecord(round=k)
        failed = _answer(TaskName.TRAIN, "site-1", error="SiteDataError: no manifest")
        assert not run.record_training(record, ["site-1"], [failed])
        run.end_round(record)
    # Execute
    summary = run.finish()
    # Assert: no model folder, and the summary says why there is none
    assert summary.model is None and summary.last_model is None and summary.selected is None
    assert not (tmp_path / "run" / "model").exists()
    assert not (tmp_path / "run" / "last_model").exists()
    written = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert written["model"] is None and written["rounds_done"] == 2


def _cross_site_study(folder: Path) -> Study:
    """An evaluation of one tiny model: validation splits, every case at site-3."""
    model, sha = _model_for(folder / "model")
    text = (
        f'kind = "evaluate"\n{tiny_study(rounds=1).to_toml()}\n[evaluate]\nsplit = "validation"\n'
    )
    text += '[evaluate.site_splits]\nsite-3 = "all"\n'
    text += f'[[evaluate.models]]\nname = "a"\npath = "{model}"\nsha256 = "{sha}"\n'
    return Study.from_toml(text)


def test_sites_scoring_different_splits_are_also_merged_by_split(tmp_path: Path) -> None:
    # Prepare: two sites score their validation split, site-3 (which trained nothing) every case
    study = _cross_site_study(tmp_path)
    with pytest.raises(StudyError, match="names site-3, not a site of this federation"):
        FederatedRun(study, tmp_path / "wrong").start(["site-1", "site-2"])
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1", "site-2", "site-3"])
    replies = [
        _answer(TaskName.VALIDATE, site, metric_state=_metric_arrays(n, error))
        for site, n, error in (("site-1", 1, 9.0), ("site-2", 2, 8.0), ("site-3", 4, 2.0))
    ]
    record = RoundRecord(round=1)

    # Execute
    run.record_validation(record, ["site-1", "site-2", "site-3"], replies)
    run.end_round(record)
    run.finish()

    # Assert: the merge over all sites, and by split: sums first, then divided
    assert record.validation["mae"] == pytest.approx(19.0 / 7)
    assert record.validation_per_split["validation"]["mae"] == pytest.approx(17.0 / 3)
    assert record.validation_per_split["all"]["mae"] == pytest.approx(2.0 / 4)
    written = json.loads((tmp_path / "run/rounds/1/metrics.json").read_text())
    assert RoundRecord.from_json(written).validation_per_split == record.validation_per_split
    results = json.loads((tmp_path / "run/evaluation.json").read_text())
    assert results["site_splits"] == {
        "site-1": "validation",
        "site-2": "validation",
        "site-3": "all",
    }
    assert results["models"][0]["validation_per_split"] == written["validation_per_split"]
