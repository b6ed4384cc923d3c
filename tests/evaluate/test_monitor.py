"""``neurofed monitor``: the run's progress as JSON and as a page, live during a simulation."""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from neurofed.evaluate.monitor import run_status, start_monitor
from neurofed.federated.engine import run_simulation
from tests.browser import dump_dom
from tests.evaluate.runs import run_folder
from tests.federated.conftest import age_sites, tiny_study

__all__ = ["age_sites"]  # the session fixture, used here


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as answer:
        return json.loads(answer.read())


def test_the_status_has_rounds_site_states_curves_and_time_left(tmp_path: Path) -> None:
    # Prepare: 3 of fets-fedavg's rounds written, site-1 failed in round 3, no summary yet
    dice = {"site-1": [0.5, 0.6, 0.7], "site-2": [0.3, 0.35, 0.4]}
    run = run_folder(tmp_path / "run", dice, failed_round=3)
    (run / "summary.json").unlink()

    # Execute
    status = run_status(run)
    custodian = run_status(run, site="site-2")

    # Assert
    assert status["rounds_done"] == 3 and status["state"] == "running"
    planned = status["rounds"]
    assert planned > 3 and status["eta_seconds"] == pytest.approx(2.0 * (planned - 3))
    assert status["sites"]["site-1"] == {
        "state": "failed",
        "why": "training failed: out-of-memory",
    }
    assert status["sites"]["site-2"]["state"] == "answered"
    assert [v for _, v in status["curves"]["site-2"]] == [0.3, 0.35, 0.4]
    # a custodian sees its own site and the merged curve, never another site
    assert set(custodian["sites"]) == {"site-2"}
    assert set(custodian["curves"]) == {"all sites", "site-2"}


def test_the_server_answers_on_loopback_and_names_what_it_serves(tmp_path: Path) -> None:
    run = run_folder(tmp_path / "run", {"site-1": [0.5, 0.6]})
    server, thread = start_monitor(run)
    try:
        assert server.server_address[0] == "127.0.0.1"
        assert _get(server.url + "status.json")["state"] == "finished"
        with pytest.raises(urllib.error.HTTPError) as missing:
            urllib.request.urlopen(server.url + "etc/passwd", timeout=30)
        assert missing.value.code == 404
    finally:
        server.shutdown()
        thread.join()


@pytest.mark.slow
def test_the_round_counter_advances_while_a_simulated_study_runs(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: the monitor watches a folder the simulation has not written yet
    run = tmp_path / "run"
    server, thread = start_monitor(run)
    seen: list[int] = [_get(server.url + "status.json")["rounds_done"]]

    def each_round(done: int, total: int, label: str) -> None:
        seen.append(_get(server.url + "status.json")["rounds_done"])

    try:
        # Execute
        run_simulation(tiny_study(rounds=3, min_sites=2), age_sites, run, progress=each_round)

        # Assert: the counter moved with the rounds, and the page shows where it stands
        assert seen[0] == 0 and seen[-1] == 3 and seen == sorted(seen) and len(set(seen)) >= 3
        page = dump_dom_of(server.url)
        assert re.search(r'<span id="round">3 / 3</span>', page), page[:2000]
        assert re.search(r"<span id=\"state\">finished</span>", page), page[:2000]
        assert "<td>site-1</td><td>answered</td>" in page
    finally:
        server.shutdown()
        thread.join()


def dump_dom_of(url: str) -> str:
    """The monitor page after its first poll (Chromium runs the page's timers in virtual time)."""
    return dump_dom(url, virtual_time_ms=5000)
