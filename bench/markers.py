"""Marker AUCs on the glioma phantom: the oracle's ceiling, a shallow baseline, a deep model.

Per marker of ``glioma-multitask`` (IDH, 1p/19q, MGMT, and grade as WHO IV vs II–III, the task's
``grade/IV/auc``), with 95 % bootstrap intervals:

- **oracle (population)**: the best of a logistic regression and gradient boosting fitted on the
  tumour latents the phantom renders (``neurofed.phantom.oracle``), ``--draws`` training cases
  from one set of sites, scored on ``--draws`` cases from other sites — the ceiling of any image
  model over the phantom's population;
- **oracle (test site)**: the same fitted oracle on the held-out site's own cases (the cases the
  next rows are scored on; a site's grade mix moves every AUC);
- **shallow (test site)**: hand-crafted features inside the *ground-truth* label map + logistic
  regression (``neurofed.phantom.shallow``), trained on the other sites' cases, scored on the
  held-out site's cases;
- **shallow (leave-one-site-out)**: every site held out in turn, the out-of-site scores of all
  cases pooled (more cases, tighter intervals);
- **deep** (with ``--deep RUN_OR_MODEL``): a trained ``glioma-multitask`` model folder scored on
  every case of the held-out site (``neurofed.evaluate.evaluate_model``);
- **deep, E epochs** (with ``--train-epochs E1,E2,…``): the budget sweep — a ``glioma-multitask``
  model trained here on the other sites' training cases pooled (``train_pooled``, the task's
  default network and schedule at ``--train-spacing`` mm, ``E`` epochs), one run folder per
  budget under ``--work`` (an interrupted sweep resumes), scored on every case of the held-out
  site. The summary names the smallest budget whose AUC reaches 0.9× the population oracle on
  each marker;
- **FedAvg, E epochs** (with ``--federated``): the same training as a federated study over the
  same sites (NVFlare's simulator, one local epoch a round, ``E`` rounds, its last model as the
  pooled model is its last epoch), scored alike and compared with the pooled model of the same
  budget on the same held-out cases (DeLong's test on each marker's AUC).

A phantom of ``--sites`` sites of ``--cases`` cases is generated under ``--work`` (or an existing
one is read with ``--phantom``, e.g. the sites a deep model was trained on); the held-out site is
the last one unless ``--test-site`` says otherwise. Cases deliberately broken, unlabelled sites
and sites lacking a modality are left out, and a marker a site does not record is neither trained
nor scored there. The label maps are the sites' own (each site's annotators draw the border a
little looser or tighter), so the shallow features carry that site effect too.

Usage::

    python bench/markers.py [--sites 5] [--cases 60] [--spacing 2] [--seed 0] [--test-site K]
                            [--draws 20000] [--resamples 1000] [--workers 2] [--work DIR]
                            [--phantom DIR] [--deep RUN_OR_MODEL] [--out FILE]
                            [--train-epochs 10,30] [--train-spacing 4] [--threads N]
                            [--federated]

Prints a table and writes JSON (default ``bench/results/markers.json``).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from neurofed import __version__
from neurofed.data.manifest import check_site
from neurofed.data.subject import Clinical
from neurofed.evaluate.roc import DelongComparison, delong_test
from neurofed.federated.engine import run_simulation
from neurofed.federated.server.run_folder import LAST_MODEL
from neurofed.federated.study import Study
from neurofed.federated.study.parse import SETTABLE_TRAIN_FIELDS
from neurofed.keys import ClinicalField, Marker, TaskId
from neurofed.phantom import (
    MANIFEST,
    CaseRecord,
    PhantomConfig,
    PhantomPreset,
    generate_federation,
)
from neurofed.phantom.oracle import (
    ORACLE_TARGETS,
    AucEstimate,
    LatentDraws,
    OracleResult,
    auc_with_ci,
    case_latents,
    fit_scores,
    oracle_table,
    population_draws,
)
from neurofed.phantom.shallow import SHALLOW_FEATURES, read_case_features, shallow_scores
from neurofed.training import TrainConfig, train_pooled
from neurofed.training.defaults import default_train_config
from neurofed.training.records import EpochRecord

F64 = npt.NDArray[np.float64]

#: The clinical field that records each target at a site (grade IV vs II–III comes from grade).
_FIELD = {m: ClinicalField(m.value) for m in ORACLE_TARGETS}
_LABELS = {
    Marker.IDH: "IDH",
    Marker.CODEL_1P19Q: "1p/19q",
    Marker.MGMT: "MGMT",
    Marker.GRADE: "grade IV",
}


@dataclass(frozen=True)
class Cases:
    """The usable cases of the phantom: features, latents, targets and what each site records."""

    subject_ids: list[str]
    sites: npt.NDArray[np.int64]
    features: F64  # (N, len(SHALLOW_FEATURES))
    latents: F64  # (N, len(LATENTS))
    targets: dict[Marker, npt.NDArray[np.int64]]
    known: dict[Marker, npt.NDArray[np.bool_]]  # the site records the marker


def _target(clinical: Clinical, marker: Marker) -> int:
    if marker is Marker.GRADE:
        return int(clinical.grade == 4)
    return int(bool(clinical.get(_FIELD[marker])))


def _phantom(args: argparse.Namespace) -> tuple[Path, dict[str, Any]]:
    """An existing phantom (``--phantom``), or the one under ``--work`` (generated if needed)."""
    if args.phantom is not None:
        root = Path(args.phantom)
        return root, json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    config = PhantomConfig(
        preset=PhantomPreset.GLIOMA,
        sites=args.sites,
        cases=args.cases,
        seed=args.seed,
        spacing=args.spacing,
    )
    root = Path(args.work) / "phantom"
    manifest = root / MANIFEST
    if manifest.is_file():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        if stored.get("config") == config.to_json():
            print(f"reusing the phantom in {root}", flush=True)
            return root, stored
    start = time.perf_counter()
    print(
        f"generating {args.sites} sites x {args.cases} cases at {args.spacing:g} mm …", flush=True
    )
    generate_federation(config, root, workers=args.workers)
    print(f"  {time.perf_counter() - start:.0f} s", flush=True)
    return root, json.loads(manifest.read_text(encoding="utf-8"))


def _cases(root: Path, manifest: dict[str, Any]) -> Cases:
    """Features of every readable, labelled case; its latents and true targets from the
    manifest; a marker counts as known where the site's clinical table records it."""
    site_info = {int(s["site"]): s for s in manifest["sites"]}
    ids, sites, features, latents = [], [], [], []
    targets: dict[Marker, list[int]] = {m: [] for m in ORACLE_TARGETS}
    known: dict[Marker, list[bool]] = {m: [] for m in ORACLE_TARGETS}
    for data in manifest["cases"]:
        record = CaseRecord.from_json(data)
        params, info = record.params, site_info[record.params.site]
        if params.broken is not None or not info["labelled"] or info.get("missing_modalities"):
            continue  # the shallow features need every modality and the label map
        features.append([*read_case_features(root / info["dir"], params.subject_id).values()])
        latents.append(case_latents(params))
        ids.append(params.subject_id)
        sites.append(params.site)
        missing = {str(f) for f in info.get("missing", [])}
        for m in ORACLE_TARGETS:
            targets[m].append(_target(params.clinical, m))
            known[m].append(_FIELD[m].value not in missing)
    return Cases(
        subject_ids=ids,
        sites=np.asarray(sites, dtype=np.int64),
        features=np.asarray(features, dtype=np.float64),
        latents=np.asarray(latents, dtype=np.float64),
        targets={m: np.asarray(v, dtype=np.int64) for m, v in targets.items()},
        known={m: np.asarray(v, dtype=bool) for m, v in known.items()},
    )


