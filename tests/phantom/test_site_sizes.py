"""Site sizes: equal by default, one site larger on request, or a long tail as in FeTS."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.phantom import PhantomConfig, generate_federation, sample_site


def test_a_long_tail_has_cases_as_its_median_and_a_few_large_sites() -> None:
    # Prepare / Execute: 99 sites of median 10
    config = PhantomConfig(preset="glioma", sites=99, cases=10, seed=0, long_tail=True)
    sizes = [config.cases_at(k) for k in range(1, 100)]

    # Assert
    assert 7 <= statistics.median(sizes) <= 13
    assert max(sizes) >= 5 * statistics.median(sizes) and min(sizes) <= 3
    assert sizes == [config.cases_at(k) for k in range(1, 100)]  # deterministic
    other = PhantomConfig(preset="glioma", sites=99, cases=10, seed=1, long_tail=True)
    assert [other.cases_at(k) for k in range(1, 100)] != sizes


def test_every_site_keeps_room_for_its_broken_and_qc_cases() -> None:
    config = PhantomConfig(
        preset="ms",
        sites=40,
        cases=3,
        seed=0,
        long_tail=True,
        broken_per_site=2,
        qc_problems_per_site=1,
    )
    assert min(config.cases_at(k) for k in range(1, 41)) >= 4


def test_a_site_given_its_size_has_it_and_the_others_keep_theirs(tmp_path: Path) -> None:
    # Prepare
    config = PhantomConfig(
        preset="ms", sites=3, cases=2, seed=0, spacing=8.0, site_cases={3: 4}, broken_per_site=1
    )

    # Execute
    summary = generate_federation(config, tmp_path)

    # Assert: files, phantom.json and the sampled sites agree
    manifest = json.loads((tmp_path / "phantom.json").read_text())
    per_site = [sum(c["site"] == k for c in manifest["cases"]) for k in (1, 2, 3)]
    assert per_site == [2, 2, 4] == [sample_site(config, k).cases for k in (1, 2, 3)]
    assert [s["cases"] for s in manifest["sites"]] == per_site
    assert manifest["config"]["site_cases"] == {"3": 4}
    assert PhantomConfig.from_json(manifest["config"]) == config
    assert len(summary.site_dirs) == 3


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        ({"site_cases": {5: 3}}, "site 5 does not exist"),
        ({"site_cases": {1: 0}}, "counts lie in 1..999"),
        ({"site_cases": {1: 1}, "broken_per_site": 2}, "the smallest site"),
        ({"long_tail": "yes"}, "must be true or false"),
    ],
    ids=["no-such-site", "zero-cases", "broken-exceeds-smallest", "not-a-bool"],
)
def test_impossible_sizes_are_refused_naming_the_field(
    settings: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        PhantomConfig(preset="ms", sites=2, cases=3, seed=0, **settings)  # type: ignore[arg-type]


def test_the_cli_takes_site_sizes_and_names_the_format(tmp_path: Path) -> None:
    runner = CliRunner()
    common = ["phantom", "--preset", "ms", "--sites", "2", "--cases", "1", "--spacing", "8"]
    common += ["--equal-sizes"]

    good = runner.invoke(app, [*common, "--site-cases", "2:3", "--out", str(tmp_path / "a")])
    bad = runner.invoke(app, [*common, "--site-cases", "2-3", "--out", str(tmp_path / "b")])

    assert good.exit_code == 0, good.output
    assert "site-2 (3 cases)" in good.output and "(4 cases)" in good.output
    assert bad.exit_code == 2 and "SITE:CASES" in bad.output


def test_the_command_draws_long_tailed_sizes_unless_told_equal_sizes(tmp_path: Path) -> None:
    # Execute: the same federation with the command's default and with --equal-sizes
    runner = CliRunner()
    common = ["phantom", "--preset", "ms", "--sites", "4", "--cases", "2", "--spacing", "8"]
    tail = runner.invoke(app, [*common, "--out", str(tmp_path / "tail")])
    equal = runner.invoke(app, [*common, "--equal-sizes", "--out", str(tmp_path / "equal")])

    # Assert: phantom.json records the choice and the sizes follow it
    assert tail.exit_code == 0 and equal.exit_code == 0, tail.output + equal.output
    drawn = json.loads((tmp_path / "tail/phantom.json").read_text())
    fixed = json.loads((tmp_path / "equal/phantom.json").read_text())
    assert drawn["config"]["long_tail"] is True and fixed["config"]["long_tail"] is False
    expected = PhantomConfig.from_json(drawn["config"])
    sizes = [len(list((tmp_path / f"tail/site-{k}").glob("sub-*"))) for k in range(1, 5)]
    assert sizes == [expected.cases_at(k) for k in range(1, 5)]
    assert len(set(sizes)) > 1
    assert [len(list((tmp_path / f"equal/site-{k}").glob("sub-*"))) for k in range(1, 5)] == [2] * 4


def test_a_site_that_never_acquired_flair_writes_no_flair_and_check_says_so(
    tmp_path: Path,
) -> None:
    # Prepare / Execute: site 2 of a BraTS-like federation has no FLAIR
    runner = CliRunner()
    result = runner.invoke(
        app,
        [
            "phantom",
            "--preset",
            "glioma",
            "--sites",
            "2",
            "--cases",
            "2",
            "--spacing",
            "8",
            "--missing-modality",
            "2:flair",
            "--equal-sizes",
            "--out",
            str(tmp_path),
        ],
    )

    # Assert
    assert result.exit_code == 0, result.output
    assert not list((tmp_path / "site-2").rglob("*_flair.nii.gz"))
    assert len(list((tmp_path / "site-1").rglob("*_flair.nii.gz"))) == 2
    manifest = json.loads((tmp_path / "phantom.json").read_text())
    assert manifest["config"]["missing_modalities"] == {"2": ["FLAIR"]}
    assert [s["missing_modalities"] for s in manifest["sites"]] == [[], ["FLAIR"]]
    checked = runner.invoke(
        app, ["site", "check", str(tmp_path / "site-2"), "--require", "T1,T1CE,T2,FLAIR"]
    )
    assert checked.exit_code == 1 and "FLAIR" in checked.output


@pytest.mark.parametrize("given", [{3: ("FLAIR",)}, {1: ("DWI",)}, {1: ("T1", "T2", "FLAIR")}])
def test_a_missing_modality_must_be_one_the_preset_writes_and_not_all(
    given: dict[int, tuple[str, ...]],
) -> None:
    with pytest.raises(ValueError, match="missing_modalities"):
        PhantomConfig(preset="ms", sites=2, cases=1, seed=0, missing_modalities=given)  # type: ignore[arg-type]
