"""``neurofed demo``: the README's main command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurofed.cli.console import console, err_console, progress_bar

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option(help="Run folder (run again to resume).")] = Path(
        "neurofed-demo"
    ),
    quick: Annotated[
        bool, typer.Option(help="Small, CI-sized run (about a minute instead of several).")
    ] = False,
    seed: Annotated[int, typer.Option(help="Seed of the phantom and of every model.")] = 0,
) -> None:
    """Phantom sites → checks → federated, local-only and pooled training → evaluation."""
    from rich.markdown import Markdown

    from neurofed.demo import SUMMARY_MD, DemoConfig, run_demo

    try:
        result = run_demo(DemoConfig(out=out, quick=quick, seed=seed), stage=progress_bar)
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted[/yellow]: every process the demo started was stopped; run the "
            f"same command again (same --out {out}) to resume where it stopped"
        )
        raise typer.Exit(130) from None
    console.print(Markdown((out / SUMMARY_MD).read_text()))
    console.print(f"report with figures: {out / 'report.html'}", markup=False, soft_wrap=True)
    console.print(f"run folder: {out} ({result.seconds:.0f} s)")
