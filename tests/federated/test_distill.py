"""The ``distill`` strategy end to end in-process: a site allowed to send condensed volumes sends
them with class-mean logits of classes of n_min cases only; the server trains the marker heads on
them after FedAvg and sends the federation's class logits back; a site whose custodian did not
allow it refuses the study; a payload that copies a real case is withheld at the site; a
malformed payload fails that site only."""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.condensed import HEAD_CLASSES
from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.study import Study, StudyError
from tests.training.conftest import glioma_site

__all__ = ["glioma_site"]

STUDY = """\
name = "tiny-distill"
rounds = 2
min_sites = 1
seed = 7
dataset = "phantom-glioma"

[task]
id = "glioma-multitask"

[model]
base_filters = 4

[strategy]
name = "distill"
n_min = 2
images_per_class = 1
condense_steps = 10
server_epochs = 20
server_lr = 0.01
similarity_max = {similarity_max}

[selection]
metric = "WT/dice"
direction = "max"

[train]
batch_size = 2
samples_per_epoch = 2
augment = false

[train.preprocess]
spacing = [2.0, 2.0, 2.0]
spatial_shape = [24, 24, 24]
"""


ALLOWED = ("phantom-glioma",)


def _study(similarity_max: float = 0.5) -> Study:
    return Study.from_toml(STUDY.format(similarity_max=similarity_max))


def _train(run: FederatedRun, worker: SiteWorker, round_number: int) -> SiteAnswer:
    meta = run.task_request(round_number).encode()
    return worker.handle(TaskName.TRAIN.value, run.params, meta)


def _wire(answer: SiteAnswer, site: str) -> SiteAnswer:
    """``answer`` as the server reads it after the wire."""
    return SiteAnswer.decode(TaskName.TRAIN, site, answer.params, answer.meta)


