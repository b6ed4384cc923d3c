"""``neurofed demo --quick`` end to end: phantom, checks, federated + baselines, evaluation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.demo import DemoConfig
from neurofed.demo.run import _phantom
from neurofed.evaluate import ALL_TRAINING, cross_site_table
from tests.browser import rendered_figures

MODELS = ("federated", "pooled", "local site-1", "local site-2", "local site-3")


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    out = tmp_path_factory.mktemp("demo") / "run"
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)], env={"CI": "true"})
    assert result.exit_code == 0, result.output
    return out, result.output


def test_quick_demo_trains_every_model_and_scores_it_on_every_site(
    demo_run: tuple[Path, str],
) -> None:
    out, output = demo_run
    summary = json.loads((out / "summary.json").read_text())

    assert summary["held_out"] == "site-4"
    assert set(summary["evaluation"]) == set(MODELS)
    for model, row in summary["evaluation"].items():
        assert set(row) == {"site-1", "site-2", "site-3", "site-4", ALL_TRAINING}, model
        assert row["site-4"]["split"] == "all" and row["site-1"]["split"] == "validation"
        assert row[ALL_TRAINING]["cases"] == sum(row[f"site-{k}"]["cases"] for k in (1, 2, 3))
        for region in ("ET", "TC", "WT"):
            value = row["site-4"]["metrics"][f"{region}/dice"]
            assert value is not None and 0.0 <= value <= 1.0 and math.isfinite(value)
    for path in summary["models"].values():
        assert (out / path / "model.json").is_file() and (
            out / path / "weights.safetensors"
        ).is_file()
    assert "run folder:" in output and "held-out" in output
    # compared as they ended: the federated model after its last round, not its best one
    assert summary["models"]["federated"] == "federated/last_model"
    last = json.loads((out / "federated/last_model/model.json").read_text())
    assert last["epoch"] == summary["study"]["rounds"] == 6
    comparison = summary["comparison"]
    usable = next(r["usable"] for r in summary["sites"] if r["site"] == "site-4")
    assert comparison["cases"] == usable == summary["evaluation"]["federated"]["site-4"]["cases"]
    assert {p["b"] for p in comparison["pairs"]} == set(MODELS) - {"federated"}
    for pair in comparison["pairs"]:
        assert 0.0 <= pair["p"] <= pair["p_holm"] <= 1.0, pair
    assert "the comparison" in output and "smoke run" in output.lower()
    # --quick learns: the federated model finds the whole tumour on the unseen site
    assert summary["evaluation"]["federated"]["site-4"]["metrics"]["WT/dice"] >= 0.5


def test_the_federation_ran_its_rounds_and_never_trained_on_the_held_out_site(
    demo_run: tuple[Path, str],
) -> None:
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    rounds = [
        json.loads(p.read_text()) for p in sorted((out / "federated/rounds").glob("*/metrics.json"))
    ]

    assert len(rounds) == summary["study"]["rounds"] == 6
    assert all(sorted(r["accepted"]) == ["site-1", "site-2", "site-3"] for r in rounds)
    selected = summary["study"]["selected"]
    # selection on the pooled Dice: voxel sums every site sends, however few its cases
    best = max(rounds, key=lambda r: r["validation"]["WT/dice_pooled"])
    assert selected["round"] == best["round"] and selected["direction"] == "max"
    assert selected["metric"] == "WT/dice_pooled"
    pooled = json.loads((out / "pooled/config.json").read_text())
    assert pooled["sites"] == ["site-1", "site-2", "site-3"]
    locals_ = [json.loads((out / f"local/site-{k}/config.json").read_text()) for k in (1, 2, 3)]
    assert pooled["num_examples"] == sum(c["num_examples"] for c in locals_)


def test_broken_cases_are_reported_and_left_out(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())

    assert [row["role"] for row in summary["sites"]] == ["training"] * 3 + ["held-out"]
    for row in summary["sites"]:
        assert len(row["excluded"]) == 1 and row["usable"] == row["cases"] - 1, row
        assert row["problems"], row
    text = (out / "summary.md").read_text()
    assert all(f"- {row['site']}: " in text for row in summary["sites"])
    assert "| site-4 | held-out |" in text


def test_rerun_keeps_the_phantom_sites_already_generated(demo_run: tuple[Path, str]) -> None:
    out, _ = demo_run
    before = {p: p.stat().st_mtime_ns for p in (out / "sites").rglob("*.nii.gz")}

    sites = _phantom(DemoConfig(out=out, quick=True), out / "sites", lambda d, t, s: None)

    assert [s.name for s in sites] == ["site-1", "site-2", "site-3", "site-4"]
    assert {p: p.stat().st_mtime_ns for p in (out / "sites").rglob("*.nii.gz")} == before


def test_every_model_trains_under_the_plan_of_the_fingerprint_round(
    demo_run: tuple[Path, str],
) -> None:
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    plan = json.loads((out / "federated/plan.json").read_text())

    assert summary["plan"]["spacing"] == plan["spacing"]
    assert summary["plan"]["sites"] == ["site-1", "site-2", "site-3"]  # never the held-out site
    for path in summary["models"].values():
        model = json.loads((out / path / "model.json").read_text())
        assert model["preprocess"]["spacing"] == plan["spacing"], path
        assert json.loads((out / path / "plan.json").read_text()) == plan, path
    assert f"`{summary['plan']['plan_id']}`" in (out / "summary.md").read_text()


def test_a_rerun_of_the_finished_demo_keeps_its_timings_and_results(
    demo_run: tuple[Path, str],
) -> None:
    # Prepare
    out, _ = demo_run
    first = json.loads((out / "summary.json").read_text())

    # Execute: the same command again on the finished run folder
    result = CliRunner().invoke(app, ["demo", "--quick", "--out", str(out)], env={"CI": "true"})

    # Assert: every stage found its work done and kept the time of the run that did it
    assert result.exit_code == 0, result.output
    again = json.loads((out / "summary.json").read_text())
    assert again["stage_seconds"] == first["stage_seconds"]
    assert again["seconds"] == pytest.approx(sum(first["stage_seconds"].values()), abs=0.05)
    assert again["rerun_seconds"] > 0
    assert again["comparison"] == first["comparison"]


def test_the_demo_writes_a_report_whose_figures_all_render(demo_run: tuple[Path, str]) -> None:
    out, output = demo_run
    page = out / "report.html"
    html = page.read_text()

    assert "report with figures:" in output
    assert json.loads((out / "summary.json").read_text())["report"] == "report.html"
    for title in ("Training over rounds", "Held-out site site-4", "Every model on every site"):
        assert title in html
    assert "p (Holm)" in html
    assert "BraTS2021_" not in html  # no case identifier, even from the demo's own data
    rendered, total = rendered_figures(page)
    assert rendered == total >= 3


def test_every_model_was_scored_by_the_sites_themselves_in_evaluation_studies(
    demo_run: tuple[Path, str],
) -> None:
    # Prepare: the same models scored here, in one process reading every site directly
    out, _ = demo_run
    summary = json.loads((out / "summary.json").read_text())
    sites = [out / "sites" / f"site-{k}" for k in (1, 2, 3)]
    models = {m: out / summary["models"][m] for m in ("federated", "local site-2")}

    # Execute
    direct = cross_site_table(models, sites, out / "sites" / "site-4", lambda *_: None)

    # Assert: the federation's numbers are the direct ones; nothing trained; only the held-out
    # site (its custodian allows it for the demo's dataset) sent per-case values
    for model in models:
        for column, cell in direct[model].items():
            theirs = summary["evaluation"][model][column]
            assert theirs["cases"] == cell["cases"], (model, column)
            for name in ("WT/dice", "ET/dice_pooled"):
                assert theirs["metrics"][name] == pytest.approx(cell["metrics"][name], abs=1e-6)
    # per-case values: the site's own case order (not the direct one), the same for every model
    ours = {m: summary["evaluation"][m]["site-4"]["per_case"]["WT/dice"] for m in models}
    theirs = {m: direct[m]["site-4"]["per_case"]["WT/dice"] for m in models}
    order = [theirs["federated"].index(v) for v in ours["federated"]]
    assert sorted(order) == list(range(len(order)))
    for model in models:
        assert ours[model] == pytest.approx([theirs[model][k] for k in order], abs=1e-6)
        for region in ("ET", "TC"):  # a case's regions stay together
            mine = summary["evaluation"][model]["site-4"]["per_case"][f"{region}/dice"]
            direct_values = direct[model]["site-4"]["per_case"][f"{region}/dice"]
            assert mine == pytest.approx([direct_values[k] for k in order], abs=1e-6, nan_ok=True)
    run = out / "evaluation" / "cross-site"
    results = json.loads((run / "evaluation.json").read_text())
    assert [m["name"] for m in results["models"]] == list(summary["models"])
    assert results["site_splits"] == {
        "site-1": "validation",
        "site-2": "validation",
        "site-3": "validation",
        "site-4": "all",
    }
    assert all(set(m["cases_per_site"]) == {"site-4"} for m in results["models"])
    for k in range(1, len(results["models"]) + 1):
        record = json.loads((run / f"rounds/{k}/metrics.json").read_text())
        assert record["train"] == {} and record["aggregated"] is False
    assert "one evaluation study" in (out / "summary.md").read_text()
