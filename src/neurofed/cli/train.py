"""``neurofed train local|pooled|transfer``: the local-only and pooled (centralised) baselines,
and the transfer of a trained brain-age model to a new target."""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, NoReturn

import typer

from neurofed.cli.console import console, err_console, print_error, progress_bar
from neurofed.keys import ClinicalField, Optimizer, TaskId, TransferMode
from neurofed.types import ProgressCallback

if TYPE_CHECKING:  # the commands import torch and the training package when they run
    from neurofed.training import EpochRecord, RunKind, RunResult, TrainConfig

__all__ = ["format_metrics", "parse_triple", "train_app"]

train_app = typer.Typer(
    rich_markup_mode=None,  # plain help: option names are never cut to fit the terminal
    help="Train the baselines (a model on one site only, or on several sites pooled), or "
    "transfer a brain-age model to a new target.",
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


def format_metrics(metrics: Mapping[str, float], names: Sequence[str]) -> str:
    """``"WT/dice 0.812  idh/auc 0.750"`` for the ``names`` present (NaN as ``n/a``)."""
    shown = []
    for name in names:
        if name in metrics:
            value = metrics[name]
            shown.append(f"{name} {'n/a' if math.isnan(value) else f'{value:.3f}'}")
    return "  ".join(shown)


def _epoch_printer(task: TaskId, epochs: int) -> Callable[[EpochRecord], None]:
    from neurofed.training import HEADLINE_METRICS

    names = HEADLINE_METRICS[task]

    def show(record: EpochRecord) -> None:
        console.print(
            f"epoch {record.epoch}/{epochs}  loss {record.train_loss:.4f}  "
            f"{format_metrics(record.validation, names)}  [dim]({record.seconds:.1f} s)[/dim]",
            soft_wrap=True,
        )

    return show


def _summary(result: RunResult, task: TaskId) -> None:
    from neurofed.training import HEADLINE_METRICS, RunKind

    before, after = result.untrained, result.final
    was, now = (
        ("source", "transferred") if result.kind is RunKind.TRANSFER else ("untrained", "trained")
    )
    console.print(
        f"[bold]{result.kind.value} run[/bold]: {result.num_examples} training cases, "
        f"{len(result.history) - 1 if result.untrained else len(result.history)} epochs"
    )
    for line in result.skipped:
        console.print(f"  [yellow]![/yellow] skipped {line.line()}", soft_wrap=True)
    names = [n for n in after if not n.endswith(("num_examples", "num_positive"))]
    headline = [n for n in HEADLINE_METRICS[task] if n in after]
    for name in headline + [n for n in names if n not in headline][: max(0, 8 - len(headline))]:
        value = before.get(name, math.nan)
        console.print(f"  {name:<24} {was} {value:8.4f}  →  {now} {after[name]:8.4f}")
    console.print(f"model: {result.model_dir}")


def _run(
    kind: RunKind,
    detail: str,
    out: Path,
    config: TrainConfig,
    threads: int | None,
    train: Callable[..., RunResult],
) -> None:
    """Run ``train(progress=…, load_progress=…, on_epoch=…)``, showing progress and a summary;
    errors a user can fix exit 2 with their message."""
    import torch

    from neurofed.training import CheckpointError, ModelFolderError, RunFolderError, SiteDataError

    if threads is not None:
        torch.set_num_threads(threads)
    console.print(
        f"training {config.task.value} ({kind.value}, {detail}) for {config.epochs} epochs → {out}"
    )
    try:
        with progress_bar(f"{config.task.value} {kind.value}") as bar:

            def loading(done: int, total: int, subject_id: str) -> None:
                bar(done, total, f"preprocessing {subject_id}")

            steps: ProgressCallback = bar
            result = train(
                progress=steps,
                load_progress=loading,
                on_epoch=_epoch_printer(config.task, config.epochs),
            )
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted[/yellow]: re-run the same command (same --out {out}) to resume "
            "from the last finished epoch"
        )
        raise typer.Exit(_EXIT_INTERRUPTED) from None
    except (SiteDataError, RunFolderError, CheckpointError, ModelFolderError) as exc:
        _fail(exc)
    _summary(result, config.task)