def test_two_rounds_of_distill_send_condensed_volumes_and_train_the_heads(
    tmp_path: Path, glioma_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    study = _study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    config = SiteConfig(glioma_site, device="cpu", allow_condensed=ALLOWED, min_cases_per_metric=1)
    worker = SiteWorker("site-1", config)

    with caplog.at_level(logging.INFO):
        answer = _train(run, worker, 1)
    assert answer.error is None, answer.error
    payload = answer.meta[MetaField.CONDENSED.value]
    assert payload["volumes"].dtype == np.float16 and payload["volumes"].shape[1:] == (
        4,
        24,
        24,
        24,
    )
    for head in HEAD_CLASSES:
        counts = payload[f"class_counts/{head}"]
        assert np.all((counts == 0) | (counts >= 2))
    assert any("nearest real case NCC" in r.getMessage() for r in caplog.records)
    before = {k: v.copy() for k, v in run.params.items()}
    record = RoundRecord(round=1)
    assert run.record_training(record, ["site-1"], [_wire(answer, "site-1")])

    heads_changed = [k for k in run.params if k.startswith("heads.")]
    assert heads_changed and all(np.isfinite(run.params[k]).all() for k in heads_changed)
    assert run.state.scalars["condensed_volumes"] == len(payload["volumes"])
    assert run.state.scalars["distill_loss_last"] < run.state.scalars["distill_loss_first"]
    assert any(not np.array_equal(before[k], run.params[k]) for k in heads_changed)
    # the next round carries the federation's class logits to the sites
    meta = run.task_request(2).encode()
    sent = meta[MetaField.CLASS_LOGITS.value]
    assert set(sent) >= {"class_logits/idh", "class_counts/idh"}
    second = _train(run, worker, 2)
    assert second.error is None
    assert run.record_training(RoundRecord(round=2), ["site-1"], [_wire(second, "site-1")])


def test_the_sites_own_minimum_of_cases_raises_the_studys_n_min(
    tmp_path: Path, glioma_site: Path
) -> None:
    run = FederatedRun(_study(), tmp_path / "run")  # n_min = 2
    run.start(["site-1"])
    floor = SiteConfig(glioma_site, device="cpu", allow_condensed=ALLOWED, min_cases_per_metric=6)

    answer = _train(run, SiteWorker("site-1", floor), 1)

    assert answer.error is None, answer.error
    payload = answer.meta[MetaField.CONDENSED.value]
    counts = np.concatenate([payload[f"class_counts/{head}"] for head in HEAD_CLASSES])
    assert np.all((counts == 0) | (counts >= 6)), counts
    classes = payload.get("volume_class", np.zeros(0, np.int64)).tolist()
    idh = payload["class_counts/idh"]
    assert all(idh[k] >= 6 for k in classes)  # volumes only of classes the floor lets through


def test_a_site_refuses_distill_unless_its_custodian_allowed_condensed_volumes(
    tmp_path: Path, glioma_site: Path
) -> None:
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(["site-1"])
    worker = SiteWorker("site-1", SiteConfig(glioma_site, device="cpu"))

    answer = _train(run, worker, 1)

    assert answer.meta.get(MetaField.REFUSED.value) is True
    assert "allow-condensed" in answer.meta[MetaField.ERROR.value]
    assert MetaField.CONDENSED.value not in answer.meta


def _condense_then(
    monkeypatch: pytest.MonkeyPatch, replace: Callable[[np.ndarray, list], np.ndarray]
) -> None:
    """Condensation as the site runs it, its volumes then replaced by ``replace(volumes, cases)``
    (a condensation that memorised a case, or one that diverged)."""
    from neurofed.training import condense as module

    real = module.condense

    def altered(model: object, cases: list, **kwargs: object) -> object:
        made = real(model, cases, **kwargs)  # type: ignore[arg-type]
        assert made is not None
        return dataclasses.replace(made, volumes=replace(made.volumes, cases))

    monkeypatch.setattr(module, "condense", altered)


def _withheld_round(tmp_path: Path, glioma_site: Path) -> None:
    run = FederatedRun(_study(), tmp_path / "run")  # similarity_max 0.5
    run.start(["site-1"])
    config = SiteConfig(glioma_site, device="cpu", allow_condensed=ALLOWED, min_cases_per_metric=1)

    answer = _train(run, SiteWorker("site-1", config), 1)

    assert answer.error is None
    payload = answer.meta[MetaField.CONDENSED.value]
    assert "volumes" not in payload and int(payload["withheld"][0]) == 2
    assert "class_logits/idh" in payload  # the aggregates still go
    assert run.record_training(RoundRecord(round=1), ["site-1"], [_wire(answer, "site-1")])
    assert run.state.scalars.get("condensed_volumes", 0.0) == 0.0


def test_a_volume_that_copies_a_real_case_is_withheld_and_the_round_goes_on(
    tmp_path: Path, glioma_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def memorised(volumes: np.ndarray, cases: list) -> np.ndarray:
        copies = [cases[i % len(cases)].image for i in range(len(volumes))]
        return np.stack(copies).astype(np.float32) * 1.5 + 0.1  # NCC 1 to case i

    _condense_then(monkeypatch, memorised)

    _withheld_round(tmp_path, glioma_site)


def test_a_volume_whose_similarity_cannot_be_measured_is_withheld(
    tmp_path: Path, glioma_site: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _condense_then(monkeypatch, lambda volumes, cases: np.full_like(volumes, np.nan))

    _withheld_round(tmp_path, glioma_site)


def test_a_malformed_payload_fails_that_site_only(tmp_path: Path, glioma_site: Path) -> None:
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(["site-1", "site-2"])
    config = SiteConfig(glioma_site, device="cpu", allow_condensed=ALLOWED, min_cases_per_metric=1)
    answer = _train(run, SiteWorker("site-1", config), 1)
    honest = _wire(answer, "site-1")
    meta = dict(answer.meta)
    bad = dict(meta[MetaField.CONDENSED.value])
    bad["class_counts/idh"] = np.array([1, 1])  # two patients: below n_min, must be suppressed
    bad["class_logits/idh"] = np.array([[0.3], [0.2]], np.float32)
    meta[MetaField.CONDENSED.value] = bad
    liar = SiteAnswer.decode(TaskName.TRAIN, "site-2", answer.params, meta)
    record = RoundRecord(round=1)

    assert run.record_training(record, ["site-1", "site-2"], [honest, liar])

    assert "must be suppressed" in record.failed["site-2"] and record.accepted == ["site-1"]


def _payload() -> dict[str, np.ndarray]:
    """A well-formed payload of two idh volumes (n_min 2, 1 volume per class, 4 x 8³)."""
    out: dict[str, np.ndarray] = {
        "volumes": np.zeros((2, 4, 8, 8, 8), np.float16),
        "volume_class": np.array([0, 1]),
        "withheld": np.array([0]),
    }
    for head, classes in HEAD_CLASSES.items():
        out[f"soft/{head}"] = np.full((2, classes), 1.0 / classes, np.float32)
        out[f"class_logits/{head}"] = np.zeros((classes, 1 if classes == 2 else 3), np.float32)
        out[f"class_counts/{head}"] = np.zeros(classes, np.int64)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"volumes": np.zeros((2, 4, 8, 8, 9), np.float16)}, "volumes: float16 of shape"),
        ({"volumes": np.full((2, 4, 8, 8, 8), np.nan, np.float16)}, "NaN or infinite"),
        ({"volumes": np.zeros((3, 4, 8, 8, 8), np.float16)}, "at most images_per_class"),
        ({"volume_class": np.array([0, 2])}, "classes are 0..1"),
        ({"soft/idh": np.array([[0.9, 0.9], [0.5, 0.5]], np.float32)}, "rows must be"),
        ({"names/subject": np.zeros(1)}, "unknown entries"),
        ({"class_logits/mgmt": np.array([[1.0], [0.0]], np.float32)}, "suppressed class"),
    ],
)
def test_a_payload_outside_the_study_is_named_and_refused(
    change: dict[str, np.ndarray], message: str
) -> None:
    from neurofed.federated.condensed import PayloadError, PayloadSpec, check_payload

    spec = PayloadSpec(4, (8, 8, 8), "idh", images_per_class=1, n_min=2)
    check_payload(_payload(), spec)  # the honest one passes
    with pytest.raises(PayloadError, match=message):
        check_payload(_payload() | change, spec)


