"""``neurofed report``: a run folder's HTML report, rendered in headless Chromium."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.evaluate.report import ReportError, run_report
from neurofed.training import LocalTrainer, save_model
from tests.browser import rendered_figures
from tests.evaluate.runs import run_folder
from tests.training.tiny import tiny_config


def test_the_report_shows_curves_sites_the_worst_site_and_what_left_each_site(
    tmp_path: Path,
) -> None:
    # Prepare: site-2 is the worst site; site-1 failed in round 2
    dice = {"site-1": [0.5, 0.6, 0.7], "site-2": [0.3, 0.35, 0.4], "site-3": [0.6, 0.7, 0.8]}
    run = run_folder(tmp_path / "run", dice, failed_round=2)

    # Execute
    html, view = run_report(run)

    # Assert
    assert view.selected == 3 and len(view.rounds) == 3
    for title in ("Study", "Training over rounds", "Sites at round 3", "Who took part"):
        assert f"<h2>{title}</h2>" in html
    assert "Worst site on WT/dice: <b>site-2</b> (0.400)" in html
    assert "site-1 failed — training failed: out-of-memory" in html
    assert "model update (weights) in 2 rounds" in html  # site-1 missed round 2
    assert "0.250" in html  # MB per update, from the weights' size
    assert str(tmp_path) not in html  # no path of the server's disk
    assert "per-case values without identifiers" not in html


def test_the_report_lists_per_case_values_a_custodian_allowed_to_leave(tmp_path: Path) -> None:
    dice = {"site-1": [0.5, 0.6], "site-2": [0.3, 0.35]}
    html, _ = run_report(run_folder(tmp_path / "run", dice, cases_from="site-2"))
    assert "per-case values without identifiers (WT/dice) in 2 rounds" in html
    assert html.count("per-case values without identifiers (") == 1  # site-2 only


def test_the_report_shows_the_epsilon_each_site_spent_under_dp_sgd(tmp_path: Path) -> None:
    dice = {"site-1": [0.5, 0.6, 0.7], "site-2": [0.3, 0.35, 0.4]}

    private, _ = run_report(run_folder(tmp_path / "dp", dice, private=True))
    plain, _ = run_report(run_folder(tmp_path / "plain", dice))

    line = "weights trained with DP-SGD in 3 rounds: ε = 1.5 spent on the dataset at this site"
    assert private.count(line) == 2 and "(noise multiplier 1.1)" in private
    assert "DP-SGD" not in plain


def test_the_report_says_the_server_saw_only_the_sum_under_secure_aggregation(
    tmp_path: Path,
) -> None:
    dice = {"site-1": [0.5, 0.6], "site-2": [0.3, 0.35]}

    secure, _ = run_report(run_folder(tmp_path / "secure", dice, secure=True))

    line = "model update masked by secure aggregation in 2 rounds (the server saw only the sum"
    assert secure.count(line) == 2 and "model update (weights)" not in secure


def test_the_report_renders_every_figure_in_headless_chromium(tmp_path: Path) -> None:
    # Prepare
    first = run_folder(tmp_path / "a", {"site-1": [0.5, 0.6], "site-2": [0.4, 0.5]})
    second = run_folder(tmp_path / "b", {"site-1": [0.3, 0.4], "site-2": [0.2, 0.3]})

    # Execute
    result = CliRunner().invoke(
        app, ["report", str(first), "--compare", str(second), "--out", str(tmp_path / "out")]
    )

    # Assert: the curves and the comparison, both drawn
    assert result.exit_code == 0, result.output
    page = tmp_path / "out" / "report.html"
    assert "<h2>Runs compared</h2>" in page.read_text()
    assert rendered_figures(page) == (2, 2)


def test_a_folder_that_is_not_a_run_is_refused_with_what_to_give(tmp_path: Path) -> None:
    result = CliRunner().invoke(app, ["report", str(tmp_path), "--out", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "summary.json" in result.output and "simulate --out" in result.output


def test_a_damaged_round_file_is_named(tmp_path: Path) -> None:
    run = run_folder(tmp_path / "run", {"site-1": [0.5, 0.6]})
    (run / "rounds" / "2" / "metrics.json").write_text("{not json")
    with pytest.raises(ReportError, match=r"rounds/2/metrics.json: unreadable"):
        run_report(run)


def test_scoring_the_selected_model_on_local_sites_adds_distributions_and_roc_curves(
    glioma_site: Path, tmp_path: Path
) -> None:
    # Prepare: a run whose selected model is a tiny multi-task network
    run = run_folder(tmp_path / "run", {"site-1": [0.5, 0.6]})
    config = tiny_config("glioma-multitask", epochs=1)
    trainer = LocalTrainer.from_sites(config, glioma_site)
    trainer.fit()
    save_model(run / "model", trainer.model, config)

    # Execute
    result = CliRunner().invoke(
        app, ["report", str(run), "--site", str(glioma_site), "--out", str(tmp_path / "out")]
    )

    # Assert: WT Dice per case and one ROC panel per marker, all drawn; no case id on the page
    assert result.exit_code == 0, result.output
    page = tmp_path / "out" / "report.html"
    html = page.read_text()
    assert f"{glioma_site.name} (n=12)" in html  # every case of the site, scored here
    assert "WT/dice per case" in html and "ROC curve of each marker" in html
    assert "BraTS2021_" not in html
    assert rendered_figures(page) == (3, 3)  # curves, Dice distribution, ROC panels


def test_a_run_without_a_selected_model_to_score_is_named(tmp_path: Path) -> None:
    run = run_folder(tmp_path / "run", {"site-1": [0.5, 0.6]})
    result = CliRunner().invoke(
        app, ["report", str(run), "--site", str(tmp_path / "nowhere"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "run/model/model.json: not found" in result.output
