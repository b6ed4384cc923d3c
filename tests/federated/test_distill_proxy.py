"""The ``distill`` strategy's proxy mode in-process: sites hold a public proxy set, send only
their model's logits on its cases (no array derived from their own images), distil the heads
towards the federation's consensus on it, and need no permission for condensed volumes; a site
without the set refuses the study; a site on another copy of the set fails alone."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest

from neurofed.federated.condensed import (
    HEAD_CLASSES,
    PROXY_FINGERPRINT,
    PayloadError,
    PayloadSpec,
    check_payload,
)
from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName, TaskRequest
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.training import StudyTraining
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.strategies.distill import DistillParams
from neurofed.federated.study import Study, StudyError
from tests.federated.test_distill import STUDY
from tests.training.conftest import glioma_site
from tests.training.sites import prepare_site, write_glioma_site

__all__ = ["glioma_site"]

PROXY = "public-gliomas"
PROXY_CASES = 6


def _study() -> Study:
    text = STUDY.format(similarity_max=0.5).replace(
        'name = "distill"\n', f'name = "distill"\nproxy = "{PROXY}"\nproxy_epochs = 30\n'
    )
    return Study.from_toml(text)


@pytest.fixture(scope="module")
def proxy_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A public glioma set of 6 cases, drawn apart from every site's own cases."""
    root = tmp_path_factory.mktemp("public") / PROXY
    return prepare_site(write_glioma_site(root, PROXY_CASES, seed=11))


def _worker(site: Path, proxy: Path | None, name: str = "site-1") -> SiteWorker:
    public = {} if proxy is None else {PROXY: proxy}
    config = SiteConfig(site, device="cpu", public_datasets=public, min_cases_per_metric=1)
    return SiteWorker(name, config)


def _training(worker: SiteWorker, study: Study) -> StudyTraining:
    """The worker's training of ``study``, as a task would make it."""
    return StudyTraining(worker.site_id, study, lambda: worker.gate.config)


def _train(run: FederatedRun, worker: SiteWorker, round_number: int) -> SiteAnswer:
    return worker.handle(TaskName.TRAIN.value, run.params, run.task_request(round_number).encode())


def _wire(answer: SiteAnswer, site: str, meta: dict[str, object] | None = None) -> SiteAnswer:
    return SiteAnswer.decode(TaskName.TRAIN, site, answer.params, meta or answer.meta)


