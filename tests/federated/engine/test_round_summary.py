"""What the lead sees of a round: the selection metric merged and per site, live or on disk."""

from __future__ import annotations

import json
import math
from pathlib import Path

from neurofed.federated.engine.run_progress import round_summary
from neurofed.federated.engine.submit import read_run_progress
from neurofed.federated.server.run_folder import RoundRecord
from tests.federated.conftest import tiny_study


def _record() -> RoundRecord:
    """Round 2: site-1 measured, site-2 withheld the metric, site-3's is not finite."""
    return RoundRecord(
        round=2,
        targets=["site-1", "site-2", "site-3"],
        accepted=["site-1", "site-2", "site-3"],
        aggregated=True,
        validation={"mae": 4.25, "num_examples": 12.0},
        validation_per_site={
            "site-1": {"mae": 4.5, "num_examples": 6.0},
            "site-2": {"num_examples": 2.0},
            "site-3": {"mae": math.nan, "num_examples": 4.0},
        },
        withheld={"site-2": ["mae: 2 case(s), fewer than 5"]},
        seconds=1.5,
    )


def test_a_round_summary_has_each_sites_value_of_the_selection_metric() -> None:
    # Execute
    entry = round_summary(_record(), "mae")

    # Assert: only finite values; no other metric, no case, no subject
    assert entry["value"] == 4.25 and entry["per_site"] == {"site-1": 4.5}
    assert entry["metric"] == "mae" and entry["seconds"] == 1.5
    assert "num_examples" not in json.dumps(entry)
    json.dumps(entry, allow_nan=False)


def test_a_round_read_from_disk_has_the_live_answers_shape(tmp_path: Path) -> None:
    # Prepare: the round as the server writes it, in a stopped run (no summary)
    run = tmp_path / "run"
    (run / "rounds" / "2").mkdir(parents=True)
    (run / "study.toml").write_text(tiny_study(rounds=3).to_toml())
    record = _record()
    (run / "rounds" / "2" / "metrics.json").write_text(json.dumps(record.to_json()))

    # Execute
    (on_disk,) = read_run_progress(run)["history"]

    # Assert
    assert on_disk == round_summary(record, "mae")
    assert on_disk["per_site"] == {"site-1": 4.5}
