"""Console output shared by the commands: one rich console, progress bars quiet under CI."""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

from neurofed.types import ProgressCallback

if TYPE_CHECKING:
    from neurofed.training import TrainedModel

__all__ = [
    "console",
    "err_console",
    "print_error",
    "print_kept_layers_caveat",
    "progress_bar",
    "quiet",
]

# soft_wrap: a line is never broken by rich (the terminal wraps it), so a path or a command in
# a log file or a pipe stays whole and can be copied
console = Console(highlight=False, soft_wrap=True)
err_console = Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(message: object) -> None:
    """``error: <message>`` on stderr; the message is never read as markup (a study's
    ``[initial_model]`` or a path with brackets is shown as written)."""
    from rich.markup import escape

    err_console.print(f"[red]error:[/red] {escape(str(message))}")


def print_kept_layers_caveat(trained: TrainedModel) -> None:
    """``warning: …`` on stderr when ``trained`` is the global model of a study whose sites
    kept layers of their own (:func:`~neurofed.federated.site.state.kept_layers_caveat`)."""
    from rich.markup import escape

    from neurofed.federated.site.state import kept_layers_caveat

    caveat = kept_layers_caveat(trained)
    if caveat is not None:
        err_console.print(f"[yellow]warning:[/yellow] {escape(caveat)}")


def quiet() -> bool:
    """No animated progress under CI or when stdout is not a terminal."""
    return bool(os.environ.get("CI")) or not sys.stdout.isatty()


@contextmanager
def progress_bar(description: str) -> Iterator[ProgressCallback]:
    """Yield a :data:`ProgressCallback` that draws a bar (or prints every ~10% when quiet)."""
    if quiet():
        last = [-1]

        def report(done: int, total: int, label: str) -> None:
            step = done * 10 // max(total, 1)
            if step != last[0] or done == total:
                last[0] = step
                console.print(f"{description}: {done}/{total} {label}")

        yield report
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[label]}"),
        console=console,
        transient=False,
    ) as bar:
        task = bar.add_task(description, total=None, label="")

        def update(done: int, total: int, label: str) -> None:
            bar.update(task, completed=done, total=total, label=label)

        yield update
