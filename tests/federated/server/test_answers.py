"""A lying site never stops a study: every answer is checked against the study before use.

The expected metric-state entries come from the task's own metric code (a contract over every
task: they equal what a real site sends), and a property-style run feeds the server many
malformed answers next to honest ones: each is that site's failure for its round, recorded with
a reason, and the study still finishes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurofed.federated.protocol import (
    MetaField,
    ProtocolError,
    SiteAnswer,
    TaskName,
    ValidateResult,
)
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.server.answers import (
    MAX_CASES,
    Entry,
    StateSchema,
    check_metric_state,
    state_schema,
)
from neurofed.keys import TaskId
from neurofed.tasks.sharing import share_state
from neurofed.training import LocalTrainer
from tests.federated.conftest import tiny_study
from tests.training.conftest import bids_site, glioma_site
from tests.training.tiny import tiny_config

__all__ = ["bids_site", "glioma_site"]  # fixtures shared with the training tests


@pytest.mark.parametrize("task_id", list(TaskId))
def test_the_expected_entries_are_what_a_real_site_sends(
    task_id: TaskId, request: pytest.FixtureRequest
) -> None:
    # Prepare: a real site's validation state of the task
    site = request.getfixturevalue(
        "glioma_site" if task_id in (TaskId.TUMOR_REGIONS, TaskId.GLIOMA_MULTITASK) else "bids_site"
    )
    config = tiny_config(task_id)
    trainer = LocalTrainer.from_sites(config, site)
    # Execute
    expected = state_schema(trainer.task, config)
    # Assert: what a site sends by default, and with per-case values allowed
    state = trainer.evaluate()
    by_default, _ = share_state(state, min_cases=1)
    with_cases, _ = share_state(state, min_cases=1, allow_cases=True)
    assert StateSchema.of(by_default).entries == expected.entries
    assert StateSchema.of(with_cases).entries == {**expected.entries, **expected.optional}
    assert expected.entries  # every task reports something
    assert not any(name.startswith("case/") for name in expected.entries)  # never by default


# -- one state, checked --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def honest(tmp_path_factory: pytest.TempPathFactory) -> dict[str, np.ndarray]:
    """A brain-age metric state as a site sends it (sums only)."""
    sums = {"num_examples": 3, "sum_abs_error": 9.0, "sum_x": 1.0, "sum_y": 2.0}
    sums |= {"sum_xx": 3.0, "sum_yy": 5.0, "sum_xy": 3.5}
    return {f"sum/{k}": np.asarray(v) for k, v in sums.items()}


@pytest.fixture(scope="module")
def schema(honest: dict[str, np.ndarray]) -> StateSchema:
    study = tiny_study()
    return state_schema(study.build_task(), study.train_config(device="cpu"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"sum/extra": np.array(1)}, "unexpected ['sum/extra']"),
        ({"sum/num_examples": np.array(-3)}, "negative count (-3)"),
        ({"sum/sum_x": np.array(np.nan)}, "NaN or infinite sums"),
        ({"sum/sum_x": np.array(np.inf)}, "NaN or infinite sums"),
        ({"sum/sum_x": np.array(3)}, "holds int64 values; expected real numbers"),
        ({"sum/num_examples": np.array(3.0)}, "expected integers"),
        ({"sum/sum_xy": np.ones(4)}, "has shape (4,); expected ()"),
    ],
    ids=["extra", "negative", "nan", "inf", "int-for-real", "real-for-int", "shape"],
)
def test_a_malformed_state_is_named(
    honest: dict[str, np.ndarray], schema: StateSchema, change: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        check_metric_state(honest | change, schema)
    assert message in str(caught.value)


def test_missing_entries_and_too_many_cases_are_named(
    honest: dict[str, np.ndarray], schema: StateSchema
) -> None:
    partial = {k: v for k, v in honest.items() if k != "sum/sum_xy"}
    with pytest.raises(ProtocolError, match=r"missing \['sum/sum_xy'\]"):
        check_metric_state(partial, schema)
    assert check_metric_state({}, schema).is_empty  # a site without validation cases
    dice = StateSchema({"case/dice": Entry(per_case=True, integer=False, shape=())})
    with pytest.raises(ProtocolError, match=r"infinite values"):
        check_metric_state({"case/dice": np.array([0.5, np.inf])}, dice)
    assert check_metric_state({"case/dice": np.array([0.5, np.nan])}, dice).cases  # NaN: no value
    with pytest.raises(ProtocolError, match=f"at most {MAX_CASES}"):
        check_metric_state({"case/dice": np.zeros(MAX_CASES + 1)}, dice)


# -- a study fed junk ----------------------------------------------------------------------------

_JUNK = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=30),
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=12), children, max_size=4)
    ),
    max_leaves=12,
)
_ARRAYS = st.sampled_from(
    [
        np.array(-1),
        np.array(np.nan),
        np.array(np.inf),
        np.zeros((3, 3)),
        np.array(["a"], dtype=object),
        np.zeros(0),
        np.array(2**40),
        np.full(5, 1e308),
    ]
)


@st.composite
def _malformed_validation(draw: st.DrawFn, honest: dict[str, np.ndarray]) -> dict[str, Any]:
    state: dict[str, Any] = dict(honest)
    how = draw(st.sampled_from(["drop", "add", "replace", "junk", "nest", "personal"]))
    names = sorted(state)
    if how == "drop":
        del state[draw(st.sampled_from(names))]
    elif how == "add":
        state[draw(st.text(min_size=1, max_size=20))] = draw(_ARRAYS)
    elif how == "replace":
        state[draw(st.sampled_from(names))] = draw(_ARRAYS)
    elif how == "junk":
        return {MetaField.METRIC_STATE.value: draw(_JUNK)}
    elif how == "nest":
        state[draw(st.sampled_from(names))] = {"a": draw(_JUNK)}
    else:
        return {MetaField.METRIC_STATE.value: honest, "personalised_metric_state": draw(_JUNK)}
    return {MetaField.METRIC_STATE.value: state}


@st.composite
def _malformed_training(draw: st.DrawFn) -> dict[str, Any]:
    field = draw(st.sampled_from(["num_examples", "label_counts", "train_metrics", "error"]))
    value = draw(
        _JUNK
        | st.just(-5)
        | st.just({"segmentation": 10**9})
        | st.just({"idh": -1})
        | st.just({"not-a-head": 1})
        | st.just({"train_loss": float("inf")})
        | st.just(True)
    )
    meta = {MetaField.NUM_EXAMPLES.value: 2, MetaField.LABEL_COUNTS.value: {}, field: value}
    if field == "error" and isinstance(value, str):
        meta["refused"] = draw(_JUNK)
    return meta


def _decode(task: TaskName, site: str, params: Any, meta: Any) -> SiteAnswer:
    """What the controller does with one site's result: decode, or record that it is junk."""
    try:
        return SiteAnswer.decode(task, site, params, meta)
    except ProtocolError as error:
        return SiteAnswer.failure(f"malformed answer: {error}", site_id=site)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_a_study_fed_malformed_answers_still_finishes(
    tmp_path_factory: pytest.TempPathFactory, honest: dict[str, np.ndarray], data: st.DataObject
) -> None:
    # Prepare: two honest sites and one that lies in every round
    run = FederatedRun(tiny_study(rounds=3, min_sites=2), tmp_path_factory.mktemp("junk"))
    run.start(["site-1", "site-2", "site-3"])
    for round_number in (1, 2, 3):
        record = RoundRecord(round=round_number)
        params = {k: v.copy() for k, v in run.params.items()}
        good = {MetaField.NUM_EXAMPLES.value: 2, MetaField.LABEL_COUNTS.value: {"segmentation": 0}}
        bad = data.draw(_malformed_training())
        training = [
            _decode(TaskName.TRAIN, "site-1", params, good),
            _decode(TaskName.TRAIN, "site-2", params, good),
            _decode(TaskName.TRAIN, "site-3", params, bad),
        ]
        # Execute
        assert run.record_training(record, ["site-1", "site-2", "site-3"], training)
        validation = [
            _decode(TaskName.VALIDATE, s, {}, {MetaField.METRIC_STATE.value: honest})
            for s in ("site-1", "site-2")
        ] + [_decode(TaskName.VALIDATE, "site-3", {}, data.draw(_malformed_validation(honest)))]
        run.record_validation(record, ["site-1", "site-2", "site-3"], validation)
        run.end_round(record)
        # Assert: the honest sites carry the round; the liar, if it lied, is a named failure
        assert {"site-1", "site-2"} <= set(record.accepted)
        assert record.validation["num_examples"] in (6.0, 9.0)
        for site, reason in record.failed.items():
            assert site == "site-3" and reason, record.failed
    summary = run.finish()
    assert summary.rounds_done == 3 and summary.selected is not None
    written = json.loads((run.run_dir / "rounds" / "3" / "metrics.json").read_text())
    assert written["accepted"][:2] == ["site-1", "site-2"]


