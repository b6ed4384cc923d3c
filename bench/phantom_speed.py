"""Time the phantom: seconds per case (sample + render + write) per preset and spacing.

Each (preset, spacing) runs in a fresh process pinned to ``--cores`` CPUs (default 1), so the
numbers are "per case on one core" and include a cold start (imports, template maps), reported
apart from the warm cases.

    python bench/phantom_speed.py                      # 3 warm cases per preset at 1 and 2 mm
    python bench/phantom_speed.py --cases 5 --spacings 1 --out /tmp/speed.json
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

from pinned import run_pinned

PRESETS = ("glioma", "ms", "brain-age")


def _measure(preset: str, spacing: float, cases: int, seed: int) -> dict[str, Any]:
    """Runs inside the pinned child process."""
    start = time.perf_counter()
    from neurofed.phantom import PhantomConfig, generate_case, sample_site

    config = PhantomConfig(preset=preset, sites=1, cases=cases + 1, seed=seed, spacing=spacing)
    site = sample_site(config, 1)
    out = Path(tempfile.mkdtemp(prefix="phantom-speed-"))
    generate_case(config, site, 1, out)  # cold: imports, template maps, caches
    cold = time.perf_counter() - start
    seconds, written = [], []
    for case in range(2, cases + 2):
        t0 = time.perf_counter()
        record = generate_case(config, site, case, out)
        seconds.append(time.perf_counter() - t0)
        written.append(sum((out / site.name / f).stat().st_size for f in record.files))
    import torch

    return {
        "preset": preset,
        "spacing_mm": spacing,
        "cases": cases,
        "cold_start_s": cold,
        "seconds_per_case": seconds,
        "mean_s": statistics.mean(seconds),
        "min_s": min(seconds),
        "max_s": max(seconds),
        "mean_written_mb": statistics.mean(written) / 1e6,
        "slice_thickness_mm": site.acquisition.slice_thickness_mm,
        "torch_threads": torch.get_num_threads(),
        "cpus": len(os.sched_getaffinity(0)),
    }


def _child(args: argparse.Namespace) -> None:
    result = _measure(args.preset, args.spacing, args.cases, args.seed)
    print(json.dumps(result))


def _run(preset: str, spacing: float, cases: int, seed: int, cores: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--child",
        "--preset",
        preset,
        "--spacing",
        str(spacing),
        "--cases",
        str(cases),
        "--seed",
        str(seed),
    ]
    return run_pinned(command, cores)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/phantom_speed.json"))
    parser.add_argument("--cases", type=int, default=3, help="warm cases timed per setting")
    parser.add_argument("--spacings", type=float, nargs="+", default=[1.0, 2.0])
    parser.add_argument("--presets", nargs="+", default=list(PRESETS), choices=PRESETS)
    parser.add_argument("--cores", type=int, default=1, help="CPUs the measuring process may use")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--preset", default="glioma", help=argparse.SUPPRESS)
    parser.add_argument("--spacing", type=float, default=1.0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        _child(args)
        return
    rows = []
    print(f"{'preset':<10} {'mm':>4} {'s/case':>7} {'min':>6} {'max':>6} {'cold s':>7} {'MB':>6}")
    for preset in args.presets:
        for spacing in args.spacings:
            row = _run(preset, spacing, args.cases, args.seed, args.cores)
            rows.append(row)
            print(
                f"{preset:<10} {spacing:>4g} {row['mean_s']:>7.2f} {row['min_s']:>6.2f} "
                f"{row['max_s']:>6.2f} {row['cold_start_s']:>7.1f} {row['mean_written_mb']:>6.1f}",
                flush=True,
            )
    report = {
        "benchmark": "phantom_speed",
        "what": "seconds per case: sample + render + write (gzip NIfTI), warm process",
        "cores": args.cores,
        "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
        "results": rows,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