def test_proxy_mode_sends_only_logits_on_the_public_cases_and_distils_on_the_consensus(
    tmp_path: Path, glioma_site: Path, proxy_site: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # Prepare: a site that allows no condensed volume, holding the public set
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(["site-1"])
    worker = _worker(glioma_site, proxy_site)

    # Execute: round 1
    answer = _train(run, worker, 1)

    # Assert: only the logits on the proxy cases and the fingerprint leave; no image array
    assert answer.error is None, answer.error
    payload = answer.meta[MetaField.CONDENSED.value]
    assert set(payload) == {PROXY_FINGERPRINT, *(f"proxy_logits/{h}" for h in HEAD_CLASSES)}
    for name, array in payload.items():
        assert array.ndim <= 2 and array.size <= PROXY_CASES * 3 + 32, name
        if name != PROXY_FINGERPRINT:
            assert array.shape[0] == PROXY_CASES and np.isfinite(array).all()
    assert payload[PROXY_FINGERPRINT].dtype == np.uint8 and payload[PROXY_FINGERPRINT].size == 32
    record = RoundRecord(round=1)
    assert run.record_training(record, ["site-1"], [_wire(answer, "site-1")])
    assert record.accepted == ["site-1"] and not record.failed
    consensus = {k: v for k, v in run.state.arrays.items() if k.startswith("proxy_logits/")}
    np.testing.assert_allclose(consensus["proxy_logits/idh"], payload["proxy_logits/idh"])
    assert run.state.scalars.get("condensed_volumes", 0.0) == 0.0

    # Execute: round 2 carries the consensus; the site distils on it first
    sent = TaskRequest.decode(run.task_request(2).encode()).class_logits
    assert set(sent) == {f"proxy_logits/{h}" for h in HEAD_CLASSES}
    with caplog.at_level(logging.INFO):
        second = _train(run, worker, 2)

    # Assert
    assert second.error is None, second.error
    assert any("towards the consensus on 6 proxy cases" in r.getMessage() for r in caplog.records)
    assert run.record_training(RoundRecord(round=2), ["site-1"], [_wire(second, "site-1")])


def test_digest_moves_the_heads_towards_the_consensus(glioma_site: Path, proxy_site: Path) -> None:
    # Prepare: a consensus the untrained heads disagree with (every case IDH-mutant, grade 4)
    import torch

    from neurofed.federated.site.distill import digest, load_proxy
    from neurofed.training.condense import proxy_logits, soft_targets

    study = _study()
    worker = _worker(glioma_site, proxy_site)
    training = _training(worker, study)
    trainer, proxy = training.trainer, training.proxy
    consensus = {
        f"proxy_logits/{h}": np.tile(
            np.array([[4.0]] if n == 2 else [[-4.0, -4.0, 4.0]], np.float32), (PROXY_CASES, 1)
        )
        for h, n in HEAD_CLASSES.items()
    }
    targets = soft_targets(consensus, 2.0)

    def distance() -> float:
        mine = soft_targets(proxy_logits(trainer.model, proxy.cases), 2.0)
        return sum(float(np.abs(mine[h] - targets[h]).mean()) for h in HEAD_CLASSES)

    encoder = {k: v.clone() for k, v in trainer.model.state_dict().items() if "heads." not in k}
    before = distance()

    # Execute
    params = study.strategy_params
    assert isinstance(params, DistillParams)
    losses = digest(trainer, params, proxy, consensus)

    # Assert: the loss falls, the heads come closer, the encoder does not move
    assert losses[-1] < losses[0]
    assert distance() < 0.5 * before
    after = trainer.model.state_dict()
    assert all(torch.equal(v, after[k]) for k, v in encoder.items())
    # a consensus over another number of proxy cases is not used
    assert digest(trainer, params, proxy, {k: v[:3] for k, v in consensus.items()}) == []
    assert load_proxy(
        PROXY, proxy_site, study.build_task(), study.train.preprocess
    ).fingerprint == (proxy.fingerprint)


def test_a_site_without_the_public_set_refuses_and_none_needs_allow_condensed(
    tmp_path: Path, glioma_site: Path
) -> None:
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(["site-1"])

    answer = _train(run, _worker(glioma_site, None), 1)

    assert answer.meta.get(MetaField.REFUSED.value) is True
    reason = answer.meta[MetaField.ERROR.value]
    assert f"public dataset {PROXY!r}" in reason and "neurofed site public-dataset" in reason
    assert "allow-condensed" not in reason


def test_a_site_on_another_copy_of_the_public_set_fails_alone(
    tmp_path: Path, glioma_site: Path, proxy_site: Path
) -> None:
    # Prepare: three answers; the third from a site whose copy differs (another fingerprint)
    run = FederatedRun(_study(), tmp_path / "run")
    run.start(["site-1", "site-2", "site-3"])
    answer = _train(run, _worker(glioma_site, proxy_site), 1)
    other = dict(answer.meta)
    changed = dict(other[MetaField.CONDENSED.value])
    changed[PROXY_FINGERPRINT] = np.zeros(32, np.uint8)
    other[MetaField.CONDENSED.value] = changed
    answers = [_wire(answer, "site-1"), _wire(answer, "site-2"), _wire(answer, "site-3", other)]
    record = RoundRecord(round=1)

    # Execute
    assert run.record_training(record, ["site-1", "site-2", "site-3"], answers)

    # Assert
    assert record.accepted == ["site-1", "site-2"]
    assert "not the one most sites hold" in record.failed["site-3"]


def _proxy_payload(cases: int = 4) -> dict[str, np.ndarray]:
    out = {PROXY_FINGERPRINT: np.arange(32, dtype=np.uint8)}
    for head, classes in HEAD_CLASSES.items():
        out[f"proxy_logits/{head}"] = np.zeros((cases, 1 if classes == 2 else 3), np.float32)
    return out


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"volumes": np.zeros((1, 4, 8, 8, 8), np.float16)}, "may hold only the logits"),
        ({"class_logits/idh": np.zeros((2, 1), np.float32)}, "may hold only the logits"),
        ({"proxy_logits/grade": np.zeros((5, 3), np.float32)}, "expected shape"),
        ({"proxy_logits/idh": np.full((4, 1), np.inf, np.float32)}, "NaN or infinite"),
        ({PROXY_FINGERPRINT: np.zeros(16, np.uint8)}, "expected shape"),
    ],
    ids=["an-image", "class-logits", "other-case-count", "infinite", "short-fingerprint"],
)
def test_a_proxy_payload_holds_logits_and_the_fingerprint_only(
    change: dict[str, np.ndarray], message: str
) -> None:
    spec = PayloadSpec(4, (8, 8, 8), "idh", images_per_class=1, n_min=2, proxy=True)
    check_payload(_proxy_payload(), spec)  # the honest one passes
    with pytest.raises(PayloadError, match=message):
        check_payload(_proxy_payload() | change, spec)
    missing = _proxy_payload()
    del missing[PROXY_FINGERPRINT]
    with pytest.raises(PayloadError, match="lacks"):
        check_payload(missing, spec)


