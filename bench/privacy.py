"""What formal privacy costs: DP-SGD at ε ∈ {8, 3, 1} against no DP, and secure aggregation's
overhead for 3 to 100 sites.

A ``tumor-regions`` phantom federation (three training sites, a held-out site twice their size)
runs the same FedAvg study on the real NVFlare simulator once without DP and once per target ε
(``[privacy] target_epsilon``: each site picks the noise that spends that ε over the study;
``clip_norm`` 1, δ 1e-5, RDP). Every final model is scored on every case of the held-out site:
whole-tumour Dice (mean, 95 % interval) and its paired difference to the model without DP on
the same cases (Wilcoxon); beside it, the noise each site chose and the ε each site reported after
the last round.

Secure aggregation (``secagg = true``): :mod:`secagg` (``bench/secagg.py``) plays 3, 10, 30
and 100 sites and the server through the four steps of a round on an update the size of the
real ``tumor-regions`` network, every site answering and 10 % silent after sharing: time per
site and at the server, bytes per site, and the error of the unmasked mean. Beside it, the same
small study runs 3 rounds on the NVFlare simulator with and without ``secagg``: what the extra
round trips add to a round's wall time.

Usage::

    python bench/privacy.py [--budget quick|full] [--epsilons 8,3,1] [--seed 0] [--work DIR]
                            [--part all|dp|secagg] [--secagg-sites 3,10,30,100] [--out FILE]

Prints a table and writes JSON (default ``bench/results/privacy.json``). ``quick`` is a smoke
run of minutes on two cores.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from neurofed import __version__
from neurofed.evaluate import evaluate_model
from neurofed.evaluate.statistics import mean_with_ci, paired_comparison
from neurofed.federated.engine import run_simulation
from neurofed.federated.server.run_folder import LAST_MODEL
from neurofed.federated.study import Study
from neurofed.phantom import PhantomConfig
from phantoms import checked_sites
from secagg import model_size
from secagg import run as run_secagg
from secagg import show as show_secagg


@dataclass(frozen=True)
class Budget:
    """Phantom size and training length."""

    cases: int
    spacing: float
    rounds: int
    samples: int
    learning_rate: float


BUDGETS = {
    "quick": Budget(cases=12, spacing=4.0, rounds=6, samples=16, learning_rate=1e-2),
    "full": Budget(cases=40, spacing=2.0, rounds=30, samples=64, learning_rate=3e-3),
}


def _sites(work: Path, budget: Budget, seed: int) -> list[Path]:
    config = PhantomConfig(
        preset="glioma",  # type: ignore[arg-type]
        sites=4,
        cases=budget.cases,
        seed=seed,
        spacing=budget.spacing,
        site_cases={4: 2 * budget.cases},
    )
    return checked_sites(work / "sites", config)


def _study(budget: Budget, seed: int, target: float | None, secagg: bool = False) -> Study:
    name = "none" if target is None else f"eps{target:g}"
    data: dict[str, Any] = {
        "name": "bench-privacy-" + ("secagg" if secagg else name),
        "rounds": budget.rounds,
        "local_epochs": 1,
        "min_sites": 1,
        "round_timeout_s": 3600.0,
        "seed": seed,
        "dataset": "phantom-gliomas",
        "task": {"id": "tumor-regions"},
        "model": {"base_filters": 4, "depth": 4, "num_res_units": 1},
        "strategy": {"name": "fedavg", "secagg": secagg},
        "selection": {"metric": "WT/dice_pooled", "direction": "max"},
        "train": {
            "batch_size": 2,
            "learning_rate": budget.learning_rate,
            "patch_shape": [32, 32, 32],
            "samples_per_epoch": budget.samples,
            "foreground_probability": 0.5,
            "preprocess": {"spacing": [budget.spacing] * 3},
        },
    }
    if target is not None:
        data["privacy"] = {"clip_norm": 1.0, "target_epsilon": target, "delta": 1e-5}
    return Study.from_dict(data, source="bench/privacy.py")


def run(work: Path, budget: Budget, seed: int, targets: list[float]) -> dict[str, Any]:
    started = time.perf_counter()
    sites = _sites(work, budget, seed)
    training, held_out = sites[:3], sites[3]
    rows: dict[str, Any] = {}
    dice: dict[str, np.ndarray] = {}
    for target in [None, *targets]:
        name = "no DP" if target is None else f"ε = {target:g}"
        print(f"{name}: {budget.rounds} rounds on the NVFlare simulator …", flush=True)
        began = time.perf_counter()
        folder = work / ("none" if target is None else f"eps-{target:g}")
        # each configuration keeps its own privacy ledgers: on one ledger the studies would
        # compose (the same cases), and each row would show the ε of all rows before it
        states = {
            f"site-{k}": {"state_dir": folder / "site-state" / f"site-{k}"}
            for k in range(1, len(training) + 1)
        }
        study = _study(budget, seed, target)
        result = run_simulation(study, training, folder, site_settings=states)
        seconds = time.perf_counter() - began
        state, _, _ = evaluate_model(result.run_dir / LAST_MODEL, held_out, None)
        dice[name] = np.asarray(state.cases["WT/dice"], np.float64)
        last = json.loads(
            (folder / "rounds" / str(budget.rounds) / "metrics.json").read_text(encoding="utf-8")
        )
        trained = last.get("train", {})
        rows[name] = {
            "target_epsilon": target,
            "WT/dice": mean_with_ci(dice[name][np.isfinite(dice[name])], seed=seed).to_json(),
            "epsilon_per_site": {s: m.get("epsilon") for s, m in sorted(trained.items())},
            "noise_per_site": {s: m.get("noise_multiplier") for s, m in sorted(trained.items())},
            "seconds": seconds,
        }
    reference = dice["no DP"]
    for name, values in dice.items():
        if name == "no DP":
            continue
        keep = np.isfinite(values) & np.isfinite(reference)
        rows[name]["WT/dice_vs_no_dp"] = paired_comparison(
            values[keep], reference[keep], seed=seed
        ).to_json()
    return {
        "bench": "privacy",
        "budget": asdict(budget),
        "seed": seed,
        "neurofed": __version__,
        "machine": {"platform": platform.platform()},
        "held_out_cases": len(reference),
        "models": rows,
        "seconds": time.perf_counter() - started,
    }


def engine_rounds(work: Path, budget: Budget, seed: int, rounds: int = 6) -> dict[str, Any]:
    """The same study on the NVFlare simulator with and without ``secagg``: seconds per round
    beyond the slowest site's training (round 1 also starts the sites' processes)."""
    sites = _sites(work, budget, seed)[:3]
    out: dict[str, Any] = {}
    for secure in (False, True):
        name = "secagg" if secure else "plain"
        study = _study(dataclasses.replace(budget, rounds=rounds), seed, None, secagg=secure)
        print(f"{name}: {rounds} rounds on the NVFlare simulator …", flush=True)
        folder = work / f"engine-{name}"
        run_simulation(study, sites, folder)
        seconds = []
        for k in range(1, rounds + 1):
            record = json.loads((folder / "rounds" / str(k) / "metrics.json").read_text())
            if not record.get("aggregated"):  # a refused round's time is not a round's cost
                raise SystemExit(f"{name}: round {k} was not aggregated: {record}")
            seconds.append(float(record["seconds"]))
            train = [float(m.get("seconds", 0.0)) for m in record.get("train", {}).values()]
            seconds[-1] -= max(train, default=0.0)  # training itself is not the overhead
        out[name] = {
            "round_seconds_beyond_training": seconds,
            "median_after_round_1": float(np.median(seconds[1:])),
        }
    return out


def _p(value: float) -> str:
    return "<1e-6" if value < 1e-6 else f"{value:.2g}"


def show(result: dict[str, Any]) -> None:
    if "models" in result:
        show_dp(result)
    if "secagg" in result:
        show_secagg(result["secagg"])
    if "engine" in result:
        print("\nNVFlare simulator, 3 sites: seconds per round beyond the slowest site's training")
        for name, row in result["engine"].items():
            values = " ".join(f"{v:.2f}" for v in row["round_seconds_beyond_training"])
            print(f"{name:7} | median after round 1 {row['median_after_round_1']:.2f} | {values}")


def show_dp(result: dict[str, Any]) -> None:
    print("model     | WT Dice (95% CI)       | vs no DP          | noise per site   | ε per site")
    for name, row in result["models"].items():
        d = row["WT/dice"]
        versus = row.get("WT/dice_vs_no_dp")
        diff = (
            "—"
            if versus is None or versus.get("difference") is None
            else f"{versus['difference']:+.3f} p={_p(versus['p'])}"
        )
        noise = ", ".join(f"{v:.2f}" for v in row["noise_per_site"].values() if v is not None)
        eps = ", ".join(f"{v:.2f}" for v in row["epsilon_per_site"].values() if v is not None)
        print(
            f"{name:9} | {d['mean']:.3f} [{d['ci'][0]:.3f}, {d['ci'][1]:.3f}] | {diff:17} | "
            f"{noise or '—':16} | {eps or '—'}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--epsilons", default="8,3,1", help="target ε values, comma-separated")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/privacy.json"))
    parser.add_argument("--show", type=Path, default=None, help="print a results JSON again")
    parser.add_argument("--part", choices=("all", "dp", "secagg"), default="all")
    parser.add_argument("--secagg-sites", default="3,10,30,100", help="site counts for secagg")
    args = parser.parse_args()
    if args.show is not None:
        show(json.loads(args.show.read_text()))
        return
    targets = [float(v) for v in str(args.epsilons).split(",") if v]
    began = time.perf_counter()
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work) if args.work is not None else Path(scratch)
        budget = BUDGETS[args.budget]
        result: dict[str, Any] = {"bench": "privacy", "budget": asdict(budget)}
        if args.part in ("all", "dp"):
            result = run(work, budget, args.seed, targets)
        if args.part in ("all", "secagg"):
            counts = [int(v) for v in str(args.secagg_sites).split(",") if v]
            if counts:  # --secagg-sites "": the NVFlare rounds only
                result["secagg"] = run_secagg(counts, model_size("tumor-regions"), 0.1)
            result["engine"] = engine_rounds(work, budget, args.seed)
        result["seconds"] = time.perf_counter() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    show(result)
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
