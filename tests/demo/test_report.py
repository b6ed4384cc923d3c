"""The demo's Markdown summary, from a hand-made summary (no training)."""

from __future__ import annotations

import math
from typing import Any

import pytest

from neurofed.demo.comparison import compare_on_held_out, per_case_headline, verdict
from neurofed.demo.report import HEADLINE, headline, markdown


def _cell(split: str, cases: int, et: float, tc: float, wt: float) -> dict[str, Any]:
    metrics = {"ET/dice": et, "TC/dice": tc, "WT/dice": wt, "WT/hd95": 12.5}
    return {"split": split, "cases": cases, "metrics": metrics}


def _summary() -> dict[str, Any]:
    evaluation = {
        "federated": {
            "site-1": _cell("validation", 2, 0.5, 0.6, 0.7),
            "site-4": _cell("all", 5, 0.4, 0.5, 0.6),
        },
        "pooled": {
            "site-1": _cell("validation", 2, 0.6, 0.6, 0.6),
            "site-4": _cell("all", 5, 0.5, 0.5, 0.5),
        },
        "local site-1": {
            "site-1": _cell("validation", 2, 0.3, 0.3, 0.3),
            "site-4": {
                "split": "all",
                "cases": 5,
                "metrics": {"ET/dice": None, "TC/dice": 0.1, "WT/dice": 0.2},
            },
        },
    }
    return {
        "neurofed_version": "0.1.0",
        "task": "tumor-regions",
        "seed": 0,
        "quick": True,
        "seconds": 42.0,
        "held_out": "site-4",
        "study": {
            "name": "demo",
            "sha256": "ab" * 32,
            "rounds": 3,
            "strategy": "fedavg",
            "selected": {"round": 2, "metric": "WT/dice", "direction": "max", "value": 0.7},
        },
        "budget": {"rounds": 3, "cases": 6, "samples_per_epoch": 8, "patch": 32, "spacing": 4.0},
        "sites": [
            {
                "site": "site-1",
                "role": "training",
                "layout": "brats2021",
                "cases": 3,
                "usable": 2,
                "excluded": ["x"],
                "problems": ["x: t1.nii.gz: file is empty"],
                "splits": {"train": 1, "validation": 1, "test": 0},
            }
        ],
        "evaluation": evaluation,
        "headline": headline(evaluation, "site-4"),
        "stage_seconds": {"phantom": 3.0, "federated": 30.0},
    }


def test_headline_is_the_mean_region_dice_and_unknown_when_a_region_is_missing() -> None:
    by_model = _summary()["headline"]["by_model"]

    assert by_model["federated"] == {"site-1": 0.6, "site-4": 0.5}
    assert by_model["pooled"]["site-4"] == 0.5
    assert by_model["local site-1"]["site-4"] is None  # ET unknown: no mean over two regions


def test_markdown_names_every_model_site_problem_and_the_selected_round() -> None:
    text = markdown(_summary())

    assert HEADLINE in text
    for model in ("federated", "pooled", "local site-1"):
        assert f"| {model} |" in text
    assert "site-4 (held out, all, n=5)" in text
    assert "x: t1.nii.gz: file is empty" in text
    assert "best round, 2 by WT/dice, is in `federated/model/` but not compared" in text
    assert "| federated | 0.600 | 0.500 |" in text
    assert "| local site-1 | 0.300 | n/a |" in text
    assert "A smoke run" in text  # quick
    assert "A smoke run" not in markdown(_summary() | {"quick": False})


def test_markdown_names_the_federated_plan_every_model_trains_under() -> None:
    summary = _summary()
    plan = {"plan_id": "14d754c96bc7", "spacing": [4.0, 4.0, 4.0], "num_cases": 12}
    summary["plan"] = plan | {"sites": ["site-1", "site-2", "site-3"], "failed": {}}

    text = markdown(summary)

    assert "- **plan** `14d754c96bc7`: target spacing 4 × 4 × 4 mm" in text
    assert "fingerprint of 12 training cases (site-1, site-2, site-3)" in text
    assert "**plan**" not in markdown(_summary())  # a summary without a plan has no such line


