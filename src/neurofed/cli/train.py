"""``neurofed train local|pooled``: the local-only and pooled (centralised) baselines."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Annotated, Any

import torch
import typer

from neurofed.cli.console import console, err_console, progress_bar
from neurofed.engine import (
    HEADLINE_METRICS,
    RUN_CONFIG,
    CheckpointError,
    EpochRecord,
    Optimizer,
    RunFolderError,
    RunResult,
    SiteDataError,
    TrainConfig,
    default_train_config,
    train_local,
    train_pooled,
)
from neurofed.keys import TaskId
from neurofed.types import ProgressCallback

__all__ = ["build_train_config", "format_metrics", "parse_triple", "train_app"]

train_app = typer.Typer(
    help="Train the baselines: a model on one site only, or on several sites pooled.",
    no_args_is_help=True,
)

_EXIT_INTERRUPTED = 130


def parse_triple(value: str | None, name: str, kind: type[int] | type[float]) -> Any:
    """``"64,64,32"`` → ``(64, 64, 32)``; one number is used for every axis."""
    if value is None:
        return None
    try:
        numbers = [kind(v) for v in value.replace("x", ",").split(",") if v.strip()]
    except ValueError as exc:
        raise typer.BadParameter(
            f"{value!r}: give numbers such as 64,64,32", param_hint=name
        ) from exc
    if len(numbers) == 1:
        numbers *= 3
    if len(numbers) != 3:
        raise typer.BadParameter(f"{value!r}: give one or three numbers", param_hint=name)
    return tuple(numbers)


def _json_option(value: str | None, name: str) -> dict[str, Any] | None:
    if value is None:
        return None
    try:
        parsed = json.loads(value)
    except ValueError as exc:
        raise typer.BadParameter(
            f"not JSON ({exc}); e.g. '{{\"dropout\": 0.1}}'", param_hint=name
        ) from exc
    if not isinstance(parsed, dict):
        raise typer.BadParameter("give a JSON object", param_hint=name)
    return parsed


def _config_file(path: Path) -> TrainConfig:
    """A TrainConfig from a JSON file: a TrainConfig itself or a run folder's config.json."""
    file = path / RUN_CONFIG if path.is_dir() else path
    data = json.loads(file.read_text(encoding="utf-8"))
    return TrainConfig.from_json(data.get("train_config", data))


def build_train_config(
    task: TaskId | None,
    config_file: Path | None,
    changes: Mapping[str, Any],
    spacing: float | None,
    patch: tuple[int, int, int] | None,
    base_filters: int | None,
    augment: bool = True,
) -> TrainConfig:
    """The TrainConfig the options ask for: a saved config (``--config``) or the task's defaults,
    changed by the options given (``None`` = not given)."""
    given = {k: v for k, v in changes.items() if v is not None}
    if not augment:
        given["augment"] = None
    if config_file is not None:
        config = _config_file(config_file)
        if task is not None and task is not config.task:
            raise ValueError(
                f"--task {task.value} differs from {config_file}'s {config.task.value}"
            )
        if spacing is not None:
            given["preprocess"] = config.preprocess.to_json() | {"spacing": [spacing] * 3}
        if patch is not None:
            given["patch_shape"] = patch
        if base_filters is not None:
            raise ValueError("--base-filters cannot change a saved config; use --model-config")
        if isinstance(given.get("model_config"), Mapping):
            given["model_config"] = config.model_config.to_json() | given["model_config"]
        return config.with_changes(**given) if given else config
    if task is None:
        raise ValueError("give --task (or --config with a saved TrainConfig)")
    return default_train_config(
        task,
        spacing=spacing,
        patch_shape=patch,
        base_filters=base_filters,
        **given,
    )


def format_metrics(metrics: Mapping[str, float], names: Sequence[str]) -> str:
    """``"WT/dice 0.812  idh/auc 0.750"`` for the ``names`` present (NaN as ``n/a``)."""
    shown = []
    for name in names:
        if name in metrics:
            value = metrics[name]
            shown.append(f"{name} {'n/a' if math.isnan(value) else f'{value:.3f}'}")
    return "  ".join(shown)


def _epoch_printer(task: TaskId, epochs: int) -> Callable[[EpochRecord], None]:
    names = HEADLINE_METRICS[task]

    def show(record: EpochRecord) -> None:
        console.print(
            f"epoch {record.epoch}/{epochs}  loss {record.train_loss:.4f}  "
            f"{format_metrics(record.validation, names)}  [dim]({record.seconds:.1f} s)[/dim]",
            soft_wrap=True,
        )

    return show


def _summary(result: RunResult, task: TaskId) -> None:
    before, after = result.untrained, result.final
    console.print(
        f"[bold]{result.kind.value} run[/bold]: {result.num_examples} training cases, "
        f"{len(result.history) - 1 if result.untrained else len(result.history)} epochs"
    )
    for line in result.skipped:
        console.print(f"  [yellow]![/yellow] skipped {line.line()}", soft_wrap=True)
    names = [n for n in after if not n.endswith(("num_examples", "num_positive"))]
    headline = [n for n in HEADLINE_METRICS[task] if n in after]
    for name in headline + [n for n in names if n not in headline][: max(0, 8 - len(headline))]:
        was = before.get(name, math.nan)
        console.print(f"  {name:<24} untrained {was:8.4f}  →  trained {after[name]:8.4f}")
    console.print(f"model: {result.model_dir}")


