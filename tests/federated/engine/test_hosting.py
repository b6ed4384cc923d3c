"""Several sites hosted by one simulator worker: the wire format carries every site's answer
intact; a missing or malformed part fails that site only; the controller, driven against
hosts instead of sites (without NVFlare's transport), gives the run of one client per site in
one task per host."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from nvflare.app_common.abstract.fl_model import FLModel

from neurofed.federated.engine.hosting import (
    HostedSites,
    assign_sites,
    pack_answers,
    requested_sites,
    unpack_answers,
)
from neurofed.federated.protocol import (
    MetaField,
    ProtocolError,
    SiteAnswer,
    TaskName,
    TrainResult,
)
from neurofed.federated.server.run_folder import load_round_checkpoint
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.worker import SiteWorker
from tests.federated.conftest import Handler, drive_controller, tiny_study, worker_client


def _train_answer(site: str, value: float) -> SiteAnswer:
    result = TrainResult(params={"conv/weight": np.full((2, 3), value, np.float32)}, num_examples=4)
    return SiteAnswer(result=result, site_id=site)


def test_sites_are_dealt_to_hosts_in_turn() -> None:
    sites = [f"site-{k}" for k in range(1, 8)]
    hosts = assign_sites(sites, 3)
    assert hosts == {
        "host-1": ["site-1", "site-4", "site-7"],
        "host-2": ["site-2", "site-5"],
        "host-3": ["site-3", "site-6"],
    }
    with pytest.raises(ValueError, match="give 1 to 7"):
        assign_sites(sites, 8)


def test_each_sites_answer_comes_back_as_it_was_sent() -> None:
    # Prepare: a trained site, a failed one and a refusing one on one host
    answers = {
        "site-1": _train_answer("site-1", 1.5),
        "site-2": SiteAnswer.failure("a scan of the site could not be read"),
        "site-3": SiteAnswer.failure("study not approved here", refused=True),
    }
    # Execute
    params, meta = pack_answers(answers)
    back = unpack_answers(TaskName.TRAIN, "host-1", list(answers), params, meta)
    # Assert
    assert [a.site_id for a in back] == ["site-1", "site-2", "site-3"]
    assert isinstance(back[0].result, TrainResult) and back[0].result.num_examples == 4
    np.testing.assert_array_equal(back[0].params["conv/weight"], np.full((2, 3), 1.5))
    assert back[1].error == "a scan of the site could not be read" and not back[1].refused
    assert back[2].refused


def test_a_missing_or_malformed_part_fails_that_site_only() -> None:
    # Prepare
    params, meta = pack_answers(
        {"site-1": _train_answer("site-1", 1.0), "site-2": _train_answer("site-2", 2.0)}
    )
    meta[MetaField.HOSTED_ANSWERS.value]["site-2"][MetaField.NUM_EXAMPLES.value] = "many"
    params["site-9/conv/weight"] = np.zeros(1)  # a site it was not asked for: ignored
    # Execute
    back = unpack_answers(TaskName.TRAIN, "host-1", ["site-1", "site-2", "site-3"], params, meta)
    # Assert
    assert back[0].error is None
    assert back[1].error is not None and back[1].error.startswith("malformed answer")
    assert "num_examples" in back[1].error
    assert back[2].error == "its host host-1 sent no answer for it"


@pytest.mark.parametrize(
    ("meta", "reason"),
    [
        ({MetaField.ERROR.value: "no sites named"}, "its host host-2 failed: no sites named"),
        ({}, "malformed answer: its host host-2 sent no hosted_answers table"),
        ({MetaField.HOSTED_ANSWERS.value: ["site-1"]}, "no hosted_answers table"),
    ],
)
def test_a_host_that_fails_as_a_whole_fails_each_of_its_sites(
    meta: dict[str, Any], reason: str
) -> None:
    back = unpack_answers(TaskName.VALIDATE, "host-2", ["site-1", "site-2"], {}, meta)
    assert [a.site_id for a in back] == ["site-1", "site-2"]
    assert all(a.error is not None and reason in a.error for a in back)


@pytest.mark.parametrize(
    "sites", [None, "site-1", ["site-1", 3], ["site-1", ""], ["site-1", "site-1"]]
)
def test_a_malformed_site_list_is_refused(sites: Any) -> None:
    meta = {} if sites is None else {MetaField.HOSTED_SITES.value: sites}
    with pytest.raises(ProtocolError, match="hosted_sites"):
        requested_sites(meta)


def test_a_host_answers_for_its_sites_and_only_them(age_sites: list[Path], tmp_path: Path) -> None:
    # Prepare: a host of site-1 (a real site) and site-2 (a config that cannot be read); the
    # task is one site-1's worker answers with its own reason (no fingerprint without a plan)
    good = SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "state")
    broken = tmp_path / "site-2.json"
    broken.write_text("{not json", encoding="utf-8")
    host = HostedSites({"site-1": good.write(tmp_path / "site-1.json"), "site-2": broken})
    study = tiny_study()
    meta = {
        MetaField.STUDY.value: study.to_dict(),
        MetaField.STUDY_HASH.value: study.content_hash,
        MetaField.ROUND.value: 0,
        MetaField.HOSTED_SITES.value: ["site-1", "site-2", "site-3"],
    }
    # Execute
    params, answer = host.handle(TaskName.FINGERPRINT.value, {}, meta)
    unreadable = host.handle(TaskName.FINGERPRINT.value, {}, {MetaField.ROUND.value: 0})
    # Assert: each site's own answer; a site it does not host, or cannot read, fails alone
    back = unpack_answers(
        TaskName.FINGERPRINT, "host-1", ["site-1", "site-2", "site-3"], params, answer
    )
    assert back[0].error is not None and "has no [plan]" in back[0].error  # site-1's worker
    assert back[1].error is not None and back[1].error.startswith("site config:")
    assert set(answer[MetaField.HOSTED_ANSWERS.value]) == {"site-1", "site-2"}  # its own
    assert back[2].error == "its host host-1 sent no answer for it"
    assert host.answer("site-3", "validate", {}, meta).error == "this host does not host the site"
    assert str(tmp_path) not in json.dumps(answer, default=str)  # no path leaves the host
    assert unreadable == (
        {},
        {MetaField.ERROR.value: "the task names no hosted_sites (a list of site names)"},
    )


def _run(
    run_dir: Path,
    hosts: dict[str, list[str]] | None,
    clients: dict[str, Handler],
    trips: list[Any],
) -> list[float]:
    """The controller of a 3-round study over NVFlare ``clients`` (hosts, or one client per
    site when ``hosts`` is ``None``); returns each task's timeout."""
    timeouts: list[float] = []

    def record(task_name: str, _: FLModel, targets: list[str], timeout: float) -> None:
        trips.append((task_name, tuple(targets)))
        timeouts.append(timeout)

    drive_controller(tiny_study(rounds=3), run_dir, clients, hosts=hosts, before_send=record)
    return timeouts


