"""A brain-age site's validation answer: its per-case predictions leave only where allowed."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from neurofed.federated.protocol import MetaField
from neurofed.federated.server.run import FederatedRun
from neurofed.federated.site import SiteConfig, SiteWorker
from neurofed.federated.study import Study
from neurofed.tasks import MetricState
from tests.federated.conftest import tiny_study


@pytest.mark.parametrize(
    ("settings", "cases_sent"),
    [
        ({}, False),  # the default: not even the sums of fewer than 5 cases
        ({"min_cases_per_metric": 1}, False),  # enough cases, but per-case values not allowed
        ({"min_cases_per_metric": 1, "share_case_values": ("tiny-age-data",)}, True),
        ({"share_case_values": ("tiny-age-data",)}, False),  # allowed, but too few cases
    ],
    ids=["default", "min-1", "cases-allowed", "allowed-too-few"],
)
def test_predictions_and_ages_leave_a_site_only_as_its_custodian_allows(
    settings: dict[str, Any], cases_sent: bool, age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: a brain-age study on dataset tiny-age-data, validated on one case of site-1
    study = Study.from_toml('dataset = "tiny-age-data"\n' + tiny_study().to_toml())
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    config = SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "state", **settings)

    # Execute
    answer = SiteWorker("site-1", config).handle(
        "validate", run.params, run.task_request(1).encode()
    )

    # Assert: the sums' names always (zeros below min_cases); the pair of arrays only when
    # allowed, for as many cases
    assert answer.error is None, answer.error
    state = MetricState.from_arrays(answer.meta[MetaField.METRIC_STATE.value])
    assert {"num_examples", "sum_abs_error", "sum_xy"} <= set(state.sums)
    expected = {"age/prediction", "age/target"} if cases_sent else set()
    assert set(state.cases) == expected
    if cases_sent:
        assert state.cases["age/prediction"].shape == (int(state.sums["num_examples"]),)
    withheld = answer.meta.get(MetaField.WITHHELD.value)
    too_few = "min_cases_per_metric" not in settings
    assert withheld == (["every metric: 1 case(s), fewer than 5"] if too_few else None)
    if too_few:  # a sum over one case is that patient's age: nothing of it leaves
        assert all(float(v) == 0.0 for v in state.sums.values())
    else:
        assert int(state.sums["num_examples"]) == 1
