"""One trip per round (``[participation] validate_incoming``): training sites score the model
they receive before they train, as FeTS did. The server's controller runs here against real
site workers, without NVFlare's transport: the run gives the model and the validations of the
two-trip run, in fewer trips; an interrupted run resumes; sites that do not train still score
every model; the protocol's nested answer is checked like any other."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nvflare.app_common.abstract.fl_model import FLModel

from neurofed.federated.clock import site_clocks, site_round
from neurofed.federated.protocol import (
    MetaField,
    ProtocolError,
    SiteAnswer,
    TaskName,
    TaskRequest,
    ValidateResult,
)
from neurofed.federated.server import RoundRecord
from neurofed.federated.server.run_folder import load_round_checkpoint
from neurofed.federated.server.timing import estimate_rounds
from neurofed.federated.site.audit import read_audit_log
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.study import Study, StudyError
from neurofed.federated.study.participation import ParticipationConfig
from tests.federated.conftest import drive_controller, tiny_study, worker_client

ONE_TRIP = ParticipationConfig(validate_incoming=True)

Trips = list[tuple[str, int, tuple[str, ...]]]


def _workers(root: Path, sites: list[Path]) -> dict[str, SiteWorker]:
    return {
        f"site-{k}": SiteWorker(
            f"site-{k}",
            SiteConfig(
                site,
                device="cpu",
                state_dir=root / "state" / f"site-{k}",
                audit_log=root / "audit" / f"site-{k}.log",
                min_cases_per_metric=1,  # the tiny sites validate on one or two cases
            ),
        )
        for k, site in enumerate(sites, start=1)
    }


def _run(
    study: Study,
    run_dir: Path,
    workers: Mapping[str, SiteWorker],
    trips: Trips,
    stop: Callable[[str, int], bool] = lambda task, number: False,
) -> dict[str, Any]:
    """The study's controller over ``workers`` (``stop``: raise instead of sending this
    task); returns what the lead's neurofed.progress shows."""

    def record(task_name: str, data: FLModel, targets: list[str], _: float) -> None:
        number = int(data.meta[MetaField.ROUND.value])
        if stop(task_name, number):
            raise KeyboardInterrupt
        trips.append((task_name, number, tuple(targets)))

    clients = {site: worker_client(worker) for site, worker in workers.items()}
    controller = drive_controller(study, run_dir, clients, before_send=record)
    assert controller.progress is not None
    progress: dict[str, Any] = controller.progress.to_json()
    return progress


def _rounds(run_dir: Path, count: int) -> list[dict[str, Any]]:
    return [
        json.loads((run_dir / "rounds" / str(k) / "metrics.json").read_text())
        for k in range(1, count + 1)
    ]


def _same_model(one: Path, other: Path) -> None:
    a, b = load_round_checkpoint(one).params, load_round_checkpoint(other).params
    assert a.keys() == b.keys()
    for name in a:
        np.testing.assert_allclose(a[name], b[name], rtol=1e-5, atol=1e-6)


