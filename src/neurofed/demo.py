"""``neurofed demo``: the whole path on the embedded phantom, offline, in one command.

Today the demo generates a non-IID glioma federation (training sites plus one held-out site, with
a few deliberately broken cases), checks every site and fixes its splits, and writes a summary a
person can read. Later stages (federated training, baselines, evaluation) extend this module.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed import __version__
from neurofed.data.manifest import check_site
from neurofed.data.splits import load_or_create_splits
from neurofed.keys import ClinicalField, Split
from neurofed.phantom import PhantomConfig, PhantomPreset, generate_federation
from neurofed.types import ProgressCallback

__all__ = ["DemoConfig", "DemoResult", "run_demo"]

SUMMARY_JSON = "summary.json"
SUMMARY_MD = "summary.md"


@dataclass(frozen=True)
class DemoConfig:
    """What the demo generates. ``quick`` is the CI-sized variant."""

    out: Path
    quick: bool = False
    seed: int = 0

    @property
    def phantom(self) -> PhantomConfig:
        training_sites = 3
        return PhantomConfig(
            preset=PhantomPreset.GLIOMA,
            sites=training_sites + 1,  # the last site is held out from training
            cases=4 if self.quick else 12,
            seed=self.seed,
            spacing=4.0 if self.quick else 2.0,
            missing_markers={2: (ClinicalField.MGMT,)},
            broken_per_site=1,
        )


@dataclass(frozen=True)
class DemoResult:
    out: Path
    summary: dict[str, Any]
    seconds: float


def _site_row(site_dir: Path, held_out: bool) -> dict[str, Any]:
    report = check_site(site_dir)
    splits, _ = load_or_create_splits(site_dir, report.manifest.subjects)
    ids = [s.subject_id for s in report.manifest.subjects]
    return {
        "site": site_dir.name,
        "role": "held-out" if held_out else "training",
        "layout": report.manifest.layout.value,
        "cases": len(report.cases),
        "usable": len(ids),
        "excluded": list(report.excluded_ids),
        "problems": [p.line() for c in report.cases for p in c.problems],
        "splits": {s.value: len(splits.subject_ids(s, ids)) for s in Split},
        "check_seconds": round(report.seconds, 2),
    }


def _markdown(summary: dict[str, Any]) -> str:
    lines = [
        "# neurofed demo",
        "",
        f"neurofed {summary['neurofed_version']}, phantom seed {summary['seed']}, "
        f"{summary['phantom_seconds']:.1f} s to generate, {summary['seconds']:.1f} s in all.",
        "",
        "| site | role | layout | cases | usable | excluded | train | validation |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in summary["sites"]:
        lines.append(
            f"| {row['site']} | {row['role']} | {row['layout']} | {row['cases']} | "
            f"{row['usable']} | {len(row['excluded'])} | {row['splits']['train']} | "
            f"{row['splits']['validation']} |"
        )
    lines += ["", "## Problems found by `neurofed site check`", ""]
    for row in summary["sites"]:
        lines += [f"- {row['site']}: {p}" for p in row["problems"]] or []
    return "\n".join(lines) + "\n"


def run_demo(config: DemoConfig, progress: ProgressCallback | None = None) -> DemoResult:
    """Generate the phantom federation, check every site, and write the summary."""
    start = time.perf_counter()
    out = config.out
    out.mkdir(parents=True, exist_ok=True)
    phantom = generate_federation(config.phantom, out / "sites", progress=progress)
    rows = [
        _site_row(site_dir, held_out=(i == len(phantom.site_dirs) - 1))
        for i, site_dir in enumerate(phantom.site_dirs)
    ]
    summary: dict[str, Any] = {
        "neurofed_version": __version__,
        "seed": config.seed,
        "quick": config.quick,
        "phantom_seconds": round(phantom.seconds, 2),
        "sites": rows,
    }
    summary["seconds"] = round(time.perf_counter() - start, 2)
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out / SUMMARY_MD).write_text(_markdown(summary))
    return DemoResult(out=out, summary=summary, seconds=summary["seconds"])
