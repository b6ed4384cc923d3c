"""The custodian's control as a person runs it: site init → approve / list / revoke → audit."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.federated.engine.kit import load_kit_config, save_kit_config
from neurofed.federated.site.audit import AuditEvent, AuditLog
from neurofed.federated.site.config import SiteConfig
from tests.federated.conftest import tiny_study
from tests.federated.engine.kits import checked_folder, provision
from tests.training.sites import prepare_site, write_glioma_site

runner = CliRunner()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return provision(tmp_path_factory.mktemp("provisioned"), sites=["hospital-a"])["hospital-a"]


@pytest.fixture
def kit(bundle: Path, tmp_path: Path) -> Path:
    """An installed kit (through the CLI)."""
    data = checked_folder(tmp_path / "data")
    result = runner.invoke(
        app,
        ["site", "init", str(bundle), "--data", str(data), "--kit-dir", str(tmp_path / "kit")],
        catch_exceptions=False,
    )
    assert result.exit_code == 0, result.output
    return tmp_path / "kit"


def _study(tmp_path: Path, name: str, rounds: int = 2) -> tuple[Path, str]:
    study = tiny_study(rounds=rounds)
    path = tmp_path / name
    path.write_text(study.to_toml(), encoding="utf-8")
    return path, study.content_hash


def test_init_reports_its_checks_and_the_next_steps(bundle: Path, tmp_path: Path) -> None:
    data = checked_folder(tmp_path / "data")

    result = runner.invoke(
        app,
        ["site", "init", str(bundle), "--data", str(data), "--kit-dir", str(tmp_path / "kit")],
    )

    assert result.exit_code == 0, result.output
    assert "site hospital-a installed in" in result.output
    assert "✓ startup/client.crt: signed by the kit's root CA" in result.output
    assert "server localhost:8102" in result.output  # reachable or a warning, never fatal
    assert "neurofed site approve STUDY.toml --kit" in result.output
    assert load_kit_config(tmp_path / "kit").require_approval


def test_init_refuses_an_unchecked_data_folder(bundle: Path, tmp_path: Path) -> None:
    (tmp_path / "raw").mkdir()

    result = runner.invoke(app, ["site", "init", str(bundle), "--data", str(tmp_path / "raw")])

    assert result.exit_code == 1
    assert "has not been checked: run `neurofed site check" in result.output


def test_approve_list_and_revoke_round_trip(kit: Path, tmp_path: Path) -> None:
    # Prepare
    first, first_hash = _study(tmp_path, "first.toml", rounds=2)
    second, second_hash = _study(tmp_path, "second.toml", rounds=3)
    # Execute
    declined = runner.invoke(app, ["site", "approve", str(first), "--kit", str(kit)], input="n\n")
    approved = runner.invoke(app, ["site", "approve", str(first), "--kit", str(kit)], input="y\n")
    runner.invoke(app, ["site", "approve", str(second), "--kit", str(kit), "--yes"])
    listed = runner.invoke(app, ["site", "list"], env={"NEUROFED_SITE_KIT": str(kit)})
    by_prefix = runner.invoke(app, ["site", "revoke", first_hash[:10], "--kit", str(kit)])
    by_file = runner.invoke(app, ["site", "revoke", str(second), "--kit", str(kit)])
    empty = runner.invoke(app, ["site", "list", "--kit", str(kit)])
    # Assert
    assert declined.exit_code == 1 and "Study 'tiny-age'" in declined.output
    assert "not approved" in declined.output
    assert approved.exit_code == 0 and f"approved 'tiny-age' sha256:{first_hash}" in (
        approved.output
    )
    assert "leaves a site: model parameters" in approved.output  # the study was shown
    assert listed.exit_code == 0 and "approval required" in listed.output
    assert first_hash[:16] in listed.output and second_hash[:16] in listed.output
    assert by_prefix.exit_code == 0 and f"revoked 'tiny-age' sha256:{first_hash}" in (
        by_prefix.output
    )
    assert by_file.exit_code == 0 and second_hash in by_file.output
    assert "no study approved yet" in empty.output
    assert load_kit_config(kit).approved_studies == ()


def test_an_ambiguous_or_unknown_prefix_is_refused(kit: Path) -> None:
    config = load_kit_config(kit).with_approval("ab" * 32, "one").with_approval("ac" * 32, "two")
    save_kit_config(kit, config)

    ambiguous = runner.invoke(app, ["site", "revoke", "a", "--kit", str(kit)])
    unknown = runner.invoke(app, ["site", "revoke", "ff", "--kit", str(kit)])

    assert ambiguous.exit_code == 1
    assert "'a' matches several approved studies" in ambiguous.output
    assert "abababababababab (one)" in ambiguous.output and "give more digits" in ambiguous.output
    assert unknown.exit_code == 1 and "no approved study matches 'ff'" in unknown.output
    assert len(load_kit_config(kit).approved_studies) == 2


def test_allowed_datasets_are_set_and_listed(kit: Path) -> None:
    runner.invoke(app, ["site", "allow-dataset", "fets", "brats", "--kit", str(kit)])
    removed = runner.invoke(app, ["site", "allow-dataset", "brats", "--remove", "--kit", str(kit)])
    listed = runner.invoke(app, ["site", "list", "--kit", str(kit), "--json"])

    assert removed.exit_code == 0 and "datasets allowed: fets" in removed.output
    assert json.loads(listed.output)["allowed_datasets"] == ["fets"]


def test_condensed_volumes_are_allowed_per_dataset_and_listed(kit: Path) -> None:
    runner.invoke(app, ["site", "allow-condensed", "fets", "brats", "--kit", str(kit)])
    removed = runner.invoke(app, ["site", "allow-condensed", "fets", "--remove", "--kit", str(kit)])
    listed = runner.invoke(app, ["site", "list", "--kit", str(kit)])

    assert removed.exit_code == 0 and "condensed volumes allowed for: brats" in removed.output
    assert load_kit_config(kit).allow_condensed == ("brats",)
    assert load_kit_config(kit).allowed_datasets == ()  # the other list is untouched
    assert "condensed volumes (strategy distill) allowed for: brats" in listed.output
    runner.invoke(app, ["site", "allow-condensed", "brats", "--remove", "--kit", str(kit)])
    assert load_kit_config(kit).allow_condensed == ()


def test_a_public_dataset_is_named_checked_listed_and_forgotten(kit: Path, tmp_path: Path) -> None:
    # Prepare: a checked site folder as the public copy, and a folder that is not one
    public = prepare_site(write_glioma_site(tmp_path / "public", 4))
    (tmp_path / "empty").mkdir()

    # Execute
    added = runner.invoke(
        app, ["site", "public-dataset", "tcga-public", str(public), "--kit", str(kit)]
    )
    refused = runner.invoke(
        app, ["site", "public-dataset", "other", str(tmp_path / "empty"), "--kit", str(kit)]
    )
    no_folder = runner.invoke(app, ["site", "public-dataset", "other", "--kit", str(kit)])
    listed = runner.invoke(app, ["site", "list", "--kit", str(kit)])

    # Assert
    assert added.exit_code == 0, added.output
    assert load_kit_config(kit).public_datasets == {"tcga-public": public.resolve()}
    assert refused.exit_code == 1 and "neurofed site check" in refused.output
    assert "public dataset 'other'" in refused.output
    assert no_folder.exit_code == 2 and "--remove" in no_folder.output
    assert f"public dataset tcga-public: {public.resolve()}" in " ".join(listed.output.split())
    assert "other" not in load_kit_config(kit).public_datasets
    removed = runner.invoke(
        app, ["site", "public-dataset", "tcga-public", "--remove", "--kit", str(kit)]
    )
    assert removed.exit_code == 0 and load_kit_config(kit).public_datasets == {}


def test_audit_prints_the_log_and_names_a_tampered_line(kit: Path) -> None:
    # Prepare: what a site writes for one accepted study
    config = load_kit_config(kit)
    assert config.audit_log is not None and config.audit_log.parent.parent == kit.resolve()
    log = AuditLog(config.audit_log, "hospital-a")
    log.append(AuditEvent.STUDY_ACCEPTED, study_hash="ab" * 32, study="fets")
    log.append(AuditEvent.ROUND_TRAIN, study_hash="ab" * 32, round=1)
    log.append(AuditEvent.PAYLOAD_SENT, round=1, task="train", bytes=1234, sha256="cd" * 32)
    # Execute
    shown = runner.invoke(app, ["site", "audit", "--kit", str(kit)])
    tail = runner.invoke(app, ["site", "audit", "--kit", str(kit), "--json", "--tail", "1"])
    head = shown.output.split("head (line 3) sha256:")[1].split()[0]
    text = config.audit_log.read_text().replace('"bytes":1234', '"bytes":12')
    config.audit_log.write_text(text)  # the last line: the chain alone cannot tell
    tail_edited = runner.invoke(app, ["site", "audit", "--kit", str(kit)])
    against_head = runner.invoke(app, ["site", "audit", "--kit", str(kit), "--expect-head", head])
    text = config.audit_log.read_text().replace('"round":1,"seq":2', '"round":9,"seq":2', 1)
    config.audit_log.write_text(text)
    tampered = runner.invoke(app, ["site", "audit", "--kit", str(kit)])
    # Assert
    assert shown.exit_code == 0, shown.output
    assert "study-accepted  sha256:abababababab  fets" in shown.output
    assert "payload-sent" in shown.output and "bytes=1234" in shown.output
    assert "3 lines, hash chain intact" in shown.output and "head (line 3) sha256:" in shown.output
    assert tail.exit_code == 0 and json.loads(tail.stdout)["bytes"] == 1234
    assert tail_edited.exit_code == 0  # why a head noted earlier matters:
    assert against_head.exit_code == 1
    assert "noted earlier is not in the log" in against_head.output
    assert tampered.exit_code == 1
    assert "line 3 does not chain to the line before it: line 2 was edited" in tampered.output


def test_doctor_checks_an_installed_kit(kit: Path) -> None:
    healthy = runner.invoke(app, ["site", "doctor", str(kit), "--timeout", "0.5"])
    config = load_kit_config(kit)
    save_kit_config(kit, SiteConfig(config.data_root, audit_log=config.audit_log))
    loosened = runner.invoke(app, ["site", "doctor", "--kit", str(kit), "--timeout", "0.5"])

    assert healthy.exit_code == 0, healthy.output
    assert "✓ local/resources.json: jobs may build neurofed's site executor only" in (
        healthy.output
    )
    assert loosened.exit_code == 0  # a warning, not an error
    assert "! local/neurofed_site.json: require_approval is false" in loosened.output


def test_a_command_without_a_kit_says_how_to_give_one(tmp_path: Path) -> None:
    result = runner.invoke(app, ["site", "list"], env={"NEUROFED_SITE_KIT": ""})

    assert result.exit_code == 1 and "give --kit KIT" in result.output
