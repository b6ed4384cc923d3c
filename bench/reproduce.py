"""The four studies' comparisons, regenerated on the phantom beside each paper's numbers.

One command runs, at a chosen budget, what each study compared and prints it next to what the
paper reported, then says which claims hold on the phantom and which do not (whatever they say):

- **FeTS** (Pati et al., Nat. Commun. 2022): a *public initial model* trained at one site, then
  FedAvg from it over three sites (``[initial_model]``); per region (ET, TC, WT) the consensus
  model's Dice against the initial model's, on the sites' local validation cases and on an
  out-of-sample site: % change, paired Wilcoxon, interval of the difference.
- **MS lesions** (the Kaapana study): three sites of unequal size (A, B, C); FedAvg against each
  site's local model on that site's validation cases (Dice, sensitivity, precision) and the
  one-sided Wilcoxon test "local > federated" at site A.
- **Brain age** (FLightcase): FedAvg against centralised (pooled) training, MAE and Pearson r
  per site, and beside them FedBN (each site scored with its own ``site-model/``); absolute
  errors paired case by case against centralised over every site's validation cases; then
  transfer to SDMT: centralised deep (``full``) against shallow (``head``) transfer, paired
  likewise, and federated deep transfer (``[initial_model]`` + ``target = "sdmt"``).
- **Multi-task glioma**: FedAvg multi-task against local-only and pooled, AUC per marker (IDH,
  1p/19q, MGMT, grade) and whole-tumour Dice on a held-out site.

Every model is compared as it ended (last round or epoch). Intervals are 95% bootstrap
intervals over cases (:mod:`neurofed.evaluate.statistics`).

Usage::

    python bench/reproduce.py [--budget quick|full] [--only fets,ms,age,glioma] [--seed N]
                              [--device cpu|cuda]
                              [--work DIR] [--out FILE]
    python bench/reproduce.py --show bench/results/reproduce.json

Prints one table per study and writes JSON (default ``bench/results/reproduce.json``).
``quick`` (minutes on two cores) checks that everything runs; its numbers are not evidence.

Nothing is lost when a run stops: the work folder (default
``bench/results/reproduce-<budget>-seed<seed>/``) keeps every phantom, checkpoint and model, so
the same command resumes each study's runs where they stopped (finished ones are only scored
again), and the JSON is rewritten after every study. Results of studies a command does not run
are kept in the JSON when it was written at the same budget and seed.
"""

from __future__ import annotations

import argparse
import json
import platform
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy import stats

from neurofed import __version__
from neurofed.artifacts import sha256_file, write_text_atomically
from neurofed.evaluate import evaluate_model
from neurofed.evaluate.statistics import mean_with_ci, paired_comparison
from neurofed.federated.engine import run_simulation
from neurofed.federated.server.planning import read_run_plan
from neurofed.federated.server.run_folder import LAST_MODEL
from neurofed.federated.site import SiteConfig
from neurofed.federated.site.state import SITE_MODEL
from neurofed.federated.study import Study
from neurofed.keys import Marker, Split
from neurofed.phantom import PhantomConfig
from neurofed.phantom.oracle import auc_with_ci
from neurofed.tasks.glioma_multitask import marker_scores
from neurofed.training import train_local, train_pooled
from neurofed.training.baselines import train_transfer
from neurofed.training.defaults import default_train_config
from neurofed.training.records import finalize_metrics
from phantoms import checked_sites

#: Where results and (by default) work folders go.
RESULTS = Path(__file__).parent / "results"
REGIONS = ("ET", "TC", "WT")
MARKERS = ("idh", "codel_1p19q", "mgmt", "grade")


@dataclass(frozen=True)
class Budget:
    """Phantom size and training length of every study."""

    cases: int
    spacing: float
    rounds: int
    samples: int
    learning_rate: float
    #: Patches per round (or epoch) of the MS study. Its lesions are under 0.05 % of the voxels: a
    #: model predicts no lesion for its first few hundred steps (docs/reproduce.md), so it needs
    #: more steps than the other studies.
    lesion_samples: int


