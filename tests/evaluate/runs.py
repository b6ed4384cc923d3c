"""A federated run folder written by hand, as the server writes it, for report and monitor
tests that need no simulation."""

from __future__ import annotations

import json
from pathlib import Path

from neurofed.federated.server.run_folder import RoundRecord
from neurofed.federated.study import load_study

__all__ = ["run_folder"]

EXAMPLES = Path(__file__).parents[2] / "examples" / "studies"


def run_folder(
    folder: Path,
    dice: dict[str, list[float]],
    *,
    failed_round: int = 0,
    cases_from: str = "",
    private: bool = False,
    secure: bool = False,
) -> Path:
    """A run folder as the server writes it: study, summary, rounds, last model's weights;
    ``cases_from`` names a site that sent per-case values (its custodian allows them);
    ``private``: the sites trained with DP-SGD and reported their ε (0.5 more each round);
    ``secure``: the rounds ran secure aggregation (the sites reported their clipped counts)."""
    study = load_study(EXAMPLES / "fets-fedavg.toml")
    folder.mkdir(parents=True)
    (folder / "study.toml").write_text(study.to_toml())
    rounds = len(next(iter(dice.values())))
    for k in range(1, rounds + 1):
        record = RoundRecord(round=k, targets=list(dice), accepted=list(dice), aggregated=True)
        if k == failed_round:
            record.accepted = record.accepted[1:]
            record.failed = {"site-1": "training failed: out-of-memory"}
        record.train = {s: {"num_examples": 8.0, "train_loss": 1.0 / k} for s in record.accepted}
        if private:
            for numbers in record.train.values():
                numbers |= {"epsilon": 0.5 * k, "noise_multiplier": 1.1}
        if secure:
            for numbers in record.train.values():
                numbers["secagg_clipped"] = 0.0
        record.validation_per_site = {
            s: {"WT/dice": v[k - 1], "num_examples": 6.0} for s, v in dice.items()
        }
        record.validation = {"WT/dice": sum(v[k - 1] for v in dice.values()) / len(dice)}
        if cases_from:
            record.cases_per_site = {cases_from: {"WT/dice": [0.5, 0.7, 0.9]}}
        record.seconds = 2.0
        (folder / "rounds" / str(k)).mkdir(parents=True)
        (folder / "rounds" / str(k) / "metrics.json").write_text(json.dumps(record.to_json()))
    best = max(range(1, rounds + 1), key=lambda k: sum(v[k - 1] for v in dice.values()))
    summary = {
        "study": study.name,
        "study_hash": study.content_hash,
        "rounds_done": rounds,
        "rounds": rounds,
        "selected": {"round": best, "metric": "WT/dice", "direction": "max", "value": 0.7},
    }
    (folder / "summary.json").write_text(json.dumps(summary))
    (folder / "last_model").mkdir()
    (folder / "last_model" / "weights.safetensors").write_bytes(b"\0" * 250_000)
    return folder
