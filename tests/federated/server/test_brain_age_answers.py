"""The server accepts a brain-age validation answer with and without its per-case arrays."""

from __future__ import annotations

import numpy as np
import pytest

from neurofed.federated.protocol import ProtocolError
from neurofed.federated.server.answers import check_metric_state, mergeable, state_schema
from neurofed.tasks import merge_states
from tests.federated.conftest import tiny_study


def test_a_brain_age_state_is_accepted_with_and_without_its_cases() -> None:
    # Prepare: what two sites send, one with per-case values (its custodian allows them)
    study = tiny_study()
    task = study.build_task()
    schema = state_schema(task, study.train_config(device="cpu"))
    sums = {"num_examples": 3, "sum_abs_error": 9.0, "sum_x": 1.0, "sum_y": 2.0}
    sums |= {"sum_xx": 3.0, "sum_yy": 5.0, "sum_xy": 3.5}
    without = {f"sum/{k}": np.asarray(v) for k, v in sums.items()}
    cases = {
        "case/age/prediction": np.array([52.0, 61.0, 48.0]),
        "case/age/target": np.array([50.0, 58.0, 44.0]),
    }

    # Execute
    plain = check_metric_state(without, schema)
    full = check_metric_state(without | cases, schema)

    # Assert: the arrays are optional, and mixing both kinds merges on the sums alone
    assert set(schema.optional) == set(cases)
    assert not any(name.startswith("case/") for name in schema.entries)
    assert full.cases["age/target"].tolist() == [50.0, 58.0, 44.0] and plain.cases == {}
    merged = merge_states(mergeable([plain, full]))
    assert merged.cases == {} and int(merged.sums["num_examples"]) == 6
    assert task.finalize(full) == task.finalize(plain)
    with pytest.raises(ProtocolError, match=r"case/age/prediction.*expected \(cases, \)"):
        check_metric_state(without | cases | {"case/age/prediction": np.ones((3, 2))}, schema)
