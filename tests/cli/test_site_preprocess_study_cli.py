"""``neurofed site preprocess --study``: a custodian prepares the site for a study, and training
then reuses every array (same params id) instead of preprocessing again."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

import neurofed.training.site_data as site_data
from neurofed.cli.main import app
from neurofed.keys import SiteFile
from neurofed.preprocess import PreprocessedCase
from neurofed.training import LocalTrainer
from tests.federated.conftest import planned_study, tiny_study, write_site

runner = CliRunner()


def _write(study_text: str, folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "study.toml"
    path.write_text(study_text, encoding="utf-8")
    return path


def _stamps(folder: Path) -> dict[str, int]:
    return {p.name: p.stat().st_mtime_ns for p in sorted(folder.iterdir()) if p.is_file()}


def test_preprocess_for_a_study_fills_the_folder_training_reuses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Prepare
    site = write_site(tmp_path / "hospital", seed=3)  # every case preprocesses
    study = tiny_study()
    expected = study.train_config().preprocess.params_id
    study_file = _write(study.to_toml(), tmp_path)
    # Execute
    result = runner.invoke(app, ["site", "preprocess", str(site), "--study", str(study_file)])
    # Assert: the folder is the study's, and training finds every case there
    assert result.exit_code == 0, result.output
    assert f"params id {expected} (brain-age: spacing (8.0, 8.0, 8.0) mm" in result.output
    preprocessed = site / SiteFile.FOLDER.value / "preprocessed"
    assert [p.name for p in preprocessed.iterdir() if p.is_dir()] == [expected]
    before = _stamps(preprocessed / expected)
    assert sum(name.endswith(".npz") for name in before) == 4, before
    computed: list[str] = []

    def counting(*args: object, **kwargs: object) -> PreprocessedCase:
        computed.append(str(args[0]))
        raise AssertionError("training preprocessed a case again")

    monkeypatch.setattr(site_data, "preprocess_case", counting)
    trainer = LocalTrainer.from_sites(study.train_config(device="cpu"), site)
    assert trainer.num_examples == 3
    assert computed == []
    assert _stamps(preprocessed / expected) == before


def test_study_errors_name_the_fix(tmp_path: Path) -> None:
    # Prepare
    site = write_site(tmp_path / "hospital", seed=2)
    planned = _write(planned_study().to_toml(), tmp_path / "planned")
    plain = _write(tiny_study().to_toml(), tmp_path / "plain")
    plan = tmp_path / "plan.json"
    plan.write_text("{}", encoding="utf-8")
    base = ["site", "preprocess", str(site)]
    # Execute
    no_plan = runner.invoke(app, [*base, "--study", str(planned)])
    extra_plan = runner.invoke(app, [*base, "--study", str(plain), "--plan", str(plan)])
    both = runner.invoke(app, [*base, "--study", str(plain), "--task", "brain-age"])
    flags = runner.invoke(
        app, [*base, "--study", str(plain), "--spacing", "4", "--no-registration"]
    )
    plan_alone = runner.invoke(app, [*base, "--task", "brain-age", "--plan", str(plan)])
    strip = runner.invoke(app, [*base, "--study", str(plain), "--no-brain-extraction"])
    nothing = runner.invoke(app, base)
    # Assert
    assert no_plan.exit_code == 2 and "is planned ([plan]); pass its plan with" in no_plan.output
    assert extra_plan.exit_code == 2 and "has no [plan]; leave out --plan" in extra_plan.output
    assert both.exit_code == 2 and "leave out --task" in both.output
    assert flags.exit_code == 2
    assert "leave out --spacing, --registration/--no-registration" in flags.output
    assert plan_alone.exit_code == 2 and "--plan goes with --study" in plan_alone.output
    assert strip.exit_code == 2
    assert "leave out --brain-extraction/--no-brain-extraction" in strip.output
    assert nothing.exit_code == 2 and "--study STUDY.toml" in nothing.output
    assert not (site / SiteFile.FOLDER.value / "preprocessed").exists()


def test_a_run_that_preprocessed_nothing_exits_2_and_says_so(tmp_path: Path) -> None:
    # Prepare: a brain-age site (T1 and FLAIR only) asked for the glioma task's four contrasts
    site = write_site(tmp_path / "hospital", seed=3)
    # Execute
    result = runner.invoke(app, ["site", "preprocess", str(site), "--task", "tumor-regions"])
    # Assert
    assert result.exit_code == 2, result.output
    assert "nothing was preprocessed" in result.output
    assert "arrays, provenance.json" not in result.output
