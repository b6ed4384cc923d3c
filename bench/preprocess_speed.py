"""Time ``neurofed site preprocess``: seconds per case at 1 mm with 2 workers, and per step.

A phantom site (glioma: T1, T1CE, T2, FLAIR; or ms: FLAIR, T1) is written at ``--spacing`` mm
and checked (not timed); then the whole pipeline (RAS, N4, co-registration, resampling, brain
mask, z-score, crop, QC, cache write) runs in a fresh process pinned to ``--cores`` CPUs with
``--workers`` worker processes. Reported: wall seconds per case for the site (worker start-up
included, as a custodian sees it) and each step's mean seconds per case inside the workers (from
``provenance.json``).

    python bench/preprocess_speed.py                              # glioma, 4 cases, 1 mm, 2 cores
    python bench/preprocess_speed.py --preset ms --cases 6 --out /tmp/speed.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from pinned import run_pinned

TASKS = {"glioma": "tumor-regions", "ms": "ms-lesion"}
STEPS = ("bias_correction", "registration", "resample", "rest")


def _measure(preset: str, spacing: float, cases: int, workers: int, seed: int) -> dict[str, Any]:
    """Runs inside the pinned child process (the phantom goes to a temporary folder)."""
    with tempfile.TemporaryDirectory(prefix="preprocess-speed-") as folder:
        return _measure_in(Path(folder), preset, spacing, cases, workers, seed)


def _measure_in(
    folder: Path, preset: str, spacing: float, cases: int, workers: int, seed: int
) -> dict[str, Any]:
    from neurofed.data.manifest import check_site
    from neurofed.phantom import PhantomConfig, generate_federation
    from neurofed.preprocess import PreprocessParams
    from neurofed.preprocess.pipeline import preprocess_site
    from neurofed.tasks import get_task

    out = folder / "fed"
    config = PhantomConfig(preset=preset, sites=1, cases=cases, seed=seed, spacing=spacing)
    generate_federation(config, out, workers=workers)
    site = out / "site-1"
    check_site(site)
    task = get_task(TASKS[preset])
    params = PreprocessParams(
        spacing=(spacing, spacing, spacing), bias_correction=True, registration=True
    )
    start = time.perf_counter()
    report = preprocess_site(
        site, task.modalities, params, with_label=task.needs_label_map, workers=workers
    )
    wall = time.perf_counter() - start
    provenance = json.loads((report.folder / "provenance.json").read_text())
    done = [c for c in provenance["cases"].values() if c["status"] == "done"]
    seconds = [c["seconds"] for c in done]
    names = ("load", "reorient", "bias_correction", "registration", "resample", "rest", "qc")
    steps = {name: statistics.mean(s.get(name, 0.0) for s in seconds) for name in names}
    steps |= {
        name: statistics.mean(s.get(name, 0.0) for s in seconds) for name in ("write", "total")
    }
    other = ("load", "reorient", "rest", "qc", "write")
    steps["rest"] = sum(steps[name] for name in other)  # everything but the three big steps
    shapes = [c["output"]["original_shape"] for c in done]
    import SimpleITK
    import torch

    cpu = _cpu_per_step(site, task.modalities, params, task.needs_label_map, cases=2)

    return {
        "preset": preset,
        "task": TASKS[preset],
        "spacing_mm": spacing,
        "cases": cases,
        "cases_done": len(done),
        "workers": workers,
        "wall_s": wall,
        "wall_s_per_case": wall / max(cases, 1),
        "step_s_per_case": steps,
        "cpu_s_per_case": cpu,
        "idle_estimate_s_per_case": cpu["total"] / workers,
        "mean_input_shape": [statistics.mean(s[i] for s in shapes) for i in range(3)],
        "channels": len(task.modalities),
        "simpleitk": SimpleITK.Version_VersionString(),
        "torch_threads": torch.get_num_threads(),
        "cpus": len(os.sched_getaffinity(0)),
    }


def _cpu_per_step(
    site: Path, modalities: Any, params: Any, with_label: bool, cases: int
) -> dict[str, float]:
    """CPU seconds per step on one thread, in this process, for the first ``cases`` cases: what
    the steps cost without the other processes of a shared machine."""
    from dataclasses import replace

    import SimpleITK
    import torch

    from neurofed.data.loading import load_subject
    from neurofed.data.manifest import load_manifest
    from neurofed.preprocess.harmonise import correct_bias, register_rigid
    from neurofed.preprocess.ops import (
        HarmonisedCase,
        brain_mask,
        finish_case,
        reorient_to_ras,
        resample_to_spacing,
    )
    from neurofed.preprocess.qc import measure_case

    SimpleITK.ProcessObject.SetGlobalDefaultNumberOfThreads(1)
    torch.set_num_threads(1)
    totals = dict.fromkeys(("bias_correction", "registration", "resample", "rest"), 0.0)
    subjects = load_manifest(site).subjects[:cases]
    for subject in subjects:
        if not with_label:
            subject = replace(subject, label=None, label_convention=None)
        clock = time.process_time()
        loaded = load_subject(site, subject, modalities)
        arrays = reorient_to_ras(loaded.image, loaded.label, loaded.affine)
        totals["rest"] += time.process_time() - clock
        clock = time.process_time()
        channels = []
        for channel in arrays.image:
            mask, _ = brain_mask(channel[None])
            channels.append(correct_bias(channel, arrays.affine, mask)[0])
        totals["bias_correction"] += time.process_time() - clock
        clock = time.process_time()
        reference, _ = brain_mask(channels[0][None])
        moved = [None] + [
            register_rigid(channels[0], c, arrays.affine, reference)[1] for c in channels[1:]
        ]
        totals["registration"] += time.process_time() - clock
        clock = time.process_time()
        resample_to_spacing(arrays.image, arrays.label, arrays.affine, params.spacing)
        totals["resample"] += time.process_time() - clock
        clock = time.process_time()
        original = (arrays.affine, (1.0, 1.0, 1.0), (1, 1, 1))
        harmonised = HarmonisedCase(
            np.stack(channels), arrays.label, arrays.affine, *original, None, (), tuple(moved)
        )
        measure_case(subject.subject_id, harmonised, modalities)
        finish_case(harmonised, replace(params, spacing=None))  # mask, z-score, crop
        totals["rest"] += time.process_time() - clock
    out = {name: value / len(subjects) for name, value in totals.items()}
    out["total"] = sum(out.values())
    return out


def _child(args: argparse.Namespace) -> None:
    print(json.dumps(_measure(args.preset, args.spacing, args.cases, args.workers, args.seed)))


def _run(args: argparse.Namespace) -> dict[str, Any]:
    command = [sys.executable, __file__, "--child", "--preset", args.preset]
    command += ["--spacing", str(args.spacing), "--cases", str(args.cases)]
    command += ["--workers", str(args.workers), "--seed", str(args.seed)]
    return run_pinned(command, args.cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/preprocess_speed.json"))
    parser.add_argument("--preset", default="glioma", choices=sorted(TASKS))
    parser.add_argument("--cases", type=int, default=4)
    parser.add_argument("--spacing", type=float, default=1.0)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--cores", type=int, default=2, help="CPUs the measuring process may use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    row = _run(args)
    steps = row["step_s_per_case"]
    print(f"{row['preset']} ({row['task']}, {row['channels']} channels), {row['spacing_mm']:g} mm, "
          f"{row['cases']} cases, {row['workers']} workers on {args.cores} cores")  # fmt: skip
    cpu = row["cpu_s_per_case"]
    print(f"{'step':<16} {'worker s/case':>14} {'1-thread CPU s/case':>20}")
    for name in STEPS:
        print(f"{name:<16} {steps[name]:>14.2f} {cpu[name]:>20.2f}")
    print(f"{'total':<16} {steps['total']:>14.2f} {cpu['total']:>20.2f}")
    idle = row["idle_estimate_s_per_case"]
    print(f"wall per case for the site: {row['wall_s_per_case']:.2f} s "
          f"(idle-machine estimate: CPU / workers = {idle:.2f} s)")  # fmt: skip
    report = {
        "benchmark": "preprocess_speed",
        "what": "seconds per case of neurofed site preprocess (N4 + registration on): wall for "
        "the site with worker start-up, per step inside the workers (wall), and per step as "
        "one-thread CPU time (robust to other load on the machine)",
        "cores": args.cores,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": [row],
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
