"""`neurofed predict --model EXPORTED` runs without importing torch, and says what PyTorch says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from neurofed.export import export_model
from neurofed.keys import Modality, TaskId
from neurofed.training import save_model
from tests.predict.heads import grid_affine, write_head
from tests.training.tiny import tiny_config

SHAPE = (80, 70, 64)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("models")
    config = tiny_config(TaskId.MS_LESION, preprocess={"spacing": [2.0, 2.0, 2.0]})
    model = config.build_task().build_model(config.model_config)
    source = save_model(root / "model", model, config)
    return source, export_model(source, root / "exported", "onnx").folder


def _predict(model: Path, files: dict[Modality, Path], out: Path) -> list[str]:
    """Run `neurofed predict` in a fresh process; returns the heavy modules it imported."""
    options = [f"--{m.value.lower()}" for m in files]
    args = [str(a) for pair in zip(options, files.values(), strict=True) for a in pair]
    code = (
        "import json, sys; from typer.testing import CliRunner; "
        "from neurofed.cli.main import app; "
        f"r = CliRunner().invoke(app, ['predict', '--model', {str(model)!r}, '--out', "
        f"{str(out)!r}, *{args!r}]); "
        "assert r.exit_code == 0, r.output; "
        "print(json.dumps([m for m in ('torch', 'monai') if m in sys.modules]))"
    )
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return list(json.loads(run.stdout.strip().splitlines()[-1]))


def test_predict_on_an_exported_folder_imports_no_torch_and_matches_pytorch(
    models: tuple[Path, Path], tmp_path: Path
) -> None:
    # Prepare
    source, exported = models
    affine = grid_affine(SHAPE, (2.0, 2.0, 2.0))
    files = {
        m: write_head(tmp_path / f"{m.value}.nii.gz", SHAPE, affine, contrast=1.0 + k)
        for k, m in enumerate((Modality.FLAIR, Modality.T1))
    }

    # Execute
    imported = _predict(exported, files, tmp_path / "onnx")
    _predict(source, files, tmp_path / "torch")

    # Assert: no torch on the exported path; the same results as the PyTorch folder
    assert imported == []
    import nibabel as nib

    got = json.loads((tmp_path / "onnx" / "case" / "prediction.json").read_text())
    want = json.loads((tmp_path / "torch" / "case" / "prediction.json").read_text())
    assert got["model"]["sha256"] != want["model"]["sha256"]
    onnx = nib.load(tmp_path / "onnx" / "case" / "segmentation.nii.gz")
    a = np.asarray(onnx.dataobj)
    b = np.asarray(nib.load(tmp_path / "torch" / "case" / "segmentation.nii.gz").dataobj)
    assert a.shape == SHAPE and np.mean(a != b) < 1e-4
    # the results agree up to the few voxels whose probability lies at the threshold, where
    # ONNX Runtime's arithmetic (within 1e-4 of PyTorch's) may fall on the other side
    differ = int(np.sum(a != b))
    voxel_ml = float(np.prod(onnx.header.get_zooms()[:3])) / 1000.0
    mine, theirs = got["results"], want["results"]
    assert mine.keys() == theirs.keys()
    assert abs(mine["lesion_count"] - theirs["lesion_count"]) <= differ
    assert abs(mine["total_volume_ml"] - theirs["total_volume_ml"]) <= differ * voxel_ml + 1e-3
