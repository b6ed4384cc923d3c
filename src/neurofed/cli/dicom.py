"""``neurofed site import-dicom``: a hospital's DICOM series into a site folder neurofed reads.

Registered on ``neurofed site``; the library side is :mod:`neurofed.data.dicom_import`
(conversion, neutral ids, the custodian-only record), :mod:`neurofed.data.dicom_mapping` (the
series → modality mapping file) and :mod:`neurofed.data.dicom_scan` (reading the DICOM folder).

Exit status: 0 every mapped series converted (skipped series are fine), 1 some series or DICOM
file failed (the summary says which and the fix), 2 the input could not be used.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from neurofed.cli.console import console, print_error, progress_bar
from neurofed.cli.site import site_app

if TYPE_CHECKING:  # the command imports pydicom and the data layer when it runs
    from neurofed.data.dicom_import import DicomImportReport

__all__ = ["import_dicom_command", "render_import"]

_MARKS = {
    "converted": "[green]✓[/green]",
    "updated": "[green]✓[/green]",
    "unchanged": "[dim]=[/dim]",
    "skipped": "[yellow]-[/yellow]",
    "failed": "[red]✗[/red]",
}


def render_import(report: DicomImportReport) -> None:
    """One line per series and per unusable file, then the counts and what to do next."""
    from neurofed.data.dicom_import import SeriesStatus

    kept = {SeriesStatus.CONVERTED, SeriesStatus.UPDATED, SeriesStatus.UNCHANGED}
    for outcome in report.outcomes:
        path = f" → {outcome.path}" if outcome.status in kept else ""
        console.print(f"  {_MARKS[outcome.status.value]} {escape(outcome.line() + path)}")
    for problem in report.file_problems:
        mark = "[red]✗[/red]" if problem.error else "[dim]-[/dim]"
        console.print(f"  {mark} {escape(problem.line())}")
    for note in report.notes:
        console.print(f"  [yellow]![/yellow] {escape(note)}")
    counts = ", ".join(f"{report.count(s)} {s.value}" for s in SeriesStatus)
    console.print(
        f"[bold]{escape(str(report.site))}[/bold]: {len(report.subjects)} subjects, "
        f"{len(report.outcomes)} series: {counts}"
    )
    console.print(
        f"the link from DICOM ids to subject ids: {escape(str(report.record))} "
        "(custodian only: never copy it out of the hospital)"
    )
    if report.exit_code == 0:
        console.print(f"next: neurofed site check {escape(str(report.site))}")


@site_app.command("import-dicom")
def import_dicom_command(
    dicom_dir: Annotated[
        Path, typer.Argument(help="The folder holding the DICOM files (any depth, any names).")
    ],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="The site folder to write (new, empty, or imported before)."),
    ] = None,
    mapping_file: Annotated[
        Path | None,
        typer.Option(
            "--mapping", help="Series → modality mapping (TOML) to use instead of the default."
        ),
    ] = None,
    write_mapping_file: Annotated[
        Path | None,
        typer.Option(
            "--write-mapping",
            help="Write the mapping, with what it makes of every series found, to this file "
            "and stop (nothing is converted).",
        ),
    ] = None,
    dcm2niix: Annotated[
        str, typer.Option("--dcm2niix", help="The dcm2niix executable (name on PATH, or path).")
    ] = "dcm2niix",
) -> None:
    """Convert DICOM series (dcm2niix) into a BIDS site folder with neutral subject ids.

    Series become T1, T1CE, T2 or FLAIR through a mapping file you can review and edit
    (--write-mapping FILE, then --mapping FILE); unmatched series are listed and skipped. The
    link from PatientID / StudyInstanceUID to sub-001, sub-002, ... is kept only in
    SITE/neurofed/dicom-import.json. Importing again reuses the ids and duplicates nothing.

    Exit status: 0 done, 1 some series or DICOM file failed, 2 the input could not be used.
    """
    from neurofed.data.dicom_import import DicomImportError, import_dicom, write_mapping
    from neurofed.data.dicom_mapping import DicomMapping, MappingError
    from neurofed.data.dicom_scan import DicomFolderError

    try:
        mapping = DicomMapping.load(mapping_file) if mapping_file else DicomMapping.default()
        if write_mapping_file is not None:
            written = write_mapping(write_mapping_file, dicom_dir, mapping)
            console.print(
                f"mapping written to {escape(str(written))}: review it (the series found are "
                "listed at the end), edit it, then run again with --mapping "
                f"{escape(str(written))} --out SITE"
            )
            raise typer.Exit(0)
        if out is None:
            raise DicomImportError("give the site folder to write with --out SITE")
        with progress_bar(f"importing {dicom_dir.name}") as progress:
            report = import_dicom(
                dicom_dir, out, mapping=mapping, dcm2niix=dcm2niix, progress=progress
            )
    except (DicomImportError, DicomFolderError, MappingError) as exc:
        print_error(exc)
        raise typer.Exit(2) from None
    render_import(report)
    raise typer.Exit(report.exit_code)
