"""The custodian's commands as a person runs them: phantom → site check (→ demo)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app

runner = CliRunner()


@pytest.fixture(scope="module")
def sites(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("cli-phantom")
    result = runner.invoke(
        app,
        [
            "phantom",
            "--preset",
            "glioma",
            "--sites",
            "2",
            "--cases",
            "5",
            "--seed",
            "4",
            "--spacing",
            "8",
            "--broken",
            "1",
            "--equal-sizes",
            "--out",
            str(out),
        ],
    )
    assert result.exit_code == 0, result.output
    assert "neurofed site check" in result.output
    return out


def test_site_check_reports_excluded_case_and_exits_1(sites: Path) -> None:
    result = runner.invoke(app, ["site", "check", str(sites / "site-1")])
    assert result.exit_code == 1, result.output
    assert "4 usable, 1 excluded" in result.output
    assert "fix:" in result.output
    assert (sites / "site-1" / "neurofed" / "manifest.json").is_file()
    assert (sites / "site-1" / "neurofed" / "splits.json").is_file()


def test_site_check_json_is_machine_readable(sites: Path) -> None:
    result = runner.invoke(app, ["site", "check", str(sites / "site-2"), "--json"])
    payload = json.loads(result.output)
    assert result.exit_code == 1
    assert len(payload["splits"]["assignment"]) == 4
    excluded = [c for c in payload["cases"] if c["status"] == "excluded"]
    assert len(excluded) == 1 and excluded[0]["problems"][0]["fix"]


def test_existing_split_is_kept_and_never_silently_reshuffled(sites: Path) -> None:
    site = str(sites / "site-1")
    runner.invoke(app, ["site", "check", site])  # the split exists (whichever test ran first)
    first = json.loads((sites / "site-1" / "neurofed" / "splits.json").read_text())
    again = runner.invoke(app, ["site", "check", site])
    assert again.exit_code == 1
    assert json.loads((sites / "site-1" / "neurofed" / "splits.json").read_text()) == first
    changed = runner.invoke(app, ["site", "check", site, "--seed", "5"])
    assert changed.exit_code == 2
    assert "reshuffle" in changed.output


def test_missing_folder_is_a_clear_error(tmp_path: Path) -> None:
    result = runner.invoke(app, ["site", "check", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    assert "nowhere" in result.output


def test_bad_missing_marker_names_the_format(tmp_path: Path) -> None:
    result = runner.invoke(app, ["phantom", "--out", str(tmp_path), "--missing-marker", "mgmt"])
    assert result.exit_code == 2
    assert "SITE:MARKER" in result.output


def _table_site(root: Path, ids: list[str], empty: bool) -> Path:
    """A CSV-layout site (subject_id, t1 columns); every image empty (0 bytes) if ``empty``."""
    from tests.helpers import write_tiny_image

    rows = ["subject_id,t1"]
    for sid in ids:
        image = root / "images" / f"case{len(rows)}.nii.gz"
        image.parent.mkdir(parents=True, exist_ok=True)
        if empty:
            image.write_bytes(b"")
        else:
            write_tiny_image(image)
        rows.append(f"{sid},images/{image.name}")
    (root / "cases.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    return root


def test_thousands_of_problems_print_as_a_summary_by_kind(tmp_path: Path) -> None:
    # Prepare: 60 cases, each with an empty image
    site = _table_site(tmp_path / "site", [f"c{k:03d}" for k in range(60)], empty=True)
    # Execute
    result = runner.invoke(app, ["site", "check", str(site)], env={"COLUMNS": "200"})
    # Assert: counts by kind, a few examples, and where the rest are; not 60 lines
    assert result.exit_code == 1, result.output
    assert "60 problems, by kind" in result.output and "empty-file: 60" in result.output
    assert result.output.count("file is empty (0 bytes)") == 3
    assert "check-report.json" in result.output
    report = json.loads((site / "neurofed" / "check-report.json").read_text())
    assert sum(len(c["problems"]) for c in report["cases"]) == 60


def test_text_from_the_data_is_never_read_as_terminal_markup(tmp_path: Path) -> None:
    # Prepare: subject ids that rich would take for styles (and the image of one is empty)
    site = _table_site(tmp_path / "site", ["[bold red]evil[/]", "[link=x]b"], empty=True)
    # Execute
    result = runner.invoke(app, ["site", "check", str(site)], env={"COLUMNS": "200"})
    # Assert: the ids are printed as they are
    assert "[bold red]evil[/]" in result.output and "[link=x]b" in result.output


def test_a_table_without_label_conventions_says_so_and_the_option_names_them(
    tmp_path: Path,
) -> None:
    # Prepare: a table of files whose label maps are binary lesion masks
    from tests.helpers import write_tiny_image, write_tiny_label

    root = tmp_path / "site"
    rows = ["subject_id,flair,mask"]
    for k in range(3):
        write_tiny_image(root / f"c{k}_flair.nii.gz", seed=k)
        write_tiny_label(root / f"c{k}_mask.nii.gz", values=(0, 1))
        rows.append(f"c{k},c{k}_flair.nii.gz,c{k}_mask.nii.gz")
    (root / "cases.csv").write_text("\n".join(rows) + "\n", encoding="utf-8")
    # Execute
    assumed = runner.invoke(app, ["site", "check", str(root)], env={"COLUMNS": "200"})
    stated = runner.invoke(app, ["site", "check", str(root), "--label-convention", "binary-lesion"])
    wrong = runner.invoke(
        app, ["site", "check", str(root), "--layout", "bids", "--label-convention", "binary-lesion"]
    )
    # Assert: the assumption is spelled out with the command that fixes it
    assert "assumed brats-2023" in assumed.output and "read as tumour core" in assumed.output
    assert "--label-convention binary-lesion" in assumed.output
    assert stated.exit_code == 0, stated.output
    assert "assumed" not in stated.output
    manifest = json.loads((root / "neurofed" / "manifest.json").read_text())
    assert {s["label_convention"] for s in manifest["subjects"]} == {"binary-lesion"}
    assert wrong.exit_code == 2 and "table layout only" in wrong.output
