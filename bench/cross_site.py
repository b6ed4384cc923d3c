"""The cross-site matrix two ways, side by side: read in one process vs scored by the sites.

Every model of a finished ``neurofed demo`` run folder (federated, pooled, each local model) is
scored on every training site's validation split and on every case of the held-out site:

- **direct** — one process reads every site's cases (:func:`neurofed.evaluate.cross_site_table`):
  what a lead holding all the data could do, and the reference for the numbers;
- **evaluation study** — one study of ``kind = "evaluate"`` in NVFlare's simulator, each
  site scoring each model itself and sending aggregates (:mod:`neurofed.demo.cross_site`):
  what a federation does.

Prints the wall time of each, the largest difference between their metrics (they should agree
to float precision), and writes JSON.

Usage::

    python bench/cross_site.py [--run DEMO_RUN] [--out FILE]

Without ``--run`` a ``neurofed demo --quick`` is run first in a temporary folder.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from neurofed import __version__
from neurofed.demo import DemoConfig
from neurofed.demo.cross_site import federated_cross_site
from neurofed.demo.run import run_demo
from neurofed.evaluate import cross_site_table


def _largest_difference(a: dict[str, Any], b: dict[str, Any]) -> tuple[float, int]:
    """The largest absolute difference over every metric both tables hold, and how many."""
    worst, compared = 0.0, 0
    for model, row in a.items():
        for column, cell in row.items():
            theirs = b[model][column]["metrics"]
            for name, value in cell["metrics"].items():
                other = theirs.get(name)
                numbers = isinstance(value, float) and isinstance(other, float)
                if numbers and math.isfinite(value) and math.isfinite(other):
                    worst, compared = max(worst, abs(value - other)), compared + 1
    return worst, compared


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--run", type=Path, default=None, help="a finished demo run folder")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).parent / "results" / "cross_site.json"
    )
    args = parser.parse_args()
    run = args.run
    if run is None:
        run = Path(tempfile.mkdtemp(prefix="neurofed-cross-site-")) / "demo"
        print(f"running neurofed demo --quick in {run} …")
        run_demo(DemoConfig(out=run, quick=True))
    summary = json.loads((run / "summary.json").read_text(encoding="utf-8"))
    models = {name: run / path for name, path in summary["models"].items()}
    sites = sorted((run / "sites").glob("site-*"), key=lambda p: int(p.name.split("-")[1]))
    held_out = run / "sites" / summary["held_out"]
    training = [s for s in sites if s != held_out]
    quiet = lambda *_: None  # noqa: E731

    began = time.perf_counter()
    direct = cross_site_table(models, training, held_out, quiet)
    direct_s = time.perf_counter() - began

    folder = Path(tempfile.mkdtemp(prefix="neurofed-cross-site-eval-"))
    began = time.perf_counter()
    federated = federated_cross_site(
        models,
        training,
        held_out,
        folder,
        study=DemoConfig(out=run, quick=bool(summary["quick"])).study(),
        device="cpu",
        progress=quiet,
    )
    federated_s = time.perf_counter() - began
    shutil.rmtree(folder, ignore_errors=True)
    worst, compared = _largest_difference(direct, federated)

    cells = len(models) * (len(training) + 1)
    print(f"\n{len(models)} models × {len(training) + 1} sites ({cells} cells)")
    print(f"{'way':<22}{'seconds':>10}{'s per cell':>12}")
    for name, seconds in (("direct (one process)", direct_s), ("evaluation study", federated_s)):
        print(f"{name:<22}{seconds:>10.1f}{seconds / cells:>12.2f}")
    print(f"largest metric difference over {compared} values: {worst:.2e}")
    payload = {
        "benchmark": "cross_site",
        "neurofed": __version__,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "run": str(run),
        "models": len(models),
        "sites": len(training) + 1,
        "seconds": {"direct": round(direct_s, 2), "evaluation_study": round(federated_s, 2)},
        "overhead_ratio": round(federated_s / direct_s, 2),
        "largest_metric_difference": worst,
        "values_compared": compared,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(payload, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
