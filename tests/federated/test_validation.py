"""Poisoned or malformed updates are rejected with a named reason, never averaged."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from neurofed.federated import (
    FedAvg,
    FedBN,
    QuorumError,
    RejectReason,
    SiteUpdate,
    aggregate_round,
    update_norm,
    validate_updates,
)

from .tiny import LOCAL_NAME, params, update

W = "encoder.conv.weight"


def _poisoned(kind: str) -> SiteUpdate:
    values = params(1)
    extra: dict[str, object] = {}
    if kind == "nan":
        values[W][0, 0] = np.nan
    elif kind == "inf":
        values["head.weight"][0, 1] = -np.inf
    elif kind == "shape":
        values[W] = np.zeros((3, 2), np.float32)
    elif kind == "dtype":
        values[W] = values[W].astype(np.float64)
    elif kind == "extra":
        values["decoder.new.weight"] = np.zeros(1, np.float32)
    elif kind == "missing":
        del values["encoder.conv.bias"]
    elif kind == "norm":
        values[W] = values[W] + np.float32(1e6)
    elif kind == "zero-examples":
        return update("bad", values, num_examples=0)
    elif kind == "nan-examples":
        return update("bad", values, num_examples=float("nan"))  # type: ignore[arg-type]
    elif kind == "label-counts":
        extra["label_counts"] = {"idh": -1}
    return update("bad", values, **extra)


@pytest.mark.parametrize(
    ("kind", "reason", "detail"),
    [
        ("nan", RejectReason.NON_FINITE, "'encoder.conv.weight' holds 1 NaN/Inf"),
        ("inf", RejectReason.NON_FINITE, "'head.weight' holds 1 NaN/Inf"),
        ("shape", RejectReason.SHAPE, r"has shape \(3, 2\); the global model has \(2, 3\)"),
        ("dtype", RejectReason.DTYPE, "dtype float64; the global model has float32"),
        ("extra", RejectReason.UNEXPECTED_PARAMETER, "'decoder.new.weight'"),
        ("missing", RejectReason.MISSING_PARAMETER, "'encoder.conv.bias'"),
        ("norm", RejectReason.UPDATE_NORM, "exceeds max_update_norm = 100"),
        ("zero-examples", RejectReason.NUM_EXAMPLES, "num_examples = 0"),
        ("nan-examples", RejectReason.NUM_EXAMPLES, "num_examples = nan"),
        ("label-counts", RejectReason.LABEL_COUNTS, "'idh': -1"),
    ],
)
def test_poisoned_update_is_rejected_with_its_reason(
    kind: str, reason: RejectReason, detail: str, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare
    global_params = params(0)
    good = [update("a", params(2)), update("b", params(3))]
    # Execute
    with caplog.at_level(logging.WARNING, logger="neurofed.federated.validation"):
        accepted, rejections = validate_updates(
            global_params, [*good, _poisoned(kind)], max_update_norm=100.0
        )
    # Assert: the two good ones pass, the bad one is named with its reason, and logged
    assert [u.site_id for u in accepted] == ["a", "b"]
    assert [(r.site_id, r.reason) for r in rejections] == [("bad", reason)]
    assert re.search(detail, rejections[0].detail), rejections[0].detail
    assert f"site 'bad' rejected ({reason.value})" in caplog.text


def test_rejected_update_is_never_averaged() -> None:
    # Prepare: site b is poisoned with NaN; FedAvg of a alone is a itself
    global_params = params(0)
    a = params(2)
    result = aggregate_round(
        FedAvg(), global_params, [update("a", a), _poisoned("nan")], min_sites=1
    )
    # Assert
    assert result.accepted == ("a",)
    for key in global_params:
        np.testing.assert_array_equal(result.params[key], a[key])


def test_too_few_valid_updates_raise_a_quorum_error_with_the_reasons() -> None:
    with pytest.raises(
        QuorumError, match=r"1 of 2 site update\(s\) accepted.*min_sites = 2"
    ) as info:
        aggregate_round(
            FedAvg(),
            params(0),
            [update("a", params(2)), _poisoned("shape")],
            min_sites=2,
        )
    assert info.value.accepted == ("a",)
    assert [r.reason for r in info.value.rejections] == [RejectReason.SHAPE]


def test_second_update_from_a_site_is_rejected() -> None:
    accepted, rejections = validate_updates(
        params(0), [update("a", params(1)), update("a", params(2))]
    )
    assert len(accepted) == 1
    assert [r.reason for r in rejections] == [RejectReason.DUPLICATE_SITE]


def test_local_parameters_may_be_absent_from_updates() -> None:
    # Prepare: a FedBN site sends everything except its normalisation layers
    values = params(1)
    del values[LOCAL_NAME]
    local = FedBN().client_settings().local_parameters
    # Execute
    accepted, rejections = validate_updates(
        params(0), [update("a", values)], local_parameters=local
    )
    # Assert
    assert len(accepted) == 1 and not rejections
    result = aggregate_round(FedBN(), params(0), [update("a", values)], min_sites=1)
    np.testing.assert_array_equal(result.params[LOCAL_NAME], params(0)[LOCAL_NAME])


def test_update_norm_is_over_shared_float_entries() -> None:
    # Prepare: +3 on one float, +4 on another, +1000 on the int counter and on a local entry
    g = {"a": np.zeros(1), "b": np.zeros(1, np.float32), "n": np.array(0), "x.norm.w": np.zeros(1)}
    p = {
        "a": np.array([3.0]),
        "b": np.array([4.0], np.float32),
        "n": np.array(1000),
        "x.norm.w": np.array([1000.0]),
    }
    # Execute / Assert
    assert update_norm(g, p, local_parameters=("*norm*",)) == 5.0


def test_max_update_norm_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_update_norm = 0"):
        validate_updates(params(0), [], max_update_norm=0)
