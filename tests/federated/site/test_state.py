"""A site's own state on disk: written each round, read back by a restarted site, damage refused."""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.server.run import FederatedRun
from neurofed.federated.site import SiteConfig, SiteWorker
from neurofed.federated.site.state import (
    CASE_ORDER_KEY,
    STATE_JSON,
    SiteState,
    SiteStateError,
    StatePart,
    case_order_seed,
    load_site_state,
    save_site_state,
    state_rounds,
)
from neurofed.federated.study import Study
from neurofed.federated.update import Parameters
from tests.federated.conftest import tiny_study

HASH = "ab" * 32


def _state(round_number: int) -> SiteState:
    return SiteState(
        round_number,
        {
            StatePart.LOCAL.value: {
                "norm.weight": np.full(3, round_number, np.float32),
                "norm.num_batches_tracked": np.array(7, np.int64),
            }
        },
    )


def test_round_folders_read_back_and_only_the_newest_two_are_kept(tmp_path: Path) -> None:
    for k in (1, 2, 3):
        save_site_state(tmp_path, _state(k), study_hash=HASH, site_id="site-1")

    loaded = load_site_state(tmp_path, 3, study_hash=HASH, site_id="site-1")

    assert state_rounds(tmp_path) == [2, 3]
    assert not any(p.name.endswith(".tmp") for p in tmp_path.iterdir())
    local = loaded.parts[StatePart.LOCAL.value]
    np.testing.assert_array_equal(local["norm.weight"], np.full(3, 3, np.float32))
    assert local["norm.num_batches_tracked"].shape == () and int(local["norm.num_batches_tracked"])
    record = json.loads((tmp_path / "round-3" / STATE_JSON).read_text())
    assert record["sha256"].keys() == {"local"} and record["round"] == 3


def test_a_folder_of_another_study_or_site_or_with_a_changed_file_is_refused(
    tmp_path: Path,
) -> None:
    folder = save_site_state(tmp_path, _state(1), study_hash=HASH, site_id="site-1")

    with pytest.raises(SiteStateError, match="study_hash is 'abab"):
        load_site_state(tmp_path, 1, study_hash="cd" * 32, site_id="site-1")
    with pytest.raises(SiteStateError, match="site_id is 'site-1', not 'site-2'"):
        load_site_state(tmp_path, 1, study_hash=HASH, site_id="site-2")
    weights = folder / "local.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    with pytest.raises(SiteStateError, match=r"local\.safetensors: its SHA-256 differs"):
        load_site_state(tmp_path, 1, study_hash=HASH, site_id="site-1")


# -- restarted sites -----------------------------------------------------------------------------

STUDIES: dict[str, Callable[[], Study]] = {
    "fedbn": lambda: tiny_study(strategy="fedbn", rounds=3),
    "ditto": lambda: tiny_study(strategy="ditto", ditto_lambda=0.5, rounds=3, local_epochs=2),
    "ditto-local": lambda: tiny_study(
        strategy="ditto", ditto_lambda=0.5, rounds=3, local_parameters=["features.*.1.*"]
    ),
}


def _kept(worker: SiteWorker, sent: Parameters) -> Parameters:
    """What a round produced: the update sent, the local layers and the personalised model."""
    assert worker.training is not None
    trainer = worker.training.trainer
    everything = trainer.get_parameters(include_local=True)
    personalised = worker.training.personalised_parameters() or {}
    return (
        dict(sent)
        | {f"local:{k}": everything[k] for k in trainer.local_names()}
        | {f"personalised:{k}": v for k, v in personalised.items()}
    )


def _same(a: Parameters, b: Parameters) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)


def _rounds(
    worker: SiteWorker, run: FederatedRun, rounds: range, start: Parameters
) -> tuple[Parameters, Parameters]:
    """Train ``rounds``, each from the previous round's update (a one-site FedAvg)."""
    params = dict(start)
    kept: Parameters = {}
    for k in rounds:
        answer = worker.handle("train", params, run.task_request(k).encode())
        assert answer.error is None
        kept = _kept(worker, answer.params)
        params = params | answer.params
    return params, kept


@pytest.mark.parametrize("kind", sorted(STUDIES))
def test_a_restarted_site_computes_the_update_of_an_uninterrupted_one(
    kind: str, tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    study = STUDIES[kind]()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])

    def worker(state: str) -> SiteWorker:
        return SiteWorker(
            "site-1", SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / state)
        )

    uninterrupted = worker("a")
    global_3, _ = _rounds(uninterrupted, run, range(1, 3), run.params)
    _, expected = _rounds(uninterrupted, run, range(3, 4), global_3)
    interrupted = worker("b")
    global_b, _ = _rounds(interrupted, run, range(1, 3), run.params)
    assert _same(global_b, global_3)
    # Execute: the site process restarts before round 3
    restarted = worker("b")
    _, got = _rounds(restarted, run, range(3, 4), global_3)
    # without its state the same round gives another result: the test can fail
    _, amnesic = _rounds(worker("empty"), run, range(3, 4), global_3)
    # Assert
    assert _same(got, expected)
    assert not _same(amnesic, expected)
    assert state_rounds(tmp_path / "b" / study.content_hash[:16]) == [2, 3]


