"""Every message between server and site: encode and decode are inverse, bad fields are named."""

from __future__ import annotations

import dataclasses
import json
from typing import Any

import numpy as np
import pytest

from neurofed.federated.protocol import (
    FingerprintResult,
    KeysResult,
    MetaField,
    PersonalisedSummary,
    PlanSummary,
    ProtocolError,
    RevealResult,
    RunSummary,
    SelectedRound,
    SharesResult,
    SiteAnswer,
    TaskName,
    TaskRequest,
    TrainResult,
    ValidateResult,
    decode_plan,
    encode_plan,
    round_of,
)
from neurofed.preprocess.plan import PlanError

_ANSWERS = {
    TaskName.TRAIN: TrainResult(
        params={"w": np.ones((2, 3), np.float32), "n": np.array(5)},
        num_examples=7,
        label_counts={"segmentation": 7, "idh": 3},
        metrics={"train_loss": 0.5, "steps": 4.0, "seconds": 1.5},
    ),
    TaskName.VALIDATE: ValidateResult(
        metric_state={"sum/num_examples": np.array(3), "case/dice": np.array([0.5, 0.7, 0.9])},
        personalised_metric_state={"sum/num_examples": np.array(3)},
        seconds=0.25,
    ),
    TaskName.FINGERPRINT: FingerprintResult(fingerprint='{"num_cases": 3}'),
    TaskName.SECAGG_KEYS: KeysResult(b"c" * 32, b"m" * 32, 12, {"idh": 3}),
    TaskName.SECAGG_SHARES: SharesResult({"site-2": b"s" * 160}, b"d" * 32),
    TaskName.SECAGG_UNMASK: RevealResult(seeds={"site-1": b"x" * 68}, keys={"site-2": b"y" * 68}),
}


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, dict | TrainResult | ValidateResult | FingerprintResult | KeysResult):
        left = a if isinstance(a, dict) else vars(a)
        right = b if isinstance(b, dict) else vars(b)
        return left.keys() == right.keys() and all(_same(left[k], right[k]) for k in left)
    if isinstance(a, np.ndarray):
        return isinstance(b, np.ndarray) and a.dtype == b.dtype and np.array_equal(a, b)
    return bool(a == b)


@pytest.mark.parametrize("task", list(TaskName))
def test_every_answer_decodes_to_what_was_encoded(task: TaskName) -> None:
    # Prepare
    answer = SiteAnswer(result=_ANSWERS[task])
    # Execute
    params, meta = answer.encode()
    decoded = SiteAnswer.decode(task, "site-1", params, meta)
    # Assert
    assert decoded.site_id == "site-1" and decoded.error is None and not decoded.refused
    assert _same(decoded.result, answer.result)
    assert _same(answer.meta, meta) and _same(answer.params, params)
    assert (params != {}) == (task is TaskName.TRAIN)  # only training sends parameters


def test_a_failure_or_refusal_carries_its_reason_only() -> None:
    refused = SiteAnswer.failure("refused: not approved", refused=True)
    params, meta = refused.encode()
    assert params == {} and meta == {"error": "refused: not approved", "refused": True}
    back = SiteAnswer.decode(TaskName.VALIDATE, "site-2", params, meta)
    assert back.refused and back.error == "refused: not approved" and back.result is None
    assert SiteAnswer.failure("OSError: disk").meta == {"error": "OSError: disk"}
    with pytest.raises(ValueError, match="either a result or an error"):
        SiteAnswer()


@pytest.mark.parametrize(
    ("task", "params", "meta", "message"),
    [
        (
            TaskName.TRAIN,
            {},
            {"num_examples": "7"},
            "num_examples is '7' (str); expected an integer",
        ),
        (TaskName.TRAIN, {}, {"num_examples": True}, "num_examples is True (bool)"),
        (TaskName.TRAIN, {}, {"label_counts": [1, 2]}, "label_counts is [1, 2] (list)"),
        (TaskName.TRAIN, {}, {"train_metrics": {"loss": "low"}}, "train_metrics['loss']"),
        (
            TaskName.TRAIN,
            {"w": np.array(["a"], dtype=object)},
            {},
            "the parameters['w'] is array(['a'], dtype=object)",
        ),
        (TaskName.VALIDATE, {}, {"metric_state": {"sum/x": "3"}}, "metric_state['sum/x']"),
        (TaskName.VALIDATE, {}, {"validate_seconds": "fast"}, "validate_seconds is 'fast'"),
        (TaskName.FINGERPRINT, {}, {}, "fingerprint is None (NoneType); expected text"),
        ("predict", {}, {}, "unknown task 'predict'"),
    ],
)
def test_a_malformed_answer_names_the_field_and_value(
    task: str, params: dict[str, Any], meta: dict[str, Any], message: str
) -> None:
    with pytest.raises(ProtocolError) as caught:
        SiteAnswer.decode(task, "site-1", params, meta)
    assert message in str(caught.value)