def test_an_aggregated_round_survives_a_crash_in_its_validation(tmp_path: Path) -> None:
    # Prepare: a round aggregated, then the server dies before validating it
    run = FederatedRun(tiny_study(rounds=2, min_sites=1), tmp_path / "run")
    run.start(["site-1"])
    params = {
        k: (v + 1).astype(v.dtype) if v.dtype.kind == "f" else v for k, v in run.params.items()
    }
    answer = SiteAnswer.decode(TaskName.TRAIN, "site-1", params, {"num_examples": 2})
    run.record_training(RoundRecord(round=1), ["site-1"], [answer])
    # Execute: a new server process resumes the run folder
    again = FederatedRun(tiny_study(rounds=2, min_sites=1), tmp_path / "run")
    first = again.start(["site-1"])
    # Assert: round 1's model is kept, and the run goes on at round 2
    assert first == 2
    name = next(k for k, v in params.items() if v.dtype.kind == "f")
    np.testing.assert_array_equal(again.params[name], run.params[name])
    assert again.history[0].aggregated and again.history[0].validation == {}


def test_a_validation_answer_that_is_honest_passes_unchanged(
    honest: dict[str, np.ndarray], schema: StateSchema
) -> None:
    state = check_metric_state(ValidateResult(honest).metric_state, schema)
    assert int(state.sums["num_examples"]) == 3


def test_sites_that_send_per_case_values_merge_with_sites_that_do_not() -> None:
    from neurofed.federated.server.answers import mergeable
    from neurofed.tasks import MetricState, merge_states
    from neurofed.tasks.sharing import case_mean, share_state

    allowed = MetricState(sums={}, cases={"dice": np.array([0.2, 0.4, 0.6, 0.8, 1.0])})
    other = MetricState(sums={}, cases={"dice": np.array([0.5] * 5)})
    with_cases, _ = share_state(allowed, min_cases=5, allow_cases=True)
    without, _ = share_state(other, min_cases=5)

    merged = merge_states(mergeable([with_cases, without]))

    assert merged.cases == {} and case_mean(merged, "dice") == pytest.approx(0.55)
    assert mergeable([with_cases, with_cases]) == [with_cases, with_cases]  # kept when all send
