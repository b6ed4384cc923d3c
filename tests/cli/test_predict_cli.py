"""``neurofed predict``: one case from its files, every case of a site folder, and the exit
status and messages when a case is refused or the options are wrong."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.keys import TaskId
from neurofed.training import save_model
from tests.predict.heads import grid_affine, write_head
from tests.training.tiny import tiny_config

SHAPE = (80, 70, 64)


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(TaskId.MS_LESION, preprocess={"spacing": [2.0, 2.0, 2.0]})
    model = config.build_task().build_model(config.model_config)
    return save_model(tmp_path_factory.mktemp("model") / "model", model, config)


def _run(*args: str) -> object:
    return CliRunner().invoke(app, ["predict", *args])


def _output(result: object) -> str:
    return " ".join(str(getattr(result, "output", "")).split())


def test_one_case_from_its_files(lesion_model: Path, tmp_path: Path) -> None:
    affine = grid_affine(SHAPE, (2.0, 2.0, 2.0), flips=(-1, -1, 1))
    t1 = write_head(tmp_path / "in" / "t1.nii.gz", SHAPE, affine)
    flair = write_head(tmp_path / "in" / "flair.nii.gz", SHAPE, affine, contrast=2.0)

    result = _run(
        "--model", str(lesion_model), "--t1", str(t1), "--flair", str(flair),
        "--out", str(tmp_path / "out"), "--case", "patient-a",
    )  # fmt: skip

    assert result.exit_code == 0, _output(result)  # type: ignore[attr-defined]
    record = json.loads((tmp_path / "out" / "patient-a" / "prediction.json").read_text())
    assert record["task"] == "ms-lesion" and record["inputs"] == {
        "FLAIR": "flair.nii.gz",
        "T1": "t1.nii.gz",
    }
    assert "predicted 1 of 1 case(s)" in _output(result)


def test_every_case_of_a_site_folder_and_a_refused_case_named(
    lesion_model: Path, tmp_path: Path
) -> None:
    # Prepare: a BIDS site of two cases; the second has no T1
    affine = grid_affine(SHAPE, (2.0, 2.0, 2.0))
    site = tmp_path / "site"
    for case in ("sub-01", "sub-02"):
        write_head(site / case / "anat" / f"{case}_FLAIR.nii.gz", SHAPE, affine, contrast=2.0)
    write_head(site / "sub-01" / "anat" / "sub-01_T1w.nii.gz", SHAPE, affine)

    # Execute
    result = _run("--model", str(lesion_model), "--input", str(site), "--out", str(tmp_path / "o"))

    # Assert: the complete case is predicted, the other refused with the reason, exit 1
    output = _output(result)
    assert result.exit_code == 1, output  # type: ignore[attr-defined]
    assert (tmp_path / "o" / "sub-01" / "segmentation.nii.gz").is_file()
    assert not (tmp_path / "o" / "sub-02").exists()
    assert "sub-02: the model (ms-lesion) needs FLAIR, T1; T1 missing" in output
    assert "predicted 1 of 2 case(s)" in output
    only = _run(
        "--model", str(lesion_model), "--input", str(site), "--case", "sub-01",
        "--out", str(tmp_path / "one"),
    )  # fmt: skip
    assert only.exit_code == 0, _output(only)  # type: ignore[attr-defined]
    # run again (as after an interruption): the complete case is kept, not redone
    written = (tmp_path / "o" / "sub-01" / "prediction.json").stat().st_mtime_ns
    again = _run("--model", str(lesion_model), "--input", str(site), "--out", str(tmp_path / "o"))
    assert "(1 from an earlier run; --again redoes them)" in _output(again)
    assert (tmp_path / "o" / "sub-01" / "prediction.json").stat().st_mtime_ns == written


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "give the case's scans (--t1 F --flair F ...) or a site folder (--input DIR)"),
        (["--t1", "x.nii.gz", "--input", "site"], "or a site folder (--input DIR)"),
        (["--t1", "x.nii.gz", "--model-is", "folder"], "not found; give a model folder"),
        (
            ["--t1", "x.nii.gz", "--task", "brain-age"],
            "holds a 'ms-lesion' model, not a 'brain-age'",
        ),
    ],
    ids=["nothing", "both", "no-model", "other-task"],
)
def test_wrong_options_exit_2_with_the_fix(
    args: list[str], message: str, lesion_model: Path, tmp_path: Path
) -> None:
    model = tmp_path / "nowhere" if "--model-is" in args else lesion_model
    args = [a for a in args if a not in ("--model-is", "folder")]
    result = _run("--model", str(model), "--out", str(tmp_path / "o"), *args)
    assert result.exit_code == 2  # type: ignore[attr-defined]
    assert message in _output(result)


def test_a_dicom_folder_is_imported_predicted_and_answered_with_a_dicom_seg(
    lesion_model: Path, tmp_path: Path
) -> None:
    # Prepare: one patient's FLAIR and T1 series as a scanner sends them (LPS, 2.5 mm)
    import highdicom as hd
    from pydicom.uid import generate_uid

    from tests.predict.dicom_series import mr_series
    from tests.predict.heads import head

    size, step = (64, 64, 56), 2.5  # columns, rows, slices
    origin = tuple(-(n - 1) / 2 * step for n in size)
    affine = np.diag([-step, -step, step, 1.0])
    affine[:3, 3] = (-origin[0], -origin[1], origin[2])
    study = generate_uid()
    flair_files = []
    for description, contrast in (("AX FLAIR", 2.0), ("T1 MPRAGE", 1.0)):
        volume = head(size, affine, contrast=contrast).transpose(2, 1, 0)  # (slice, row, col)
        files = mr_series(
            tmp_path / "dicom" / description.replace(" ", "_"), volume,
            spacing=(step, step, step), description=description, origin=origin,
            study_uid=study,
        )  # fmt: skip
        flair_files = files if "FLAIR" in description else flair_files

    # Execute
    result = _run(
        "--model", str(lesion_model), "--input", str(tmp_path / "dicom"),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip

    # Assert: one neutral case, a SEG over the FLAIR slices, no identifier in any name
    output = _output(result)
    assert result.exit_code == 0, output  # type: ignore[attr-defined]
    case = tmp_path / "out" / "sub-001"
    seg = hd.seg.segread(case / "segmentation.dcm")
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {pydicom.dcmread(f).SOPInstanceUID for f in flair_files}
    assert seg.SegmentSequence[0].SegmentLabel == "MS lesion"
    record = json.loads((case / "prediction.json").read_text())
    assert record["files"]["dicom_seg"] == "segmentation.dcm"
    names = " ".join(str(p) for p in (tmp_path / "out").rglob("*"))
    for secret in ("Doe", "Jane", "MRN123456"):
        assert secret not in names and secret not in json.dumps(record) and secret not in output
