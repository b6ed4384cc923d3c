"""``neurofed demo``: the README's main command."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markdown import Markdown

from neurofed.cli.console import console, progress_bar
from neurofed.demo import SUMMARY_MD, DemoConfig, run_demo

__all__ = ["demo"]


def demo(
    out: Annotated[Path, typer.Option(help="Run folder.")] = Path("neurofed-demo"),
    quick: Annotated[bool, typer.Option(help="Small, CI-sized run (about a minute).")] = False,
    seed: Annotated[int, typer.Option(help="Phantom seed.")] = 0,
) -> None:
    """Run the whole path on the embedded phantom, offline."""
    with progress_bar("generating phantom sites") as progress:
        result = run_demo(DemoConfig(out=out, quick=quick, seed=seed), progress=progress)
    console.print(Markdown((out / SUMMARY_MD).read_text()))
    console.print(f"run folder: {out} ({result.seconds:.1f} s)")
