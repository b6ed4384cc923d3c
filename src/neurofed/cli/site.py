"""``neurofed site …``: the data custodian's commands."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from neurofed.cli.console import console, err_console, print_error, progress_bar
from neurofed.data.modalities import normalise_modality
from neurofed.data.split_defaults import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VALIDATION_FRACTION,
)
from neurofed.keys import (
    ClinicalField,
    LabelConvention,
    Layout,
    Modality,
    Severity,
    SiteFile,
    Split,
    TaskId,
)

if TYPE_CHECKING:  # the commands import the data and preprocessing layers when they run
    from neurofed.data.manifest import SiteCheckReport
    from neurofed.data.splits import Splits
    from neurofed.data.subject import Problem
    from neurofed.preprocess.params import PreprocessParams
    from neurofed.preprocess.pipeline import PreprocessReport
    from neurofed.preprocess.qc import QCTable

__all__ = ["render_preprocess", "render_qc", "render_report", "site_app"]

site_app = typer.Typer(
    rich_markup_mode=None,  # plain help: option names are never cut to fit the terminal
    help="Data custodian: check a site's data, fix its splits, preprocess it and judge its "
    "quality.",
)

_MARK = {Severity.ERROR: "[red]✗[/red]", Severity.WARNING: "[yellow]![/yellow]"}


def _parse_modalities(value: str | None) -> tuple[Modality, ...] | None:
    if not value:
        return None
    modalities = [normalise_modality(v) for v in value.split(",") if v.strip()]
    if any(m is None for m in modalities):
        names = ",".join(m.value for m in Modality)
        raise typer.BadParameter(f"{value!r}: give modalities from {names}")
    return tuple(m for m in modalities if m is not None)


#: Above this many problems, ``site check`` prints a summary by kind and a few of each.
MAX_LISTED = 40
_PER_KIND = 3


def _print_problem(problem: Problem) -> None:
    # text from the data (ids, file names, clinical cells) is never read as markup
    console.print(f"  {_MARK[problem.severity]} {escape(problem.line())}", soft_wrap=True)


def render_report(site: Path, report: SiteCheckReport) -> None:
    """Print one line per problem and a summary a custodian can act on; with more than
    :data:`MAX_LISTED` problems, the count of each kind and its first few lines."""
    from collections import Counter

    cases = report.cases
    excluded = report.excluded_ids
    problems = [*report.site_problems, *(p for c in cases for p in c.problems)]
    n_warn = sum(1 for p in problems if p.severity is Severity.WARNING)
    per_case = report.seconds / max(len(cases), 1)
    console.print(
        f"[bold]{escape(str(site))}[/bold] ({report.manifest.layout.value}): {len(cases)} cases, "
        f"{len(cases) - len(excluded)} usable, {len(excluded)} excluded, {n_warn} warnings "
        f"[dim]({report.seconds:.1f} s, {per_case:.2f} s/case)[/dim]",
        soft_wrap=True,
    )
    if len(problems) <= MAX_LISTED:
        for problem in problems:
            _print_problem(problem)
        return
    kinds = Counter((p.kind, p.severity) for p in problems)
    console.print(f"  {len(problems)} problems, by kind (the first {_PER_KIND} of each below):")
    for (kind, severity), count in kinds.most_common():
        console.print(f"    {_MARK[severity]} {kind.value}: {count}")
    for kind, severity in kinds:
        for problem in [p for p in problems if (p.kind, p.severity) == (kind, severity)][
            :_PER_KIND
        ]:
            _print_problem(problem)
    console.print(
        f"  every problem, with its fix: {escape(str(site / SiteFile.FOLDER.value))}/"
        f"{SiteFile.CHECK_REPORT.value}",
        soft_wrap=True,
    )


def _splits_line(splits: Splits, available: list[str]) -> str:
    counts = [f"{len(splits.subject_ids(s, available))} {s.value}" for s in Split]
    strat = f", stratified on {splits.stratify_on.value}" if splits.stratify_on else ""
    return f"splits: {' / '.join(counts)} (seed {splits.seed}{strat})"


@site_app.command("check")
def check(
    site: Annotated[Path, typer.Argument(help="The site's data folder.")],
    layout: Annotated[Layout | None, typer.Option(help="Skip auto-detection.")] = None,
    clinical: Annotated[
        Path | None, typer.Option(help="Clinical table (CSV/TSV/XLSX) to join on subject id.")
    ] = None,
    label_convention: Annotated[
        LabelConvention | None,
        typer.Option(
            help="The label maps' convention, for a table of files without a label_convention "
            "column (e.g. binary-lesion for MS lesion masks)."
        ),
    ] = None,
    require: Annotated[
        str | None, typer.Option(help="Required modalities, e.g. T1,T1CE,T2,FLAIR.")
    ] = None,
    tolerance_mm: Annotated[
        float, typer.Option(help="How far (mm) two modalities' grids may differ.")
    ] = 0.1,
    seed: Annotated[
        int | None,
        typer.Option(help=f"Seed of the split [default: {DEFAULT_SEED}, or the existing split's]."),
    ] = None,
    validation: Annotated[
        float | None,
        typer.Option(help=f"Validation fraction [default: {DEFAULT_VALIDATION_FRACTION:g}]."),
    ] = None,
    test: Annotated[
        float | None, typer.Option(help=f"Test fraction [default: {DEFAULT_TEST_FRACTION:g}].")
    ] = None,
    stratify: Annotated[
        ClinicalField | None, typer.Option(help="Stratify the split on this label.")
    ] = None,
    reshuffle: Annotated[bool, typer.Option(help="Recompute an existing split.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Processes to use.")] = 1,
    force: Annotated[bool, typer.Option(help="Re-check cases already checked.")] = False,
    strict: Annotated[bool, typer.Option(help="Exit 1 on warnings too.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Check every case, write the site manifest and fixed splits.

    Exit status: 0 all cases usable, 1 some cases excluded (or warnings with --strict),
    2 the folder could not be read at all.
    """
    from neurofed.data.checks import CheckSettings
    from neurofed.data.layouts.detect import LayoutError
    from neurofed.data.manifest import check_site
    from neurofed.data.splits import load_or_create_splits, split_parameters

    settings = CheckSettings(
        required_modalities=_parse_modalities(require), affine_tolerance_mm=tolerance_mm
    )
    try:
        with progress_bar(f"checking {site.name}") as progress:
            report = check_site(
                site,
                layout=layout,
                clinical_table=clinical,
                label_convention=label_convention,
                settings=settings,
                workers=workers,
                progress=None if as_json else progress,
                force=force,
            )
        parameters = split_parameters(
            site,
            seed=seed,
            validation_fraction=validation,
            test_fraction=test,
            stratify_on=stratify,
            reshuffle=reshuffle,
        )
        splits, split_problems = load_or_create_splits(
            site, report.manifest.subjects, reshuffle=reshuffle, **parameters.as_kwargs()
        )
    except (LayoutError, FileNotFoundError, ValueError) as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    available = [s.subject_id for s in report.manifest.subjects]
    if as_json:
        payload = report.to_json() | {
            "splits": splits.to_json(),
            "split_problems": [p.to_json() for p in split_problems],
        }
        typer.echo(json.dumps(payload, indent=2))
    else:
        render_report(site, report)
        for problem in split_problems:
            _print_problem(problem)
        console.print(_splits_line(splits, available))
    has_warnings = any(p.severity is Severity.WARNING for c in report.cases for p in c.problems)
    code = report.exit_code or int(strict and has_warnings)
    raise typer.Exit(code)


