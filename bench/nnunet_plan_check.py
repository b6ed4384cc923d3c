"""Compare neurofed's plan with the real nnU-Net v2 planner's on the same raw phantom MS cases.

1. Writes ``--sites`` × ``--cases`` raw phantom MS cases (``neurofed phantom --preset ms``) as an
   nnU-Net v2 raw dataset (``dataset.json``, ``imagesTr/<case>_0000.nii.gz`` = FLAIR,
   ``_0001`` = T1, ``labelsTr/<case>.nii.gz``), the channels of the ``ms-lesion`` task.
   With ``--zero-background`` every case is first set to 0 outside neurofed's brain mask, as
   skull-stripped data is, where neurofed's crop and nnU-Net's should coincide.
2. neurofed: ``neurofed site check`` on that folder, the task fingerprint of every case
   (:func:`~neurofed.training.planning.compute_task_fingerprint`, ``split=None``) and
   :func:`~neurofed.preprocess.plan.make_plan` with nnU-Net's defaults (8 GB, 32 … 320 filters).
3. With ``--nnunet-python PATH`` (an interpreter with ``nnunetv2`` installed, e.g. a separate
   virtual environment — never the project's), nnU-Net's ``DatasetFingerprintExtractor`` and
   classic ``ExperimentPlanner`` (``3d_fullres``) run on the same folder in a subprocess.
4. Prints a side-by-side table in neurofed's RAS axis order (nnU-Net's values are mapped back
   from its transposed, numpy-order axes) and writes everything to ``--out`` as JSON.

Set up nnU-Net apart from the project, CPU torch first::

    python -m venv /tmp/nnunet-venv
    /tmp/nnunet-venv/bin/pip install torch==2.13.0
    echo torch==2.13.0 > /tmp/torch-pin.txt
    /tmp/nnunet-venv/bin/pip install -c /tmp/torch-pin.txt nnunetv2==2.8.1

    python bench/nnunet_plan_check.py --nnunet-python /tmp/nnunet-venv/bin/python \\
        --work /tmp/nnunet-check --out /tmp/nnunet-check.json
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

DATASET_ID = 901
DATASET = f"Dataset{DATASET_ID:03d}_NeurofedPhantomMS"
CHANNELS = ("FLAIR", "T1")  # the ms-lesion task's modalities, in its order
PERCENTILES = (0.5, 50.0, 99.5)

#: Runs under ``--nnunet-python``; prints one JSON line (nnU-Net reads its paths from the
#: environment when imported, so they are set before this starts).
NNUNET_SCRIPT = textwrap.dedent(
    """
    import json, sys
    from nnunetv2.experiment_planning.dataset_fingerprint.fingerprint_extractor import (
        DatasetFingerprintExtractor,
    )
    from nnunetv2.experiment_planning.experiment_planners.default_experiment_planner import (
        ExperimentPlanner,
    )
    dataset, processes = int(sys.argv[1]), int(sys.argv[2])
    extractor = DatasetFingerprintExtractor(dataset, processes)
    extractor.show_progress_bar = False
    fingerprint = extractor.run(overwrite_existing=True)
    planner = ExperimentPlanner(dataset, gpu_memory_target_in_gb=8)
    plans = planner.plan_experiment()
    full = plans["configurations"]["3d_fullres"]
    keep = (
        "spacing", "median_image_size_in_voxels", "patch_size", "batch_size",
        "normalization_schemes", "use_mask_for_norm", "resampling_fn_data_kwargs",
        "resampling_fn_seg_kwargs",
    )
    print(json.dumps({
        "transpose_forward": plans["transpose_forward"],
        "transpose_backward": plans["transpose_backward"],
        "3d_fullres": {k: full[k] for k in keep},
        "strides": full["architecture"]["arch_kwargs"]["strides"],
        "intensity": plans["foreground_intensity_properties_per_channel"],
        "median_relative_size_after_cropping": fingerprint["median_relative_size_after_cropping"],
    }, default=float))
    """
)


def write_dataset(
    work: Path,
    sites: int,
    cases: int,
    seed: int,
    spacing: float,
    zero_background: bool,
    workers: int,
) -> tuple[Path, dict[str, Any]]:
    """The phantom as an nnU-Net raw dataset; returns its folder and what was written."""
    import numpy as np

    from neurofed.data.nifti import read_image, read_label, write_image
    from neurofed.keys import Modality, PhantomPreset
    from neurofed.phantom import PhantomConfig, generate_federation
    from neurofed.phantom.writers import LABEL, case_paths
    from neurofed.preprocess.ops import brain_mask

    phantom = work / "phantom"
    config = PhantomConfig(
        preset=PhantomPreset.MS, sites=sites, cases=cases, seed=seed, spacing=spacing
    )
    generate_federation(config, phantom, workers=workers)
    truth = json.loads((phantom / "phantom.json").read_text())
    raw = work / "nnUNet_raw" / DATASET
    if raw.exists():
        shutil.rmtree(raw)
    (raw / "imagesTr").mkdir(parents=True)
    (raw / "labelsTr").mkdir()
    lesion_free = 0
    for entry in truth["cases"]:
        subject, site = entry["subject_id"], phantom / f"site-{entry['site']}"
        paths = case_paths(PhantomPreset.MS, subject)
        name = f"case_{subject.replace('-', '_')}"
        sources = [site / paths[Modality(c)] for c in CHANNELS]
        label_file = site / paths[LABEL]
        targets = [raw / "imagesTr" / f"{name}_{i:04d}.nii.gz" for i in range(len(CHANNELS))]
        if zero_background:  # skull-stripped: 0 outside neurofed's brain mask of the raw scan
            images = [read_image(p) for p in sources]
            keep, _ = brain_mask(np.stack([i.array for i in images]))
            for image, target in zip(images, targets, strict=True):
                write_image(target, np.where(keep, image.array, 0.0), image.affine, image.header)
        else:
            for source, target in zip(sources, targets, strict=True):
                shutil.copyfile(source, target)
        shutil.copyfile(label_file, raw / "labelsTr" / f"{name}.nii.gz")
        lesion_free += int(not np.any(np.asarray(read_label(label_file).array, np.uint8)))
    dataset_json = {
        "channel_names": {str(i): c for i, c in enumerate(CHANNELS)},
        "labels": {"background": 0, "lesion": 1},
        "numTraining": len(truth["cases"]),
        "file_ending": ".nii.gz",
        "name": "neurofed phantom MS",
    }
    (raw / "dataset.json").write_text(json.dumps(dataset_json, indent=2))
    written = {
        "cases": len(truth["cases"]),
        "lesion_free_cases": lesion_free,
        "phantom": config.to_json(),
        "zero_background": zero_background,
    }
    return raw, written


def ras_axes_of_nnunet(raw: Path) -> list[int]:
    """For each RAS axis, nnU-Net's (numpy-order, untransposed) axis; the same for every case."""
    from nibabel.orientations import io_orientation

    from neurofed.data.nifti import read_header

    seen = set()
    for path in sorted((raw / "imagesTr").glob("*_0000.nii.gz")):
        voxel_to_ras = io_orientation(read_header(path)[1])[:, 0].astype(int)
        # SimpleITK gives arrays in reversed voxel order: nnU-Net axis k is voxel axis 2 - k
        seen.add(tuple(2 - int(list(voxel_to_ras).index(r)) for r in range(3)))
    if len(seen) != 1:
        raise SystemExit(f"cases are stored with different axis orders {seen}; cannot compare")
    return list(seen.pop())


