"""``neurofed simulate``: a federated study on one machine through NVFlare's simulator."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from neurofed.cli.console import console, err_console, print_error

if TYPE_CHECKING:
    from neurofed.federated.study import Study

__all__ = ["simulate"]


def simulate(
    study_file: Annotated[Path, typer.Argument(help="The study (study.toml).")],
    site: Annotated[
        list[Path],
        typer.Option("--site", help="A site folder checked with `neurofed site check` (repeat)."),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Run folder (an existing one of the same study resumes).")
    ],
    device: Annotated[str, typer.Option(help="Device of every simulated site.")] = "cpu",
    allow_condensed: Annotated[
        bool,
        typer.Option(
            "--allow-condensed",
            help="Every simulated site allows condensed volumes for the study's dataset "
            "(strategy distill; as `neurofed site allow-condensed` at a deployed site).",
        ),
    ] = False,
    min_cases_per_metric: Annotated[
        int | None,
        typer.Option(
            "--min-cases-per-metric",
            min=1,
            help="Every simulated site sends validation scores only over at least this many "
            "cases (a custodian's setting, default 5; a phantom site with fewer validation "
            "cases sends none unless this is lowered).",
        ),
    ] = None,
    public_dataset: Annotated[
        list[str] | None,
        typer.Option(
            "--public-dataset",
            help="NAME=DIR: every simulated site holds this public dataset (the distill "
            "strategy's proxy; as `neurofed site public-dataset` at a deployed site).",
        ),
    ] = None,
    report_time: Annotated[
        bool,
        typer.Option(
            "--report-time",
            help="After the run, estimate how long it would take at real sites: each site gets "
            "FeTS-measured compute and network speeds (see docs/scale.md); prints the "
            "duration per round, in total, and which sites bound the rounds.",
        ),
    ] = False,
    clock_seed: Annotated[
        int | None,
        typer.Option(
            "--clock-seed",
            min=0,
            help="Seed of the simulated site speeds (default: the study's seed).",
        ),
    ] = None,
    processes: Annotated[
        int | None,
        typer.Option(
            "--processes",
            min=1,
            help="Worker processes (default: one per site). Fewer: each process hosts a "
            "fixed group of the sites for the whole run, which bounds memory for many sites.",
        ),
    ] = None,
    sites_in_memory: Annotated[
        int,
        typer.Option(
            "--sites-in-memory",
            min=1,
            help="With --processes: sites each process keeps loaded (cases, model) between "
            "tasks; more is faster and needs more memory. The run is the same.",
        ),
    ] = 1,
) -> None:
    """Run a study over several site folders, each as one simulated NVFlare site."""
    from neurofed.federated.engine import SimulationError, run_simulation
    from neurofed.federated.engine.simulation import site_names
    from neurofed.federated.study import StudyError, StudyKind, load_study
    from neurofed.training import RunFolderError

    try:
        study = load_study(study_file)
    except StudyError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    if study.kind is not StudyKind.EVALUATE:
        doing = f"{study.rounds} round(s) of {study.strategy.value}"
    elif study.evaluation is not None and study.evaluation.models:
        doing = f"evaluation of {len(study.evaluation.models)} model(s), one per round"
    else:
        doing = "evaluation of its initial model"
    console.print(
        f"study {study.name!r} sha256:{study.content_hash[:12]}: {doing} over {len(site)} "
        f"site(s) → {out}"
    )

    def progress(done: int, total: int, label: str) -> None:
        console.print(f"[{done}/{total}] {label}")

    public: dict[str, Path] = {}
    for item in public_dataset or []:
        name, sep, folder = item.partition("=")
        if not sep or not name or not folder:
            print_error(f"--public-dataset {item!r}: give NAME=DIR, e.g. proxy-gliomas=./public")
            raise typer.Exit(2)
        public[name] = Path(folder).resolve()
    try:
        settings: dict[str, dict[str, object]] = {n: {} for n in site_names(len(site))}
        for each in settings.values():
            if allow_condensed and study.dataset is not None:
                each["allow_condensed"] = (study.dataset,)
            if public:
                each["public_datasets"] = public
            if min_cases_per_metric is not None:
                each["min_cases_per_metric"] = min_cases_per_metric
        result = run_simulation(
            study,
            site,
            out,
            progress=progress,
            device=device,
            site_settings=settings,
            clock_seed=clock_seed,
            processes=processes,
            sites_in_memory=sites_in_memory,
        )
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]interrupted[/yellow]: every simulator process was stopped; run the same "
            f"command again (same --out {out}) to resume after the last finished round"
        )
        raise typer.Exit(130) from None
    except (SimulationError, RunFolderError) as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    summary = result.summary
    if summary.plan is not None:
        plan = summary.plan
        console.print(
            f"plan {plan.plan_id} from the fingerprints of {', '.join(plan.sites)} "
            f"({plan.num_cases} training cases): spacing {list(plan.spacing)} mm, patch "
            f"{list(plan.patch_size)}, batch {plan.batch_size} → {result.run_dir / 'plan.json'}"
        )
    selected = summary.selected
    if study.kind is StudyKind.EVALUATE:
        _show_evaluation(study, result.run_dir)
        return
    if report_time:
        _show_time(study, result.run_dir, study.seed if clock_seed is None else clock_seed)
    if result.model_dir is None:
        print_error(
            "no round was aggregated, so there is no model; each round's reasons (quorum, "
            f"failures, refusals) are in {result.run_dir / 'rounds'}"
        )
        raise typer.Exit(1)
    if selected is not None:
        console.print(
            f"best round {selected.round}: {selected.metric} = {selected.value} "
            f"({selected.direction}); model → {result.model_dir}"
        )
    else:
        console.print(f"no round was validated; the last model → {result.model_dir}")
    if summary.dropped:
        console.print(f"dropped sites (no answer in time): {list(summary.dropped)}")
    console.print(
        f"done in {result.seconds:.1f} s; per-round metrics in {result.run_dir / 'rounds'}"
    )


def _show_time(study: Study, run_dir: Path, seed: int) -> None:
    """The run's estimated duration at real sites, per round and in total; exit 1 when a
    round's record cannot be read."""
    from rich.table import Table

    from neurofed.federated.server.run_folder import read_round_records
    from neurofed.federated.server.timing import estimate_run
    from neurofed.training import RunFolderError

    try:
        history = read_round_records(run_dir)
    except RunFolderError as exc:
        print_error(exc)
        raise typer.Exit(1) from None
    participation = study.participation
    estimate = estimate_run(
        history,
        seed=seed,
        epochs=study.local_epochs,
        deadline_s=None if participation is None else participation.deadline_s,
        incoming=participation is not None and participation.validate_incoming,
    )
    table = Table(
        "round",
        "training trip",
        "validation trip",
        "round",
        "bound by",
        "late",
        title=f"estimated time at real sites (FeTS speeds, clock seed {seed})",
    )
    for number, timing in estimate.rounds:
        table.add_row(
            str(number),
            _duration(timing.train_seconds),
            _duration(timing.validate_seconds),
            _duration(timing.seconds),
            escape(timing.bound_by or "–"),
            escape(", ".join(timing.late) or "–"),
        )
    console.print(table)
    bounding = ", ".join(f"{escape(s)} ({n} round(s))" for s, n in estimate.bounding)
    console.print(
        f"estimated total {_duration(estimate.seconds)} for {len(estimate.rounds)} round(s); "
        f"slowest sites: {bounding or '–'}"
    )