def _fail(exc: Exception) -> NoReturn:
    print_error(exc)
    raise typer.Exit(2) from exc


def _sites_label(sites: Sequence[Path]) -> str:
    return sites[0].name if len(sites) == 1 else f"{len(sites)} sites"


_Task = Annotated[TaskId | None, typer.Option(help="Task to train.")]
_Site = Annotated[Path, typer.Option(help="The site's data folder (after `site check`).")]
_Sites = Annotated[list[Path], typer.Option(help="A site's data folder; repeat for every site.")]
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
_From = Annotated[
    Path, typer.Option("--from", help="Model folder of a trained brain-age run (RUN/model).")
]
_Mode = Annotated[
    TransferMode, typer.Option(help="head: train only the last layer; full: every layer.")
]
_Target = Annotated[str, typer.Option(help="The new target to regress (sdmt or age).")]
_SourceEpochs = Annotated[int | None, typer.Option(min=1, help="Epochs (default: the source's).")]
_SourceBatch = Annotated[
    int | None, typer.Option(min=1, help="Batch size (default: the source's).")
]
_SourceLr = Annotated[
    float | None, typer.Option("--lr", help="Learning rate (default: the source's).")
]
_SourceSeed = Annotated[int | None, typer.Option(help="Seed of data order and augmentation.")]


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
    from neurofed.training import build_train_config

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
        _fail(exc)


def _baseline(kind: str, site_option: Any) -> Callable[..., None]:
    """The ``train local`` / ``train pooled`` command (``kind``): the same options but
    ``--site``, which ``site_option`` annotates (one folder, or a list of them)."""

    def command(
        site: Any,
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
        from neurofed import training

        train: Callable[..., RunResult] = (
            training.train_local if kind == "local" else training.train_pooled
        )
        train_config = _config_from_options(locals())
        given_task_config = _json_option(task_config, "--task-config") or {}
        run = partial(
            train,
            train_config,
            site,
            out,
            normalise_target=not {"target_mean", "target_std"} & set(given_task_config),
        )
        sites = [site] if isinstance(site, Path) else list(site)
        _run(training.RunKind(kind), _sites_label(sites), out, train_config, threads, run)

    command.__annotations__["site"] = site_option  # typer reads the option from here
    return command


train_app.command(
    "local",
    help="Train on one site's training split; validate on its validation split.\n\n"
    "Writes OUT/config.json, OUT/metrics.json, OUT/checkpoints/ and OUT/model/.",
)(_baseline("local", _Site))
train_app.command(
    "pooled",
    help="Train on all sites' training cases together (the centralised upper bound).\n\n"
    "Writes OUT/config.json, OUT/metrics.json, OUT/checkpoints/ and OUT/model/.",
)(_baseline("pooled", _Sites))


@train_app.command("transfer")
def transfer(
    from_: _From,
    site: _Sites,
    out: _Out,
    mode: _Mode,
    target: _Target = ClinicalField.SDMT.value,
    epochs: _SourceEpochs = None,
    batch_size: _SourceBatch = None,
    lr: _SourceLr = None,
    seed: _SourceSeed = None,
    device: _Device = None,
    threads: _Threads = None,
) -> None:
    """Move a trained brain-age model to a new target (SDMT), on one site or several pooled.

    Epoch 0 scores the source model on the new target (before transfer).

    Writes OUT/config.json, OUT/metrics.json, OUT/checkpoints/ and OUT/model/.
    """
    from neurofed.training import RunKind, load_model, train_transfer, transfer_config

    given = {"epochs": epochs, "batch_size": batch_size, "learning_rate": lr, "seed": seed}
    changes = {k: v for k, v in (given | {"device": device}).items() if v is not None}
    try:
        source = load_model(from_)
        config = transfer_config(source.config, mode, target=target, changes=changes)
    except ValueError as exc:
        _fail(exc)
    run = partial(train_transfer, from_, site, out, mode=mode, target=target, changes=changes)
    detail = f"{mode.value} from {from_} to {config.task_config.target.value}, {_sites_label(site)}"
    _run(RunKind.TRANSFER, detail, out, config, threads, run)