BUDGETS = {
    "quick": Budget(
        cases=8, spacing=4.0, rounds=6, samples=16, learning_rate=1e-2, lesion_samples=16
    ),
    "full": Budget(
        cases=24, spacing=2.0, rounds=20, samples=32, learning_rate=3e-3, lesion_samples=160
    ),
}

#: What each paper reported, as the tables print it.
PUBLISHED = {
    "fets": "consensus vs public initial: ET +27%, TC +33%, WT +16% (local validation); "
    "+15%, +27%, +16% (out-of-sample)",
    "ms": "site A: local Dice 0.88, federated 0.80; one-sided Wilcoxon local > federated "
    "p = 5.7e-14",
    "age": "federated MAE 6.08 vs centralised 7.02; r 0.88/0.91/0.93; SDMT deep MAE 9.19 vs "
    "shallow 11.05",
    "glioma": "AUC IDH 0.88, 1p/19q 0.84, MGMT 0.85, grade 0.94; median Dice 0.85 "
    "(no federated vs local or pooled comparison published)",
}


# -- plumbing ------------------------------------------------------------------------------------


def _sites(work: Path, name: str, budget: Budget, seed: int, **config: Any) -> list[Path]:
    """Generate (or keep) a phantom federation and check every site."""
    phantom = PhantomConfig(seed=seed, spacing=budget.spacing, **config)
    return checked_sites(work / name / "sites", phantom)


def _study(name: str, budget: Budget, seed: int, **tables: Any) -> Study:
    data = {
        "name": name,
        "rounds": budget.rounds,
        "local_epochs": 1,
        "min_sites": 1,
        "round_timeout_s": 1800.0,
        "seed": seed,
        "strategy": {"name": "fedavg"},
    } | tables
    return Study.from_dict(data, source=f"bench/reproduce.py {name}")


def _baseline(study: Study, sites: int, device: str, run_dir: Path | None = None) -> Any:
    plan = read_run_plan(run_dir, study)[0] if run_dir is not None and study.plan else None
    return study.baseline_config(sites, device=device, plan=plan)


def _cases(model: Path, site: Path, split: Split | None) -> tuple[dict[str, np.ndarray], Any]:
    """Per-case arrays and the finalised metrics of ``model`` on ``split`` of ``site``."""
    state, _, trained = evaluate_model(model, site, split)
    return {k: np.asarray(v) for k, v in state.cases.items()}, finalize_metrics(trained.task, state)


def _errors(cases: Mapping[str, np.ndarray], target: str) -> np.ndarray:
    """``prediction - target`` per case of a regression model's cases."""
    return np.asarray(cases[f"{target}/prediction"] - cases[f"{target}/target"])


def _abs_errors(cases: Mapping[str, np.ndarray], target: str) -> dict[str, np.ndarray]:
    """``{target: |prediction - target|}`` per case of a regression model's cases."""
    return {target: np.abs(_errors(cases, target))}


def _bias(cases: Mapping[str, np.ndarray], target: str) -> float:
    """Mean of prediction - target over a regression model's cases."""
    return float(np.mean(_errors(cases, target)))


def _joined(parts: Sequence[Mapping[str, np.ndarray]], key: str) -> np.ndarray:
    return np.concatenate([np.asarray(p[key], dtype=np.float64) for p in parts])


def _compare(a: np.ndarray, b: np.ndarray, seed: int) -> dict[str, Any]:
    keep = np.isfinite(a) & np.isfinite(b)
    result = paired_comparison(a[keep], b[keep], seed=seed).to_json()
    return result | {"a": mean_with_ci(a[keep]).to_json(), "b": mean_with_ci(b[keep]).to_json()}


def _pct(new: float | None, old: float | None) -> float | None:
    return None if not new or not old else round(100.0 * (new - old) / old, 1)


# -- the four studies ---------------------------------------------------------------------------


