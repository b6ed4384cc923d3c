"""``neurofed predict``: run a model folder on new, unlabelled scans.

One case from its files (``--t1 F --t1ce F --t2 F --flair F``: NIfTI, NRRD or MetaImage), or
every case of a site folder in any layout neurofed reads (``--input SITE``, ``--case ID`` for
one). Each case's outputs go to ``OUT/<case>/`` (:mod:`neurofed.predict.output`). A case that is
refused or fails is reported with the reason and the others go on; a case ``OUT`` already holds
for the same model is kept (an interrupted run goes on; ``--again`` redoes it).

Exit status: 0 every case predicted, 1 some case refused or failed (the summary says which and
why), 2 wrong options or an unusable model folder.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from neurofed.cli.console import console, print_error, print_kept_layers_caveat, progress_bar

if TYPE_CHECKING:
    from neurofed.export.runtime import ExportedModel
    from neurofed.keys import Modality
    from neurofed.predict.scan import Scan
    from neurofed.training.model_folder import TrainedModel

__all__ = ["predict"]

_FileOption = Annotated[
    Path | None, typer.Option(help="The scan of this modality (NIfTI, NRRD or MetaImage).")
]


def _dicom_site(
    dicom_dir: Path, out: Path, mapping: Path | None
) -> tuple[Path, dict[str, list[Path]]]:
    """Import a DICOM folder for prediction; returns the site and each file's source slices."""
    from neurofed.cli.dicom import render_import
    from neurofed.data.dicom_import import DicomImportError
    from neurofed.data.dicom_mapping import DicomMapping, MappingError
    from neurofed.data.dicom_scan import DicomFolderError
    from neurofed.predict.dicom_input import import_for_prediction

    try:
        chosen = DicomMapping.load(mapping) if mapping else None
        imported = import_for_prediction(dicom_dir, out, chosen)
    except (DicomImportError, DicomFolderError, MappingError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None
    render_import(imported.report)
    return imported.site, imported.sources


def _site_cases(
    root: Path, case: str | None
) -> list[tuple[str, dict[Modality, tuple[Path, int | None]]]]:
    """The cases of a site folder: id → modality → (file, channel of a 4-D file)."""
    from neurofed.data.layouts.detect import LayoutError, read_site

    try:
        subjects = read_site(root).subjects
    except (LayoutError, OSError, ValueError) as exc:
        print_error(f"{exc}")
        raise typer.Exit(2) from None
    cases = [
        (s.subject_id, {m: (root / ref.path, ref.channel) for m, ref in s.images.items()})
        for s in subjects
        if case is None or s.subject_id == case
    ]
    if not cases:
        which = f"no case {case!r}" if case else "no case"
        print_error(f"{root}: {which} found; check the folder (`neurofed site check {root}`)")
        raise typer.Exit(2)
    return cases


def _read(files: dict[Modality, tuple[Path, int | None]]) -> dict[Modality, Scan]:
    from neurofed.predict.scan import read_scan

    return {m: read_scan(path, channel) for m, (path, channel) in files.items()}


def _load(model: Path, device: str, task: str | None) -> TrainedModel | ExportedModel:
    """A PyTorch model folder, or an exported one (`neurofed export`: run without torch)."""
    from neurofed.export import ExportError, is_exported_folder, load_exported

    try:
        if is_exported_folder(model):
            return load_exported(model, task=task)
        from neurofed.training import ModelFolderError, load_model

        try:
            trained = load_model(model, device=device, task=task)
        except ModelFolderError as exc:
            raise ExportError(str(exc)) from None
        print_kept_layers_caveat(trained)
        return trained
    except (ExportError, ValueError) as exc:
        print_error(str(exc))
        raise typer.Exit(2) from None


def predict(
    model: Annotated[
        Path, typer.Option(help="A model folder (e.g. RUN/model) or an exported one.")
    ],
    out: Annotated[Path, typer.Option(help="Where each case's outputs go (OUT/<case>/).")],
    t1: _FileOption = None,
    t1ce: _FileOption = None,
    t2: _FileOption = None,
    flair: _FileOption = None,
    input_dir: Annotated[
        Path | None,
        typer.Option(
            "--input",
            help="A site folder (any layout neurofed reads) or a DICOM folder: every case.",
        ),
    ] = None,
    mapping: Annotated[
        Path | None,
        typer.Option(
            help="With a DICOM --input: the series → modality mapping (see site import-dicom)."
        ),
    ] = None,
    case: Annotated[
        str | None,
        typer.Option(help="With --input: this case only. With files: the case's name in OUT."),
    ] = None,
    allow_spacing: Annotated[
        bool,
        typer.Option(
            "--allow-spacing",
            help="Predict even when the scan's voxels are far from the model's (with a warning).",
        ),
    ] = False,
    explain: Annotated[
        bool,
        typer.Option(
            "--explain",
            help="Grad-CAM heat maps of the markers and the grade (glioma-multitask), as NIfTI "
            "on the scan's grid and pictures.",
        ),
    ] = False,
    again: Annotated[
        bool,
        typer.Option("--again", help="Predict cases again that OUT already holds for this model."),
    ] = False,
    task: Annotated[
        str | None,
        typer.Option(help="Refuse a model of any other task (e.g. ms-lesion)."),
    ] = None,
    device: Annotated[str, typer.Option(help="cpu, cuda or auto.")] = "cpu",
) -> None:
    """Run a trained model on new scans: segmentations on each scan's own grid,
    prediction.json, an overlay and a one-page report per case."""
    from neurofed.keys import Modality
    from neurofed.predict.case import PredictError, predict_case
    from neurofed.predict.output import model_record, predicted_before, write_case
    from neurofed.predict.scan import ScanError

    given = {m: f for m, f in zip(Modality, (t1, t1ce, t2, flair), strict=True) if f is not None}
    if (input_dir is None) == (not given):
        print_error("give the case's scans (--t1 F --flair F ...) or a site folder (--input DIR)")
        raise typer.Exit(2)
    trained = _load(model, device, task)
    sources: dict[str, list[Path]] = {}
    site_root: Path | None = None
    if input_dir is not None:
        from neurofed.predict.dicom_input import is_dicom_folder

        site_root = input_dir
        if input_dir.is_dir() and is_dicom_folder(input_dir):
            site_root, sources = _dicom_site(input_dir, out, mapping)
        cases = _site_cases(site_root, case)
    else:
        cases = [(case or "case", {m: (f, None) for m, f in given.items()})]
    record = model_record(model)
    failed: dict[str, str] = {}
    kept = 0
    with progress_bar("predict") as bar:
        for k, (name, files) in enumerate(cases):
            bar(k, len(cases), name)
            if not again and predicted_before(out, name, record["sha256"]):
                kept += 1  # an interrupted run goes on where it stopped
                continue
            try:
                scans = _read(files)
                result = predict_case(trained, scans, allow_spacing=allow_spacing, explain=explain)
            except (ScanError, PredictError) as exc:
                failed[name] = str(exc)
                continue
            used = {m: files[m][0] for m in trained.task.modalities}
            reference = used[trained.task.modalities[0]]
            source = None
            if sources and site_root is not None:
                source = sources.get(reference.relative_to(site_root).as_posix())
            folder = write_case(result, out, name, model=record, inputs=used, dicom_source=source)
            for warning in result.warnings:
                console.print(f"  {name}: warning: {warning}", markup=False, soft_wrap=True)
            console.print(
                f"  {name}: {folder / 'report.html'} ({result.seconds:.1f} s)",
                markup=False,
                soft_wrap=True,
            )
        bar(len(cases), len(cases), "done")
    for name, why in failed.items():
        print_error(f"{name}: {why}")
    done = len(cases) - len(failed)
    earlier = f" ({kept} from an earlier run; --again redoes them)" if kept else ""
    console.print(f"predicted {done} of {len(cases)} case(s) into {out}{earlier}", markup=False)
    if failed:
        raise typer.Exit(1)
