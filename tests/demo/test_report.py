"""The demo's Markdown summary, from a hand-made summary (no training)."""

from __future__ import annotations

from typing import Any

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
        "budget": {"rounds": 3, "samples_per_epoch": 8, "patch": 32, "spacing": 4.0},
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
    assert "best round 2 by WT/dice (max)" in text
    assert "| federated | 0.600 | 0.500 |" in text
    assert "| local site-1 | 0.300 | n/a |" in text
    assert "some models could not be scored" in text.lower()  # a local model has no headline


def test_markdown_names_the_federated_plan_every_model_trains_under() -> None:
    summary = _summary()
    plan = {"plan_id": "14d754c96bc7", "spacing": [4.0, 4.0, 4.0], "num_cases": 12}
    summary["plan"] = plan | {"sites": ["site-1", "site-2", "site-3"], "failed": {}}

    text = markdown(summary)

    assert "- **plan** `14d754c96bc7`: target spacing 4 × 4 × 4 mm" in text
    assert "fingerprint of 12 training cases (site-1, site-2, site-3)" in text
    assert "**plan**" not in markdown(_summary())  # a summary without a plan has no such line