def _held_out(per_model: dict[str, list[float]]) -> dict[str, dict[str, Any]]:
    """An evaluation whose held-out column holds the same per-case Dice for every region."""
    return {
        model: {"site-4": {"per_case": {f"{r}/dice": list(v) for r in ("ET", "TC", "WT")}}}
        for model, v in per_model.items()
    }


FEDERATED = [0.80, 0.72, 0.91, 0.66, 0.78, 0.85, 0.70, 0.88, 0.75, 0.81, 0.69]


def test_a_model_better_on_every_case_is_significantly_better_and_the_others_are_not() -> None:
    # Prepare: pooled = federated − 0.05 on every case; local site-1 = federated ± 0.01
    evaluation = _held_out(
        {
            "federated": FEDERATED,
            "pooled": [v - 0.05 for v in FEDERATED],
            "local site-1": [v + (0.01 if k % 2 else -0.01) for k, v in enumerate(FEDERATED)],
        }
    )

    # Execute
    comparison = compare_on_held_out(evaluation, "site-4")
    text = "\n".join(verdict(comparison, "site-4", HEADLINE))

    # Assert: the exact p of 11 agreeing cases is 2/2**11, ×2 comparisons (Holm)
    assert comparison["cases"] == 11 and comparison["left_out"] == 0
    pooled, local = comparison["pairs"]
    assert (pooled["b"], local["b"]) == ("pooled", "local site-1")
    assert pooled["difference"] == pytest.approx(0.05) and pooled["ci"][0] > 0
    assert pooled["p"] == pytest.approx(2 / 2**11, abs=1e-6)
    assert pooled["p_holm"] == pytest.approx(4 / 2**11, abs=1e-6)
    assert pooled["significant"] and not local["significant"]
    assert comparison["models"]["federated"]["mean"] == pytest.approx(sum(FEDERATED) / 11)
    low, high = comparison["models"]["federated"]["ci"]
    assert low < comparison["models"]["federated"]["mean"] < high
    assert "federated − pooled: +0.050" in text and ": significant" in text
    assert "federated − local site-1" in text and "not significant" in text


def test_five_cases_cannot_show_a_difference_and_the_summary_says_so() -> None:
    evaluation = _held_out({"federated": FEDERATED[:5], "pooled": [v - 0.1 for v in FEDERATED[:5]]})

    comparison = compare_on_held_out(evaluation, "site-4")
    text = "\n".join(verdict(comparison, "site-4", HEADLINE))

    assert comparison["pairs"][0]["p"] == pytest.approx(0.0625)
    assert not comparison["pairs"][0]["significant"]
    assert "With 5 cases no difference can be significant" in text


def test_a_case_one_model_could_not_score_is_left_out_of_every_model() -> None:
    evaluation = _held_out({"federated": FEDERATED[:6], "pooled": FEDERATED[:6]})
    evaluation["pooled"]["site-4"]["per_case"]["ET/dice"][2] = None

    comparison = compare_on_held_out(evaluation, "site-4")

    assert comparison["cases"] == 5 and comparison["left_out"] == 1
    assert comparison["pairs"][0]["difference"] == 0.0


def test_per_case_headline_is_the_mean_of_the_three_regions() -> None:
    per_case = {"ET/dice": [0.3, None], "TC/dice": [0.6, 0.5], "WT/dice": [0.9, 0.7]}
    first, second = per_case_headline(per_case)
    assert first == pytest.approx(0.6) and math.isnan(second)
    with pytest.raises(ValueError, match="differ in length"):
        per_case_headline({"ET/dice": [0.1], "TC/dice": [0.1, 0.2], "WT/dice": [0.1]})


def test_markdown_shows_the_comparison() -> None:
    summary = _summary()
    summary["comparison"] = compare_on_held_out(
        _held_out({"federated": FEDERATED, "pooled": [v - 0.05 for v in FEDERATED]}), "site-4"
    )

    text = markdown(summary)

    assert "## Held-out site site-4: the comparison" in text
    assert "(11 cases, never trained on)" in text and "federated − pooled" in text