def test_a_restarted_ditto_site_validates_the_personalised_model_it_had(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    study = tiny_study(strategy="ditto", ditto_lambda=0.5, rounds=3)
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    config = SiteConfig(
        age_sites[0], device="cpu", state_dir=tmp_path / "state", min_cases_per_metric=1
    )
    warm = SiteWorker("site-1", config)
    warm.handle("train", run.params, run.task_request(1).encode())

    expected = warm.handle("validate", run.params, run.task_request(1).encode())
    got = SiteWorker("site-1", config).handle("validate", run.params, run.task_request(1).encode())

    # wall time differs; the metric states must not
    want, have = (
        {k: v for k, v in a.meta.items() if k != "validate_seconds"} for a in (expected, got)
    )
    assert want.keys() == have.keys() and len(have) == 2
    for key, arrays in want.items():
        assert _same(arrays, have[key])


def _flip_a_byte(folder: Path) -> None:
    weights = folder / "personalised.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))


def _garble_the_record(folder: Path) -> None:
    (folder / STATE_JSON).write_text("{ not json", encoding="utf-8")


def _claim_another_site(folder: Path) -> None:
    record = json.loads((folder / STATE_JSON).read_text())
    (folder / STATE_JSON).write_text(json.dumps(record | {"site_id": "site-9"}))


def _drop_the_weights(folder: Path) -> None:
    (folder / "local.safetensors").unlink()


@pytest.mark.parametrize(
    ("damage", "reason"),
    [
        (_flip_a_byte, "SHA-256 differs"),
        (_garble_the_record, "unreadable"),
        (_claim_another_site, "site_id is 'site-9'"),
        (_drop_the_weights, "local.safetensors: unreadable"),
    ],
)
def test_a_damaged_state_folder_is_refused_with_a_logged_reason(
    damage: Callable[[Path], None],
    reason: str,
    tmp_path: Path,
    age_sites: list[Path],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: a Ditto site with local layers trains round 1, then its state is damaged
    study = STUDIES["ditto-local"]()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    config = SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "state")
    SiteWorker("site-1", config).handle("train", run.params, run.task_request(1).encode())
    folder = config.study_state_dir(study.content_hash)
    damage(folder / "round-1")
    # Execute: the site restarts for round 2
    with caplog.at_level(logging.WARNING, logger="neurofed.federated.site"):
        restarted = SiteWorker("site-1", config)
        answer = restarted.handle("train", run.params, run.task_request(2).encode())
    # Assert: it trains from the global model, as a site that never kept anything would
    fresh = SiteWorker("site-1", SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / "x"))
    expected = fresh.handle("train", run.params, run.task_request(2).encode())
    assert answer.error is None
    assert _same(answer.params, expected.params)
    assert _same(
        (restarted.training and restarted.training.personalised_parameters()) or {},
        (fresh.training and fresh.training.personalised_parameters()) or {},
    )
    assert "refusing the saved state after round 1" in caplog.text and reason in caplog.text
    assert state_rounds(folder) == [1, 2]  # round 2 is written as usual


def test_a_site_killed_while_a_rounds_state_was_written_again_restores_that_state(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: a Ditto site with local layers trains round 1; a copy of its state stays intact,
    # the other is left as a kill leaves it between atomic_folder's two renames
    study = STUDIES["ditto-local"]()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    configs = {
        name: SiteConfig(age_sites[0], device="cpu", state_dir=tmp_path / name)
        for name in ("cut", "intact", "empty")
    }
    SiteWorker("site-1", configs["cut"]).handle("train", run.params, run.task_request(1).encode())
    shutil.copytree(tmp_path / "cut", tmp_path / "intact")
    folder = configs["cut"].study_state_dir(study.content_hash)
    (folder / "round-1").rename(folder / ".round-1.previous.tmp")
    shutil.copytree(folder / ".round-1.previous.tmp", folder / ".round-1.tmp")

    # Execute: the site restarts for round 2
    def round_2(name: str) -> Parameters:
        answer = SiteWorker("site-1", configs[name]).handle(
            "train", run.params, run.task_request(2).encode()
        )
        assert answer.error is None
        return answer.params

    got, expected, amnesic = round_2("cut"), round_2("intact"), round_2("empty")
    # Assert: it restored round 1's state, as an uninterrupted site does; nothing temporary left
    assert _same(got, expected) and not _same(got, amnesic)
    assert sorted(p.name for p in folder.iterdir() if p.name.startswith(".round")) == []
    assert state_rounds(folder) == [1, 2]


def test_the_case_order_key_is_drawn_once_per_study_and_redrawn_when_damaged(
    tmp_path: Path,
) -> None:
    # Execute
    first = case_order_seed(tmp_path / "study-a")
    again = case_order_seed(tmp_path / "study-a")
    other = case_order_seed(tmp_path / "study-b")
    (tmp_path / "study-a" / CASE_ORDER_KEY).write_bytes(b"short")
    redrawn = case_order_seed(tmp_path / "study-a")

    # Assert: stable within a study, different between studies, never a short key
    assert first == again and first != other and redrawn != first
    assert len((tmp_path / "study-a" / CASE_ORDER_KEY).read_bytes()) == 32