def _configs(root: Path, sites: list[Path]) -> dict[str, Path]:
    """Site configs of ``sites``; their validation scores leave the site from one case (the
    tiny sites have one or two validation cases each), so that runs can be compared."""
    return {
        f"site-{k}": SiteConfig(
            site, device="cpu", state_dir=root / f"state-{k}", min_cases_per_metric=1
        ).write(root / f"site-{k}.json")
        for k, site in enumerate(sites, start=1)
    }


@pytest.mark.parametrize("keep", [1, 2], ids=["one-site-loaded", "both-loaded"])
def test_one_host_of_two_sites_gives_the_run_of_two_clients(
    keep: int, age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: the same two sites as two NVFlare clients, and hosted by one (which keeps one
    # site loaded, so each task loads its site again, or both)
    workers = {
        site: SiteWorker(site, SiteConfig.load(path))
        for site, path in _configs(tmp_path / "apart", age_sites).items()
    }
    apart = {site: worker_client(worker) for site, worker in workers.items()}
    host = HostedSites(_configs(tmp_path / "together", age_sites), keep=keep)
    apart_trips: list[Any] = []
    hosted_trips: list[Any] = []
    # Execute
    apart_timeouts = _run(tmp_path / "run-apart", None, apart, apart_trips)
    hosted_timeouts = _run(
        tmp_path / "run-hosted",
        {"host-1": ["site-1", "site-2"]},
        {"host-1": host.handle},
        hosted_trips,
    )
    # Assert: one task per host, with the time its two sites get one after the other; the
    # same validations and model every round
    assert hosted_timeouts == [2 * t for t in apart_timeouts]
    assert host.loaded == ["site-1", "site-2"][-keep:]
    assert hosted_trips == [(task, ("host-1",)) for _ in range(3) for task in ("train", "validate")]
    assert [targets for _, targets in apart_trips] == [("site-1", "site-2")] * 6
    for number in (1, 2, 3):
        a, b = (
            json.loads((tmp_path / run / "rounds" / str(number) / "metrics.json").read_text())
            for run in ("run-apart", "run-hosted")
        )
        assert b["accepted"] == ["site-1", "site-2"] and not b["failed"], b
        assert b["validation_per_site"] and b["validation_per_site"].keys() == (
            a["validation_per_site"].keys()
        )
        for site, scores in a["validation_per_site"].items():
            assert b["validation_per_site"][site] == pytest.approx(scores, rel=1e-5)
        one = load_round_checkpoint(tmp_path / "run-apart" / "checkpoints" / f"round-{number}")
        two = load_round_checkpoint(tmp_path / "run-hosted" / "checkpoints" / f"round-{number}")
        for name, value in one.params.items():
            np.testing.assert_allclose(two.params[name], value, rtol=1e-5, atol=1e-6)


def test_a_site_its_host_leaves_out_fails_the_round_and_the_run_goes_on(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: a host that drops site-2's answer to every training task
    host = HostedSites(_configs(tmp_path, age_sites))

    def lossy(
        task: str, params: dict[str, Any], meta: dict[str, Any]
    ) -> tuple[Any, dict[str, Any]]:
        out_params, out_meta = host.handle(task, params, meta)
        if task == TaskName.TRAIN.value:
            del out_meta[MetaField.HOSTED_ANSWERS.value]["site-2"]
        return out_params, out_meta

    # Execute
    _run(tmp_path / "run", {"host-1": ["site-1", "site-2"]}, {"host-1": lossy}, [])
    # Assert: site-2 failed each round with the reason, site-1's training went on
    for number in (1, 2, 3):
        record = json.loads(
            (tmp_path / "run" / "rounds" / str(number) / "metrics.json").read_text()
        )
        assert record["accepted"] == ["site-1"] and record["aggregated"], record
        assert record["failed"] == {"site-2": "its host host-1 sent no answer for it"}
        assert record["targets"] == ["site-1", "site-2"] and not record["dropped"]  # kept


def test_a_host_keeps_the_sites_it_served_last(tmp_path: Path) -> None:
    # Prepare
    configs = {
        f"site-{k}": SiteConfig(tmp_path, device="cpu").write(tmp_path / f"site-{k}.json")
        for k in (1, 2, 3)
    }
    host = HostedSites(configs, keep=2)
    # Execute
    first = host.worker("site-1")
    host.worker("site-2")
    again = host.worker("site-1")
    host.worker("site-3")
    # Assert: site-2 was served least recently, so it was let go
    assert again is first and host.loaded == ["site-1", "site-3"]
    with pytest.raises(ValueError, match="keeps at least the site it serves"):
        HostedSites(configs, keep=0)


def test_a_malformed_answer_of_a_plain_client_fails_that_site_only(
    age_sites: list[Path], tmp_path: Path
) -> None:
    # Prepare: two clients, one site each; site-2 garbles its training answers
    workers = {
        site: SiteWorker(site, SiteConfig.load(path))
        for site, path in _configs(tmp_path, age_sites).items()
    }

    def answer(site: str) -> Handler:
        def handle(task: str, params: dict[str, Any], meta: dict[str, Any]) -> Any:
            out_params, out_meta = workers[site].handle(task, params, meta).encode()
            if site == "site-2" and task == TaskName.TRAIN.value:
                out_meta[MetaField.NUM_EXAMPLES.value] = "many"
            return out_params, out_meta

        return handle

    # Execute
    _run(tmp_path / "run", None, {s: answer(s) for s in workers}, [])
    # Assert
    record = json.loads((tmp_path / "run" / "rounds" / "1" / "metrics.json").read_text())
    assert record["accepted"] == ["site-1"] and record["aggregated"], record
    assert record["failed"]["site-2"].startswith("malformed answer:")
    assert "num_examples" in record["failed"]["site-2"]
