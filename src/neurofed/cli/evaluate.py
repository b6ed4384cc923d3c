"""``neurofed evaluate``: score a saved model on a split of a site."""

from __future__ import annotations

import json
import math
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape

from neurofed.artifacts import write_json_atomically
from neurofed.cli.console import (
    console,
    err_console,
    print_error,
    print_kept_layers_caveat,
    progress_bar,
)
from neurofed.keys import Split

__all__ = ["SplitChoice", "evaluate"]

_SHOWN_SKIPPED = 5


class SplitChoice(StrEnum):
    """Which cases of the site to score."""

    VALIDATION = "validation"
    TEST = "test"
    TRAIN = "train"
    ALL = "all"

    @property
    def as_split(self) -> Split | None:
        return None if self is SplitChoice.ALL else Split(self.value)


def evaluate(
    model: Annotated[Path, typer.Option(help="A model folder, e.g. RUN/model.")],
    site: Annotated[Path, typer.Option(help="The site's data folder (after `site check`).")],
    split: Annotated[SplitChoice, typer.Option(help="Cases to score.")] = SplitChoice.VALIDATION,
    as_json: Annotated[bool, typer.Option("--json", help="Print the metrics as JSON.")] = False,
    out: Annotated[Path | None, typer.Option(help="Also write the metrics to this JSON file.")] = (
        None
    ),
) -> None:
    """Score a saved model on a site's cases (full volumes) and print the metrics."""
    from rich.table import Table

    from neurofed.evaluate import evaluate_model
    from neurofed.training import HEADLINE_METRICS, ModelFolderError, SiteDataError
    from neurofed.training.records import finalize_metrics, json_number

    try:
        with progress_bar(f"evaluate {site.name}") as bar:
            state, dataset, trained = evaluate_model(
                model,
                site,
                split.as_split,
                progress=None if as_json else bar,
                load_progress=None if as_json else bar,
            )
    except (SiteDataError, ModelFolderError) as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    print_kept_layers_caveat(trained)
    task_id = trained.task.task_id
    if len(dataset) == 0:
        print_error(
            f"no usable case in the {split.value} split of {site} for task {task_id.value!r}"
        )
        for skipped in dataset.skipped[:_SHOWN_SKIPPED]:
            err_console.print(f"  skipped {escape(skipped.line())}", soft_wrap=True)
        if len(dataset.skipped) > _SHOWN_SKIPPED:
            err_console.print(f"  … and {len(dataset.skipped) - _SHOWN_SKIPPED} more skipped")
        err_console.print(f"  {_other_splits(site, split)}", soft_wrap=True)
        raise typer.Exit(1)
    metrics = finalize_metrics(trained.task, state)
    payload: dict[str, Any] = {
        "task": task_id.value,
        "model": str(model),
        "site": site.name,
        "split": split.value,
        "num_cases": len(dataset),
        "skipped": [s.line() for s in dataset.skipped],
        "metrics": {k: json_number(v) for k, v in metrics.items()},
    }
    if out is not None:
        write_json_atomically(out, payload)
    if as_json:
        typer.echo(json.dumps(payload, indent=2))
        return
    headline = [n for n in HEADLINE_METRICS[task_id] if n in metrics]
    table = Table(title=f"{task_id.value} on {site.name} ({split.value}, {len(dataset)} cases)")
    table.add_column("metric")
    table.add_column("value", justify="right")
    for name in headline + sorted(n for n in metrics if n not in headline):
        value = metrics[name]
        table.add_row(name, "n/a" if math.isnan(value) else f"{value:.4f}")
    console.print(table)
    for skipped in dataset.skipped:
        console.print(f"  [yellow]![/yellow] skipped {skipped.line()}", soft_wrap=True)


def _other_splits(site: Path, split: SplitChoice) -> str:
    """What to try instead: the site's other splits that hold cases (before the task's needs)."""
    from neurofed.data.manifest import load_manifest
    from neurofed.data.splits import site_splits

    try:
        subjects = load_manifest(site).subjects
        splits, _ = site_splits(site, subjects)
    except (OSError, ValueError):
        return "run `neurofed site check` on the site, then evaluate again"
    ids = [s.subject_id for s in subjects]
    sizes = {s: len(splits.subject_ids(s, ids)) for s in Split}
    others = [s.value for s in Split if sizes[s] and s.value != split.value]
    counts = ", ".join(f"{s.value} {n}" for s, n in sizes.items())
    if not others:
        return f"the site's splits hold {counts} case(s): fix the skipped cases above"
    options = " or ".join(f"--split {name}" for name in [*others, "all"])
    return f"the site's splits hold {counts} case(s): try {options}, or fix the cases above"
