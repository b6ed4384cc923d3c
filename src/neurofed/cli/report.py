"""``neurofed report``: a federated run's HTML report (figures embedded, opens offline)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurofed.cli.console import console, print_error

__all__ = ["report"]


def report(
    run: Annotated[Path, typer.Argument(help="A federated run folder (simulate --out, server).")],
    out: Annotated[Path, typer.Option(help="Folder to write report.html into.")],
    compare: Annotated[
        list[Path] | None,
        typer.Option(help="Another run folder to set beside it (repeat for more)."),
    ] = None,
    site: Annotated[
        list[Path] | None,
        typer.Option(
            help="A site folder on this machine to score the run's selected model on, case by "
            "case (repeat for more): per-case distributions, ROC curves for markers, and "
            "predicted against true with Bland–Altman for brain-age."
        ),
    ] = None,
) -> None:
    """Write one self-contained HTML report of a run: study, curves per site, sites, who took
    part, what left each site."""
    from neurofed.artifacts import write_text_atomically
    from neurofed.evaluate.report import REPORT_HTML, ReportError, run_report

    try:
        html, view = run_report(run, compare or (), sites=site or ())
    except ReportError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    out.mkdir(parents=True, exist_ok=True)
    path = out / REPORT_HTML
    write_text_atomically(path, html)
    console.print(
        f"report of {view.name} ({len(view.rounds)} rounds) → {path}", markup=False, soft_wrap=True
    )
