"""What ``neurofed predict`` writes for one case, in ``OUT/<case>/``.

- ``segmentation.nii.gz`` (segmentation tasks): uint8 labels on the grid of the reference scan
  (the model's first modality) — its exact shape and affine, so it overlays the scan in any
  viewer; ``brain-mask.nii.gz`` the brain mask the preprocessing found, on the same grid;
- ``prediction.json``, written last (its presence means the case is complete): the task's
  results (lesion count and volumes in mL, marker probabilities with their threshold and call,
  the WHO grade, the brain age), the model (folder name, seal SHA-256, study and study hash when
  a federated run made it), the input files by modality, the warnings about the input, the
  brain mask's method and volume, and the output grid;
- ``segmentation.dcm`` (a DICOM input): the segmentation as a DICOM SEG over the reference
  scan's source series, for the PACS;
- ``overlay.png``: three orthogonal slices of the reference scan through the segmentation (else
  the brain) with the brain mask (dashed) and the segmentation (solid) as contours, readable in
  greyscale;
- ``report.html``: one self-contained page a clinician reads (the overlay embedded), with the
  results, the warnings and the model it came from;
- with ``--explain`` (glioma-multitask): ``gradcam-<head>.nii.gz`` (float32 in [0, 1] on the
  same grid) and ``gradcam-<head>.png`` per marker and the grade, and in ``prediction.json``
  the share of each map's hottest tenth of the brain inside the predicted tumour.

Examples
--------
>>> _case_folder_name("sub-001")
'sub-001'
>>> _case_folder_name("../../etc")
'etc'
"""

from __future__ import annotations

import base64
import gzip
import json
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import nibabel as nib
import numpy as np
import numpy.typing as npt

from neurofed.artifacts import versions, write_bytes_atomically, write_json_atomically
from neurofed.keys import Modality
from neurofed.predict.case import CasePrediction

__all__ = ["PREDICTION_JSON", "model_record", "predicted_before", "write_case"]

