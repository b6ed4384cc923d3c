"""``neurofed monitor --site-kit``: a custodian's page from the site's own progress files, with
its own site and the merged curve only — live while a simulated study runs."""

from __future__ import annotations

import json
import re
import urllib.request
from pathlib import Path

import pytest

from neurofed.evaluate.monitor_site import site_status, start_site_monitor
from neurofed.federated.engine import run_simulation
from neurofed.federated.engine.simulation import SITES_FOLDER
from neurofed.federated.protocol import MIN_SITES_FOR_CURVE, MergedRound
from neurofed.federated.site import SiteConfig
from neurofed.federated.site.progress import PROGRESS_FILE, SiteProgress
from tests.browser import dump_dom
from tests.federated.conftest import age_sites, scored, tiny_study, write_site

__all__ = ["age_sites"]  # the session fixture, used here


def _view(root: Path, digest: str, study: str = "age", rounds: int = 3) -> SiteProgress:
    return SiteProgress(
        root / digest[:16], "site-2", study=study, study_hash=digest, rounds=rounds, metric="mae"
    )


def test_the_site_view_shows_its_own_tasks_and_the_merged_curve(tmp_path: Path) -> None:
    # Prepare: round 1 done at this site, round 2 training now, the server merged round 1
    view = _view(tmp_path, "ab" * 32)
    view.begin(1, "train")
    view.done(1, "train", error=None, seconds=1.0, numbers={"train_loss": 2.0})
    view.begin(1, "validate")
    view.done(1, "validate", error=None, seconds=1.0, numbers={"value": 3.5})
    view.begin(2, "train", [MergedRound(1, 4.0, 3, 6.0)])

    # Execute
    status = site_status(tmp_path, PROGRESS_FILE)

    # Assert
    assert status["study"] == "age" and status["state"] == "running"
    assert status["rounds_done"] == 1 and status["rounds"] == 3
    assert status["eta_seconds"] == pytest.approx(12.0)
    assert status["sites"]["site-2"]["state"] == "training"
    assert status["sites"]["site-2"]["why"].startswith("round 2 since ")
    assert status["curves"] == {"all sites": [(1, 4.0)], "site-2": [(1, 3.5)]}


def test_the_latest_study_is_shown_unless_one_is_named(tmp_path: Path) -> None:
    old = _view(tmp_path, "cd" * 32, study="old", rounds=1)
    old.begin(1, "validate")
    old.done(1, "validate", error="OSError: disk", seconds=1.0)
    (tmp_path / ("cd" * 8) / PROGRESS_FILE).write_text(
        (tmp_path / ("cd" * 8) / PROGRESS_FILE).read_text().replace("2026", "2000", 1)
    )
    new = _view(tmp_path, "ab" * 32, study="new", rounds=1)
    new.begin(1, "validate")
    new.done(1, "validate", error=None, seconds=1.0, numbers={"value": 2.0})

    latest = site_status(tmp_path, PROGRESS_FILE)
    named = site_status(tmp_path, PROGRESS_FILE, "old")
    by_hash = site_status(tmp_path, PROGRESS_FILE, "CDCD")
    missing = site_status(tmp_path, PROGRESS_FILE, "fets")

    assert latest["study"] == "new" and latest["state"] == "finished"
    assert named["study"] == by_hash["study"] == "old"
    assert named["sites"]["site-2"] == {"state": "failed", "why": "OSError: disk"}
    assert missing["state"] == "waiting" and "no study 'fets'" in missing["reason"]


@pytest.mark.slow
def test_a_custodian_follows_a_simulated_study_from_the_site_config_alone(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: four sites (the merged curve needs three validations behind it, and a tiny site
    # may have no usable validation case); the custodian of site-1 watches its state folder,
    # which the simulation has not written yet
    sites = [*age_sites, *(write_site(tmp_path / f"hospital-{k}", seed=k) for k in (3, 4))]
    run = tmp_path / "run"
    state_root = SiteConfig(sites[0]).state_root
    server, thread = start_site_monitor(state_root, PROGRESS_FILE)
    url = server.url + "status.json"

    def status() -> dict:
        with urllib.request.urlopen(url, timeout=30) as answer:
            return json.loads(answer.read())

    seen = [status()["rounds_done"]]
    try:
        # Execute
        run_simulation(
            tiny_study(rounds=3, min_sites=4),
            sites,
            run,
            progress=lambda *_: seen.append(status()["rounds_done"]),
            site_settings=scored(4),
        )
        final = status()
        page = dump_dom(server.url, virtual_time_ms=5000)
    finally:
        server.shutdown()
        thread.join()

    # Assert: the counter moved with the rounds; this site only, with its own and merged curves
    config = SiteConfig.load(run / SITES_FOLDER / "site-1.json")
    assert config.state_root == state_root
    assert seen[0] == 0 and seen == sorted(seen) and seen[-1] == 3 and len(set(seen)) >= 3
    assert final["state"] == "finished" and final["rounds_done"] == 3
    assert set(final["sites"]) == {"site-1"} and set(final["curves"]) == {"all sites", "site-1"}
    own = [v for _, v in final["curves"]["site-1"]]
    merged = [v for _, v in final["curves"]["all sites"]]
    assert len(own) == 3 and all(v is not None for v in own)
    # the server's merged values where enough sites stand behind them; the last round's never
    # reaches a site (no task follows it)
    assert merged[:2] == _merged(run)[:2] and merged[2] is None
    assert any(v is not None for v in merged)
    assert not re.search(r"site-[234]", json.dumps(final))
    assert re.search(r'<span id="round">3 / 3</span>', page), page[:2000]
    assert "<td>site-1</td><td>answered</td>" in page and "site-2" not in page


def _merged(run: Path) -> list[float | None]:
    """The merged MAE per round in the server's run folder, where enough sites validated."""
    rounds = sorted((run / "rounds").glob("*/metrics.json"), key=lambda p: int(p.parent.name))
    records = [json.loads(p.read_text()) for p in rounds]
    return [
        r["validation"]["mae"] if len(r["validation_per_site"]) >= MIN_SITES_FOR_CURVE else None
        for r in records
    ]