def render_qc(table: QCTable) -> None:
    """One line per warning or failure, then the count of cases per status."""
    from neurofed.preprocess.qc import QCStatus

    marks = {QCStatus.FAIL: "[red]✗[/red]", QCStatus.WARN: "[yellow]![/yellow]"}
    for row in table.rows:
        if row.status is QCStatus.PASS:
            continue
        modality = f" {row.modality.value}" if row.modality else ""
        console.print(
            f"  {marks[row.status]} {row.subject_id}{modality} {row.check.value}: {row.reason} "
            f"[dim]({row.threshold})[/dim]",
            soft_wrap=True,
        )
    status = table.case_status()
    counts = ", ".join(f"{sum(1 for v in status.values() if v is s)} {s.value}" for s in QCStatus)
    console.print(f"QC: {len(status)} cases: {counts}")


def render_preprocess(site: Path, report: PreprocessReport) -> None:
    """The run's counts, every failed case (files, reason, fix), then the QC findings."""
    from neurofed.preprocess.pipeline import OutcomeStatus

    counts = ", ".join(f"{report.count(s)} {s.value}" for s in OutcomeStatus)
    ran = max(report.count(OutcomeStatus.DONE) + report.count(OutcomeStatus.FAILED), 1)
    console.print(
        f"[bold]{site}[/bold]: {len(report.outcomes)} cases: {counts} "
        f"[dim]({report.seconds:.1f} s, {report.seconds / ran:.1f} s per case run)[/dim]",
        soft_wrap=True,
    )
    for outcome in report.outcomes:
        if outcome.status is OutcomeStatus.FAILED:
            files = ", ".join(outcome.files) or "?"
            console.print(
                f"  [red]✗[/red] {outcome.subject_id} ({files}): {outcome.reason}\n"
                f"      fix: {outcome.fix}",
                soft_wrap=True,
            )
        elif outcome.status is OutcomeStatus.SKIPPED:
            console.print(f"  [dim]- {outcome.subject_id}: skipped, {outcome.reason}[/dim]")
    if report.produced == 0:
        err_console.print(
            "[red]nothing was preprocessed[/red]: every case was skipped or failed (reasons "
            "above); fix them, or choose the task whose modalities the site has (--task)",
            soft_wrap=True,
        )
        return
    render_qc(report.table)
    console.print(f"arrays, provenance.json, qc.json and qc.csv in {report.folder}", soft_wrap=True)