def test_distill_is_for_the_multitask_glioma_network_only() -> None:
    text = STUDY.format(similarity_max=0.5).replace('"glioma-multitask"', '"tumor-regions"')
    text = text.replace("[model]\nbase_filters = 4\n", "")
    with pytest.raises(StudyError, match="distill' trains the marker heads of glioma-multitask"):
        Study.from_toml(text)


@pytest.mark.slow
def test_a_simulated_distill_study_carries_the_payloads_through_nvflare(
    tmp_path: Path, glioma_site: Path
) -> None:
    """Two simulated sites on the real NVFlare simulator: refused without --allow-condensed,
    trained with it (the float16 volumes cross the engine and the server trains the heads)."""
    import json
    import shutil

    from typer.testing import CliRunner

    from neurofed.cli.main import app

    study = tmp_path / "study.toml"
    study.write_text(STUDY.format(similarity_max=0.5).replace("rounds = 2", "rounds = 1"))
    other = shutil.copytree(glioma_site, tmp_path / "glioma-2")
    args = ["simulate", str(study), "--site", str(glioma_site), "--site", str(other)]

    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "refused")])
    allowed = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "run"), "--allow-condensed"])

    assert refused.exit_code != 0, refused.output
    metrics = json.loads((tmp_path / "refused" / "rounds" / "1" / "metrics.json").read_text())
    assert all("allow-condensed" in why for why in metrics["refused"].values())
    assert allowed.exit_code == 0, allowed.output
    metrics = json.loads((tmp_path / "run" / "rounds" / "1" / "metrics.json").read_text())
    assert sorted(metrics["accepted"]) == ["site-1", "site-2"]
