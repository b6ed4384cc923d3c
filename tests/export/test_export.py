"""Export contract: every task's model exports to ONNX and OpenVINO and matches PyTorch; the
exported folder is sealed; INT8 is refused beyond its metric budget; no telemetry is possible."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurofed.export import (
    ExportError,
    MetricDropError,
    export_model,
    load_exported,
    read_export,
)
from neurofed.export.runtime import postprocess
from neurofed.export.window import gaussian_importance
from neurofed.keys import TaskId
from neurofed.training import load_model, save_model
from tests.training.tiny import tiny_config


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[TaskId, Path]:
    """An untrained, sealed tiny model folder per task."""
    root = tmp_path_factory.mktemp("sources")
    folders = {}
    for task in TaskId:
        config = tiny_config(task)
        model = config.build_task().build_model(config.model_config)
        folders[task] = save_model(root / task.value, model, config)
    return folders


@pytest.mark.parametrize("task", list(TaskId), ids=lambda t: t.value)
def test_onnx_export_matches_pytorch_on_every_task(
    task: TaskId, sources: dict[TaskId, Path], tmp_path: Path
) -> None:
    # Execute
    result = export_model(sources[task], tmp_path / "onnx", "onnx")

    # Assert: within the stated tolerance, on a volume larger than one window
    record = read_export(tmp_path / "onnx")
    assert record["export"]["format"] == "onnx" and record["export"]["precision"] == "fp32"
    assert (
        record["source"]["seal"]
        == json.loads((sources[task] / "model.json").read_text())["seal"]["sha256"]
    )
    assert result.parity["passed"] is True
    assert max(result.parity["max_relative_diff"].values()) <= 1e-4
    # and on another input: the raw outputs are PyTorch's within tolerance, and the numpy
    # post-processing turns PyTorch's own raw outputs into PyTorch's predictions. (Comparing
    # thresholded masks of the two runtimes would fail on a voxel whose logit sits within
    # rounding of the threshold.)
    trained, exported = load_model(sources[task]), load_exported(tmp_path / "onnx")
    image = (
        np.random.default_rng(5)
        .standard_normal(
            (len(trained.task.modalities), *(trained.preprocess.spatial_shape or (24, 20, 28)))
        )
        .astype(np.float32)
    )
    torch_raw = trained.raw_outputs(image)
    torch_named = (
        {str(k): v.numpy() for k, v in torch_raw.items()}
        if isinstance(torch_raw, dict)
        else {"output": torch_raw.numpy()}
    )
    exported_raw = exported.raw_outputs(image)
    assert set(exported_raw) == set(torch_named)
    for name, value in torch_named.items():
        np.testing.assert_allclose(exported_raw[name], value, atol=1e-3, rtol=1e-4)
    expected, got = trained.predict(image), postprocess(exported.task, torch_named)
    if isinstance(expected, dict):
        assert isinstance(got, dict) and set(got) == set(expected)
        for key, value in expected.items():
            np.testing.assert_allclose(got[key], value.numpy(), atol=1e-6)
    else:
        np.testing.assert_allclose(got, expected.numpy(), atol=1e-6)


@pytest.mark.parametrize("task", [TaskId.MS_LESION, TaskId.GLIOMA_MULTITASK], ids=str)
def test_openvino_fp32_matches_pytorch(
    task: TaskId, sources: dict[TaskId, Path], tmp_path: Path
) -> None:
    # Execute
    result = export_model(sources[task], tmp_path / "ov", "openvino")

    # Assert
    assert sorted(p.name for p in (tmp_path / "ov").iterdir()) == [
        "model.bin",
        "model.json",
        "model.xml",
    ]
    assert result.parity["passed"] is True
    assert load_exported(tmp_path / "ov").format.value == "openvino"


def test_a_changed_file_of_an_exported_folder_is_refused(
    sources: dict[TaskId, Path], tmp_path: Path
) -> None:
    # Prepare
    folder = export_model(sources[TaskId.MS_LESION], tmp_path / "onnx", "onnx").folder
    data = bytearray((folder / "model.onnx").read_bytes())
    data[-1] ^= 1
    (folder / "model.onnx").write_bytes(bytes(data))

    # Execute / Assert
    with pytest.raises(ExportError, match="seal does not match"):
        load_exported(folder)


def test_a_changed_model_json_is_refused(sources: dict[TaskId, Path], tmp_path: Path) -> None:
    # Prepare: a threshold changed by hand
    folder = export_model(sources[TaskId.TUMOR_REGIONS], tmp_path / "onnx", "onnx").folder
    record = json.loads((folder / "model.json").read_text())
    record["task_config"]["threshold"] = 0.1
    (folder / "model.json").write_text(json.dumps(record))

    # Execute / Assert
    with pytest.raises(ExportError, match="seal does not match"):
        read_export(folder)


def test_bad_options_are_refused_before_any_work(
    sources: dict[TaskId, Path], tmp_path: Path
) -> None:
    source = sources[TaskId.MS_LESION]
    with pytest.raises(ExportError, match="--format openvino --int8"):
        export_model(source, tmp_path / "a", "onnx", int8=True, site=tmp_path)
    with pytest.raises(ExportError, match="--site"):
        export_model(source, tmp_path / "b", "openvino", int8=True)
    with pytest.raises(ExportError, match="0 or more"):
        export_model(
            source, tmp_path / "c", "openvino", int8=True, site=tmp_path, max_metric_drop=-1
        )
    with pytest.raises(ExportError, match="onnx or openvino"):
        export_model(source, tmp_path / "d", "tflite")
    assert not any((tmp_path / n).exists() for n in "abcd")


#: The tiny training site (conftest fixture name) whose validation cases gate each task's INT8.
INT8_SITES = {
    TaskId.TUMOR_REGIONS: "glioma_site",
    TaskId.GLIOMA_MULTITASK: "glioma_site",
    TaskId.MS_LESION: "lesion_site",
    TaskId.BRAIN_AGE: "bids_site",
}


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TaskId), ids=lambda t: t.value)
def test_int8_is_refused_when_it_loses_more_than_the_budget(
    task: TaskId,
    sources: dict[TaskId, Path],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prepare: INT8 scored 0.1 below what it really reaches (for brain-age: 0.1 year more MAE)
    from neurofed.export import int8

    site = request.getfixturevalue(INT8_SITES[task])
    real = int8.score_cases

    def worse(trained, network, names, cases):  # type: ignore[no-untyped-def]
        value = real(trained, network, names, cases)
        return value if network is None else value - 0.1

    monkeypatch.setattr(int8, "score_cases", worse)

    # Execute
    with pytest.raises(MetricDropError, match=r"drop of 0\.\d+ > the allowed 0\.005") as info:
        export_model(sources[task], tmp_path / "int8", "openvino", int8=True, site=site)

    # Assert: the task's gate metric and the measured numbers are printed, nothing is written
    message = str(info.value)
    assert f"INT8 refused: {int8.GATE_METRIC[task]} is " in message
    assert "in INT8 on 3 validation case(s)" in message
    assert not (tmp_path / "int8").exists()


@pytest.mark.slow
@pytest.mark.parametrize("task", list(TaskId), ids=lambda t: t.value)
def test_int8_within_the_budget_is_written_with_its_measured_drop(
    task: TaskId, sources: dict[TaskId, Path], request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    # Prepare: a budget an untrained tiny network keeps (brain-age: 0.5 year of MAE)
    from neurofed.export.int8 import GATE_METRIC

    budget = 0.5 if task is TaskId.BRAIN_AGE else 0.05

    # Execute
    result = export_model(
        sources[task],
        tmp_path / "int8",
        "openvino",
        int8=True,
        site=request.getfixturevalue(INT8_SITES[task]),
        max_metric_drop=budget,
    )

    # Assert: the record, a quantised graph, and the folder loads and predicts
    record = read_export(tmp_path / "int8")
    assert record["export"]["precision"] == "int8"
    assert result.int8 is not None and result.int8["metric_drop"] <= budget
    assert result.int8["gate_metric"] == GATE_METRIC[task]
    assert record["export"]["int8"]["validation_cases"] == 3
    assert record["export"]["parity"]["inputs"].startswith("3 validation case(s)")
    xml = (tmp_path / "int8" / "model.xml").read_text()
    assert "FakeQuantize" in xml or "FakeConvert" in xml or "u8" in xml
    exported = load_exported(tmp_path / "int8")
    channels = len(load_model(sources[task]).task.modalities)
    image = np.random.default_rng(3).standard_normal((channels, 24, 24, 24)).astype(np.float32)
    assert exported.predict(image) is not None


def test_gaussian_blending_equals_monais_importance_map() -> None:
    from monai.data.utils import compute_importance_map

    expected = compute_importance_map((16, 8, 12), mode="gaussian").numpy()
    np.testing.assert_allclose(gaussian_importance((16, 8, 12)), expected, rtol=1e-6)


def test_openvino_and_nncf_telemetry_is_blocked_before_import(tmp_path: Path) -> None:
    # Execute: a fresh process (outside pytest, whose presence alone turns NNCF's off)
    code = (
        "import json, sys; from neurofed.export.telemetry import disable_telemetry; "
        "disable_telemetry(); import openvino, nncf; "
        "import openvino.tools.ovc.telemetry_utils as ovc; import nncf.telemetry.wrapper as w; "
        "print(json.dumps([ovc.tm.__name__, type(w.telemetry).__name__, "
        "sys.modules.get('openvino_telemetry') is None]))"
    )
    env = os.environ | {"HOME": str(tmp_path)}  # where the telemetry client id would go
    run = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )

    # Assert: both fall back to their do-nothing stubs; no client id was written
    ovc_module, nncf_telemetry, blocked = json.loads(run.stdout.strip().splitlines()[-1])
    assert ovc_module == "openvino.tools.ovc.telemetry_stub"
    assert nncf_telemetry == "MagicMock"  # NNCFTelemetryStub
    assert blocked is True
    assert not (tmp_path / "intel").exists()


def test_the_trilinear_decoder_has_no_transposed_convolution_and_exports(tmp_path: Path) -> None:
    """``upsample = "trilinear"``: the residual U-Net without transposed convolutions (what
    OpenVINO keeps in FP32 in an INT8 model) exports with parity; the default is unchanged."""
    from torch import nn

    from neurofed.models.residual_unet import ResidualUNetConfig

    # Prepare
    default = tiny_config(TaskId.TUMOR_REGIONS)
    options = default.model_config.to_json() | {"upsample": "trilinear"}
    config = tiny_config(TaskId.TUMOR_REGIONS, model_config=options)
    model = config.build_task().build_model(config.model_config)
    source = save_model(tmp_path / "model", model, config)

    # Execute
    result = export_model(source, tmp_path / "onnx", "onnx")

    # Assert
    assert not any(isinstance(m, nn.ConvTranspose3d) for m in model.modules())
    plain = default.build_task().build_model(default.model_config)
    assert any(isinstance(m, nn.ConvTranspose3d) for m in plain.modules())
    assert result.parity["passed"] is True
    assert "upsample" not in ResidualUNetConfig().to_json()  # existing studies keep their hash
    assert load_model(source).config.model_config.upsample == "trilinear"
