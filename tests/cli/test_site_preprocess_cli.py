"""``neurofed site preprocess`` / ``site qc`` as a custodian runs them on a phantom site with
planted quality problems: every problem is caught by its check, exit codes say so."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, str]]:
    """One glioma site at 4 mm: 6 cases, 4 with a planted QC problem, checked."""
    out = tmp_path_factory.mktemp("cli-qc") / "fed"
    args = ["phantom", "--preset", "glioma", "--sites", "1", "--cases", "6", "--seed", "2"]
    args += ["--spacing", "4", "--qc-problems", "4", "--equal-sizes", "--out", str(out)]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    planted = json.loads((out / "phantom.json").read_text())["qc_problems"]
    assert sorted(planted.values()) == [
        "cropped-fov", "low-snr", "misregistered", "thick-slices"
    ]  # fmt: skip
    checked = runner.invoke(app, ["site", "check", str(out / "site-1")])
    assert checked.exit_code == 0, checked.output  # QC problems are readable files
    return out / "site-1", planted


@pytest.fixture(scope="module")
def preprocessed(site: tuple[Path, dict[str, str]]) -> str:
    root, _ = site
    args = ["site", "preprocess", str(root), "--task", "tumor-regions", "--spacing", "4"]
    result = runner.invoke(app, [*args, "--workers", "2"])
    assert result.exit_code == 1, result.output  # some cases fail QC
    return result.output


def test_preprocess_reports_counts_and_every_planted_problem(
    site: tuple[Path, dict[str, str]], preprocessed: str
) -> None:
    _, planted = site
    by_kind = {kind: sid for sid, kind in planted.items()}
    assert "6 cases: 6 done, 0 cached, 0 failed, 0 skipped" in preprocessed
    lines = preprocessed.splitlines()

    def flagged(sid: str, check: str) -> list[str]:
        return [line for line in lines if f"{sid}" in line and f" {check}:" in line]

    assert any("✗" in line for line in flagged(by_kind["low-snr"], "snr"))
    assert any("✗" in line for line in flagged(by_kind["cropped-fov"], "coverage"))
    assert any("✗" in line for line in flagged(by_kind["thick-slices"], "voxel_size"))
    moved = flagged(by_kind["misregistered"], "registration")
    assert moved and "FLAIR was" in moved[0] and "corrected" in moved[0]
    assert "QC: 6 cases:" in preprocessed


def test_rerun_is_idempotent_and_qc_exits_1_with_the_table(
    site: tuple[Path, dict[str, str]], preprocessed: str
) -> None:
    root, planted = site
    again = runner.invoke(
        app, ["site", "preprocess", str(root), "--task", "tumor-regions", "--spacing", "4"]
    )
    assert "6 cases: 0 done, 6 cached" in again.output
    result = runner.invoke(app, ["site", "qc", str(root), "--json"])
    assert result.exit_code == 1
    payload = json.loads(result.output)
    failing = {sid for sid, status in payload["cases"].items() if status == "fail"}
    by_kind = {kind: sid for sid, kind in planted.items()}
    assert {by_kind["low-snr"], by_kind["cropped-fov"], by_kind["thick-slices"]} <= failing
    assert payload["excluded"] is None
    folder = Path(payload["folder"])
    with open(folder / "qc.csv", newline="") as handle:
        assert {r["subject_id"] for r in csv.DictReader(handle)} == set(payload["cases"])


def test_exclude_failures_records_the_custodians_decision(
    site: tuple[Path, dict[str, str]], preprocessed: str
) -> None:
    root, planted = site
    result = runner.invoke(app, ["site", "qc", str(root), "--exclude-failures"])
    assert result.exit_code == 1
    assert "excluded from training:" in result.output and "delete it to undo" in result.output
    saved = json.loads((root / "neurofed" / "qc-exclusions.json").read_text())
    excluded = {e["subject_id"] for e in saved["excluded"]}
    low_snr = next(sid for sid, kind in planted.items() if kind == "low-snr")
    assert low_snr in excluded and low_snr in result.output


def test_errors_exit_2_and_say_what_to_run(tmp_path: Path) -> None:
    result = runner.invoke(app, ["site", "qc", str(tmp_path)])
    assert result.exit_code == 2 and "site preprocess" in result.output
    result = runner.invoke(app, ["site", "preprocess", str(tmp_path), "--task", "brain-age"])
    assert result.exit_code == 2 and "neurofed site check" in result.output
