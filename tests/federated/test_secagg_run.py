"""Secure aggregation through the site worker and the server's run, in-process: the sites send
only masked vectors, the server's new global model is FedAvg's (task-masked heads included), a
site that drops out after sharing is recovered from, and a site refuses a secure study's train
task that skips the secure steps."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.protocol import (
    MetaField,
    SecAggRequest,
    SiteAnswer,
    TaskName,
    TaskRequest,
)
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.study import Study, StudyError
from neurofed.federated.update import SiteUpdate
from tests.training.conftest import glioma_site

__all__ = ["glioma_site"]

STUDY = """\
name = "secure"
rounds = 2
min_sites = 2
seed = 7
dataset = "phantom-glioma"

[task]
id = "glioma-multitask"

[model]
base_filters = 4

[strategy]
name = "{strategy}"
mask_heads = true
secagg = {secagg}

[selection]
metric = "WT/dice"
direction = "max"

[train]
batch_size = 2
samples_per_epoch = 4
augment = false

[train.preprocess]
spacing = [2.0, 2.0, 2.0]
spatial_shape = [24, 24, 24]
"""

SITES = ["site-1", "site-2", "site-3"]


def _study(strategy: str = "fedavg", secagg: str = "true") -> Study:
    return Study.from_toml(STUDY.format(strategy=strategy, secagg=secagg))


def _workers(root: Path, site: Path) -> dict[str, SiteWorker]:
    """Three sites on copies of one phantom site (each trains with its own seed)."""
    return {
        name: SiteWorker(
            name,
            SiteConfig(
                site,
                device="cpu",
                state_dir=root / name / "state",
                audit_dir=root / name / "audit",
            ),
        )
        for name in SITES
    }


class Wire:
    """Carries tasks to the workers as the controller does; ``silent`` sites never answer
    the named task."""

    def __init__(self, run: FederatedRun, workers: dict[str, SiteWorker], round_number: int):
        self.run, self.workers, self.round = run, workers, round_number
        self.silent: dict[str, TaskName] = {}
        self.sent: list[tuple[TaskName, SiteAnswer]] = []

    def __call__(
        self, task: TaskName, targets: list[str], step: SecAggRequest | None
    ) -> Sequence[SiteAnswer]:
        request = self.run.task_request(self.round)
        meta = (request if step is None else _with(request, step)).encode()
        params = dict(self.run.params) if task is TaskName.TRAIN else {}
        answers = []
        for site in targets:
            answer = self.workers[site].handle(task.value, params, meta)
            self.sent.append((task, answer))
            if self.silent.get(site) is not task:
                answers.append(SiteAnswer.decode(task, site, *answer.encode()))
        return answers


def _with(request: TaskRequest, step: SecAggRequest) -> TaskRequest:
    return dataclasses.replace(request, secagg=step)


def _fedavg(
    run: FederatedRun, workers: dict[str, SiteWorker], sites: Collection[str], before: dict
) -> dict:
    """What plain FedAvg (masked heads) makes of the sites' trained models."""
    updates = []
    for site in sites:
        training = workers[site].training
        assert training is not None
        trainer = training.trainer
        trained = trainer.get_parameters()
        counts = training.weights()[1]
        updates.append(SiteUpdate(site, trained, trainer.num_examples, label_counts=counts))
    params, _ = run.strategy.aggregate(before, updates)
    return params


def _segmentation_only() -> Study:
    """tumor-regions: the sites' weights still name label kinds the model has no heads for
    (the totals must cover them; the NVFlare bench found every such round refused)."""
    text = STUDY.format(strategy="fedavg", secagg="true")
    text = text.replace('id = "glioma-multitask"', 'id = "tumor-regions"')
    return Study.from_toml(text.replace("mask_heads = true\n", ""))


@pytest.mark.parametrize("make_study", [_study, _segmentation_only], ids=["heads", "no-heads"])
def test_a_secure_round_sends_only_masked_vectors_and_gives_fedavgs_model(
    tmp_path: Path, glioma_site: Path, make_study: Callable[[], Study]
) -> None:
    # Prepare
    run = FederatedRun(make_study(), tmp_path / "run")
    run.start(SITES)
    workers = _workers(tmp_path, glioma_site)
    wire = Wire(run, workers, 1)
    before = dict(run.params)

    # Execute
    record = RoundRecord(round=1)
    changed = run.record_secure_training(record, SITES, wire)

    # Assert: aggregated over all three; the global model is FedAvg's to float32 precision
    assert changed, record.quorum_error
    assert record.accepted == SITES and not record.failed
    expected = _fedavg(run, workers, SITES, before)
    floats = [n for n, v in before.items() if v.dtype.kind == "f"]
    for name in floats:
        np.testing.assert_allclose(run.params[name], expected[name], rtol=0, atol=1e-6)
    assert any(not np.allclose(run.params[n], before[n]) for n in floats)
    # what left the sites: keys, sealed shares, one uint32 vector each, reveals; no parameter
    tasks = [task for task, _ in wire.sent]
    assert (
        tasks
        == [TaskName.SECAGG_KEYS] * 3
        + [TaskName.SECAGG_SHARES] * 3
        + [TaskName.TRAIN] * 3
        + [TaskName.SECAGG_UNMASK] * 3
    )
    for _, answer in wire.sent:
        assert answer.error is None, answer.error
        assert answer.params == {}
    masked = [a.meta[MetaField.SECAGG_MASKED.value] for t, a in wire.sent if t is TaskName.TRAIN]
    assert all(
        m.dtype == np.uint32 and m.size == sum(before[n].size for n in floats) for m in masked
    )
    assert record.train["site-1"]["secagg_clipped"] == 0.0
    recorded = sorted((tmp_path / "site-1" / "audit").rglob("*.json"))
    described = " ".join(p.read_text() for p in recorded)
    assert "secagg_masked" in described and not any(n in described for n in floats)


