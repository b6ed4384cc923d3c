"""``neurofed predict`` on one case: results on the input scan's exact grid in every orientation,
what prediction.json says per task, and every refusal naming the file and the fix."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import SimpleITK as sitk  # noqa: N813
from PIL import Image

from neurofed.keys import Modality, TaskId
from neurofed.predict.case import PredictError, _lesions, predict_case
from neurofed.predict.output import PREDICTION_JSON, model_record, write_case
from neurofed.predict.scan import ScanError, read_scan
from neurofed.preprocess.qc import dice
from neurofed.training import load_model, save_model
from tests.predict.heads import brain_truth, grid_affine, write_head
from tests.training.tiny import tiny_config

SHAPE = (80, 70, 64)
MODEL_SETTINGS = {
    TaskId.TUMOR_REGIONS: {"preprocess": {"spacing": [2.0, 2.0, 2.0]}},
    TaskId.GLIOMA_MULTITASK: {"preprocess": {"spacing": [4.0, 4.0, 4.0]}},
    TaskId.MS_LESION: {"preprocess": {"spacing": [2.0, 2.0, 2.0]}},
    TaskId.BRAIN_AGE: {"preprocess": {"spacing": [4.0, 4.0, 4.0], "spatial_shape": [40, 40, 40]}},
}


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[TaskId, Path]:
    """An untrained, sealed model folder per task (their outputs are not judged here)."""
    root = tmp_path_factory.mktemp("models")
    folders = {}
    for task, settings in MODEL_SETTINGS.items():
        config = tiny_config(task, **settings)
        model = config.build_task().build_model(config.model_config)
        provenance = {"run": "federated", "study": "tiny", "study_hash": "ab" * 32}
        folders[task] = save_model(root / task.value, model, config, provenance=provenance)
    return folders


def _scans(folder: Path, affine: np.ndarray, modalities: tuple[Modality, ...], shape=SHAPE):
    files = {
        m: write_head(folder / f"{m.value}.nii.gz", shape, affine, contrast=1.0 + k)
        for k, m in enumerate(modalities)
    }
    return files, {m: read_scan(f) for m, f in files.items()}


@pytest.mark.parametrize(
    ("flips", "degrees", "spacing"),
    [
        ((1, 1, 1), 0.0, (2.0, 2.0, 2.0)),  # RAS
        ((-1, -1, 1), 0.0, (2.0, 2.0, 2.0)),  # LPS
        ((-1, 1, 1), 0.0, (2.0, 2.0, 2.0)),  # LAS
        ((1, 1, 1), 20.0, (2.0, 2.0, 2.0)),  # oblique
        ((-1, 1, 1), 0.0, (1.6, 1.6, 3.5)),  # anisotropic
    ],
    ids=["RAS", "LPS", "LAS", "oblique", "anisotropic"],
)
def test_outputs_lie_on_the_input_scans_exact_grid(
    flips: tuple[int, int, int],
    degrees: float,
    spacing: tuple[float, float, float],
    models: dict[TaskId, Path],
    tmp_path: Path,
) -> None:
    # Prepare: the same brain (defined in world mm) sampled on this grid
    shape = tuple(round(n * 2.0 / s) for n, s in zip(SHAPE, spacing, strict=True))
    affine = grid_affine(shape, spacing, flips=flips, degrees=degrees)
    model = load_model(models[TaskId.TUMOR_REGIONS])
    files, scans = _scans(tmp_path / "in", affine, model.task.modalities, shape)

    # Execute
    result = predict_case(model, scans)
    folder = write_case(
        result,
        tmp_path / "out",
        "case-1",
        model=model_record(models[TaskId.TUMOR_REGIONS]),
        inputs=files,
    )

    # Assert: same shape and affine as the input; the brain where the input has it
    source = nib.load(files[Modality.T1])
    for name in ("segmentation.nii.gz", "brain-mask.nii.gz"):
        written = nib.load(folder / name)
        assert written.shape == source.shape
        np.testing.assert_allclose(written.affine, source.affine, atol=1e-5)
        assert nib.aff2axcodes(written.affine) == nib.aff2axcodes(source.affine)
    mask = np.asarray(nib.load(folder / "brain-mask.nii.gz").dataobj) > 0
    assert dice(mask, brain_truth(shape, affine)) > 0.97
    labels = np.asarray(nib.load(folder / "segmentation.nii.gz").dataobj)
    assert set(np.unique(labels)) <= {0, 1, 2, 3}
    record = json.loads((folder / PREDICTION_JSON).read_text())
    assert record["grid"]["shape"] == list(shape)
    assert record["model"]["sha256"] and record["model"]["study_hash"] == "ab" * 32
    assert record["inputs"]["FLAIR"] == "FLAIR.nii.gz"
    assert set(record["results"]["volume_ml"]) == {"WT", "TC", "ET"}


def test_nrrd_and_metaimage_read_as_the_same_scan_as_nifti(tmp_path: Path) -> None:
    # Prepare: one oblique LPS image written by SimpleITK in three formats
    array = np.random.default_rng(0).random((20, 24, 28)).astype(np.float32)  # (z, y, x)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing((1.0, 1.5, 2.5))
    image.SetOrigin((10.0, -20.0, 30.0))
    c, s = np.cos(0.3), np.sin(0.3)
    image.SetDirection((c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0))
    paths = [tmp_path / f"scan.{ext}" for ext in ("nii.gz", "nrrd", "mha")]
    for path in paths:
        sitk.WriteImage(image, str(path))

    # Execute
    nifti, nrrd, mha = (read_scan(p) for p in paths)

    # Assert
    assert nrrd.format == "NRRD" and mha.format == "MetaImage"
    for other in (nrrd, mha):
        np.testing.assert_array_equal(other.array, nifti.array)
        np.testing.assert_allclose(other.affine, nifti.affine, atol=1e-4)
    assert nifti.shape == (28, 24, 20)


def test_unreadable_inputs_are_refused_naming_the_file_and_the_fix(tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    broken = tmp_path / "broken.nrrd"
    broken.write_text("NRRD0004\ntype: float\ndimension: 3\nsizes: 10 10\n")
    vector = tmp_path / "rgb.mha"
    sitk.WriteImage(sitk.Image([8, 8, 8], sitk.sitkVectorFloat32, 3), str(vector))

    with pytest.raises(ScanError, match=r"notes\.txt: \.txt is not a scan file .* NRRD"):
        read_scan(text)
    with pytest.raises(ScanError, match=r"broken\.nrrd: not a readable NRRD file"):
        read_scan(broken)
    with pytest.raises(ScanError, match=r"3 component\(s\) per voxel"):
        read_scan(vector)
    with pytest.raises(ScanError, match=r"is a folder; .* import-dicom"):
        read_scan(tmp_path)


def test_each_refusal_says_what_is_wrong_and_what_to_do(
    models: dict[TaskId, Path], tmp_path: Path
) -> None:
    model = load_model(models[TaskId.MS_LESION])
    affine = grid_affine(SHAPE, (2.0, 2.0, 2.0))
    _, scans = _scans(tmp_path / "ok", affine, (Modality.FLAIR, Modality.T1))

    # a modality the model needs is missing
    with pytest.raises(PredictError, match=r"T1 missing \(given: FLAIR\); add --t1 FILE"):
        predict_case(model, {Modality.FLAIR: scans[Modality.FLAIR]})
    # a slab, not a head
    slab_shape = (80, 70, 8)
    _, slab = _scans(
        tmp_path / "slab",
        grid_affine(slab_shape, (2, 2, 2)),
        (Modality.FLAIR, Modality.T1),
        slab_shape,
    )
    with pytest.raises(PredictError, match=r"less than 80 mm along an axis: not a whole-brain"):
        predict_case(model, slab)
    # 8 mm slices for a 2 mm model: refused, unless allowed (then a warning says what happens)
    thick_shape = (80, 70, 16)
    _, thick = _scans(
        tmp_path / "thick",
        grid_affine(thick_shape, (2, 2, 8)),
        (Modality.FLAIR, Modality.T1),
        thick_shape,
    )
    with pytest.raises(
        PredictError, match=r"resampled to the model's grid \(4\.0x\).*--allow-spacing"
    ):
        predict_case(model, thick)
    allowed = predict_case(model, thick, allow_spacing=True)
    assert any("4.0x" in w for w in allowed.warnings)
    # not a brain: a 30 mL blob
    tiny = {m: s for m, s in scans.items()}
    for m, s in tiny.items():
        small = np.zeros_like(s.array)
        small[35:45, 30:40, 28:36] = 100.0
        tiny[m] = type(s)(small, s.affine, s.path, s.format)
    with pytest.raises(PredictError, match=r"brain mask is \d+ mL .* not look like a brain MRI"):
        predict_case(model, tiny)


def test_results_per_task_say_what_a_clinician_reads(
    models: dict[TaskId, Path], tmp_path: Path
) -> None:
    affine = grid_affine(SHAPE, (2.0, 2.0, 2.0), flips=(-1, -1, 1))
    age = load_model(models[TaskId.BRAIN_AGE])
    glioma = load_model(models[TaskId.GLIOMA_MULTITASK])
    lesion = load_model(models[TaskId.MS_LESION])
    modalities = (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)
    files, scans = _scans(tmp_path / "in", affine, modalities)

    years = predict_case(age, {Modality.T1: scans[Modality.T1]})
    markers = predict_case(glioma, scans)
    lesions = predict_case(lesion, scans)

    assert years.results["target"] == "age" and years.results["unit"] == "years"
    assert isinstance(years.results["value"], float) and years.segmentation is None
    assert any("T1CE, T2 given but not used" in w for w in lesions.warnings)
    idh = markers.results["markers"]["idh"]
    assert 0.0 <= idh["probability"] <= 1.0 and idh["threshold"] == 0.5
    assert idh["call"] == ("positive" if idh["probability"] >= 0.5 else "negative")
    assert markers.results["grade"]["who"] in (2, 3, 4)
    assert sum(markers.results["grade"]["probabilities"].values()) == pytest.approx(1.0, abs=1e-3)
    assert lesions.results["lesion_count"] == len(lesions.results["lesion_volumes_ml"])
    folder = write_case(
        markers,
        tmp_path / "out",
        "sub-007",
        model={"folder": "m", "sha256": "0" * 64},
        inputs=files,
    )
    page = (folder / "report.html").read_text()
    assert "idh" in page and "Research use only" in page
    png = base64.b64decode(page.split("data:image/png;base64,")[1].split('"')[0])
    assert Image.open(io.BytesIO(png)).size[0] > 300


def test_lesions_are_counted_and_measured_in_millilitres() -> None:
    mask = np.zeros((20, 20, 20), bool)
    mask[2:4, 2:4, 2:4] = True  # 8 voxels
    mask[10:13, 10:13, 10:13] = True  # 27 voxels
    found = _lesions(mask, voxel_ml=0.008, connectivity=3)
    assert found == {
        "lesion_count": 2,
        "total_volume_ml": pytest.approx(0.28),
        "lesion_volumes_ml": [pytest.approx(0.216), pytest.approx(0.064)],
    }


def test_grad_cam_maps_lie_on_the_input_grid_and_show_where_the_heads_looked(
    models: dict[TaskId, Path], tmp_path: Path
) -> None:
    # Prepare: an oblique LPS case for the multi-task model
    affine = grid_affine(SHAPE, (2.0, 2.0, 2.0), flips=(-1, -1, 1), degrees=15.0)
    glioma = load_model(models[TaskId.GLIOMA_MULTITASK])
    files, scans = _scans(tmp_path / "in", affine, glioma.task.modalities)

    # Execute
    result = predict_case(glioma, scans, explain=True)
    folder = write_case(
        result, tmp_path / "out", "c", model={"folder": "m", "sha256": ""}, inputs=files
    )

    # Assert: one map per head, on the scan's grid, not flat, hottest inside the brain
    record = json.loads((folder / PREDICTION_JSON).read_text())
    heads = {"idh", "codel_1p19q", "mgmt", "grade"}
    assert set(record["results"]["explain"]) == heads
    truth = brain_truth(SHAPE, affine)
    for head in heads:
        written = nib.load(folder / f"gradcam-{head}.nii.gz")
        assert written.shape == SHAPE
        np.testing.assert_allclose(written.affine, affine, atol=1e-5)
        heat = np.asarray(written.dataobj)
        assert heat.min() >= 0.0 and heat.max() <= 1.0 + 1e-6 and heat.std() > 0.01
        assert heat[truth].mean() > heat[~truth].mean()  # the network saw the brain, not air
        share = record["results"]["explain"][head]["top10_share_in_tumour"]
        assert share is None or 0.0 <= share <= 1.0
        assert (folder / f"gradcam-{head}.png").stat().st_size > 1000
    assert "Grad-CAM of idh" in (folder / "report.html").read_text()
    # a model without classification heads says so instead
    lesion = load_model(models[TaskId.MS_LESION])
    plain = predict_case(lesion, scans, explain=True)
    assert not plain.heatmaps and any("no classification head" in w for w in plain.warnings)


def test_a_full_head_is_stripped_as_the_model_was_trained_and_warned_of_when_it_was_not(
    tmp_path: Path,
) -> None:
    """A phantom full head (skull, scalp), stored LPS: a brain-age model whose study extracts
    brains gets deepbet's brain back on the scan's grid; one trained without extraction warns."""
    from neurofed.preprocess.skull import detect_skull_stripped
    from tests.preprocess.test_skull import MIN_DICE, phantom_head

    head = phantom_head()
    ras = nib.Nifti1Image(head.t1, head.affine)
    lps = ras.as_reoriented(nib.orientations.axcodes2ornt(("L", "P", "S")))
    path = tmp_path / "head.nii.gz"
    nib.save(lps, path)
    truth = np.asarray(
        nib.Nifti1Image(head.truth.astype(np.uint8), head.affine)
        .as_reoriented(nib.orientations.axcodes2ornt(("L", "P", "S")))
        .dataobj
    ).astype(bool)
    scans = {Modality.T1: read_scan(path)}
    assert not detect_skull_stripped(scans[Modality.T1].array, lps.affine).stripped

    def brain_age(extract: bool) -> object:
        settings = {"spacing": [4.0] * 3, "spatial_shape": [48, 56, 48]}
        config = tiny_config(TaskId.BRAIN_AGE, preprocess=settings | {"brain_extraction": extract})
        model = config.build_task().build_model(config.model_config)
        folder = tmp_path / f"model-{extract}"
        return load_model(save_model(folder, model, config, provenance={"run": "local"}))

    stripped = predict_case(brain_age(True), scans)
    assert stripped.brain_mask_method == "deepbet"
    assert stripped.brain_mask is not None and stripped.brain_mask.shape == truth.shape
    assert dice(stripped.brain_mask, truth) >= MIN_DICE  # on the LPS input grid
    record = stripped.brain_extraction
    assert record is not None and record["method"] == "deepbet" and not record["skull_stripped"]
    assert not any("full head" in w for w in stripped.warnings)
    folder = write_case(
        stripped,
        tmp_path / "out",
        "case-1",
        model={"folder": "m", "sha256": "0" * 64},
        inputs={Modality.T1: path},
    )
    written = json.loads((folder / PREDICTION_JSON).read_text())["brain_mask"]
    assert written["method"] == "deepbet" and written["extraction"]["package"].startswith("deepbet")

    plain = predict_case(brain_age(False), scans)
    assert plain.brain_extraction is None and plain.brain_mask_method == "otsu"
    assert any("full head" in w and "without brain extraction" in w for w in plain.warnings)