def fets(work: Path, budget: Budget, seed: int, device: str) -> dict[str, Any]:
    """Public initial model (site 1) → FedAvg over sites 2-4 → site 5 out of sample."""
    sites = _sites(work, "fets", budget, seed, preset="glioma", sites=5, cases=budget.cases)
    task = {"id": "tumor-regions"}
    train = {
        "batch_size": 2,
        "learning_rate": budget.learning_rate,
        "patch_shape": [32, 32, 32],
        "samples_per_epoch": budget.samples,
        "foreground_probability": 0.5,
        "preprocess": {"spacing": [budget.spacing] * 3},
    }
    model = {"base_filters": 4, "depth": 4, "num_res_units": 1}
    selection = {"metric": "WT/dice_pooled", "direction": "max"}
    public_study = _study(
        "fets-public", budget, seed, task=task, model=model, train=train, selection=selection
    )
    public = work / "fets" / "public"
    train_local(_baseline(public_study, 1, device), sites[0], public)
    weights = public / "model" / "weights.safetensors"
    initial = {"path": str(public / "model"), "sha256": sha256_file(weights)}
    study = _study(
        "fets-consensus",
        budget,
        seed,
        task=task,
        model=model,
        train=train,
        selection=selection,
        initial_model=initial,
    )
    run = run_simulation(study, sites[1:4], work / "fets" / "federated", device=device)
    consensus = run.run_dir / LAST_MODEL
    out: dict[str, Any] = {"published": PUBLISHED["fets"]}
    for column, jobs in (
        ("local validation", [(s, Split.VALIDATION) for s in sites[1:4]]),
        ("out-of-sample", [(sites[4], None)]),
    ):
        before = [_cases(public / "model", s, split)[0] for s, split in jobs]
        after = [_cases(consensus, s, split)[0] for s, split in jobs]
        rows = {}
        for region in REGIONS:
            key = f"{region}/dice"
            compared = _compare(_joined(after, key), _joined(before, key), seed)
            compared["change_pct"] = _pct(compared["a"]["mean"], compared["b"]["mean"])
            rows[region] = compared
        out[column] = rows
    out["claims"] = {
        f"consensus > initial, {column}, {region}": bool(
            rows[region]["difference"] is not None
            and rows[region]["difference"] > 0
            and rows[region]["p"] is not None
            and rows[region]["p"] < 0.05
        )
        for column in ("local validation", "out-of-sample")
        for region, rows in [(r, out[column]) for r in REGIONS]
    }
    return out