def _duration(seconds: float) -> str:
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m{secs:02d}s" if hours else f"{minutes}m{secs:02d}s"


def _show_evaluation(study: Study, run_dir: Path) -> None:
    """Each site's metrics of the evaluated model (every case of the site) and their merge;
    exit 1 when no site could score it."""
    import json

    from rich.table import Table

    from neurofed.training import HEADLINE_METRICS

    record = json.loads((run_dir / "rounds" / "1" / "metrics.json").read_text(encoding="utf-8"))
    names = [study.selection.metric]
    names += [m for m in HEADLINE_METRICS[study.task] if m not in names]
    table = Table("site", *names, "cases", title="the given model on every case of each site")
    rows = dict(sorted(record.get("validation_per_site", {}).items()))
    if rows:
        rows["all sites"] = record.get("validation", {})
    for name, values in rows.items():
        cells = [_number(values.get(m)) for m in names]
        table.add_row(escape(name), *cells, _number(values.get("num_examples"), 0))
    console.print(table)
    for kind in ("failed", "refused"):
        for name, why in record.get(kind, {}).items():
            err_console.print(f"{escape(name)} {kind}: {escape(str(why))}", soft_wrap=True)
    if not rows:
        print_error(f"no site could score the model; see {run_dir / 'rounds' / '1'}")
        raise typer.Exit(1)
    console.print(f"per-site metrics in {run_dir / 'rounds' / '1' / 'metrics.json'}")


def _number(value: object, digits: int = 3) -> str:
    if isinstance(value, int | float) and value == value:
        return f"{value:.{digits}f}"
    return "–"