def _usage_error(message: str) -> typer.Exit:
    """Print ``message`` as an error (unwrapped, no markup) and exit 2."""
    print_error(message)
    return typer.Exit(2)


def _study_preprocessing(
    study_file: Path, plan_file: Path | None
) -> tuple[TaskId, PreprocessParams]:
    """The task and preprocessing a study trains with (under ``plan_file`` when planned).

    Raises
    ------
    typer.Exit
        (2) The study or plan cannot be read, or ``--plan`` is missing (planned study) or extra.
    """
    from neurofed.federated.study import StudyError, load_study
    from neurofed.preprocess.plan import PlanError

    try:
        study = load_study(study_file)
    except StudyError as exc:
        raise _usage_error(str(exc)) from None
    if study.plan is not None and plan_file is None:
        raise _usage_error(
            f"{study_file}: study {study.name!r} is planned ([plan]); pass its plan with "
            "--plan PLAN.json (the run's plan.json, or the copy the site keeps in its state "
            "folder of the study)"
        )
    if study.plan is None and plan_file is not None:
        raise _usage_error(
            f"{study_file}: study {study.name!r} has no [plan]; leave out --plan {plan_file}"
        )
    try:
        plan = None if plan_file is None else study.read_plan(plan_file)
        config = study.train_config(device="cpu", plan=plan)
    except (ValueError, PlanError) as exc:
        raise _usage_error(str(exc)) from None
    return study.task, config.preprocess


