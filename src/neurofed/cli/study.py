"""``neurofed study submit / status / download``: the study lead drives a deployed federation.

Every command talks to the server through the FLARE API with the admin kit (``--admin-kit``,
else ``$NEUROFED_ADMIN_KIT``). Exit status: 0 done, 1 refused or failed (the message says why),
2 the study file could not be read.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from neurofed.cli.console import console, err_console, print_error

if TYPE_CHECKING:
    from neurofed.federated.engine.submit import StudyStatus

__all__ = ["render_status", "study_app"]

#: The environment variable naming the admin kit (read by the CLI only).
ADMIN_KIT_ENV = "NEUROFED_ADMIN_KIT"

study_app = typer.Typer(
    rich_markup_mode=None,  # plain help: option names are never cut to fit the terminal
    help="Study lead: submit a study to the federation, follow it, get its run.",
)

AdminKitOption = Annotated[
    Path,
    typer.Option(
        "--admin-kit",
        envvar=ADMIN_KIT_ENV,
        help=f"The admin kit (<federation>/admin) [env: ${ADMIN_KIT_ENV}].",
    ),
]


def _fail(message: str, code: int = 1) -> typer.Exit:
    print_error(message)
    return typer.Exit(code)


def _round_line(entry: dict[str, Any]) -> str:
    value = entry.get("value")
    shown = "not aggregated" if value is None else f"{entry.get('metric')} {value:.4g}"
    parts = [f"round {entry.get('round')}: {shown}", f"accepted {entry.get('accepted')}"]
    for key in ("refused", "failed", "rejected"):
        for site, reason in (entry.get(key) or {}).items():
            parts.append(f"{site} {key}: {str(reason).removeprefix(f'{key}: ')}")
    if entry.get("dropped"):
        parts.append(f"dropped (no answer in time) {entry['dropped']}")
    seconds = entry.get("seconds")
    if seconds is not None:
        parts.append(f"{seconds:.1f} s")
    return "; ".join(parts)


def render_status(status: StudyStatus) -> None:
    """The job's status and one line per finished round."""
    progress = status.progress
    head = f"job {status.job_id}: {status.status}"
    if progress.get("state"):
        head += f", run {progress.get('state')}"
        if progress.get("rounds"):
            head += f" (round {progress.get('round')}/{progress.get('rounds')})"
    if progress.get("live"):
        head += f", sites {progress['live']}"
    console.print(head, soft_wrap=True)
    for entry in progress.get("history") or []:
        console.print(f"  {_round_line(entry)}", soft_wrap=True, markup=False)
    summary = progress.get("summary")
    if summary:
        selected = summary.get("selected") or {}
        if selected:
            console.print(
                f"  best round {selected.get('round')}: {selected.get('metric')} = "
                f"{selected.get('value')} ({selected.get('direction')})",
                soft_wrap=True,
            )


@study_app.command("submit")
def submit(
    study_file: Annotated[Path, typer.Argument(help="The study (study.toml).")],
    admin_kit: AdminKitOption,
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Wait for the run to finish and download it into this folder."),
    ] = None,
    follow: Annotated[
        bool,
        typer.Option(
            "--follow",
            help="Wait for the run to finish, printing each round; bring restarted sites back "
            "and resubmit after a server restart.",
        ),
    ] = False,
    run_name: Annotated[
        str,
        typer.Option(
            "--run-name",
            help="The run folder's name on the server [default: <study name>-<hash[:12]>]; "
            "the same name resumes the run.",
        ),
    ] = "",
) -> None:
    """Submit a study as a config-only job (no code travels); the same study resumes its run."""
    from neurofed.federated.engine.submit import (
        SubmitError,
        admin_session,
        download_run,
        follow_study,
        submit_study,
    )
    from neurofed.federated.study import StudyError, StudyKind, load_study

    try:
        study = load_study(study_file)
    except StudyError as exc:
        raise _fail(str(exc), 2) from None
    job_id = "(not submitted yet)"
    try:
        with admin_session(admin_kit) as session:
            job_id = submit_study(session, study, run_name=run_name)
        console.print(
            f"study {study.name!r} sha256:{study.content_hash[:12]} submitted: job {job_id}",
            soft_wrap=True,
        )
        if not (follow or out is not None):
            console.print(f"follow it with `neurofed study status {job_id}`", soft_wrap=True)
            return
        job_id = follow_study(admin_kit, job_id, study, run_name=run_name, on_update=render_status)
        if out is not None:
            with admin_session(admin_kit) as session:
                folder = download_run(session, job_id, out)
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            if study.kind is StudyKind.EVALUATE:
                metrics = folder / "rounds" / "1" / "metrics.json"
                console.print(f"run folder → {folder} (each site's metrics in {metrics})")
                return
            if summary.get("model") is None:
                raise _fail(
                    f"run folder → {folder}: no round was aggregated, so there is no model; each "
                    f"round's reasons are in {folder / 'rounds'}"
                )
            console.print(f"run folder → {folder} (model in {folder / 'model'})", soft_wrap=True)
    except KeyboardInterrupt:
        err_console.print(
            f"[yellow]stopped following[/yellow] job {job_id}: it goes on in the federation; "
            f"`neurofed study status {job_id}` shows it, `neurofed study download {job_id} --out "
            "RUN` fetches it when it ends",
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except SubmitError as exc:
        raise _fail(str(exc)) from None


@study_app.command("status")
def status(
    job_id: Annotated[str, typer.Argument(help="The job id `study submit` printed.")],
    admin_kit: AdminKitOption,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON for machines.")] = False,
) -> None:
    """The job's status and each finished round per site (accepted, refused, failed, dropped)."""
    from neurofed.federated.engine.submit import SubmitError, admin_session, study_status

    try:
        with admin_session(admin_kit) as session:
            result = study_status(session, job_id)
    except SubmitError as exc:
        raise _fail(str(exc)) from None
    if as_json:
        typer.echo(
            json.dumps(
                {"job_id": result.job_id, "status": result.status, **result.progress}, indent=2
            )
        )
        return
    render_status(result)


@study_app.command("download")
def download(
    job_id: Annotated[str, typer.Argument(help="The job id of a finished study.")],
    out: Annotated[Path, typer.Option("--out", help="New folder for the run folder.")],
    admin_kit: AdminKitOption,
) -> None:
    """Download a finished job's run folder: model/, rounds/, summary.json, study.toml."""
    from neurofed.federated.engine.submit import SubmitError, admin_session, download_run

    try:
        with admin_session(admin_kit) as session:
            folder = download_run(session, job_id, out)
    except SubmitError as exc:
        raise _fail(str(exc)) from None
    console.print(f"run folder → {folder} (model in {folder / 'model'})", soft_wrap=True)
