"""``neurofed simulate``: a federated study on one machine through NVFlare's simulator."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from neurofed.cli.console import console, err_console, print_error

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
) -> None:
    """Run a study over several site folders, each as one simulated NVFlare site."""
    from neurofed.federated.engine import SimulationError, run_simulation
    from neurofed.federated.study import StudyError, load_study
    from neurofed.training import RunFolderError

    try:
        study = load_study(study_file)
    except StudyError as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    console.print(
        f"study {study.name!r} sha256:{study.content_hash[:12]}: {study.rounds} round(s) of "
        f"{study.strategy.value} over {len(site)} site(s) → {out}"
    )

    def progress(done: int, total: int, label: str) -> None:
        console.print(f"[{done}/{total}] {label}")

    try:
        result = run_simulation(study, site, out, progress=progress, device=device)
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