def neurofed_side(raw: Path) -> dict[str, Any]:
    from neurofed.data.manifest import check_site
    from neurofed.preprocess.plan import PlannerSettings, make_plan
    from neurofed.training.planning import compute_task_fingerprint

    start = time.perf_counter()
    check_site(raw)
    fingerprint = compute_task_fingerprint(raw, "ms-lesion", split=None)
    plan = make_plan(fingerprint, PlannerSettings(out_channels=2))
    intensity = {}
    for channel in CHANNELS:
        stats = fingerprint.intensity_stats(channel)
        intensity[channel] = {
            "mean": stats.mean(),
            "std": stats.std(),
            **{f"p{q:g}": stats.percentile(q) for q in PERCENTILES},
        }
    plan_json = plan.to_json()
    return {
        "seconds": time.perf_counter() - start,
        "num_cases": fingerprint.num_cases,
        "num_label_foreground": fingerprint.num_label_foreground,
        "spacing": list(plan.spacing),
        "median_shape": list(plan.median_shape),
        "patch_size": list(plan.patch_size),
        "batch_size": plan.batch_size,
        "strides": [list(s) for s in plan.strides],
        "intensity": intensity,
        "plan_id": plan.plan_id,
        "preprocessing": plan_json.get("preprocessing"),
        "departures_from_nnunet": plan_json.get("departures_from_nnunet"),
    }