def _shallow_held_out(
    cases: Cases, test_sites: Sequence[int], seed: int, resamples: int
) -> dict[Marker, AucEstimate]:
    """Train on every other site, score each site of ``test_sites`` in turn, pool the scores."""
    out = {}
    for m in ORACLE_TARGETS:
        ys, scores = [], []
        for site in test_sites:
            train = (cases.sites != site) & cases.known[m]
            test = (cases.sites == site) & cases.known[m]
            if not test.any():
                continue
            ys.append(cases.targets[m][test])
            scores.append(
                shallow_scores(cases.features[train], cases.targets[m][train], cases.features[test])
            )
        y = np.concatenate(ys) if ys else np.array([], np.int64)
        s = np.concatenate(scores) if scores else np.array([])
        finite = np.isfinite(s)
        out[m] = auc_with_ci(y[finite], s[finite], seed=seed, resamples=resamples)
    return out


def _oracle_on_cases(
    cases: Cases,
    site: int,
    train: LatentDraws,
    population: dict[Marker, OracleResult],
    seed: int,
    resamples: int,
) -> dict[Marker, AucEstimate]:
    """The population oracle (its better classifier) scored on the test site's own cases."""
    out = {}
    for m in ORACLE_TARGETS:
        test = (cases.sites == site) & cases.known[m]
        model = population[m].best
        scores = fit_scores(model, train.latents, train.targets[m], cases.latents[test], seed=seed)
        out[m] = auc_with_ci(cases.targets[m][test], scores, seed=seed, resamples=resamples)
    return out


