"""Federated training on the phantom: engine overhead per round, and FedAvg vs pooled vs local-only.

Runs the demo's comparison (``neurofed.demo``) with a chosen budget: a glioma phantom with three
training sites and one held-out site, ``tumor-regions``, FedAvg in NVFlare's simulator against a
pooled model and one local-only model per site trained for the same budget, all evaluated on
every training site's validation split and on all cases of the held-out site (the FeTS claim to
check: federated ≈ pooled ≫ local-only on unseen sites).

Per round, from ``rounds/<k>/metrics.json``: the server's wall time, the slowest site's local
training time and its validation time; the rest is what the FL engine costs
(``overhead = round - slowest training - slowest validation``: task dispatch, weight transfer,
aggregation, checkpointing). Round 1 also carries the sites' start-up (process spawn, imports,
loading cases) and is reported but left out of the steady-state mean.

Usage::

    python bench/federation.py [--rounds R] [--samples S] [--cases C] [--spacing MM]
                               [--patch P] [--filters F] [--seed N] [--work DIR] [--out FILE]

Prints two tables and writes JSON (default ``bench/results/federation.json``).
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from neurofed import __version__
from neurofed.demo import DemoConfig, run_demo
from neurofed.demo.config import DEFAULT, DemoBudget
from neurofed.demo.run import FEDERATED
from neurofed.evaluate import ALL_TRAINING
from neurofed.federated.server.run_folder import ROUNDS


def round_overheads(run_dir: Path) -> list[dict[str, Any]]:
    """Per round: wall time, slowest site's training and validation, and the remainder."""
    rows = []
    for path in sorted((run_dir / ROUNDS).glob("*/metrics.json"), key=lambda p: int(p.parent.name)):
        record = json.loads(path.read_text(encoding="utf-8"))
        train = max((t.get("seconds", 0.0) for t in record.get("train", {}).values()), default=0.0)
        validate = max(
            (float(v) for v in record.get("validation_seconds", {}).values()),
            default=0.0,
        )
        wall = float(record.get("seconds", 0.0))
        overhead = wall - train - validate
        rows.append(
            {
                "round": int(record["round"]),
                "round_seconds": round(wall, 3),
                "train_seconds": round(train, 3),
                "validate_seconds": round(validate, 3),
                "overhead_seconds": round(overhead, 3),
                "overhead_share": round(overhead / wall, 4) if wall > 0 else None,
            }
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=DEFAULT.rounds)
    parser.add_argument("--samples", type=int, default=DEFAULT.samples_per_epoch)
    parser.add_argument("--cases", type=int, default=DEFAULT.cases)
    parser.add_argument("--spacing", type=float, default=DEFAULT.spacing)
    parser.add_argument("--patch", type=int, default=DEFAULT.patch)
    parser.add_argument("--filters", type=int, default=DEFAULT.base_filters)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="run folder (default: temporary)")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "federation.json"
    )
    args = parser.parse_args()
    budget = DemoBudget(
        cases=args.cases,
        spacing=args.spacing,
        rounds=args.rounds,
        samples_per_epoch=args.samples,
        patch=args.patch,
        base_filters=args.filters,
    )
    work = args.work or Path(tempfile.mkdtemp(prefix="neurofed-bench-federation-"))
    began = time.perf_counter()
    result = run_demo(DemoConfig(out=work, seed=args.seed, custom_budget=budget))
    seconds = time.perf_counter() - began

    rounds = round_overheads(work / FEDERATED)
    header = ("round", "round s", "train s", "val s", "overhead s", "share")
    print(" ".join(f"{h:>{w}}" for h, w in zip(header, (5, 8, 8, 7, 11, 6), strict=True)))
    for r in rounds:
        share = r["overhead_share"]
        print(
            f"{r['round']:>5} {r['round_seconds']:>8.2f} {r['train_seconds']:>8.2f} "
            f"{r['validate_seconds']:>7.2f} {r['overhead_seconds']:>11.2f} "
            f"{'n/a' if share is None else f'{share:.1%}':>6}"
        )
    steady = [r["overhead_seconds"] for r in rounds[1:]]
    mean_overhead = statistics.fmean(steady) if steady else None
    if mean_overhead is not None:
        print(f"steady-state overhead per round: {mean_overhead:.2f} s (rounds 2..{len(rounds)})")

    summary = result.summary
    held_out = summary["held_out"]
    by_model = summary["headline"]["by_model"]
    print(f"\n{summary['headline']['metric']}")
    print(f"{'model':<14} {'training sites (val)':>21} {held_out + ' (held out)':>20}")
    for model, row in by_model.items():
        cells = [row.get(ALL_TRAINING), row.get(held_out)]
        shown = ["n/a" if v is None else f"{v:.3f}" for v in cells]
        print(f"{model:<14} {shown[0]:>21} {shown[1]:>20}")
    print(f"\nstages (s): {summary['stage_seconds']}; total {seconds:.0f} s; run folder {work}")

    payload = {
        "benchmark": "federation",
        "neurofed": __version__,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpu_count": torch.get_num_threads(),
        "budget": vars(budget),
        "rounds": rounds,
        "steady_overhead_seconds": mean_overhead,
        "headline": summary["headline"],
        "selected": summary["study"]["selected"],
        "stage_seconds": summary["stage_seconds"],
        "seconds": round(seconds, 1),
        "run_folder": str(work),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