def test_a_site_silent_after_sharing_is_recovered_from_and_dropped(
    tmp_path: Path, glioma_site: Path
) -> None:
    # Prepare: site-2 shares, trains, but its masked input never arrives
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(SITES)
    workers = _workers(tmp_path, glioma_site)
    wire = Wire(run, workers, 1)
    wire.silent = {"site-2": TaskName.TRAIN}
    before = dict(run.params)

    # Execute
    record = RoundRecord(round=1)
    changed = run.record_secure_training(record, SITES, wire)

    # Assert: FedAvg of site-1 and site-3 only; site-2 dropped from later rounds
    assert changed, record.quorum_error
    assert record.accepted == ["site-1", "site-3"] and record.dropped == ["site-2"]
    expected = _fedavg(run, workers, ["site-1", "site-3"], before)
    for name, value in before.items():
        if value.dtype.kind == "f":
            np.testing.assert_allclose(run.params[name], expected[name], rtol=0, atol=1e-6)
    assert run.live == ["site-1", "site-3"]
    reveals = [a.result for t, a in wire.sent if t is TaskName.SECAGG_UNMASK]
    assert all(set(r.keys) == {"site-2"} and "site-2" not in r.seeds for r in reveals)  # type: ignore[union-attr]


def test_below_the_threshold_the_model_is_unchanged_and_the_reason_recorded(
    tmp_path: Path, glioma_site: Path
) -> None:
    # Prepare: threshold 3 of 3; site-3 falls silent after the keys
    study = Study.from_toml(
        STUDY.format(strategy="fedavg", secagg="true").replace(
            "secagg = true\n", "secagg = true\nsecagg_threshold = 3\n"
        )
    )
    run = FederatedRun(study, tmp_path / "run")
    run.start(SITES)
    wire = Wire(run, _workers(tmp_path, glioma_site), 1)
    wire.silent = {"site-3": TaskName.SECAGG_SHARES}
    before = dict(run.params)

    # Execute
    record = RoundRecord(round=1)
    changed = run.record_secure_training(record, SITES, wire)

    # Assert: nothing was trained or unmasked
    assert not changed and not record.aggregated
    assert record.quorum_error == (
        "secagg-shares: 2 site(s) answered; the round needs at least 3 (its threshold); "
        "nothing was unmasked"
    )
    assert all(np.array_equal(run.params[n], before[n]) for n in before)
    assert TaskName.TRAIN not in [t for t, _ in wire.sent]


def test_a_site_refuses_a_secure_studys_train_task_without_its_secure_step(
    tmp_path: Path, glioma_site: Path
) -> None:
    # Prepare
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(SITES)
    worker = _workers(tmp_path, glioma_site)["site-1"]

    # Execute: a server that asks for the plain training task
    answer = worker.handle(TaskName.TRAIN.value, run.params, run.task_request(1).encode())

    # Assert: refused before training: nothing trained, nothing sent
    assert answer.error == (
        "ProtocolError: train: this study aggregates securely; the task carries no secure step"
    )
    assert answer.params == {}
    assert worker.training is not None and worker.training.keeper.round is None  # no round trained


def test_a_plain_study_refuses_secure_steps_and_secagg_needs_a_weighted_mean(
    tmp_path: Path, glioma_site: Path
) -> None:
    # Prepare
    plain = _study(secagg="false")
    run = FederatedRun(plain, tmp_path / "run")
    run.start(SITES)
    worker = _workers(tmp_path, glioma_site)["site-1"]

    # Execute
    answer = worker.handle(TaskName.SECAGG_KEYS.value, {}, run.task_request(1).encode())

    # Assert
    assert "belongs to secure aggregation, which this study has not" in str(answer.error)
    assert "secagg" not in json.dumps(plain.to_dict())  # an existing study keeps its hash
    with pytest.raises(StudyError, match="cannot run with secagg = true"):
        _study(strategy="median")
    with pytest.raises(StudyError, match="secagg_threshold"):
        Study.from_toml(
            STUDY.format(strategy="fedavg", secagg="true").replace(
                "secagg = true\n", "secagg = true\nsecagg_threshold = 1\n"
            )
        )


@pytest.mark.slow
def test_a_secure_study_runs_on_the_nvflare_simulator(tmp_path: Path, glioma_site: Path) -> None:
    """Three simulated sites on the real NVFlare simulator, two secure rounds: every round is
    aggregated from masked vectors, and what site-1 sent holds no parameter."""
    import shutil

    from neurofed.federated.engine import run_simulation

    # Prepare
    sites = [shutil.copytree(glioma_site, tmp_path / f"glioma-{k}") for k in (1, 2, 3)]
    settings = {"site-1": {"audit_dir": str(tmp_path / "sent")}}

    # Execute
    result = run_simulation(_study(), sites, tmp_path / "run", site_settings=settings)

    # Assert
    assert result.model_dir is not None
    for k in (1, 2):
        record = json.loads((tmp_path / "run" / "rounds" / str(k) / "metrics.json").read_text())
        assert record["aggregated"] and record["accepted"] == SITES, record
        assert all("secagg_clipped" in record["train"][s] for s in SITES)
        assert "WT/dice" in record["validation"]  # (withheld: 3 validation cases per site)
    described = [json.loads(p.read_text()) for p in sorted((tmp_path / "sent").rglob("*.json"))]
    text = json.dumps(described)
    assert "secagg_masked" in text and "secagg_reveal" in text and "secagg_sealed" in text
    assert "encoder" not in text and "heads." not in text