def test_the_proxy_is_a_study_option_its_custodian_reads() -> None:
    study = _study()
    plain = Study.from_toml(STUDY.format(similarity_max=0.5))

    assert study.to_dict()["strategy"]["proxy"] == PROXY
    assert "proxy" not in plain.to_dict()["strategy"]  # a study without it keeps its hash
    assert Study.from_toml(study.to_toml()).content_hash == study.content_hash
    assert "nothing derived from the site's images" in study.describe()
    assert "SYNTHETIC VOLUMES" in plain.describe()
    with pytest.raises(StudyError, match="proxy"):
        Study.from_toml(STUDY.format(similarity_max=0.5).replace(
            'name = "distill"\n', 'name = "distill"\nproxy = "../etc"\n'
        ))  # fmt: skip


def test_malformed_consensus_logits_from_the_server_are_ignored(
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Prepare: heads that disagree on the number of proxy cases
    request = TaskRequest(study=_study().to_dict(), study_hash=_study().content_hash, round=2)
    encoded = request.encode()
    encoded[MetaField.CLASS_LOGITS.value] = {
        "proxy_logits/idh": np.zeros((4, 1), np.float32),
        "proxy_logits/grade": np.zeros((5, 3), np.float32),
    }

    # Execute
    with caplog.at_level(logging.WARNING):
        decoded = TaskRequest.decode(encoded)

    # Assert
    assert decoded.class_logits == {}
    assert any("ignoring the class logits" in r.getMessage() for r in caplog.records)


@pytest.mark.slow
def test_a_simulated_proxy_study_runs_on_nvflare_with_the_public_set_named(
    tmp_path: Path, glioma_site: Path, proxy_site: Path
) -> None:
    """Two simulated sites on the real NVFlare simulator, two rounds: refused without the
    public set, trained with `--public-dataset` and without `--allow-condensed`."""
    import json
    import shutil

    from typer.testing import CliRunner

    from neurofed.cli.main import app

    study = tmp_path / "study.toml"
    study.write_text(_study().to_toml())
    other = shutil.copytree(glioma_site, tmp_path / "glioma-2")
    args = ["simulate", str(study), "--site", str(glioma_site), "--site", str(other)]

    wrong = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "x"), "--public-dataset", "a"])
    refused = CliRunner().invoke(app, [*args, "--out", str(tmp_path / "refused")])
    ran = CliRunner().invoke(
        app, [*args, "--out", str(tmp_path / "run"), "--public-dataset", f"{PROXY}={proxy_site}"]
    )

    assert wrong.exit_code == 2 and "NAME=DIR" in wrong.output
    assert refused.exit_code != 0, refused.output
    metrics = json.loads((tmp_path / "refused" / "rounds" / "1" / "metrics.json").read_text())
    assert all("public-dataset" in why for why in metrics["refused"].values())
    assert ran.exit_code == 0, ran.output
    for round_number in (1, 2):
        path = tmp_path / "run" / "rounds" / str(round_number) / "metrics.json"
        assert sorted(json.loads(path.read_text())["accepted"]) == ["site-1", "site-2"]


def test_a_new_plan_reads_the_public_set_again(tmp_path: Path, proxy_site: Path) -> None:
    """The proxy cases are preprocessed like the study's: under a new plan they are read anew."""
    from neurofed.keys import Modality
    from neurofed.preprocess.fingerprint import case_fingerprint
    from neurofed.preprocess.plan import make_plan

    # Prepare: a planned proxy study and two plans of different spacings, made with its settings
    text = (
        _study().to_toml().split("[train.preprocess]")[0]
        + "\n[plan]\nmemory_budget_gb = 0.05\nbase_filters = 8\n"
    )
    study = Study.from_toml(text)
    assert study.plan is not None
    glioma = (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)
    box = np.zeros((4, 42, 50, 38), np.float32)
    box[:, 1:-1, 1:-1, 1:-1] = 1.0
    plans = [
        make_plan(
            case_fingerprint(box, None, np.diag([mm, mm, mm, 1.0]), glioma), study.plan.settings
        )
        for mm in (2.0, 4.0)
    ]
    worker = _worker(proxy_site, proxy_site)
    training = StudyTraining("site-1", study, lambda: worker.gate.config)
    training.accept_plan(plans[0])
    first = training.proxy

    # Execute
    training.accept_plan(plans[0])  # the same plan again: nothing to redo
    same = training.proxy
    training.accept_plan(plans[1])

    # Assert
    assert same is first
    assert training.train_config().preprocess.spacing != plans[0].spacing
    again = training.proxy
    assert again is not first and again.fingerprint == first.fingerprint  # same files, reread
