"""``neurofed report --site`` on a brain-age model: agreement per site with Bland–Altman."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.evaluate.report import site_sections
from neurofed.evaluate.site import evaluate_model
from neurofed.evaluate.statistics import bland_altman
from neurofed.training import LocalTrainer, save_model
from tests.browser import rendered_figures
from tests.evaluate.runs import run_folder
from tests.training.sites import prepare_site, write_bids_site
from tests.training.tiny import tiny_config


def test_brain_age_sites_get_a_table_of_agreement_and_a_bland_altman_figure(
    bids_site: Path, tmp_path: Path
) -> None:
    # Prepare: a tiny brain-age model as a run's selected model, and a second site of 4 cases
    run = run_folder(tmp_path / "run", {"site-1": [0.5, 0.6]})
    config = tiny_config("brain-age", epochs=1)
    trainer = LocalTrainer.from_sites(config, bids_site)
    trainer.fit()
    save_model(run / "model", trainer.model, config)
    other = prepare_site(write_bids_site(tmp_path / "bids-2", 4, seed=1))

    pairs = [evaluate_model(run / "model", site, None)[0].cases for site in (bids_site, other)]
    expected = bland_altman(
        np.concatenate([c["age/prediction"] for c in pairs]),
        np.concatenate([c["age/target"] for c in pairs]),
    )

    # Execute
    sites = ["--site", str(bids_site), "--site", str(other)]
    result = CliRunner().invoke(app, ["report", str(run), *sites, "--out", str(tmp_path / "out")])

    # Assert: a row per site and over both (its agreement as computed here), the figure drawn,
    # no case id on the page
    assert result.exit_code == 0, result.output
    page = tmp_path / "out" / "report.html"
    html = page.read_text()
    assert "predicted against true age on every case of 2 local site(s)</h2>" in html
    for header in ("MAE (95% CI)", "Pearson r (95% CI)", "bias (predicted − true)"):
        assert f"<th>{header}</th>" in html
    for name, cases in ((f"{bids_site.name} (n=12)", 12), ("bids-2 (n=4)", 4), ("all sites", 16)):
        row = re.search(rf"<tr><td>{re.escape(name)}</td><td>{cases}</td>(.*?)</tr>", html)
        assert row, name
        cells = re.findall(r"<td>(.*?)</td>", row.group(1))  # MAE, r, p, bias, limits
        interval = r".*\[-?\d+\.\d+, -?\d+\.\d+\]"
        assert len(cells) == 5 and all(re.fullmatch(interval, cells[k]) for k in (0, 1, 4))
    bias, limits = cells[3:]  # of all sites
    assert bias == f"{expected.bias:.3f}"
    assert limits == f"[{expected.lower:.2f}, {expected.upper:.2f}]"
    assert "Bland–Altman: predicted − true against their mean" in html
    assert "No per-case values" not in html and "sub-t0c" not in html
    assert rendered_figures(page) == (2, 2)  # curves, Bland–Altman


def test_one_case_gives_the_numbers_it_can_and_no_limits(bids_site: Path, tmp_path: Path) -> None:
    # Prepare: an untrained tiny model, a site of one case
    config = tiny_config("brain-age")
    model = save_model(tmp_path / "model", LocalTrainer.from_sites(config, bids_site).model, config)
    single = prepare_site(write_bids_site(tmp_path / "one", 1, seed=2), validation_fraction=0.0)

    # Execute
    [section] = site_sections(model, [single])

    # Assert: MAE without an interval (one case), no r, no p, no limits; the figure still drawn
    row = r"<tr><td>one \(n=1\)</td><td>1</td><td>\d+\.\d\d</td>" + "<td>–</td>" * 4 + "</tr>"
    assert re.search(row, section.html), section.html[:2000]
    assert "data:image/png;base64," in section.html