def nnunet_side(python: str, work: Path, raw: Path, processes: int) -> dict[str, Any]:
    env = dict(os.environ)
    env |= {
        "nnUNet_raw": str(raw.parent),
        "nnUNet_preprocessed": str(work / "nnUNet_preprocessed"),
        "nnUNet_results": str(work / "nnUNet_results"),
        "nnUNet_n_proc_DA": str(processes),
    }
    start = time.perf_counter()
    done = subprocess.run(
        [python, "-c", NNUNET_SCRIPT, str(DATASET_ID), str(processes)],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"nnU-Net failed ({done.returncode}):\n{done.stderr[-4000:]}")
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    full = answer["3d_fullres"]
    backward = answer["transpose_backward"]
    to_ras = ras_axes_of_nnunet(raw)

    def ras(values: list[Any]) -> list[Any]:
        untransposed = [values[backward[k]] for k in range(3)]  # nnU-Net's numpy order
        return [untransposed[to_ras[r]] for r in range(3)]

    intensity = {}
    for index, channel in enumerate(CHANNELS):
        props = answer["intensity"][str(index)]
        intensity[channel] = {
            "mean": props["mean"],
            "std": props["std"],
            "p0.5": props["percentile_00_5"],
            "p50": props["median"],
            "p99.5": props["percentile_99_5"],
        }
    return {
        "seconds": time.perf_counter() - start,
        "spacing": ras(full["spacing"]),
        "median_shape": ras(full["median_image_size_in_voxels"]),
        "patch_size": ras(full["patch_size"]),
        "batch_size": full["batch_size"],
        "strides": [ras(s) for s in answer["strides"]],
        "intensity": intensity,
        "use_mask_for_norm": full["use_mask_for_norm"],
        "normalization_schemes": full["normalization_schemes"],
        "image_order": full["resampling_fn_data_kwargs"]["order"],
        "label_order": full["resampling_fn_seg_kwargs"]["order"],
        "median_relative_size_after_cropping": answer["median_relative_size_after_cropping"],
        "transpose_forward": answer["transpose_forward"],
    }


def _show(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.6g}"
    if isinstance(value, list):
        return "×".join(_show(v) for v in value)
    return str(value)


def table(ours: dict[str, Any], theirs: dict[str, Any] | None) -> str:
    rows: list[tuple[str, Any, Any]] = [
        ("target spacing (mm, RAS)", ours["spacing"], None),
        ("median shape (RAS)", ours["median_shape"], None),
        ("patch (RAS)", ours["patch_size"], None),
        ("batch", ours["batch_size"], None),
        ("pooling levels", len(ours["strides"]) - 1, None),
    ]
    keys = ["spacing", "median_shape", "patch_size", "batch_size", "strides"]
    if theirs is not None:
        rows = [
            (name, mine, len(theirs[k]) - 1 if k == "strides" else theirs[k])
            for (name, mine, _), k in zip(rows, keys, strict=True)
        ]
    for channel in CHANNELS:
        for stat in ("mean", "std", "p0.5", "p50", "p99.5"):
            mine = ours["intensity"][channel][stat]
            other = theirs["intensity"][channel][stat] if theirs is not None else None
            rows.append((f"{channel} foreground {stat}", mine, other))
    record = ours.get("preprocessing") or {}
    if theirs is not None:
        masks = record.get("use_mask_for_norm", "always (brain)")
        rows.append(("use_mask_for_norm", masks, theirs["use_mask_for_norm"]))
        rows.append(
            (
                "image / label order",
                [record.get("image_order", 1), record.get("label_order", 0)],
                [theirs["image_order"], theirs["label_order"]],
            )
        )
        crop = record.get("crop", "brain-mask-box")
        rows.append(("crop", crop, "nonzero"))
    width = max(len(r[0]) for r in rows)
    lines = [f"{'':{width}}  {'neurofed':>22}  {'nnU-Net v2':>22}  {'difference':>12}"]
    for name, mine, other in rows:
        diff = ""
        if isinstance(mine, int | float) and isinstance(other, int | float):
            diff = _show(float(mine) - float(other))
        shown = "" if other is None else _show(other)
        lines.append(f"{name:{width}}  {_show(mine):>22}  {shown:>22}  {diff:>12}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--cases", type=int, default=6, help="cases per site")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--spacing", type=float, default=1.0, help="phantom grid (mm)")
    parser.add_argument(
        "--zero-background",
        action="store_true",
        help="0 outside the brain mask (skull-stripped data)",
    )
    parser.add_argument("--nnunet-python", help="interpreter with nnunetv2 (optional)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/nnunet-plan-check"))
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--out", type=Path, help="write the comparison as JSON here")
    args = parser.parse_args()

    args.work.mkdir(parents=True, exist_ok=True)
    raw, written = write_dataset(
        args.work,
        args.sites,
        args.cases,
        args.seed,
        args.spacing,
        args.zero_background,
        args.workers,
    )
    ours = neurofed_side(raw)
    theirs = None
    if args.nnunet_python:
        theirs = nnunet_side(args.nnunet_python, args.work, raw, args.workers)
    print(
        f"{written['cases']} phantom MS cases ({written['lesion_free_cases']} lesion-free), "
        f"{args.spacing:g} mm grid, zero background: {args.zero_background}"
    )
    print(table(ours, theirs))
    for departure in ours.get("departures_from_nnunet") or []:
        print(f"- {departure}")
    result = {
        "dataset": written,
        "neurofed": ours,
        "nnunet": theirs,
        "python": sys.version.split()[0],
    }
    if args.out is not None:
        args.out.write_text(json.dumps(result, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
