"""``neurofed export``: its exit status (0 exported, 1 INT8 refused for its drop, 2 unusable
options or folders), what it prints, and the exported folder ``neurofed predict`` then runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from neurofed.cli.main import app
from neurofed.keys import TaskId
from neurofed.training import save_model
from tests.predict.heads import grid_affine, write_head
from tests.training.conftest import lesion_site, one_torch_thread
from tests.training.tiny import tiny_config

__all__ = ["lesion_site", "one_torch_thread"]


@pytest.fixture(scope="module")
def lesion_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    config = tiny_config(TaskId.MS_LESION, preprocess={"spacing": [2.0, 2.0, 2.0]})
    model = config.build_task().build_model(config.model_config)
    return save_model(tmp_path_factory.mktemp("model") / "model", model, config)


def _run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(app, [*args])
    return result.exit_code, " ".join(result.output.split())


def test_export_to_onnx_then_predict_with_it(lesion_model: Path, tmp_path: Path) -> None:
    # Execute
    code, output = _run("export", str(lesion_model), "--out", str(tmp_path / "onnx"))

    # Assert: exported, its parity printed, and predict runs the folder
    assert code == 0, output
    assert f"exported {lesion_model} as onnx fp32 into {tmp_path / 'onnx'}" in output
    assert "max relative difference to PyTorch" in output
    shape = (48, 48, 44)
    affine = grid_affine(shape, (2.0, 2.0, 2.0))
    t1 = write_head(tmp_path / "t1.nii.gz", shape, affine)
    flair = write_head(tmp_path / "flair.nii.gz", shape, affine, contrast=2.0)
    code, output = _run(
        "predict", "--model", str(tmp_path / "onnx"), "--t1", str(t1), "--flair", str(flair),
        "--out", str(tmp_path / "out"),
    )  # fmt: skip
    assert code == 0, output
    record = json.loads((tmp_path / "out" / "case" / "prediction.json").read_text())
    assert record["task"] == "ms-lesion"


@pytest.mark.slow
def test_int8_exports_with_its_measured_drop_or_exits_1(
    lesion_model: Path, lesion_site: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Execute: within a budget an untrained network keeps
    code, output = _run(
        "export", str(lesion_model), "--out", str(tmp_path / "int8"), "--format", "openvino",
        "--int8", "--site", str(lesion_site), "--max-metric-drop", "0.05",
    )  # fmt: skip

    # Assert
    assert code == 0, output
    assert "as openvino int8" in output and "INT8 dice:" in output and "<= 0.05" in output

    # Prepare: INT8 scored 0.1 below what it reaches
    from neurofed.export import int8

    real = int8.score_cases
    monkeypatch.setattr(
        int8,
        "score_cases",
        lambda t, n, names, c: real(t, n, names, c) - (0.0 if n is None else 0.1),
    )

    # Execute
    code, output = _run(
        "export", str(lesion_model), "--out", str(tmp_path / "refused"), "--format", "openvino",
        "--int8", "--site", str(lesion_site),
    )  # fmt: skip

    # Assert: exit 1, the measured drop and the way out are printed, nothing written
    assert code == 1, output
    assert "INT8 refused: dice is" in output and "> the allowed 0.005" in output
    assert "export FP32 (without --int8)" in output
    assert not (tmp_path / "refused").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--int8", "--site", "{site}"], "--format openvino --int8"),
        (["--format", "openvino", "--int8"], "--site"),
        (["--format", "openvino", "--int8", "--site", "{site}", "--max-metric-drop", "-1"],
         "0 or more"),
    ],
    ids=["int8-needs-openvino", "int8-needs-a-site", "negative-budget"],
)  # fmt: skip
def test_wrong_options_exit_2_before_any_work(
    lesion_model: Path, tmp_path: Path, args: list[str], says: str
) -> None:
    # Execute
    filled = [a.replace("{site}", str(tmp_path)) for a in args]
    code, output = _run("export", str(lesion_model), "--out", str(tmp_path / "x"), *filled)

    # Assert
    assert code == 2 and says in output, output
    assert not (tmp_path / "x").exists()


def test_a_folder_that_is_not_a_model_exits_2_naming_it(tmp_path: Path) -> None:
    # Prepare
    (tmp_path / "notes").mkdir()
    (tmp_path / "notes" / "readme.txt").write_text("not a model")

    # Execute
    code, output = _run("export", str(tmp_path / "notes"), "--out", str(tmp_path / "x"))

    # Assert
    assert code == 2, output
    assert str(tmp_path / "notes") in output and "model.json" in output
    assert not (tmp_path / "x").exists()


def test_a_tampered_model_folder_exits_2(lesion_model: Path, tmp_path: Path) -> None:
    # Prepare: a copy whose weights changed after sealing
    import shutil

    copy = Path(shutil.copytree(lesion_model, tmp_path / "model"))
    weights = next(p for p in copy.iterdir() if p.suffix == ".safetensors")
    data = bytearray(weights.read_bytes())
    data[-1] ^= 1
    weights.write_bytes(bytes(data))

    # Execute
    code, output = _run("export", str(copy), "--out", str(tmp_path / "x"))

    # Assert
    assert code == 2, output
    assert str(copy) in output
    assert not (tmp_path / "x").exists()
