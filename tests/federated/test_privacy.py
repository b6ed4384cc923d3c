"""A study's ``[privacy]`` at the sites: DP-SGD rounds enter the site's ledger and report their ε;
a round that would cross the custodian's cap is refused, audited, and the federation goes on;
studies on one dataset spend one budget; the table is checked when the study is read."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.site.audit import verify_audit_log
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.privacy import PrivacyLedger
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.study import Study, StudyError
from neurofed.training.private import epsilon
from tests.training.conftest import glioma_site

__all__ = ["glioma_site"]

STUDY = """\
name = "{name}"
rounds = 3
min_sites = 1
seed = 7
dataset = "phantom-glioma"

[task]
id = "glioma-multitask"

[model]
base_filters = 4

[strategy]
name = "fedavg"

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

[privacy]
clip_norm = 1.0
noise_multiplier = {sigma}
"""


def _study(name: str = "dp", sigma: float = 1.0) -> Study:
    return Study.from_toml(STUDY.format(name=name, sigma=sigma))


def _train(run: FederatedRun, worker: SiteWorker, round_number: int) -> SiteAnswer:
    return worker.handle(TaskName.TRAIN.value, run.params, run.task_request(round_number).encode())


def test_dp_rounds_enter_the_ledger_and_the_round_over_the_cap_is_refused_and_audited(
    tmp_path: Path, glioma_site: Path
) -> None:
    # Prepare: a site whose custodian capped the dataset (the cap decided after round 1)
    study = _study()
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    log = tmp_path / "audit.jsonl"
    config = SiteConfig(glioma_site, device="cpu", state_dir=tmp_path / "state", audit_log=log)

    # Execute: round 1, uncapped
    first = _train(run, SiteWorker("site-1", config), 1)

    # Assert: trained privately, its ε reported and in the ledger
    assert first.error is None, first.error
    metrics = _decode(first).result.metrics  # type: ignore[union-attr]
    ledger = PrivacyLedger(tmp_path / "state")
    [entry] = ledger.entries("phantom-glioma")
    assert entry["noise_multiplier"] == 1.0 and entry["steps"] == 2  # 4 samples / batch 2
    spent = epsilon(ledger.history("phantom-glioma"), 1e-5, "rdp")
    assert metrics["epsilon"] == pytest.approx(spent) and spent > 0
    assert run.record_training(RoundRecord(round=1), ["site-1"], [_decode(first)])

    # Execute: round 2 with a cap just above what round 1 spent
    capped = SiteConfig(
        glioma_site,
        device="cpu",
        state_dir=tmp_path / "state",
        audit_log=log,
        privacy_budgets={"phantom-glioma": spent * 1.01},
    )
    second = _train(run, SiteWorker("site-1", capped), 2)

    # Assert: refused with the numbers, audited, nothing spent, the server records a refusal
    assert second.meta.get(MetaField.REFUSED.value) is True
    reason = second.meta[MetaField.ERROR.value]
    assert "beyond the cap" in reason and "'phantom-glioma'" in reason
    assert len(ledger.entries("phantom-glioma")) == 1
    lines = [json.loads(line) for line in log.read_text().splitlines()]
    assert any(e["event"] == "study-refused" and "beyond the cap" in e["reason"] for e in lines)
    assert verify_audit_log(log).ok
    record = RoundRecord(round=2)
    run.record_training(record, ["site-1"], [_decode(second)])
    assert "beyond the cap" in record.refused["site-1"]


def _decode(answer: SiteAnswer) -> SiteAnswer:
    return SiteAnswer.decode(TaskName.TRAIN, "site-1", answer.params, answer.meta)


def test_two_studies_on_one_dataset_spend_one_budget(tmp_path: Path, glioma_site: Path) -> None:
    config = SiteConfig(glioma_site, device="cpu", state_dir=tmp_path / "state")
    spent = []
    for name in ("dp-a", "dp-b"):
        run = FederatedRun(_study(name), tmp_path / name)
        run.start(["site-1"])
        answer = _train(run, SiteWorker("site-1", config), 1)
        assert answer.error is None, answer.error
        spent.append(_decode(answer).result.metrics["epsilon"])  # type: ignore[union-attr]

    assert spent[1] > spent[0]  # the second study's round adds to the first's
    assert len(PrivacyLedger(tmp_path / "state").entries("phantom-glioma")) == 2


def test_a_target_epsilon_picks_the_noise_that_spends_it_over_the_study(
    tmp_path: Path, glioma_site: Path
) -> None:
    text = STUDY.format(name="dp-target", sigma=1.0).replace(
        "noise_multiplier = 1.0", "target_epsilon = 4.0"
    )
    study = Study.from_toml(text)
    run = FederatedRun(study, tmp_path / "run")
    run.start(["site-1"])
    worker = SiteWorker("site-1", SiteConfig(glioma_site, device="cpu", state_dir=tmp_path / "s"))

    answer = _train(run, worker, 1)

    assert answer.error is None, answer.error
    [entry] = PrivacyLedger(tmp_path / "s").entries("phantom-glioma")
    history = [(entry["noise_multiplier"], entry["sample_rate"], entry["steps"])] * study.rounds
    assert 3.8 < epsilon(history, 1e-5, "rdp") <= 4.0  # all rounds together spend the target


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("noise_multiplier = 1.0", "noise_multiplier = 1.0\ntarget_epsilon = 3"), "one of them"),
        (("noise_multiplier = 1.0", "noise_multiplier = -1"), "noise_multiplier = -1"),
        (("clip_norm = 1.0", 'clip_norm = 1.0\naccountant = "gdp"'), "use one of rdp, prv"),
        (("clip_norm = 1.0", "clip_norm = 1.0\nepsilon = 3"), "unknown"),
        (('name = "fedavg"', 'name = "distill"'), "proxy mode"),
    ],
    ids=["both", "negative-noise", "accountant", "unknown-key", "distill-volumes"],
)
def test_a_wrong_privacy_table_is_refused_naming_the_fix(
    change: tuple[str, str], message: str
) -> None:
    with pytest.raises(StudyError, match=message):
        Study.from_toml(STUDY.format(name="dp", sigma=1.0).replace(*change))


def test_batch_norm_networks_are_refused_and_the_table_is_part_of_the_hash() -> None:
    study = _study()
    plain = Study.from_toml(STUDY.format(name="dp", sigma=1.0).split("[privacy]")[0])
    batch_norm = STUDY.format(name="dp", sigma=1.0).replace(
        "base_filters = 4", 'base_filters = 4\nnorm = "batch"'
    )

    assert study.content_hash != plain.content_hash
    assert _study(sigma=2.0).content_hash != study.content_hash
    assert Study.from_toml(study.to_toml()).content_hash == study.content_hash
    assert "DP-SGD at each site: gradients clipped to 1 per case, noise 1 x clip" in (
        study.describe()
    )
    with pytest.raises(StudyError, match='use norm = "instance" in \\[model\\]'):
        Study.from_toml(batch_norm)


def test_the_custodian_caps_a_dataset_and_sees_it_listed(tmp_path: Path) -> None:
    from neurofed.cli.main import app
    from neurofed.federated.engine.kit import load_kit_config
    from tests.federated.engine.kits import checked_folder, provision

    bundle = provision(tmp_path / "provisioned", sites=["hospital-a"])["hospital-a"]
    data = checked_folder(tmp_path / "data")
    runner = CliRunner()
    init = ["site", "init", str(bundle), "--data", str(data), "--kit-dir", str(tmp_path / "kit")]
    assert runner.invoke(app, init).exit_code == 0
    kit = ["--kit", str(tmp_path / "kit")]

    capped = runner.invoke(
        app, ["site", "privacy-budget", "--dataset", "brats", "--epsilon", "8", *kit]
    )
    wrong = runner.invoke(
        app, ["site", "privacy-budget", "--dataset", "brats", "--epsilon", "0", *kit]
    )
    listed = runner.invoke(app, ["site", "list", *kit])

    assert capped.exit_code == 0, capped.output
    assert load_kit_config(tmp_path / "kit").privacy_budgets == {"brats": 8.0}
    assert wrong.exit_code == 2 and "ε > 0" in wrong.output
    assert "privacy budget brats: cap ε = 8; 0 DP-SGD round(s)" in " ".join(listed.output.split())
    removed = runner.invoke(app, ["site", "privacy-budget", "--dataset", "brats", "--remove", *kit])
    assert removed.exit_code == 0 and load_kit_config(tmp_path / "kit").privacy_budgets == {}


@pytest.mark.slow
def test_a_private_study_on_nvflare_goes_on_without_the_site_whose_cap_it_reached(
    tmp_path: Path, glioma_site: Path
) -> None:
    """Two simulated sites on the real NVFlare simulator, two rounds: site-1's custodian allows
    almost no ε, so it refuses every round; site-2 trains privately and reports its ε."""
    import shutil

    from neurofed.federated.engine import run_simulation

    # copies: each site's ledger goes to its own state folder inside it
    first = shutil.copytree(glioma_site, tmp_path / "glioma-1")
    other = shutil.copytree(glioma_site, tmp_path / "glioma-2")
    study = Study.from_toml(
        STUDY.format(name="dp-sim", sigma=1.0).replace("rounds = 3", "rounds = 2")
    )
    settings = {"site-1": {"privacy_budgets": {"phantom-glioma": 0.01}}}

    result = run_simulation(study, [first, other], tmp_path / "run", site_settings=settings)

    assert result.model_dir is not None
    spent = []
    for k in (1, 2):
        record = json.loads((tmp_path / "run" / "rounds" / str(k) / "metrics.json").read_text())
        assert record["accepted"] == ["site-2"]
        assert "beyond the cap of 0.01" in record["refused"]["site-1"]
        spent.append(record["train"]["site-2"]["epsilon"])
    assert 0 < spent[0] < spent[1]
    assert len(PrivacyLedger(other / "neurofed" / "federated").entries("phantom-glioma")) == 2
    assert not (first / "neurofed" / "federated" / "privacy-ledger.json").exists()


def test_a_brain_age_study_takes_dp_with_group_norm_and_names_it_when_refused() -> None:
    # Prepare: the shipped brain-age study with FedAvg (FedBN keeps the norms local) and DP
    text = (Path(__file__).parents[2] / "examples" / "studies" / "brain-age-fedbn.toml").read_text()
    private = text.replace('name = "fedbn"', 'name = "fedavg"') + (
        "\n[privacy]\nclip_norm = 1.0\nnoise_multiplier = 1.0\n"
    )

    # Execute / Assert: batch norm refused, naming the fix; group norm accepted
    with pytest.raises(StudyError, match='use norm = "group" in \\[model\\]'):
        Study.from_toml(private)
    grouped = Study.from_toml(private.replace("dropout = 0.2", 'dropout = 0.2\nnorm = "group"'))
    assert grouped.privacy is not None and grouped.to_dict()["model"]["norm"] == "group"
