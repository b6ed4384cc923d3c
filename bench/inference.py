"""Inference side by side: PyTorch FP32, onnxruntime FP32, OpenVINO FP32 and OpenVINO INT8.

For each task, one model at its **default (real) width** — untrained: weights from a fixed seed,
since what is measured is the runtime, not the learning — is saved as a model folder and
exported with :func:`neurofed.export.export_model` (ONNX; OpenVINO FP32). The INT8 model is made
from the OpenVINO FP32 model with ``nncf.quantize`` calibrated on the windows of the bench
volumes (no labelled site is involved, so the accuracy-aware gate of ``neurofed export --int8``
is not used here). The same volumes then run through each backend, each backend in its own
process (so peak memory is its own):

- latency: median of ``--repeats`` full-volume predictions after one warm-up, and throughput
  (volumes per second, voxels per second);
- peak memory: the process's peak RSS (``VmHWM``, all it imported included) and the growth
  during inference (peak RSS minus RSS once the model is loaded);
- the headline metric **against PyTorch's predictions** (untrained models have no ground truth
  to be scored on): Dice of each mask with PyTorch's mask (mean over regions for tumour regions,
  WT for glioma), MAE in years vs PyTorch's brain age; ``metric_drop`` is PyTorch's value (Dice 1,
  MAE 0) minus the backend's, in the metric's units.

**Trained models** (``--trained TASK=MODEL_DIR,SITE_DIR``, repeatable): the task's model is the
given model folder instead of an untrained one, and its INT8 model is made exactly as
``neurofed export --format openvino --int8 --site SITE_DIR --max-metric-drop D`` makes it (NNCF
accuracy-aware quantisation on the site's validation cases; refused, and reported as refused,
beyond ``--max-metric-drop``). Each backend is then also scored **against the ground truth** on
the site's validation cases with the task's gate metric (:mod:`neurofed.export.int8`: Dice, or
minus the MAE for brain age): ``metric_vs_truth`` and ``metric_drop_vs_truth`` (PyTorch's value
minus the backend's). The bench volumes take the model's fixed input shape where it has one.

Prints a table and writes JSON with, per task and backend, ``speedup_vs_torch``,
``memory_ratio_vs_torch`` (peak RSS), ``metric_drop`` and the raw numbers.

The untrained models slide ``--batch-size`` windows per forward pass (default 2): PyTorch's
3-D convolutions on a CPU were measured about three times slower per window at batch 1 than at
batch 2, which at batch 1 made every other backend look several times faster than it is.

A task may name model options, ``TASK:OPTION=VALUE+…``: ``tumor-regions:upsample=trilinear``
is the residual U-Net whose decoder interpolates instead of running transposed convolutions,
``tumor-regions:base_filters=32`` the width of FeTS's challenge model.

Usage::

    python bench/inference.py [--tasks ms-lesion,tumor-regions:upsample=trilinear,...]
                              [--shape 96,96,96] [--repeats 3] [--threads 2] [--batch-size 2]
                              [--trained TASK=MODEL_DIR,SITE_DIR]
                              [--max-metric-drop 0.005] [--out FILE]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

BACKENDS = ("torch-fp32", "onnxruntime-fp32", "openvino-fp32", "openvino-int8")
#: Sliding-window patch per segmentation task (a multiple of the default model's divisor).
PATCH = {"tumor-regions": (64, 64, 64), "ms-lesion": (64, 64, 64)}


def _status_mb(field: str) -> float:
    """``VmRSS`` / ``VmHWM`` (peak) of this process in MB (``ru_maxrss`` survives ``exec``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    raise KeyError(field)


def _volumes(channels: int, shape: tuple[int, ...], count: int) -> list[np.ndarray]:
    """Brain-like volumes: a z-scored ellipsoid with texture and a bright blob, zero outside."""
    rng = np.random.default_rng(0)
    grid = np.meshgrid(*(np.linspace(-1, 1, n) for n in shape), indexing="ij")
    brain = sum(g**2 for g in grid) <= 0.8
    out = []
    for k in range(count):
        centre = rng.uniform(-0.3, 0.3, 3)
        blob = sum((g - c) ** 2 for g, c in zip(grid, centre, strict=True)) <= 0.04
        image = np.stack(
            [
                (rng.standard_normal(shape) * 0.3 + blob * (1.5 + c) + np.sin(5 * grid[0]) * 0.2)
                * brain
                for c in range(channels)
            ]
        ).astype(np.float32)
        out.append(image)
        del k
    return out


def _variant(name: str) -> tuple[str, dict[str, Any]]:
    """``TASK`` or ``TASK:OPTION=VALUE+…`` (model options, e.g.
    ``tumor-regions:upsample=trilinear+base_filters=32``) → the task and the options (a value
    that reads as JSON, such as a number, is that value; any other is a string).

    >>> _variant("tumor-regions:upsample=trilinear+base_filters=32")
    ('tumor-regions', {'upsample': 'trilinear', 'base_filters': 32})
    """
    task, _, options = name.partition(":")
    pairs = [item.partition("=") for item in options.split("+") if item]
    return task, {key: _value(value) for key, _, value in pairs}


def _value(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _prepare(
    task: str, root: Path, shape: tuple[int, ...], threads: int, batch: int
) -> dict[str, Path]:
    """Model folder, ONNX and OpenVINO FP32 exports, and the INT8 OpenVINO model."""
    import torch

    from neurofed.export import export_model
    from neurofed.export.telemetry import disable_telemetry
    from neurofed.training import TrainConfig, save_model

    torch.manual_seed(0)
    torch.set_num_threads(threads)
    name = task
    task, options = _variant(name)
    settings: dict[str, Any] = {"task": task, "device": "cpu", "batch_size": batch}
    if options:
        settings["model_config"] = options
    if task in PATCH:
        settings["patch_shape"] = PATCH[task]
    if task == "brain-age":
        settings["preprocess"] = {"spatial_shape": list(shape)}
    config = TrainConfig(**settings)
    model = config.build_task().build_model(config.model_config)
    root = root / name.replace(":", "-").replace("=", "-")
    source = save_model(root / "model", model, config)
    folders = {"torch-fp32": source}
    folders["onnxruntime-fp32"] = export_model(source, root / "onnx", "onnx").folder
    folders["openvino-fp32"] = export_model(source, root / "ov", "openvino").folder
    disable_telemetry()
    import nncf
    import openvino as ov

    from neurofed.data.subject import Clinical
    from neurofed.export import load_exported, seal_export
    from neurofed.export.int8 import _windows
    from neurofed.training import load_model
    from neurofed.training.dataset import TrainingCase

    trained = load_model(source)
    cases = [
        TrainingCase("bench", "bench", v, None, Clinical())
        for v in _volumes(len(trained.task.modalities), shape, 2)
    ]
    calibration = _windows(trained, cases)
    fp32 = ov.Core().read_model(str(folders["openvino-fp32"] / "model.xml"))
    quantized = nncf.quantize(fp32, nncf.Dataset(calibration), subset_size=len(calibration))
    int8 = root / "ov-int8"
    int8.mkdir()
    ov.save_model(quantized, str(int8 / "model.xml"), compress_to_fp16=False)
    record = json.loads((folders["openvino-fp32"] / "model.json").read_text())
    record["export"]["precision"] = "int8"
    record["export"]["int8"] = {"method": "nncf.quantize (bench: not accuracy-gated)"}
    (int8 / "model.json").write_text(json.dumps(record))
    seal_export(int8)
    load_exported(int8)
    folders["openvino-int8"] = int8
    return folders


def _prepare_trained(
    task: str, root: Path, model: Path, site: Path, threads: int, max_drop: float
) -> tuple[dict[str, Path], dict[str, Any]]:
    """Exports of a trained model folder, its INT8 by the accuracy gate, and every backend's
    gate metric against the ground truth on the site's validation cases."""
    import torch

    from neurofed.export import MetricDropError, export_model, load_exported
    from neurofed.export.int8 import GATE_METRIC, score_cases
    from neurofed.keys import Split
    from neurofed.training import load_model
    from neurofed.training.site_data import SiteData

    torch.set_num_threads(threads)
    folders: dict[str, Path] = {"torch-fp32": model}
    folders["onnxruntime-fp32"] = export_model(model, root / task / "onnx", "onnx").folder
    folders["openvino-fp32"] = export_model(model, root / task / "ov", "openvino").folder
    info: dict[str, Any] = {"model": str(model), "site": str(site), "max_metric_drop": max_drop}
    try:
        result = export_model(
            model, root / task / "ov-int8", "openvino", int8=True, site=site,
            max_metric_drop=max_drop,
        )  # fmt: skip
        folders["openvino-int8"] = result.folder
        info["int8"] = result.int8
    except MetricDropError as refused:
        info["int8_refused"] = str(refused)
    trained = load_model(model)
    cases = list(SiteData(site, trained.task, trained.preprocess).split(Split.VALIDATION))
    info["gate_metric"] = GATE_METRIC[trained.task.task_id]
    info["validation_cases"] = len(cases)
    scores = {"torch-fp32": score_cases(trained, None, [], cases)}
    for backend, folder in folders.items():
        if backend != "torch-fp32":
            exported = load_exported(folder, threads=threads)
            names = [str(n) for n in exported.record["export"]["output_names"]]
            scores[backend] = score_cases(trained, exported.network, names, cases)
    info["metric_vs_truth"] = scores
    return folders, info


def _measure(
    backend: str, folder: Path, shape: tuple[int, ...], repeats: int, threads: int
) -> dict[str, Any]:
    """One backend in this process: latency, memory, and its predictions."""
    if backend == "torch-fp32":
        import torch

        from neurofed.training import load_model

        torch.set_num_threads(threads)
        model: Any = load_model(folder)
    else:
        from neurofed.export import load_exported

        model = load_exported(folder, threads=threads)
    volumes = _volumes(len(model.task.modalities), shape, 2)
    loaded = _status_mb("VmRSS")
    model.predict(volumes[0])  # warm-up
    times, predictions = [], []
    for k in range(repeats):
        began = time.perf_counter()
        out = model.predict(volumes[k % len(volumes)])
        times.append(time.perf_counter() - began)
        if k < len(volumes):
            predictions.append(out)
    peak = _status_mb("VmHWM")
    return {
        "median_s": statistics.median(times),
        "times_s": times,
        "peak_rss_mb": peak,
        "inference_rss_growth_mb": peak - loaded,
        "predictions": [_to_numpy(p) for p in predictions],
    }


def _to_numpy(p: Any) -> Any:
    if isinstance(p, dict):
        return {k: _to_numpy(v) for k, v in p.items()}
    return np.asarray(p.detach().cpu().numpy() if hasattr(p, "detach") else p)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    a, b = a.astype(bool), b.astype(bool)
    total = a.sum() + b.sum()
    return 1.0 if total == 0 else float(2 * (a & b).sum() / total)


def _agreement(task: str, got: list[Any], ref: list[Any]) -> float:
    """The headline metric of ``got`` scored against PyTorch's predictions ``ref``."""
    values = []
    for g, r in zip(got, ref, strict=True):
        if task == "brain-age":
            values.append(float(np.abs(np.asarray(g) - np.asarray(r)).mean()))
        elif task == "glioma-multitask":
            values.append(_dice(g["segmentation"], r["segmentation"]))
        elif task == "tumor-regions":
            values.append(float(np.mean([_dice(g[:, c], r[:, c]) for c in range(g.shape[1])])))
        else:
            values.append(_dice(g, r))
    return float(np.mean(values))


def _child(args: argparse.Namespace) -> None:
    result = _measure(args.backend, args.folder, tuple(args.shape), args.repeats, args.threads)
    np.save(
        args.folder.parent / f"{args.backend}.npy",
        np.array(result.pop("predictions"), dtype=object),
        allow_pickle=True,
    )
    print(json.dumps(result))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", default="tumor-regions,glioma-multitask,ms-lesion,brain-age")
    parser.add_argument("--shape", default="96,96,96", help="volume size in voxels")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "inference.json"
    )
    parser.add_argument(
        "--trained",
        action="append",
        default=[],
        help="TASK=MODEL_DIR,SITE_DIR: bench this trained model, its INT8 accuracy-gated on the "
        "site's validation cases, every backend scored against the ground truth (repeatable)",
    )
    parser.add_argument("--max-metric-drop", type=float, default=0.005)
    parser.add_argument(
        "--batch-size",
        type=int,
        default=2,
        help="sliding windows per forward pass of the untrained models (PyTorch's 3-D "
        "convolutions on a CPU are several times slower per window at 1 than at 2)",
    )
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--backend", help=argparse.SUPPRESS)
    parser.add_argument("--folder", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    shape = tuple(int(v) for v in str(args.shape).split(","))
    if args.child:
        args.shape = shape
        _child(args)
        return
    trained: dict[str, tuple[Path, Path]] = {}
    for item in args.trained:
        task, _, paths = str(item).partition("=")
        model, _, site = paths.partition(",")
        if not (task and model and site):
            parser.error(f"--trained {item!r}: give TASK=MODEL_DIR,SITE_DIR")
        trained[task] = (Path(model), Path(site))
    tasks = list(dict.fromkeys([*args.tasks.split(","), *trained])) if args.tasks else list(trained)
    table: dict[str, dict[str, Any]] = {}
    accuracy: dict[str, dict[str, Any]] = {}
    with tempfile.TemporaryDirectory() as scratch:
        for task in tasks:
            task_shape = shape
            if task in trained:
                from neurofed.training import load_model

                folders, accuracy[task] = _prepare_trained(
                    task, Path(scratch), *trained[task], args.threads, args.max_metric_drop
                )
                fixed = load_model(trained[task][0]).preprocess.spatial_shape
                task_shape = tuple(fixed) if fixed is not None else shape
            else:
                folders = _prepare(task, Path(scratch), shape, args.threads, args.batch_size)
            rows: dict[str, Any] = {}
            for backend in BACKENDS:
                if backend not in folders:  # INT8 refused by its accuracy gate
                    continue
                run = subprocess.run(
                    [
                        sys.executable,
                        __file__,
                        "--child",
                        "--backend",
                        backend,
                        "--folder",
                        str(folders[backend]),
                        "--shape",
                        ",".join(str(n) for n in task_shape),
                        "--repeats",
                        str(args.repeats),
                        "--threads",
                        str(args.threads),
                    ],
                    capture_output=True,
                    text=True,
                    check=True,
                    env=os.environ | {"OMP_NUM_THREADS": str(args.threads)},
                )
                rows[backend] = json.loads(run.stdout.strip().splitlines()[-1])
                rows[backend]["predictions"] = list(
                    np.load(folders[backend].parent / f"{backend}.npy", allow_pickle=True)
                )
            ref = rows["torch-fp32"]
            for row in rows.values():
                base = _variant(task)[0]
                metric = _agreement(base, row["predictions"], ref["predictions"])
                row["metric_vs_torch"] = metric  # Dice with PyTorch's masks; brain-age: MAE
                row["metric_drop"] = metric if base == "brain-age" else 1.0 - metric
                row["speedup_vs_torch"] = ref["median_s"] / row["median_s"]
                row["memory_ratio_vs_torch"] = row["peak_rss_mb"] / ref["peak_rss_mb"]
                row["volumes_per_s"] = 1.0 / row["median_s"]
                row["megavoxels_per_s"] = float(np.prod(task_shape)) / 1e6 / row["median_s"]
            if task in accuracy:
                truth = accuracy[task]["metric_vs_truth"]
                for backend, row in rows.items():
                    row["metric_vs_truth"] = truth.get(backend)
                    row["metric_drop_vs_truth"] = truth["torch-fp32"] - truth[backend]
            for row in rows.values():
                row.pop("predictions")
            table[task] = rows
            print(f"{task}: done", flush=True)
    header = (
        f"{'task':18} {'backend':17} {'median s':>9} {'speedup':>8} {'peak MB':>8} "
        f"{'mem x':>6} {'growth MB':>9} {'Mvox/s':>7} {'drop':>8}"
    )
    print(header)
    for task, rows in table.items():
        for backend, row in rows.items():
            print(
                f"{task:18} {backend:17} {row['median_s']:9.3f} {row['speedup_vs_torch']:8.2f} "
                f"{row['peak_rss_mb']:8.0f} {row['memory_ratio_vs_torch']:6.2f} "
                f"{row['inference_rss_growth_mb']:9.0f} {row['megavoxels_per_s']:7.2f} "
                f"{row['metric_drop']:8.4f}"
            )
    for task, info in accuracy.items():
        print(
            f"{task}: trained model {info['model']}, {info['gate_metric']} on "
            f"{info['validation_cases']} validation case(s) of {info['site']}:"
        )
        for backend, value in info["metric_vs_truth"].items():
            print(f"  {backend:17} {value:.4f}")
        if "int8_refused" in info:
            print(f"  INT8 refused by its gate: {info['int8_refused']}")
    payload = {
        "bench": "inference",
        "batch_size": args.batch_size,
        "trained": accuracy,
        "shape": list(shape),
        "repeats": args.repeats,
        "threads": args.threads,
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform()},
        "results": table,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
