"""The demo's comparison on the held-out site: every model on the same cases, with intervals.

Each model's headline (mean Dice over ET, TC and WT, per case) gets its mean and 95% bootstrap
interval; the federated model is compared case by case with the pooled model and with each
local-only model (mean difference with a paired bootstrap interval, two-sided Wilcoxon
signed-rank test, Holm's correction over those comparisons). The summary says what is and is not
significant, whatever it is.

Examples
--------
>>> cases = {"ET/dice": [0.6, 0.7, 0.5], "TC/dice": [0.7, 0.8, 0.6], "WT/dice": [0.8, 0.9, 0.7]}
>>> per_case_headline(cases)
[0.7, 0.8, 0.6]
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from neurofed.evaluate.statistics import (
    ALPHA,
    CONFIDENCE,
    holm,
    mean_with_ci,
    paired_comparison,
    smallest_p,
)
from neurofed.keys import MetricName, TumorRegion

__all__ = ["FEDERATED", "compare_on_held_out", "per_case_headline", "verdict"]

FEDERATED = "federated"
_REGION_DICE = tuple(f"{r}/{MetricName.DICE}" for r in TumorRegion)


def per_case_headline(per_case: Mapping[str, Sequence[float | None]]) -> list[float]:
    """Per case, the mean of its ET, TC and WT Dice (``nan`` where one is missing)."""
    columns = [per_case.get(name) or [] for name in _REGION_DICE]
    n = min(len(c) for c in columns)
    if any(len(c) != n for c in columns):
        lengths = [len(c) for c in columns]
        raise ValueError(f"the regions' per-case values differ in length: {lengths}")
    out = []
    for k in range(n):
        values = [columns[r][k] for r in range(len(columns))]
        known = [float(v) for v in values if v is not None and math.isfinite(v)]
        out.append(round(sum(known) / len(known), 6) if len(known) == len(values) else math.nan)
    return out


def compare_on_held_out(
    evaluation: Mapping[str, Mapping[str, Any]], held_out: str, *, seed: int = 0
) -> dict[str, Any]:
    """``{"cases", "confidence", "models": {model: estimate}, "pairs": [...]}`` for the
    held-out column of the demo's evaluation table (cases where any model has no value are left
    out of every model, so that all are scored on the same cases)."""
    scores = {
        model: per_case_headline(row[held_out].get("per_case") or {})
        for model, row in evaluation.items()
    }
    lengths = {len(v) for v in scores.values()}
    if len(lengths) > 1:
        raise ValueError(f"the models were scored on different numbers of cases: {lengths}")
    n = lengths.pop() if lengths else 0
    keep = [k for k in range(n) if all(math.isfinite(v[k]) for v in scores.values())]
    scores = {model: [v[k] for k in keep] for model, v in scores.items()}
    models = {model: mean_with_ci(v, seed=seed).to_json() for model, v in scores.items()}
    pairs = []
    if FEDERATED in scores:
        others = [m for m in scores if m != FEDERATED]
        results = [paired_comparison(scores[FEDERATED], scores[m], seed=seed) for m in others]
        adjusted = holm([r.p_value for r in results])
        for other, result, p_holm in zip(others, results, adjusted, strict=True):
            entry = {"a": FEDERATED, "b": other} | result.to_json()
            pairs.append(entry | {"p_holm": round(p_holm, 6), "significant": p_holm < ALPHA})
    return {
        "cases": len(keep),
        "left_out": n - len(keep),
        "confidence": CONFIDENCE,
        "alpha": ALPHA,
        "smallest_possible_p": smallest_p(len(keep)),
        "models": models,
        "pairs": pairs,
    }


def _ci(estimate: Mapping[str, Any]) -> str:
    low, high = estimate["ci"]
    if low is None or high is None:
        return "no interval"
    return f"[{low:.3f}, {high:.3f}]"


def verdict(comparison: Mapping[str, Any], held_out: str, metric: str) -> list[str]:
    """Plain sentences: each model's score with its interval, then what differs significantly."""
    n = int(comparison["cases"])
    models = comparison["models"]
    if not n or not models:
        return [f"No model could be scored on the held-out site {held_out}; see summary.json."]
    level = f"{comparison['confidence']:.0%}"
    scored = ", ".join(
        f"{model} {e['mean']:.3f} {_ci(e)}" for model, e in models.items() if e["mean"] is not None
    )
    lines = [
        f"On the held-out site {held_out} ({n} cases, never trained on), {metric} with "
        f"{level} bootstrap intervals: {scored}."
    ]
    pairs = comparison["pairs"]
    if not pairs:
        return lines
    significant = [p for p in pairs if p["significant"]]
    tested = (
        f"Federated against each other model on the same {n} cases (Wilcoxon signed-rank, "
        f"Holm-corrected over {len(pairs)} comparisons, α = {comparison['alpha']:g}):"
    )
    lines.append(tested)
    for p in pairs:
        low, high = p["ci"]
        interval = "" if low is None else f" [{low:+.3f}, {high:+.3f}]"
        word = "significant" if p["significant"] else "not significant"
        lines.append(
            f"- federated − {p['b']}: {p['difference']:+.3f}{interval}, p = {p['p']:.3g} "
            f"(Holm {p['p_holm']:.3g}): {word}"
        )
    if comparison["smallest_possible_p"] >= comparison["alpha"]:
        lines.append(
            f"With {n} cases no difference can be significant: the smallest p-value the test "
            f"can give is {comparison['smallest_possible_p']:.3g}."
        )
    elif not significant:
        lines.append(
            "No difference is significant: on these cases the federated model cannot be told "
            "apart from the others."
        )
    return lines
