"""Every model scored on every site: the table a federated study is judged by."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from neurofed.evaluate.site import evaluate_model
from neurofed.keys import Split
from neurofed.tasks import MetricState, merge_states
from neurofed.training.model_folder import load_model
from neurofed.training.records import finalize_metrics, json_number
from neurofed.types import ProgressCallback

__all__ = ["ALL_TRAINING", "column", "cross_site_table"]

#: Name of the merged validation column (all training sites' validation cases).
ALL_TRAINING = "training sites"


def cross_site_table(
    models: dict[str, Path],
    training: Sequence[Path],
    held_out: Path,
    progress: ProgressCallback,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {column: metrics}}``: each training site's validation split, their merge, and
    every case of the held-out site.

    The held-out column also keeps its per-case values (``per_case``: each per-case metric of
    the task, the cases in the same order for every model, no identifiers), so that models can
    be compared case by case there."""
    table: dict[str, dict[str, dict[str, Any]]] = {}
    jobs = [(site, Split.VALIDATION) for site in training] + [(held_out, None)]
    total, done = len(models) * len(jobs), 0
    for name, folder in models.items():
        trained = load_model(folder)
        row: dict[str, dict[str, Any]] = {}
        states: list[MetricState] = []
        for site, split in jobs:
            state, cases, _ = evaluate_model(trained, site, split)
            done += 1
            progress(done, total, f"{name} on {site.name}")
            if split is not None:
                states.append(state)
            row[site.name] = column(trained.task, state, len(cases), split)
            if split is None:
                row[site.name]["per_case"] = state.case_values()
        merged = merge_states(states)
        row[ALL_TRAINING] = column(
            trained.task, merged, sum(row[s.name]["cases"] for s in training), Split.VALIDATION
        )
        table[name] = row
    return table


def column(task: Any, state: MetricState, cases: int, split: Split | None) -> dict[str, Any]:
    """One cell of the table: which split, how many cases, and the finalised metrics (JSON)."""
    metrics = finalize_metrics(task, state)
    return {
        "split": "all" if split is None else split.value,
        "cases": cases,
        "metrics": {k: json_number(v) for k, v in sorted(metrics.items())},
    }
