"""What `neurofed simulate` prints for a round: its metric, or why it has none."""

from __future__ import annotations

from neurofed.federated.engine.simulation import _round_label
from tests.federated.conftest import tiny_study


def test_a_round_says_its_metric_or_why_it_has_none() -> None:
    study = tiny_study()
    scored = {"round": 1, "aggregated": True, "validation": {"mae": 3.5}}
    silent = {"round": 1, "aggregated": True, "validation": {}}
    withheld = silent | {"withheld": {"site-1": ["every metric: 1 case(s), fewer than 5"]}}

    assert _round_label(study, scored, "mae") == "mae 3.5"
    assert _round_label(study, silent, "mae") == "aggregated, not validated"
    assert _round_label(study, {"round": 1, "aggregated": False}, "mae") == "not aggregated"
    label = _round_label(study, withheld, "mae")
    assert "the sites withheld their scores" in label and "--min-cases-per-metric" in label