def ms(work: Path, budget: Budget, seed: int, device: str) -> dict[str, Any]:
    """Sites A, B, C of unequal size: FedAvg against each site's local model."""
    c = budget.cases
    sizes = {1: max(4, round(1.5 * c)), 2: max(4, 3 * c), 3: max(4, c // 2)}
    sites = _sites(work, "ms", budget, seed, preset="ms", sites=3, cases=c, site_cases=sizes)
    train = {
        "learning_rate": budget.learning_rate,
        "samples_per_epoch": budget.lesion_samples,
        "foreground_probability": 0.5,
    }
    plan = {"source": "fingerprint", "memory_budget_gb": 0.5, "base_filters": 4, "max_filters": 32}
    study = _study(
        "ms-fedavg",
        budget,
        seed,
        task={"id": "ms-lesion"},
        train=train,
        plan=plan,
        selection={"metric": "dice_pooled", "direction": "max"},
    )
    run = run_simulation(study, sites, work / "ms" / "federated", device=device)
    federated = run.run_dir / LAST_MODEL
    out: dict[str, Any] = {"published": PUBLISHED["ms"], "sizes": sizes, "sites": {}}
    for k, site in enumerate(sites, start=1):
        local = work / "ms" / f"local-{k}"
        train_local(_baseline(study, 1, device, run.run_dir), site, local)
        mine, local_metrics = _cases(local / "model", site, Split.VALIDATION)
        theirs, federated_metrics = _cases(federated, site, Split.VALIDATION)
        pooled = ("dice_pooled", "sensitivity", "precision", "lesion_f1")
        row: dict[str, Any] = {
            "pooled": {
                "local": {k: local_metrics.get(k) for k in pooled},
                "federated": {k: federated_metrics.get(k) for k in pooled},
            }
        }
        for name in sorted(set(mine) & {"dice", "sensitivity", "precision"}):
            row[name] = _compare(mine[name], theirs[name], seed)  # local − federated
        if "dice" in mine and len(mine["dice"]) > 0:
            diff = np.asarray(mine["dice"]) - np.asarray(theirs["dice"])
            p = (
                1.0
                if not np.any(diff)
                else float(stats.wilcoxon(diff, alternative="greater").pvalue)
            )
            row["one_sided_p_local_greater"] = p
        out["sites"]["ABC"[k - 1]] = row
    a = out["sites"]["A"]
    out["claims"] = {
        "local > federated at site A (one-sided p < 0.05)": bool(
            a.get("one_sided_p_local_greater", 1.0) < 0.05
        )
    }
    return out


def age(work: Path, budget: Budget, seed: int, device: str) -> dict[str, Any]:
    """FedAvg vs centralised brain age; then SDMT transfer, deep vs shallow and federated."""
    sites = _sites(work, "age", budget, seed, preset="brain-age", sites=3, cases=budget.cases)
    # trained as `neurofed train` trains brain age: one field of view for every case, without
    # augmentation or dropout (with them, 480 steps did not fit even the training cases)
    view = default_train_config("brain-age", spacing=budget.spacing).preprocess.spatial_shape
    train = {
        "batch_size": 4,
        "learning_rate": budget.learning_rate,
        "samples_per_epoch": budget.samples,
        "augment": False,
        "preprocess": {"spacing": [budget.spacing] * 3, "spatial_shape": list(view or ())},
    }
    model = {"width": 0.125, "dropout": 0.0}
    select = {"metric": "mae", "direction": "min"}
    tables = {"task": {"id": "brain-age"}, "model": model, "train": train, "selection": select}
    study = _study("age-fedavg", budget, seed, **tables)
    run = run_simulation(study, sites, work / "age" / "federated", device=device)
    pooled = work / "age" / "pooled"
    train_pooled(_baseline(study, len(sites), device), sites, pooled)
    # the mechanism (docs/reproduce.md): centralised, but each batch from one site, as FedAvg's
    by_site = work / "age" / "pooled-by-site"
    config = _baseline(study, len(sites), device).with_changes(batches_by_site=True)
    train_pooled(config, sites, by_site)
    # FedBN beside the paper's FedAvg: each site keeps its norm layers, and is scored with the
    # model it validated (the global weights with its own layers, its `site-model/`)
    fedbn = _study("age-fedbn", budget, seed, **tables, strategy={"name": "fedbn"})
    run_simulation(fedbn, sites, work / "age" / "fedbn", device=device)
    own = {s: SiteConfig(s).study_state_dir(fedbn.content_hash) / SITE_MODEL for s in sites}
    models = {
        "federated": dict.fromkeys(sites, run.run_dir / LAST_MODEL),
        "centralised": dict.fromkeys(sites, pooled / "model"),
        "central, batches by site": dict.fromkeys(sites, by_site / "model"),
        "FedBN": own,
    }
    out: dict[str, Any] = {"published": PUBLISHED["age"], "age": {}, "sdmt": {}, "paired": {}}
    errors: dict[str, np.ndarray] = {}
    for name, folders in models.items():
        scored = {s: _cases(folders[s], s, Split.VALIDATION) for s in sites}
        out["age"][name] = {
            s.name: {"mae": m.get("mae"), "r": m.get("pearson_r"), "bias": _bias(c, "age")}
            for s, (c, m) in scored.items()
        }
        errors[name] = _joined([_abs_errors(c, "age") for c, _ in scored.values()], "age")
    for name in ("federated", "central, batches by site", "FedBN"):  # |error|, case by case
        out["paired"][f"age: {name} vs centralised"] = _compare(
            errors[name], errors["centralised"], seed
        )
    changes = {
        "epochs": budget.rounds,
        "learning_rate": budget.learning_rate,
        "device": device,
        "samples_per_epoch": budget.samples * len(sites),
    }
    for mode in ("full", "head"):
        folder = work / "age" / f"sdmt-{mode}"
        train_transfer(pooled / "model", sites, folder, mode=mode, changes=changes)
        scored = {s: _cases(folder / "model", s, Split.VALIDATION) for s in sites}
        out["sdmt"][f"centralised {mode}"] = {s.name: m.get("mae") for s, (_, m) in scored.items()}
        errors[mode] = _joined([_abs_errors(c, "sdmt") for c, _ in scored.values()], "sdmt")
    out["paired"]["sdmt: deep (full) vs shallow (head)"] = _compare(
        errors["full"], errors["head"], seed
    )
    source = run.run_dir / LAST_MODEL
    initial = {"path": str(source), "sha256": sha256_file(source / "weights.safetensors")}
    sdmt_task = {"id": "brain-age", "target": "sdmt", "target_mean": 45.0, "target_std": 10.0}
    transfer = _study(
        "sdmt-federated", budget, seed, **tables | {"task": sdmt_task}, initial_model=initial
    )
    moved = run_simulation(transfer, sites, work / "age" / "sdmt-federated", device=device)
    out["sdmt"]["federated full"] = {
        s.name: _cases(moved.run_dir / LAST_MODEL, s, Split.VALIDATION)[1].get("mae") for s in sites
    }

    def mean(values: Mapping[str, float | None]) -> float:
        known = [v for v in values.values() if v is not None and np.isfinite(v)]
        return float(np.mean(known)) if known else float("nan")

    fed = mean({k: v["mae"] for k, v in out["age"]["federated"].items()})
    central = mean({k: v["mae"] for k, v in out["age"]["centralised"].items()})
    out["claims"] = {
        "federated MAE <= centralised MAE": bool(fed <= central),
        "deep (full) SDMT transfer beats shallow (head)": bool(
            mean(out["sdmt"]["centralised full"]) < mean(out["sdmt"]["centralised head"])
        ),
    }
    return out


def glioma(work: Path, budget: Budget, seed: int, device: str) -> dict[str, Any]:
    """Multi-task FedAvg vs local-only vs pooled on a held-out site: marker AUCs and WT Dice."""
    sites = _sites(
        work,
        "glioma",
        budget,
        seed,
        preset="glioma",
        sites=4,
        cases=budget.cases,
        site_cases={4: 2 * budget.cases},
    )
    training, held_out = sites[:3], sites[3]
    train = {
        "batch_size": 2,
        "learning_rate": budget.learning_rate,
        "samples_per_epoch": budget.samples,
        "preprocess": {"spacing": [budget.spacing] * 3},
    }
    study = _study(
        "glioma-multitask",
        budget,
        seed,
        task={"id": "glioma-multitask"},
        model={"base_filters": 4},
        train=train,
        selection={"metric": "WT/dice_pooled", "direction": "max"},
    )
    run = run_simulation(study, training, work / "glioma" / "federated", device=device)
    models = {"federated": run.run_dir / LAST_MODEL}
    pooled = work / "glioma" / "pooled"
    train_pooled(_baseline(study, len(training), device), training, pooled)
    models["pooled"] = pooled / "model"
    for k, site in enumerate(training, start=1):
        folder = work / "glioma" / f"local-{k}"
        train_local(_baseline(study, 1, device), site, folder)
        models[f"local site-{k}"] = folder / "model"
    out: dict[str, Any] = {"published": PUBLISHED["glioma"], "models": {}, "paired": {}}
    dice: dict[str, np.ndarray] = {}
    for name, folder in models.items():
        cases, metrics = _cases(folder, held_out, None)
        dice[name] = np.asarray(cases["WT/dice"], dtype=np.float64)  # same case order for all
        row: dict[str, Any] = {"WT/dice": metrics.get("WT/dice")}
        scored = marker_scores(cases)  # grade: IV against II and III, as grade/IV/auc
        for marker in MARKERS:
            row[f"{marker}/auc"] = auc_with_ci(*scored[Marker(marker)], seed=seed).to_json()
        out["models"][name] = row
    for name in models:  # WT Dice case by case on the held-out site (no paper to compare with)
        if name != "federated":
            out["paired"][f"WT Dice: federated vs {name}"] = _compare(
                dice["federated"], dice[name], seed
            )
    out["claims"] = {
        "federated AUC >= mean local-only AUC, " + marker: bool(
            (out["models"]["federated"][f"{marker}/auc"]["auc"] or 0.0)
            >= np.nanmean(
                [
                    out["models"][m][f"{marker}/auc"]["auc"] or np.nan
                    for m in models
                    if m.startswith("local")
                ]
            )
        )
        for marker in MARKERS
    }
    return out


STUDIES: dict[str, Callable[[Path, Budget, int, str], dict[str, Any]]] = {
    "fets": fets,
    "ms": ms,
    "age": age,
    "glioma": glioma,
}


def _n(value: Any, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _table(name: str, result: Mapping[str, Any]) -> list[str]:
    """The rows a person compares with the paper (the JSON holds everything)."""
    lines = []
    if name == "fets":
        lines.append(
            f"{'column':<17}{'region':<7}{'initial':>8}{'consensus':>10}{'change':>8}{'p':>9}"
        )
        for column in ("local validation", "out-of-sample"):
            for region, row in result[column].items():
                change = row["change_pct"]
                lines.append(
                    f"{column:<17}{region:<7}{_n(row['b']['mean']):>8}{_n(row['a']['mean']):>10}"
                    f"{'n/a' if change is None else f'{change:+.0f}%':>8}{_n(row['p'], 4):>9}"
                )
    elif name == "ms":
        lines.append(f"{'site':<5}{'metric':<12}{'local':>7}{'federated':>10}{'p (two-sided)':>14}")
        for site, row in result["sites"].items():
            for metric in ("dice", "sensitivity", "precision"):
                if metric in row:
                    r = row[metric]
                    lines.append(
                        f"{site:<5}{metric:<12}{_n(r['a']['mean']):>7}{_n(r['b']['mean']):>10}"
                        f"{_n(r['p'], 4):>14}"
                    )
            pooled = row.get("pooled", {"local": {}, "federated": {}})
            for metric, value in pooled["local"].items():
                theirs = pooled["federated"][metric]
                lines.append(f"{site:<5}{metric:<12}{_n(value):>7}{_n(theirs):>10}{'(sums)':>14}")
            lines.append(
                f"{site:<5}one-sided p (local > federated, Dice): "
                f"{_n(row.get('one_sided_p_local_greater'), 4)}"
            )
    elif name == "age":
        for model, sites in result["age"].items():
            shown = ", ".join(
                f"{s} MAE {_n(v['mae'], 2)} r {_n(v['r'], 2)} bias {_n(v.get('bias'), 1)}"
                for s, v in sites.items()
            )
            lines.append(f"age  {model:<24} {shown}")
        for model, sites in result["sdmt"].items():
            shown = ", ".join(f"{s} MAE {_n(v, 2)}" for s, v in sites.items())
            lines.append(f"sdmt {model:<17} {shown}")
        lines += _paired(result, digits=2)  # mean absolute error, all sites
    elif name == "glioma":
        header = "".join(f"{m + ' AUC':>20}" for m in MARKERS)
        lines.append(f"{'model':<15}{'WT Dice':>8}{header}")
        for model, row in result["models"].items():
            cells = "".join(f"{_auc_cell(row[f'{m}/auc']):>20}" for m in MARKERS)
            lines.append(f"{model:<15}{_n(row['WT/dice']):>8}{cells}")
        lines += _paired(result, digits=3)
    return lines


def _paired(result: Mapping[str, Any], digits: int) -> list[str]:
    """One line per paired comparison: both means, the difference, its 95 % CI and p."""
    lines = []
    for pair, row in result.get("paired", {}).items():
        low, high = row["ci"]
        lines.append(
            f"{pair}: {_n(row['a']['mean'], digits)} vs {_n(row['b']['mean'], digits)}, "
            f"difference {_n(row['difference'], digits)} [{_n(low, digits)}, "
            f"{_n(high, digits)}], p {_n(row['p'], 4)} (n {row['n']})"
        )
    return lines


def _auc_cell(auc: Mapping[str, Any]) -> str:
    low, high = auc["ci"]
    return f"{_n(auc['auc'], 2)} [{_n(low, 2)}, {_n(high, 2)}]"


def _print(name: str, result: Mapping[str, Any], seconds: float) -> None:
    print(f"\n== {name} ({seconds:.0f} s)")
    print(f"published: {result['published']}")
    if "error" in result:
        print(f"  failed: {result['error']}")
        return
    for line in _table(name, result):
        print(f"  {line}")
    for claim, holds in result["claims"].items():
        print(f"  {'reproduces' if holds else 'does not reproduce'}: {claim}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--only", default=",".join(STUDIES), help="comma-separated studies")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--device", default="cpu", help="where every model trains: cpu, cuda or cuda:<n>"
    )
    parser.add_argument(
        "--work",
        type=Path,
        default=None,
        help="work folder, resumed when it exists "
        "(default: bench/results/reproduce-<budget>-seed<N>)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "reproduce.json")
    parser.add_argument("--show", type=Path, default=None, help="print a results JSON again")
    args = parser.parse_args()
    if args.show is not None:
        shown = json.loads(args.show.read_text(encoding="utf-8"))
        for name, result in shown["studies"].items():
            _print(name, result, float(result.get("seconds", 0.0)))
        return
    budget = BUDGETS[args.budget]
    work = args.work or RESULTS / f"reproduce-{args.budget}-seed{args.seed}"
    chosen = [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = sorted(set(chosen) - set(STUDIES))
    if unknown:
        parser.error(f"unknown studies {unknown}; choose from {', '.join(STUDIES)}")
    payload = {
        "benchmark": "reproduce",
        "neurofed": __version__,
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "budget": {"name": args.budget} | asdict(budget),
        "seed": args.seed,
        "work": str(work),
        "studies": _kept_studies(args.out, args.budget, args.seed),
    }
    print(f"work folder {work} (run the same command again to resume)")
    for name in chosen:
        began = time.perf_counter()
        try:
            result = STUDIES[name](work, budget, args.seed, args.device)
        except Exception as error:  # one study failing must not hide the others' results
            result = {"published": PUBLISHED[name], "error": repr(error), "claims": {}}
        result["seconds"] = round(time.perf_counter() - began, 1)
        result["finished"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
        _print(name, result, result["seconds"])
        payload["studies"][name] = result
        _write(args.out, payload)
    print(f"\nwrote {args.out}")


def _kept_studies(out: Path, budget: str, seed: int) -> dict[str, Any]:
    """The studies of an earlier JSON at ``out`` written at the same budget and seed."""
    try:
        earlier = json.loads(out.read_text(encoding="utf-8"))
        same = earlier["budget"]["name"] == budget and earlier["seed"] == seed
        return dict(earlier["studies"]) if same else {}
    except (OSError, ValueError, KeyError, TypeError):  # none yet, or not one of ours
        return {}


def _write(out: Path, payload: Mapping[str, Any]) -> None:
    """Write the JSON whole or not at all (a stop mid-write keeps the previous one)."""
    out.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomically(out, json.dumps(payload, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