def test_a_task_request_round_trips_and_a_missing_study_is_named() -> None:
    request = TaskRequest(study={"name": "fets", "rounds": 3}, study_hash="ab" * 32, round=2)
    meta = request.encode()
    assert set(meta) == {"study", "study_hash", "round"}
    assert TaskRequest.decode(meta) == request
    assert json.loads(json.dumps(meta)) == meta  # plain JSON values only
    with pytest.raises(ProtocolError, match="no study and study hash"):
        TaskRequest.decode({"study_hash": "ab" * 32, "round": 1})
    with pytest.raises(ProtocolError, match="round is '2' \\(str\\)"):
        TaskRequest.decode(meta | {"round": "2"})
    assert round_of(meta) == 2 and round_of({"round": "x"}) is None and round_of({}) is None


def test_the_class_logits_of_a_distill_task_round_trip_and_junk_is_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    logits = {
        "class_logits/idh": np.array([[-1.0], [2.0]], np.float32),
        "class_counts/idh": np.array([12, 30]),
    }
    request = TaskRequest(study={"name": "m"}, study_hash="ab" * 32, round=2, class_logits=logits)
    decoded = TaskRequest.decode(request.encode())
    assert decoded.class_logits.keys() == logits.keys()
    np.testing.assert_array_equal(
        decoded.class_logits["class_logits/idh"], logits["class_logits/idh"]
    )
    for junk in (
        {"class_logits/ki67": np.zeros((2, 1))},  # no such head
        {"class_logits/grade": np.zeros((3, 1))},  # grade has 3 logits
        {"class_logits/idh": np.array([[np.nan], [0.0]])},
        "not a table",
    ):
        meta = request.encode() | {"class_logits": junk}
        with caplog.at_level("WARNING"):
            task = TaskRequest.decode(meta)  # the task itself still runs
        assert task.class_logits == {} and task.round == 2
        assert "ignoring the class logits" in caplog.text
        caplog.clear()


def test_the_plan_codec_refuses_a_plan_whose_id_is_not_its_hash() -> None:
    assert decode_plan({}) is None and encode_plan(None) == {}
    with pytest.raises(PlanError, match="without its plan_id"):
        decode_plan({MetaField.PLAN.value: {}})
    with pytest.raises(PlanError, match="without its plan_id"):
        decode_plan({MetaField.PLAN_ID.value: "0" * 12})


def test_a_run_summary_writes_the_same_json_it_reads() -> None:
    summary = RunSummary(
        study="fets",
        study_hash="ab" * 32,
        rounds_done=3,
        rounds=3,
        selected=SelectedRound(round=2, metric="mean_dice", direction="max", value=0.71),
        dropped=("site-3",),
        refused={"site-4": "refused: not approved"},
        personalised=PersonalisedSummary(
            round=3, validation={"mae": 4.0}, validation_per_site={"site-1": {"mae": 4.0}}
        ),
        plan=PlanSummary(
            plan_id="0123456789ab",
            spacing=(2.0, 2.0, 3.5),
            patch_size=(96, 112, 56),
            volume_shape=(120, 140, 70),
            batch_size=2,
            num_cases=12,
            fingerprint_id="f" * 12,
            sites=("site-1", "site-2"),
            failed={"site-3": "too few cases"},
        ),
    )
    written = json.loads(json.dumps(summary.to_json()))
    assert list(written) == [
        "study",
        "study_hash",
        "rounds_done",
        "rounds",
        "selected",
        "dropped",
        "refused",
        "model",
        "last_model",
        "personalised",
        "plan",
    ]
    assert RunSummary.from_json(written) == summary
    plain = RunSummary("fets", "ab" * 32, 0, 3, selected=None)
    assert "plan" not in plain.to_json() and RunSummary.from_json(plain.to_json()) == plain
    nan = SelectedRound(round=1, metric="mae", direction="min", value=float("nan"))
    assert nan.to_json()["value"] is None


def test_an_audit_head_travels_with_any_answer_and_a_bad_one_is_named() -> None:
    answer = SiteAnswer.failure("refused: not approved", refused=True)
    anchored = SiteAnswer(result=_ANSWERS[TaskName.TRAIN], audit_head=(7, "ab" * 32))
    for one in (anchored, dataclasses.replace(answer, audit_head=(3, "cd" * 32))):
        params, meta = one.encode()
        assert meta["audit_head"]["seq"] in (7, 3)
        back = SiteAnswer.decode(TaskName.TRAIN, "site-1", params, meta)
        assert back.audit_head == one.audit_head
    params, meta = anchored.encode()
    with pytest.raises(ProtocolError, match="expected 64 hex digits"):
        SiteAnswer.decode(
            TaskName.TRAIN, "s", params, meta | {"audit_head": {"seq": 1, "sha256": "x"}}
        )
    with pytest.raises(ProtocolError, match=r"audit_head\.seq"):
        SiteAnswer.decode(
            TaskName.TRAIN, "s", params, meta | {"audit_head": {"seq": 0, "sha256": "ab" * 32}}
        )