@site_app.command("preprocess")
def preprocess(
    site: Annotated[Path, typer.Argument(help="The site's data folder (checked).")],
    task: Annotated[
        TaskId | None, typer.Option(help="The task whose modalities to preprocess.")
    ] = None,
    spacing: Annotated[
        float | None, typer.Option(min=0.1, help="Isotropic voxel size in mm (default 1.0).")
    ] = None,
    workers: Annotated[
        int | None, typer.Option(min=1, help="Processes [default: min(cores, 4)].")
    ] = None,
    bias_correction: Annotated[
        bool | None, typer.Option(help="N4 bias-field correction (default on).")
    ] = None,
    registration: Annotated[
        bool | None,
        typer.Option(help="Rigid co-registration to the task's first modality (default on)."),
    ] = None,
    brain_extraction: Annotated[
        bool | None,
        typer.Option(
            help="Extract the brain (deepbet) of cases that show a full head [default: on for "
            "brain-age and ms-lesion, whose scans are full heads; off for the glioma tasks]."
        ),
    ] = None,
    study_file: Annotated[
        Path | None,
        typer.Option(
            "--study",
            help="Preprocess exactly as this study (study.toml) trains, so training reuses the "
            "arrays; instead of --task/--spacing/--bias-correction/--registration.",
        ),
    ] = None,
    plan_file: Annotated[
        Path | None,
        typer.Option(
            "--plan", help="A planned study's plan (plan.json of the run or the site's copy)."
        ),
    ] = None,
) -> None:
    """Harmonise every case (RAS, N4, co-registration, brain extraction of full heads, brain
    mask, resampling, z-score, crop) and run quality control; cases already done are skipped.

    Exit status: 0 every case preprocessed and no QC failure, 1 some case failed (to preprocess
    or QC), 2 nothing was preprocessed (every case skipped), the site (or the study, or the plan)
    could not be read, or the options clash.
    """
    from neurofed.preprocess.params import PreprocessParams
    from neurofed.preprocess.pipeline import PipelineError, default_workers, preprocess_site
    from neurofed.tasks import get_task
    from neurofed.training.defaults import default_train_config

    if study_file is not None:
        given = [
            name
            for name, value in (
                ("--task", task),
                ("--spacing", spacing),
                ("--bias-correction/--no-bias-correction", bias_correction),
                ("--registration/--no-registration", registration),
                ("--brain-extraction/--no-brain-extraction", brain_extraction),
            )
            if value is not None
        ]
        if given:
            raise _usage_error(
                f"--study sets the task and the preprocessing; leave out {', '.join(given)}"
            )
        task, params = _study_preprocessing(study_file, plan_file)
    else:
        if plan_file is not None:
            raise _usage_error("--plan goes with --study STUDY.toml")
        if task is None:
            raise _usage_error(
                "give the task (--task), or the study to prepare for (--study STUDY.toml)"
            )
        side = 1.0 if spacing is None else spacing
        extract = brain_extraction
        if extract is None:
            extract = default_train_config(task).preprocess.brain_extraction
        params = PreprocessParams(
            spacing=(side, side, side),
            bias_correction=True if bias_correction is None else bias_correction,
            registration=True if registration is None else registration,
            brain_extraction=extract,
        )
    chosen = get_task(task)
    shape = "x".join(map(str, params.spatial_shape)) if params.spatial_shape else "free"
    console.print(
        f"params id {params.params_id} ({task.value}: spacing {params.spacing} mm, shape {shape}, "
        f"bias correction {'on' if params.bias_correction else 'off'}, "
        f"registration {'on' if params.registration else 'off'}, "
        f"brain extraction {'on' if params.brain_extraction else 'off'})",
        soft_wrap=True,
        markup=False,
    )
    try:
        with progress_bar(f"preprocessing {site.name}") as progress:
            report = preprocess_site(
                site,
                chosen.modalities,
                params,
                with_label=chosen.needs_label_map,
                workers=workers or default_workers(),
                progress=progress,
            )
    except PipelineError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    render_preprocess(site, report)
    raise typer.Exit(report.exit_code)


@site_app.command("qc")
def qc(
    site: Annotated[Path, typer.Argument(help="The site's data folder (preprocessed).")],
    exclude_failures: Annotated[
        bool,
        typer.Option(
            help="Record every case that fails QC in neurofed/qc-exclusions.json: training skips "
            "them (delete the file to undo)."
        ),
    ] = False,
    params_id: Annotated[
        str | None, typer.Option(help="Which preprocessing, when there are several.")
    ] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Judge the preprocessed cases again and rewrite the QC table (qc.json, qc.csv).

    Exit status: 0 no case fails QC, 1 some case fails, 2 nothing to judge.
    """
    from neurofed.preprocess.pipeline import PipelineError, PipelineFile, run_qc

    try:
        report = run_qc(site, params_id=params_id, exclude_failures=exclude_failures)
    except PipelineError as exc:
        print_error(exc)
        raise typer.Exit(2) from exc
    if as_json:
        status = report.table.case_status()
        payload = {
            "folder": str(report.folder),
            "cases": {sid: s.value for sid, s in status.items()},
            "rows": [row.to_json() for row in report.table.rows],
            "excluded": None
            if report.exclusions is None
            else [e.to_json() for e in report.exclusions],
        }
        typer.echo(json.dumps(payload, indent=2))
        raise typer.Exit(report.exit_code)
    console.print(f"[bold]{site}[/bold]: {report.folder.name}", soft_wrap=True)
    render_qc(report.table)
    if report.exclusions is not None:
        names = ", ".join(e.subject_id for e in report.exclusions) or "none"
        recorded = site / SiteFile.FOLDER.value / PipelineFile.QC_EXCLUSIONS.value
        console.print(
            f"excluded from training: {names} (recorded in {recorded}; delete it to undo)",
            soft_wrap=True,
        )
    console.print(f"QC table: {report.folder / PipelineFile.QC_CSV.value}", soft_wrap=True)
    raise typer.Exit(report.exit_code)
