"""The demo's ``report.html``: the federated run's report plus what only the demo holds —
every model on the same held-out cases (distributions, intervals, paired tests) and every model
on every site.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from markupsafe import escape

from neurofed.demo.comparison import per_case_headline, verdict
from neurofed.demo.report import HEADLINE
from neurofed.evaluate import figures
from neurofed.evaluate.report import REPORT_HTML, Section, figure, run_report, table

__all__ = ["demo_sections", "write_demo_report"]


def _ci(estimate: Mapping[str, Any]) -> str:
    low, high = estimate.get("ci") or (None, None)
    return "–" if low is None or high is None else f"[{low:.3f}, {high:.3f}]"


def _held_out(summary: Mapping[str, Any]) -> Section:
    held_out = str(summary["held_out"])
    evaluation: Mapping[str, Mapping[str, Any]] = summary["evaluation"]
    comparison = summary["comparison"]
    values = {
        model: [
            v for v in per_case_headline(row[held_out].get("per_case") or {}) if math.isfinite(v)
        ]
        for model, row in evaluation.items()
    }
    caption = (
        f"{HEADLINE} per case on the held-out site {held_out} ({comparison['cases']} cases, the "
        "same for every model): boxes are quartiles, points are cases."
    )
    html = figure(figures.case_distributions(values, HEADLINE), caption)
    html += "".join(f"<p>{escape(line)}</p>" for line in verdict(comparison, held_out, HEADLINE))
    rows: list[Sequence[Any]] = [
        [model, e["mean"], _ci(e), e["n"]] for model, e in comparison["models"].items()
    ]
    html += table(["model", "mean", "95% interval", "cases"], rows)
    pairs: list[Sequence[Any]] = [
        [
            f"{p['a']} − {p['b']}",
            p["difference"],
            _ci(p),
            p["p"],
            p["p_holm"],
            "yes" if p["significant"] else "no",
        ]
        for p in comparison["pairs"]
    ]
    if pairs:
        header = [
            "comparison",
            "difference",
            "95% interval",
            "p (Wilcoxon)",
            "p (Holm)",
            "significant",
        ]
        html += table(header, pairs)
    return Section(f"Held-out site {held_out}: every model on the same cases", html)


def _every_site(summary: Mapping[str, Any]) -> Section:
    by_model: Mapping[str, Mapping[str, float | None]] = summary["headline"]["by_model"]
    columns = list(next(iter(by_model.values())).keys()) if by_model else []
    caption = (
        f"{HEADLINE} of each model (x) on each site's validation cases, all training sites "
        f"together, and the held-out site {summary['held_out']} (markers). "
        f"Scored {summary.get('scored', '')}."
    )
    html = figure(figures.site_dots(by_model, HEADLINE), caption)
    rows: list[Sequence[Any]] = [[m, *(v.get(c) for c in columns)] for m, v in by_model.items()]
    html += table(["model", *columns], rows)
    return Section("Every model on every site", html)


def demo_sections(summary: Mapping[str, Any]) -> list[Section]:
    """The demo's own sections of the report."""
    return [_held_out(summary), _every_site(summary)]


def write_demo_report(out: Path, run: Path, summary: Mapping[str, Any]) -> Path:
    """Write ``out/report.html``: the federated ``run``'s report with the demo's sections."""
    from neurofed.artifacts import write_text_atomically

    html, _ = run_report(run, extra=demo_sections(summary))
    return write_text_atomically(out / REPORT_HTML, html)