def _run(
    kind: str,
    train: Callable[..., RunResult],
    sites: Sequence[Path] | Path,
    out: Path,
    config: TrainConfig,
    threads: int | None,
    task_config: str | None,
) -> None:
    if threads is not None:
        torch.set_num_threads(threads)
    label = sites.name if isinstance(sites, Path) else f"{len(sites)} sites"
    given_task_config = _json_option(task_config, "--task-config") or {}
    console.print(
        f"training {config.task.value} ({kind}, {label}) for {config.epochs} epochs → {out}"
    )
    try:
        with progress_bar(f"{config.task.value} {kind}") as bar:

            def loading(done: int, total: int, subject_id: str) -> None:
                bar(done, total, f"preprocessing {subject_id}")

            steps: ProgressCallback = bar
            result = train(
                config,
                sites,
                out,
                progress=steps,
                load_progress=loading,
                on_epoch=_epoch_printer(config.task, config.epochs),
                normalise_target=not {"target_mean", "target_std"} & set(given_task_config),
            )
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted[/yellow]: re-run the same command (same --out {out}) to resume "
            "from the last finished epoch"
        )
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    except (SiteDataError, RunFolderError, CheckpointError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    _summary(result, config.task)


_Task = Annotated[TaskId | None, typer.Option(help="Task to train.")]
_Out = Annotated[Path, typer.Option(help="Run folder (re-run with the same one to resume).")]
_Epochs = Annotated[int | None, typer.Option(min=1, help="Epochs (default: per task).")]
_Batch = Annotated[int | None, typer.Option(min=1, help="Batch size (default: per task).")]
_Lr = Annotated[float | None, typer.Option("--lr", help="Learning rate (default: per task).")]
_Seed = Annotated[int | None, typer.Option(help="Seed of weights, data order, augmentation.")]
_Patch = Annotated[str | None, typer.Option(help="Training patch X,Y,Z (segmentation).")]
_Spacing = Annotated[float | None, typer.Option(help="Voxel size in mm (default: per task).")]
_Filters = Annotated[int | None, typer.Option(help="Network width (U-Net base filters).")]
_Samples = Annotated[
    int | None, typer.Option(min=1, help="Samples per epoch (default: one per case).")
]
_Opt = Annotated[Optimizer | None, typer.Option(help="Optimiser (default: adam).")]
_Device = Annotated[str | None, typer.Option(help="auto, cpu, cuda or cuda:N.")]
_Threads = Annotated[
    int | None, typer.Option(min=1, help="CPU threads for torch (default: one per core).")
]
_Augment = Annotated[bool, typer.Option(help="Augment training samples.")]
_Model = Annotated[str | None, typer.Option(help="Model config fields as JSON.")]
_TaskConfig = Annotated[str | None, typer.Option(help="Task config fields as JSON.")]
_ConfigFile = Annotated[
    Path | None, typer.Option("--config", help="A saved TrainConfig JSON or a run folder.")
]


def _config_from_options(options: Mapping[str, Any]) -> TrainConfig:
    changes: dict[str, Any] = {
        "epochs": options["epochs"],
        "batch_size": options["batch_size"],
        "learning_rate": options["lr"],
        "seed": options["seed"],
        "samples_per_epoch": options["samples_per_epoch"],
        "optimizer": options["optimizer"],
        "device": options["device"],
        "model_config": _json_option(options["model_config"], "--model-config"),
        "task_config": _json_option(options["task_config"], "--task-config"),
    }
    patch = parse_triple(options["patch"], "--patch", int)
    try:
        return build_train_config(
            options["task"],
            options["config"],
            changes,
            options["spacing"],
            patch,
            options["base_filters"],
            options["augment"],
        )
    except (ValueError, TypeError, OSError) as exc:
        err_console.print(f"[red]error:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


@train_app.command("local")
def local(
    site: Annotated[Path, typer.Option(help="The site's data folder (after `site check`).")],
    out: _Out,
    task: _Task = None,
    epochs: _Epochs = None,
    batch_size: _Batch = None,
    lr: _Lr = None,
    seed: _Seed = None,
    patch: _Patch = None,
    spacing: _Spacing = None,
    base_filters: _Filters = None,
    samples_per_epoch: _Samples = None,
    optimizer: _Opt = None,
    device: _Device = None,
    threads: _Threads = None,
    augment: _Augment = True,
    model_config: _Model = None,
    task_config: _TaskConfig = None,
    config: _ConfigFile = None,
) -> None:
    """Train on one site's training split; validate on its validation split.

    Writes OUT/config.json, OUT/metrics.json, OUT/checkpoints/ and OUT/model/.
    """
    train_config = _config_from_options(locals())
    _run("local", train_local, site, out, train_config, threads, task_config)


@train_app.command("pooled")
def pooled(
    site: Annotated[list[Path], typer.Option(help="A site's data folder; repeat for every site.")],
    out: _Out,
    task: _Task = None,
    epochs: _Epochs = None,
    batch_size: _Batch = None,
    lr: _Lr = None,
    seed: _Seed = None,
    patch: _Patch = None,
    spacing: _Spacing = None,
    base_filters: _Filters = None,
    samples_per_epoch: _Samples = None,
    optimizer: _Opt = None,
    device: _Device = None,
    threads: _Threads = None,
    augment: _Augment = True,
    model_config: _Model = None,
    task_config: _TaskConfig = None,
    config: _ConfigFile = None,
) -> None:
    """Train on all sites' training cases together (the centralised upper bound).

    Writes OUT/config.json, OUT/metrics.json, OUT/checkpoints/ and OUT/model/.
    """
    train_config = _config_from_options(locals())
    _run("pooled", train_pooled, list(site), out, train_config, threads, task_config)
