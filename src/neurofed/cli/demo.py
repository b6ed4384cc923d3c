"""``neurofed demo``: the README's main command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurofed.cli.console import console, progress_bar

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

    result = run_demo(DemoConfig(out=out, quick=quick, seed=seed), stage=progress_bar)
    console.print(Markdown((out / SUMMARY_MD).read_text()))
    console.print(f"run folder: {out} ({result.seconds:.0f} s)")