PREDICTION_JSON = "prediction.json"
SEGMENTATION_FILE = "segmentation.nii.gz"
BRAIN_MASK_FILE = "brain-mask.nii.gz"
OVERLAY_FILE = "overlay.png"
REPORT_FILE = "report.html"
DICOM_SEG_FILE = "segmentation.dcm"
_FORMAT = 1

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>neurofed prediction: {{ case }}</title>
<style>
body { font-family: sans-serif; max-width: 60rem; margin: 1.5rem auto; color: #111; }
table { border-collapse: collapse; } th, td { border: 1px solid #999; padding: 0.2rem 0.6rem;
text-align: left; } .warn { border-left: 4px solid #000; padding-left: 0.6rem; }
small { color: #444; }
</style></head><body>
<h1>{{ case }}: {{ task }}</h1>
<p><small>Research use only: not a medical device. Results of model
<code>{{ model.folder }}</code> (seal {{ model.sha256[:12] }}{% if model.study %}, study
{{ model.study }}{% endif %}) on {{ inputs|join(", ") }}.</small></p>
{% if warnings %}<h2>Check before reading</h2>
{% for w in warnings %}<p class="warn">{{ w }}</p>{% endfor %}{% endif %}
<h2>Results</h2>
<table>{% for name, value in rows %}<tr><th>{{ name }}</th><td>{{ value }}</td></tr>{% endfor %}
</table>
<h2>Where</h2>
<p><img alt="{{ alt }}" src="data:image/png;base64,{{ overlay }}" style="max-width: 100%"></p>
<p><small>Brain mask: {{ brain.method }}, {{ brain.volume_ml }} mL (dashed). Segmentation (solid)
on the grid of {{ reference }}: {{ grid }}.</small></p>
{% if heat_images %}<h2>What drove each call (Grad-CAM)</h2>
{% for caption, png in heat_images %}<figure><img alt="{{ caption }}"
src="data:image/png;base64,{{ png }}" style="max-width: 100%"><figcaption>{{ caption }}
</figcaption></figure>{% endfor %}{% endif %}
</body></html>
"""


def _case_folder_name(case: str) -> str:
    name = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(str(case)).name).strip(".-")
    return name or "case"


def model_record(folder: Path) -> dict[str, Any]:
    """What ``prediction.json`` says of the model: folder name, seal SHA-256, study."""
    try:
        record = json.loads((Path(folder) / "model.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        record = {}
    provenance = record.get("provenance") or {}
    return {
        "folder": Path(folder).resolve().name,
        "sha256": str((record.get("seal") or {}).get("sha256", "")),
        "task": str(record.get("task", "")),
        "study": provenance.get("study"),
        "study_hash": provenance.get("study_hash"),
        "run": provenance.get("run"),
    }


def _nifti(
    array: npt.NDArray[Any], affine: npt.NDArray[np.float64], dtype: type = np.uint8
) -> bytes:
    """``array`` as the bytes of a gzipped NIfTI-1 file with ``affine`` as sform and qform."""
    image = nib.Nifti1Image(np.asarray(array, dtype=dtype), affine)
    image.set_qform(affine, code=1)
    image.set_sform(affine, code=1)
    return gzip.compress(image.to_bytes(), mtime=0)


def _canonical(array: npt.NDArray[Any], affine: npt.NDArray[np.float64]) -> npt.NDArray[Any]:
    """``array`` with its axes in RAS order and direction (for display only)."""
    orientation = nib.orientations.io_orientation(affine)
    return np.asarray(nib.orientations.apply_orientation(array, orientation))


def _overlay(prediction: CasePrediction, heat: npt.NDArray[np.float32] | None = None) -> bytes:
    """Three orthogonal slices with the brain mask and segmentation contours; with ``heat``, a
    Grad-CAM map laid over the scan (``inferno``: dark to bright, readable in greyscale)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    reference = prediction.reference
    shown_heat = None if heat is None else _canonical(heat, reference.affine)
    image = _canonical(reference.array, reference.affine)
    brain = None
    if prediction.brain_mask is not None:
        brain = _canonical(prediction.brain_mask.astype(np.uint8), reference.affine)
    seg = None
    if prediction.segmentation is not None:
        seg = _canonical(prediction.segmentation, reference.affine)
    focus = seg if seg is not None and seg.any() else brain
    if focus is not None and focus.any():
        centre = [round(float(c)) for c in np.argwhere(focus).mean(axis=0)]
    else:
        centre = [n // 2 for n in image.shape]
    low, high = np.percentile(image, [1, 99.5]) if image.any() else (0.0, 1.0)
    # voxel size along the displayed (RAS-ordered) axes, so anisotropic scans keep their shape
    order = nib.orientations.io_orientation(reference.affine)[:, 0].astype(int)
    spacing = np.empty(3)
    spacing[order] = reference.spacing
    figure, axes = plt.subplots(1, 3, figsize=(10.5, 3.8))
    views = [("sagittal", 0), ("coronal", 1), ("axial", 2)]
    for axis_plot, (name, axis) in zip(axes, views, strict=True):
        index: list[int | slice] = [slice(None)] * 3
        index[axis] = centre[axis]
        sl = tuple(index)
        across, up = (a for a in range(3) if a != axis)
        aspect = float(spacing[up] / spacing[across])
        axis_plot.imshow(
            image[sl].T, cmap="gray", origin="lower", vmin=low, vmax=high, aspect=aspect
        )
        if shown_heat is not None:
            axis_plot.imshow(
                shown_heat[sl].T,
                cmap="inferno",
                origin="lower",
                vmin=0.0,
                vmax=1.0,
                alpha=0.5,
                aspect=aspect,
            )
        if brain is not None and brain[sl].any():
            axis_plot.contour(brain[sl].T, levels=[0.5], colors="white", linestyles="dashed")
        if seg is not None and seg[sl].any():
            axis_plot.contour(seg[sl].T > 0, levels=[0.5], colors="black", linewidths=2.0)
            axis_plot.contour(seg[sl].T > 0, levels=[0.5], colors="yellow", linewidths=0.8)
        axis_plot.set_title(f"{name} {centre[axis]}")
        axis_plot.set_axis_off()
    figure.tight_layout()
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    plt.close(figure)
    return buffer.getvalue()


def _rows(results: dict[str, Any]) -> list[tuple[str, str]]:
    rows: list[tuple[str, str]] = []
    for key, value in results.items():
        if key == "labels":
            continue
        if key == "markers":
            for marker, entry in value.items():
                rows.append(
                    (
                        marker,
                        f"{entry['call']} (probability {entry['probability']:.2f}, threshold "
                        f"{entry['threshold']:.2f})",
                    )
                )
        elif key == "grade":
            shown = ", ".join(f"{k} {v:.2f}" for k, v in value["probabilities"].items())
            rows.append(("WHO grade", f"{value['who']} ({shown})"))
        elif key == "explain":
            continue
        elif key == "volume_ml":
            for region, ml in value.items():
                rows.append((f"{region} volume", f"{ml:.1f} mL"))
        elif key == "lesion_volumes_ml":
            rows.append(("lesion volumes", ", ".join(f"{v:.2f}" for v in value[:20]) + " mL"))
        elif isinstance(value, float):
            rows.append((key.replace("_", " "), f"{value:.2f}"))
        else:
            rows.append((key.replace("_", " "), str(value)))
    return rows


def write_case(
    prediction: CasePrediction,
    out: Path,
    case: str,
    *,
    model: dict[str, Any],
    inputs: dict[Modality, Path],
    dicom_source: Sequence[Path] | None = None,
) -> Path:
    """Write one case's outputs into ``out/<case>/`` (see the module docstring); returns it.

    ``dicom_source``: the DICOM files of the reference scan's series (a DICOM input); the
    segmentation is then also written over them as ``segmentation.dcm`` (DICOM SEG).
    """
    import jinja2

    folder = Path(out) / _case_folder_name(case)
    folder.mkdir(parents=True, exist_ok=True)
    reference = prediction.reference
    brain_ml = None
    if prediction.brain_mask is not None:
        brain_ml = round(float(prediction.brain_mask.sum()) * reference.voxel_ml, 1)
        write_bytes_atomically(
            folder / BRAIN_MASK_FILE, _nifti(prediction.brain_mask, reference.affine)
        )
    files = {}
    if prediction.segmentation is not None:
        write_bytes_atomically(
            folder / SEGMENTATION_FILE, _nifti(prediction.segmentation, reference.affine)
        )
        files["segmentation"] = SEGMENTATION_FILE
    if prediction.brain_mask is not None:
        files["brain_mask"] = BRAIN_MASK_FILE
    if dicom_source and prediction.segmentation is not None:
        written = _dicom_seg(prediction, folder, dicom_source, model)
        if written is not None:
            files["dicom_seg"] = written
    grid = {
        "shape": list(reference.shape),
        "affine": np.round(reference.affine, 6).tolist(),
        "spacing_mm": [round(s, 4) for s in reference.spacing],
        "orientation": "".join(nib.orientations.aff2axcodes(reference.affine)),
    }
    record = {
        "format": _FORMAT,
        "case": case,
        "task": prediction.task.value,
        "results": prediction.results,
        "warnings": list(prediction.warnings),
        "brain_mask": {
            "method": prediction.brain_mask_method,
            "volume_ml": brain_ml,
            "extraction": prediction.brain_extraction,
        },
        "model": model,
        "inputs": {m.value: Path(p).name for m, p in inputs.items()},
        "reference": Path(reference.path).name,
        "grid": grid,
        "files": files | {"overlay": OVERLAY_FILE, "report": REPORT_FILE},
        "seconds": round(prediction.seconds, 2),
        "versions": versions(),
    }
    heat_images = []
    for head, heat in sorted(prediction.heatmaps.items()):
        name = f"gradcam-{head}"
        write_bytes_atomically(
            folder / f"{name}.nii.gz", _nifti(heat, reference.affine, np.float32)
        )
        picture = _overlay(prediction, heat)
        write_bytes_atomically(folder / f"{name}.png", picture)
        files[name] = f"{name}.nii.gz"
        share = prediction.results.get("explain", {}).get(head, {}).get("top10_share_in_tumour")
        caption = f"Grad-CAM of {head}" + (
            ""
            if share is None
            else f": {share:.0%} of the hottest tenth of the brain is in the predicted tumour"
        )
        heat_images.append((caption, base64.b64encode(picture).decode("ascii")))
    record["files"] = files | {"overlay": OVERLAY_FILE, "report": REPORT_FILE}
    overlay = _overlay(prediction)
    write_bytes_atomically(folder / OVERLAY_FILE, overlay)
    page = jinja2.Environment(autoescape=True).from_string(_PAGE)
    html = page.render(
        case=case,
        task=prediction.task.value,
        model=model,
        inputs=[f"{m.value} {Path(p).name}" for m, p in inputs.items()],
        warnings=prediction.warnings,
        rows=_rows(prediction.results),
        overlay=base64.b64encode(overlay).decode("ascii"),
        alt=f"{case}: scan with brain mask and segmentation contours",
        brain={"method": prediction.brain_mask_method, "volume_ml": brain_ml},
        reference=Path(reference.path).name,
        grid=f"{grid['shape']} voxels, {grid['orientation']}, {grid['spacing_mm']} mm",
        heat_images=heat_images,
    )
    write_bytes_atomically(folder / REPORT_FILE, html.encode("utf-8"))
    write_json_atomically(folder / PREDICTION_JSON, record)  # last: the case is complete
    return folder


def _dicom_seg(
    prediction: CasePrediction, folder: Path, source: Sequence[Path], model: dict[str, Any]
) -> str | None:
    """The segmentation as a DICOM SEG over its source series; a failure becomes a warning
    (the NIfTI outputs stand)."""
    import pydicom

    from neurofed.predict.dicom_seg import task_segments, write_dicom_seg

    assert prediction.segmentation is not None
    try:
        datasets = [pydicom.dcmread(path) for path in source]
        write_dicom_seg(
            prediction.segmentation,
            prediction.reference.affine,
            datasets,
            task_segments(prediction.task.value),
            folder / DICOM_SEG_FILE,
            algorithm=f"neurofed {prediction.task.value}",
            version=str(model.get("sha256", ""))[:12] or "unsealed",
        )
    except Exception as exc:  # highdicom refuses some series (e.g. inconsistent geometry)
        prediction.warnings.append(
            f"no DICOM SEG: the source series cannot carry it ({type(exc).__name__}: "
            f"{str(exc)[:200]}); segmentation.nii.gz is on the scan's grid"
        )
        return None
    return DICOM_SEG_FILE


def predicted_before(out: Path, case: str, model_sha256: str) -> bool:
    """Whether ``out/<case>/`` already holds a complete prediction of this model (its
    ``prediction.json``, written last, names the same model seal)."""
    path = Path(out) / _case_folder_name(case) / PREDICTION_JSON
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return bool(model_sha256) and (record.get("model") or {}).get("sha256") == model_sha256