def _model_folder(path: Path) -> Path:
    for folder in (path, path / "model"):
        if (folder / "model.json").is_file():
            return folder
    raise SystemExit(
        f"--deep {path}: no model.json there nor in {path / 'model'}; give a run "
        "folder of a glioma-multitask training or its model/ folder"
    )


Scored = dict[Marker, tuple[npt.NDArray[np.int64], F64]]


def _deep(model: Path, site_dir: Path, seed: int, resamples: int) -> dict[Marker, AucEstimate]:
    """Every case of ``site_dir`` scored by the model; AUCs from its per-case scores."""
    return _aucs(_scored(model, site_dir), seed, resamples)


def _aucs(scored: Scored, seed: int, resamples: int) -> dict[Marker, AucEstimate]:
    return {m: auc_with_ci(*scored[m], seed=seed, resamples=resamples) for m in ORACLE_TARGETS}


def _scored(model: Path, site_dir: Path) -> Scored:
    """Per marker, the true classes and the model's scores of every case of ``site_dir``
    (the same case order for every model)."""
    from neurofed.data.manifest import check_site
    from neurofed.data.splits import site_splits
    from neurofed.evaluate import evaluate_model
    from neurofed.tasks.glioma_multitask import marker_scores
    from neurofed.training import load_model

    trained = load_model(_model_folder(model), task=TaskId.GLIOMA_MULTITASK)
    report = check_site(site_dir)
    site_splits(site_dir, report.manifest.subjects)
    state, dataset, _ = evaluate_model(trained, site_dir, split=None)
    print(f"  deep model scored {len(dataset)} cases of {site_dir.name}", flush=True)
    return marker_scores(state.cases)  # grade: IV against II and III, as grade/IV/auc


def _training_sites(root: Path, manifest: dict[str, Any], test_site: int) -> list[Path]:
    """Every usable site but ``test_site``, checked."""
    sites = [
        root / str(s["dir"])
        for s in manifest["sites"]
        if int(s["site"]) != test_site and s["labelled"] and not s.get("missing_modalities")
    ]
    for site in sites:
        check_site(site)
    return sites


def _config(epochs: int, args: argparse.Namespace) -> TrainConfig:
    """The task's default training at ``--train-spacing`` for ``epochs`` epochs."""
    return default_train_config(
        TaskId.GLIOMA_MULTITASK,
        spacing=args.train_spacing,
        device="cpu",
        epochs=epochs,
        validate_every=epochs,
        seed=args.seed,
    )


def _train_federated(sites: list[Path], epochs: int, args: argparse.Namespace) -> Path:
    """FedAvg over ``sites`` for ``epochs`` rounds of one local epoch (NVFlare's simulator),
    with the pooled model's settings; its last model (as the pooled model is its last epoch)."""
    config = _config(epochs, args).to_json()
    train = {k: config[k] for k in SETTABLE_TRAIN_FIELDS if config[k] is not None}
    study = Study.from_dict(
        {
            "name": "markers",
            "rounds": epochs,
            "local_epochs": 1,
            "min_sites": len(sites),
            "round_timeout_s": 3600.0,
            "seed": args.seed,
            "strategy": {"name": "fedavg"},
            "selection": {"metric": "WT/dice_pooled", "direction": "max"},
            "task": {"id": TaskId.GLIOMA_MULTITASK.value, **config["task_config"]},
            "model": config["model_config"],
            "train": train,  # validated once, after the last round
        },
        source="bench/markers.py",
    )
    run = Path(args.work) / f"fedavg-{args.train_spacing:g}mm-{epochs}r"
    print(f"FedAvg over {len(sites)} sites for {epochs} rounds → {run}", flush=True)
    return run_simulation(study, sites, run, device="cpu").run_dir / LAST_MODEL