def test_one_trip_per_round_gives_the_model_and_validations_of_two(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: the same study, scored after each round or by the next round's training sites
    two = tiny_study(rounds=3)
    one = dataclasses.replace(two, participation=ONE_TRIP)
    two_trips: Trips = []
    one_trip: Trips = []
    # Execute
    _run(two, tmp_path / "two", _workers(tmp_path / "w2", age_sites), two_trips)
    shown = _run(one, tmp_path / "one", _workers(tmp_path / "w1", age_sites), one_trip)
    # Assert: 3 trips fewer (a validation task after the last round only), same results
    sites = ("site-1", "site-2")
    assert [t[:2] for t in two_trips] == [
        ("train", 1),
        ("validate", 1),
        ("train", 2),
        ("validate", 2),
        ("train", 3),
        ("validate", 3),
    ]
    assert one_trip == [
        ("train", 1, sites),
        ("train", 2, sites),
        ("train", 3, sites),
        ("validate", 3, sites),
    ]
    for a, b in zip(_rounds(tmp_path / "two", 3), _rounds(tmp_path / "one", 3), strict=True):
        assert b["validation_per_site"] and not b["failed"], b
        assert b["validation_per_site"].keys() == a["validation_per_site"].keys()
        for site in a["validation_per_site"]:
            assert b["validation_per_site"][site] == pytest.approx(
                a["validation_per_site"][site], rel=1e-5
            )
        assert b["validation"] == pytest.approx(a["validation"], rel=1e-5)
        assert b["train"].keys() == a["train"].keys()
    _same_model(
        tmp_path / "two" / "checkpoints" / "round-3", tmp_path / "one" / "checkpoints" / "round-3"
    )
    # the lead's progress shows each round's value once the next round scored its model
    values = [entry["value"] for entry in shown["history"]]
    assert values == [r["validation"]["mae"] for r in _rounds(tmp_path / "one", 3)]
    summary = json.loads((tmp_path / "one" / "summary.json").read_text())
    assert (
        summary["selected"]["round"]
        == json.loads((tmp_path / "two" / "summary.json").read_text())["selected"]["round"]
    )
    # each site logged each validation as its own task, of the round whose model it scored,
    # before the training that followed it
    log = read_audit_log(tmp_path / "w1" / "audit" / "site-1.log")
    tasks = [(r["event"], r["round"]) for r in log if r.get("event", "").startswith("round-")]
    assert tasks == [
        ("round-train", 1),
        ("round-validate", 1),
        ("round-train", 2),
        ("round-validate", 2),
        ("round-train", 3),
        ("round-validate", 3),
    ]


def test_a_run_interrupted_between_rounds_resumes_and_scores_the_model_it_left(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: stopped as round 3's training was sent (round 2's model not yet scored)
    study = dataclasses.replace(tiny_study(rounds=3), participation=ONE_TRIP)
    workers = _workers(tmp_path / "w", age_sites)
    trips: Trips = []
    with pytest.raises(KeyboardInterrupt):
        _run(study, tmp_path / "run", workers, trips, stop=lambda t, n: (t, n) == ("train", 3))
    assert not _rounds(tmp_path / "run", 2)[1]["validation_per_site"]
    # Execute
    _run(study, tmp_path / "run", workers, trips)
    # Assert: round 2's model was scored by round 3's training sites; every round validated
    assert trips[-2:] == [("train", 3, ("site-1", "site-2")), ("validate", 3, ("site-1", "site-2"))]
    for record in _rounds(tmp_path / "run", 3):
        assert record["validation_per_site"] and not record["failed"], record
    reference: Trips = []
    _run(study, tmp_path / "whole", _workers(tmp_path / "w0", age_sites), reference)
    _same_model(
        tmp_path / "run" / "checkpoints" / "round-3", tmp_path / "whole" / "checkpoints" / "round-3"
    )


def test_sites_that_do_not_train_in_a_round_still_score_the_model_it_receives(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: one of the two sites trains per round
    half = ParticipationConfig(policy="fraction", fraction=0.5, validate_incoming=True)
    study = dataclasses.replace(tiny_study(rounds=3, min_sites=1), participation=half)
    trips: Trips = []
    # Execute
    _run(study, tmp_path / "run", _workers(tmp_path / "w", age_sites), trips)
    # Assert: every live site scored every round's model; the site not training by a task
    for record in _rounds(tmp_path / "run", 3):
        assert len(record["targets"]) == 1 and record["aggregated"], record
        assert record["validation_per_site"] and not record["failed"], record
    for number in (2, 3):
        train = next(t for t in trips if t[:2] == ("train", number))
        validate = next(t for t in trips if t[:2] == ("validate", number - 1))
        assert set(train[2]) | set(validate[2]) == {"site-1", "site-2"}
        assert not set(train[2]) & set(validate[2])


def test_a_training_answer_without_the_validation_it_was_asked_for_fails_that_validation(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: site-2 answers training as a site that ignores validate_round
    study = dataclasses.replace(tiny_study(rounds=2), participation=ONE_TRIP)
    workers = _workers(tmp_path / "w", age_sites)
    honest = workers["site-2"].handle

    def forgetful(task: str, params: Mapping[str, Any], meta: Mapping[str, Any]) -> SiteAnswer:
        meta = {k: v for k, v in meta.items() if k != MetaField.VALIDATE_ROUND.value}
        return honest(task, params, meta)

    workers["site-2"].handle = forgetful  # type: ignore[method-assign]
    # Execute
    _run(study, tmp_path / "run", workers, [])
    # Assert: site-2's validation of round 1's model is a failure that says why; round 2 is
    # trained by both
    first, second = _rounds(tmp_path / "run", 2)
    assert "site-2" not in first["validation_per_site"]
    assert "no validation of the incoming model" in first["failed"]["site-2"]
    assert second["accepted"] == ["site-1", "site-2"]


# -- the study and the protocol --------------------------------------------------------------


def test_validate_incoming_is_part_of_the_hash_only_when_set_and_refused_with_secagg() -> None:
    # Prepare
    base = tiny_study().to_dict()
    # Execute
    plain = Study.from_dict(base)
    off = Study.from_dict(base | {"participation": {"policy": "all", "validate_incoming": False}})
    on = Study.from_dict(base | {"participation": {"validate_incoming": True}})
    # Assert
    same = Study.from_dict(base | {"participation": {"policy": "all"}})
    assert off.content_hash == same.content_hash
    assert "validate_incoming" not in off.to_dict()["participation"]
    assert on.to_dict()["participation"] == {"policy": "all", "validate_incoming": True}
    assert on.content_hash != plain.content_hash
    assert "one trip per round" in on.describe()
    with pytest.raises(StudyError, match=r"validate_incoming.*use true"):
        Study.from_dict(base | {"participation": {"validate_incoming": "yes"}})
    secure = base | {"strategy": {"name": "fedavg", "secagg": True}}
    with pytest.raises(StudyError, match="validate_incoming = true is invalid with secagg"):
        Study.from_dict(secure | {"participation": {"validate_incoming": True}})


def test_the_nested_validation_travels_in_a_train_answer_and_nowhere_else() -> None:
    # Prepare
    request = TaskRequest(study={"name": "x"}, study_hash="ab" * 32, round=4, validate_round=3)
    scored = SiteAnswer(result=ValidateResult(metric_state={"sum": np.ones(2)}, seconds=1.5))
    train = dataclasses.replace(SiteAnswer.failure("ParameterError: shape"), validation=scored)
    # Execute
    decoded = TaskRequest.decode(request.encode())
    params, meta = train.encode()
    back = SiteAnswer.decode(TaskName.TRAIN, "site-1", params, meta)
    # Assert
    assert decoded.validate_round == 3 and decoded.for_validation().round == 3
    assert decoded.for_validation().validate_round is None
    assert back.error == "ParameterError: shape" and back.validation is not None
    assert isinstance(back.validation.result, ValidateResult)
    np.testing.assert_array_equal(back.validation.result.metric_state["sum"], np.ones(2))
    with pytest.raises(ProtocolError, match="only a train answer"):
        SiteAnswer.decode(TaskName.VALIDATE, "site-1", {}, meta)
    with pytest.raises(ProtocolError, match="validation is"):
        SiteAnswer.decode(TaskName.TRAIN, "site-1", {}, {**meta, "validation": [1, 2]})
    for bad in (0, 4, 5, "3"):
        with pytest.raises(ProtocolError, match="validate_round"):
            TaskRequest.decode({**request.encode(), MetaField.VALIDATE_ROUND.value: bad})


def test_the_estimate_counts_one_trip_per_round_and_a_validation_trip_after_the_last() -> None:
    # Prepare: two rounds, one site, 10 training and 4 validation cases
    val = {"site-1": {"num_examples": 4.0}}
    history = [
        RoundRecord(
            round=k,
            train={"site-1": {"num_examples": 10.0}},
            validation_per_site=val,
            aggregated=True,
        )
        for k in (1, 2)
    ]
    clock = site_clocks(["site-1"], seed=0)["site-1"]
    # Execute
    (_, first), (_, second) = estimate_rounds(history, seed=0, epochs=1, incoming=True)
    # Assert: round 1's model is scored in round 2's trip; round 2's in a trip of its own
    r1 = site_round(clock, "site-1", seed=0, round_number=1, train_cases=10, val_cases=4)
    r2 = site_round(clock, "site-1", seed=0, round_number=2, train_cases=10, val_cases=4)
    assert first.seconds == pytest.approx(r1.train_trip)
    assert second.train_seconds == pytest.approx(r2.train_trip + r2.validate)
    assert second.validate_seconds == pytest.approx(r2.validate_trip)
    (_, a), (_, b) = estimate_rounds(history, seed=0, epochs=1)
    assert a.seconds + b.seconds > first.seconds + second.seconds  # one download fewer
