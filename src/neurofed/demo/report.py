"""The demo's summary as a person reads it: Markdown tables built from ``summary.json``.

The headline number of ``tumor-regions`` is the mean Dice over ET, TC and WT (each region's
Dice is itself the mean over cases, as FeTS reports it).

Examples
--------
>>> evaluation = {"federated": {"site-4": {"metrics": {"ET/dice": 0.5, "TC/dice": 0.6,
...                                                    "WT/dice": 0.7}}}}
>>> headline(evaluation, "site-4")["by_model"]["federated"]["site-4"]
0.6
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from neurofed.demo.comparison import verdict
from neurofed.keys import MetricName, TumorRegion

__all__ = ["HEADLINE", "SUMMARY_JSON", "SUMMARY_MD", "headline", "markdown"]

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"
HEADLINE = "mean Dice (ET, TC, WT)"
_REGION_DICE = tuple(f"{r}/{MetricName.DICE}" for r in TumorRegion)


def _mean_dice(metrics: Mapping[str, float | None]) -> float | None:
    values = [metrics.get(name) for name in _REGION_DICE]
    known = [float(v) for v in values if v is not None and math.isfinite(v)]
    return round(sum(known) / len(known), 4) if len(known) == len(_REGION_DICE) else None


def headline(evaluation: Mapping[str, Mapping[str, Any]], held_out: str) -> dict[str, Any]:
    """The mean region Dice of every model on every evaluated column."""
    by_model = {
        model: {column: _mean_dice(cell["metrics"]) for column, cell in row.items()}
        for model, row in evaluation.items()
    }
    return {"metric": HEADLINE, "held_out": held_out, "by_model": by_model}


def _number(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _plan_lines(plan: Mapping[str, Any] | None) -> list[str]:
    """The line about the federated plan every model trains under (none without a plan)."""
    if not plan:
        return []
    spacing = " × ".join(f"{s:g}" for s in plan["spacing"])
    sites = ", ".join(plan["sites"]) or "n/a"
    return [
        f"- **plan** `{plan['plan_id']}`: target spacing {spacing} mm, planned from the federated "
        f"fingerprint of {plan['num_cases']} training cases ({sites}); every model trains at it"
    ]


def markdown(summary: Mapping[str, Any]) -> str:
    """``summary.md``: sites, problems found, models, results, time per stage."""
    held_out = str(summary["held_out"])
    study = summary["study"]
    selected = study.get("selected") or {}
    lines = [
        "# neurofed demo",
        "",
        f"neurofed {summary['neurofed_version']}, task `{summary['task']}`, phantom seed "
        f"{summary['seed']}{' (quick)' if summary['quick'] else ''}: "
        f"{summary['seconds']:.0f} s in all.",
        "",
        "## Sites",
        "",
    ]
    lines += _table(
        ["site", "role", "layout", "cases", "usable", "excluded", "train", "validation"],
        [
            [
                r["site"],
                r["role"],
                r["layout"],
                str(r["cases"]),
                str(r["usable"]),
                str(len(r["excluded"])),
                str(r["splits"]["train"]),
                str(r["splits"]["validation"]),
            ]
            for r in summary["sites"]
        ],
    )
    lines += ["", "Problems found by `neurofed site check` (those cases are left out):", ""]
    lines += [f"- {r['site']}: {p}" for r in summary["sites"] for p in r["problems"]]
    budget = summary["budget"]
    lines += [
        "",
        "## Models (same network and budget)",
        "",
        f"- **federated**: {study['strategy']} over the training sites in NVFlare's simulator, "
        f"{study['rounds']} rounds of one local epoch; study sha256:{study['sha256'][:12]}",
        f"- **pooled**: all training sites' cases together, {budget['rounds']} epochs "
        "(the centralised upper bound)",
        f"- **local site-k**: one training site only, {budget['rounds']} epochs",
        f"- each site-epoch draws {budget['samples_per_epoch']} patches of "
        f"{budget['patch']}³ voxels at {budget['spacing']:g} mm",
        *_plan_lines(summary.get("plan")),
        f"- compared: {summary.get('compared', 'n/a')} (the federated run's best round, "
        f"{selected.get('round', 'n/a')} by {selected.get('metric', 'n/a')}, is in "
        "`federated/model/` but not compared: it was chosen on validation cases the baselines "
        "never saw)",
        f"- scored: {summary.get('scored', 'n/a')}",
        "",
        f"## {HEADLINE}",
        "",
    ]
    if summary.get("quick"):
        lines += [
            f"**A smoke run** (`--quick`: {budget['rounds']} rounds on {budget['cases']} cases "
            "per site): it shows that every stage works; its numbers are not evidence.",
            "",
        ]
    evaluation: Mapping[str, Mapping[str, Any]] = summary["evaluation"]
    columns = list(next(iter(evaluation.values())).keys()) if evaluation else []
    by_model = summary["headline"]["by_model"]
    header = ["model"]
    for column in columns:
        cell = next(iter(evaluation.values()))[column]
        kind = "held out, all" if column == held_out else cell["split"]
        header.append(f"{column} ({kind}, n={cell['cases']})")
    lines += _table(
        header,
        [[model, *(_number(by_model[model][c]) for c in columns)] for model in evaluation],
    )
    comparison = summary.get("comparison")
    lines += ["", f"## Held-out site {held_out}: the comparison", ""]
    lines += verdict(comparison, held_out, HEADLINE) if comparison else ["n/a"]
    lines += ["", f"## Held-out site {held_out} by region", ""]
    names = [*_REGION_DICE, f"{TumorRegion.WT}/{MetricName.HD95}"]
    lines += _table(
        ["model", *names],
        [
            [model, *(_number(row[held_out]["metrics"].get(n), 2) for n in names)]
            for model, row in evaluation.items()
        ],
    )
    stages = summary.get("stage_seconds", {})
    lines += ["", "## Time per stage (s)", ""]
    lines += _table(list(stages), [[f"{v:.0f}" for v in stages.values()]])
    return "\n".join(lines) + "\n"