def _train_deep(sites: list[Path], epochs: int, args: argparse.Namespace) -> Path:
    """A pooled ``glioma-multitask`` model of ``epochs`` epochs on ``sites``; its run folder
    resumes if interrupted."""
    config = _config(epochs, args)
    run = Path(args.work) / f"deep-{args.train_spacing:g}mm-{epochs}ep"
    print(
        f"training a pooled model on {len(sites)} sites for {epochs} epochs at "
        f"{args.train_spacing:g} mm → {run}",
        flush=True,
    )

    def report(record: EpochRecord) -> None:
        print(
            f"  epoch {record.epoch}/{epochs}: loss {record.train_loss:.3f} "
            f"({record.seconds:.0f} s)",
            flush=True,
        )

    train_pooled(config, sites, run, on_epoch=report)
    return run / "model"


def _cell(estimate: AucEstimate | None) -> str:
    if estimate is None:
        return "—"
    if math.isnan(estimate.auc):
        return f"n/a (n={estimate.n}, {estimate.num_positive}+)"
    low, high = estimate.ci
    return f"{estimate.auc:.3f} [{low:.3f}, {high:.3f}]"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sites", type=int, default=5, help="phantom sites (last one held out)")
    parser.add_argument("--cases", type=int, default=60, help="cases per phantom site")
    parser.add_argument("--spacing", type=float, default=2.0, help="phantom voxel size, mm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test-site", type=int, default=None, help="held-out site (default last)")
    parser.add_argument("--draws", type=int, default=20000, help="oracle draws per half")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--workers", type=int, default=1, help="processes rendering the phantom")
    parser.add_argument("--work", type=Path, default=None, help="folder for the phantom")
    parser.add_argument("--phantom", type=Path, default=None, help="use this existing phantom")
    parser.add_argument("--deep", type=Path, default=None, help="glioma-multitask run or model")
    parser.add_argument(
        "--train-epochs", default="", help="budgets to train and score, e.g. 10,30 (epochs)"
    )
    parser.add_argument("--train-spacing", type=float, default=4.0, help="training grid, mm")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training")
    parser.add_argument(
        "--federated",
        action="store_true",
        help="also train FedAvg over the same sites, one local epoch a round, per budget",
    )
    parser.add_argument("--out", type=Path, default=Path("bench/results/markers.json"))
    args = parser.parse_args()
    budgets = sorted({int(e) for e in args.train_epochs.split(",") if e.strip()})
    torch.set_num_threads(args.threads)
    if args.work is None:
        args.work = Path(tempfile.mkdtemp(prefix="bench-markers-"))
    began = time.perf_counter()
    seconds: dict[str, float] = {}

    start = time.perf_counter()
    print(f"oracle: {args.draws} + {args.draws} latent draws …", flush=True)
    train, test = population_draws(args.seed, args.draws)
    population = oracle_table(train, test, seed=args.seed, resamples=args.resamples)
    seconds["oracle"] = time.perf_counter() - start

    root, manifest = _phantom(args)
    site_numbers = sorted(int(s["site"]) for s in manifest["sites"])
    test_site = site_numbers[-1] if args.test_site is None else args.test_site
    if test_site not in site_numbers:
        raise SystemExit(f"--test-site {test_site}: the phantom has sites {site_numbers}")
    start = time.perf_counter()
    cases = _cases(root, manifest)
    seconds["features"] = time.perf_counter() - start
    start = time.perf_counter()
    held_out = _shallow_held_out(cases, [test_site], args.seed, args.resamples)
    loso = _shallow_held_out(cases, site_numbers, args.seed, args.resamples)
    on_cases = _oracle_on_cases(cases, test_site, train, population, args.seed, args.resamples)
    seconds["shallow"] = time.perf_counter() - start
    deep: dict[Marker, AucEstimate] | None = None
    if args.deep is not None:
        start = time.perf_counter()
        site_dir = root / f"site-{test_site}"
        deep = _deep(args.deep, site_dir, args.seed, args.resamples)
        seconds["deep"] = time.perf_counter() - start
    swept: dict[int, dict[Marker, AucEstimate]] = {}
    federated: dict[int, dict[Marker, AucEstimate]] = {}  # with --federated
    paired: dict[int, dict[Marker, DelongComparison]] = {}  # FedAvg vs pooled, same cases
    training = _training_sites(root, manifest, test_site) if budgets else []
    test_dir = root / f"site-{test_site}"
    for epochs in budgets:
        start = time.perf_counter()
        pooled = _scored(_train_deep(training, epochs, args), test_dir)
        swept[epochs] = _aucs(pooled, args.seed, args.resamples)
        seconds[f"deep {epochs} epochs"] = time.perf_counter() - start
        if args.federated:
            start = time.perf_counter()
            fedavg = _scored(_train_federated(training, epochs, args), test_dir)
            federated[epochs] = _aucs(fedavg, args.seed, args.resamples)
            paired[epochs] = {
                m: delong_test(fedavg[m][1], pooled[m][1], fedavg[m][0]) for m in ORACLE_TARGETS
            }
            seconds[f"FedAvg {epochs} rounds"] = time.perf_counter() - start
    seconds["total"] = time.perf_counter() - began

    columns = ["oracle (population)", f"oracle (site-{test_site})", f"shallow (site-{test_site})"]
    columns += ["shallow (leave-one-site-out)"] + ([f"deep (site-{test_site})"] if deep else [])
    columns += [f"deep {e} ep (site-{test_site})" for e in budgets]
    columns += [f"FedAvg {e} rounds (site-{test_site})" for e in federated]
    rows = []
    for m in ORACLE_TARGETS:
        cells = [population[m].estimate, on_cases[m], held_out[m], loso[m]]
        cells += [deep[m]] if deep else []
        cells += [swept[e][m] for e in budgets]
        cells += [federated[e][m] for e in federated]
        rows.append((m, cells))
    reached = {
        m: next(
            (e for e in budgets if swept[e][m].auc >= 0.9 * population[m].auc),
            None,
        )
        for m in ORACLE_TARGETS
    }
    width = 28
    print()
    print(f"{'marker':<9}" + "".join(f"{c:>{width + 2}}" for c in columns))
    for m, cells in rows:
        print(f"{_LABELS[m]:<9}" + "".join(f"{_cell(c):>{width + 2}}" for c in cells))
    test_mask = cases.sites == test_site
    print(
        f"\ncases: {len(cases.sites)} usable ({int(test_mask.sum())} at site-{test_site}); "
        f"oracle best model: "
        + ", ".join(f"{_LABELS[m]} {population[m].best.value}" for m in ORACLE_TARGETS)
    )
    if budgets:
        print(
            f"deep at {args.train_spacing:g} mm reaches 0.9x the population oracle: "
            + ", ".join(
                f"{_LABELS[m]} " + ("not within the sweep" if e is None else f"at {e} epochs")
                for m, e in reached.items()
            )
        )
    for e, by_marker in paired.items():
        print(
            f"FedAvg {e} rounds vs pooled {e} epochs (DeLong, the same cases): "
            + "; ".join(
                f"{_LABELS[m]} {c.difference:+.3f} [{c.ci[0]:+.3f}, {c.ci[1]:+.3f}] "
                f"p {c.p_value:.3g}"
                for m, c in by_marker.items()
            )
        )
    print("seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in seconds.items()))

    report = {
        "benchmark": "markers",
        "what": "per-marker AUC [95% bootstrap CI]: oracle ceiling from the phantom's latents, "
        "shallow hand-crafted features in the ground-truth label map + logistic regression, and "
        "optionally a deep glioma-multitask model, on a held-out site",
        "neurofed": __version__,
        "phantom": {"root": str(root), "config": manifest["config"], "test_site": test_site},
        "settings": {
            "draws": args.draws,
            "resamples": args.resamples,
            "seed": args.seed,
            "deep": None if args.deep is None else str(args.deep),
            "train_epochs": budgets,
            "federated": args.federated,
            "train_spacing_mm": args.train_spacing,
        },
        "num_cases": len(cases.sites),
        "num_test_cases": int(test_mask.sum()),
        "shallow_features": list(SHALLOW_FEATURES),
        "markers": {
            m.value: {
                "oracle_population": population[m].to_json(),
                "oracle_test_site": on_cases[m].to_json(),
                "shallow_test_site": held_out[m].to_json(),
                "shallow_leave_one_site_out": loso[m].to_json(),
                **({"deep_test_site": deep[m].to_json()} if deep else {}),
                **(
                    {
                        "deep_by_epochs": {str(e): swept[e][m].to_json() for e in budgets},
                        "fedavg_by_rounds": {str(e): federated[e][m].to_json() for e in federated},
                        "fedavg_vs_pooled_by_budget": {
                            str(e): paired[e][m].to_json() for e in paired
                        },
                        "first_epochs_at_0.9_oracle": reached[m],
                    }
                    if budgets
                    else {}
                ),
            }
            for m in ORACLE_TARGETS
        },
        "seconds": {k: round(v, 1) for k, v in seconds.items()},
        "machine": {"python": platform.python_version(), "platform": sys.platform},
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
