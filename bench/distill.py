"""The multi-task glioma study's distillation-based FL, compared and attacked on the phantom.

Side by side on one ``glioma-multitask`` phantom federation (three training sites, a held-out
site of twice their size, and a fifth site as the *public proxy set* every party holds):

- **distill**: FedAvg plus condensed volumes and class-mean soft labels (``[strategy] name =
  "distill"``, its defaults; sites run with ``allow-condensed``);
- **distill + proxy**: the same without any derived image: logits on the public set
  (``proxy = "public-gliomas"``; sites hold it, as ``--public-dataset``);
- **fedavg, masked heads**: FedAvg with task-masked head averaging (``mask_heads = true``), and
  **fedavg** without (distill averages its heads unmasked, so this row tells the masking from the
  distillation);
- **local site-k**: each training site alone; **pooled**: all training cases in one place.

Every federated model runs on the real NVFlare simulator; every model is compared as it ended
(last round or epoch), on every case of the held-out site:

- per marker (IDH, 1p/19q, MGMT, grade IV vs II-III) the AUC with its 95 % bootstrap interval,
  and the **oracle** AUC (the phantom's latents through the best of two classifiers,
  ``neurofed.phantom.oracle``: the ceiling of any image model);
- whole-tumour Dice (mean and interval) and each model's paired difference to FedAvg on the same
  cases (Wilcoxon, ``neurofed.evaluate.statistics``);
- Grad-CAM of the IDH head: the share of the hottest 5 % of brain voxels inside the tumour;
- **bytes a site sends per round** (from the sites' payload records: parameters, and the
  condensed or proxy payload beside them);
- a **membership-inference attack** per payload kind, against site-1: can an attacker holding
  the payload tell site-1's training cases (members) from its validation cases (non-members)?
  AUC with interval (0.5 = no better than chance):

  - *parameters* (every strategy sends them): the site's update (one local epoch from the final
    FedAvg model), score = minus its loss on the case (Yeom et al. 2018);
  - *condensed volumes*: the volumes site-1 would send from the final distill model, score = the
    highest normalised cross-correlation of the case with any of them;
  - *class-mean logits*: score = minus the distance of the case's logits (final distill model)
    to the mean its class reported;
  - *proxy logits*: the attacker distils the final proxy model's heads on site-1's logits on the
    public cases (all it sees), score = minus that model's loss on the case.

Usage::

    python bench/distill.py [--budget quick|full] [--seed 0] [--work DIR] [--draws 5000]
                            [--resamples 1000] [--out FILE]

Prints a table and writes JSON (default ``bench/results/distill.json``). ``quick`` runs in
minutes on two cores: its numbers are a smoke run of the comparison, not evidence.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import platform
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from neurofed import __version__
from neurofed.evaluate import evaluate_model
from neurofed.evaluate.explain import TOP_FRACTION, head_heatmaps, top_share_inside
from neurofed.evaluate.statistics import mean_with_ci, paired_comparison
from neurofed.federated.condensed import PROXY_FINGERPRINT
from neurofed.federated.engine import run_simulation
from neurofed.federated.server.run_folder import LAST_MODEL
from neurofed.federated.site.distill import condensed_payload, digest, load_proxy, proxy_payload
from neurofed.federated.strategies.distill import DistillParams
from neurofed.federated.study import Study
from neurofed.keys import Marker, Split
from neurofed.phantom import PhantomConfig
from neurofed.phantom.oracle import auc_with_ci, oracle_table, population_draws
from neurofed.tasks.glioma_multitask import marker_scores
from neurofed.training import LocalTrainer, load_model, train_local, train_pooled
from neurofed.training.condense import case_class
from neurofed.training.dataset import TrainingCase, collate
from neurofed.training.records import finalize_metrics
from phantoms import checked_sites

MARKERS = ("idh", "codel_1p19q", "mgmt", "grade")
PROXY = "public-gliomas"
DATASET = "phantom-gliomas"
FEDERATED: dict[str, dict[str, Any]] = {
    "distill": {"name": "distill"},
    "distill + proxy": {"name": "distill", "proxy": PROXY},
    "fedavg, masked heads": {"name": "fedavg", "mask_heads": True},
    # distill averages its heads unmasked: plain FedAvg separates that from the distillation
    "fedavg": {"name": "fedavg"},
}


@dataclass(frozen=True)
class Budget:
    """Phantom size and training length."""

    cases: int
    spacing: float
    shape: tuple[int, int, int]
    rounds: int
    samples: int
    learning_rate: float
    base_filters: int


BUDGETS = {
    # 40 cases a site: IDH-wildtype reaches distill's n_min of 10 at every site
    "quick": Budget(40, 4.0, (40, 48, 40), 4, 16, 1e-2, 4),
    "full": Budget(80, 2.0, (80, 96, 80), 20, 32, 3e-3, 16),
}


def _phantom(work: Path, budget: Budget, seed: int) -> list[Path]:
    """Five checked sites: 1-3 train, 4 held out (twice their size), 5 the public set."""
    config = PhantomConfig(
        preset="glioma",  # type: ignore[arg-type]
        sites=5,
        cases=budget.cases,
        seed=seed,
        spacing=budget.spacing,
        site_cases={4: 2 * budget.cases},
    )
    return checked_sites(work / "sites", config)


def _study(name: str, strategy: Mapping[str, Any], budget: Budget, seed: int) -> Study:
    data = {
        "name": f"bench-distill-{name.replace(' ', '').replace(',', '-').replace('+', '-')}",
        "rounds": budget.rounds,
        "local_epochs": 1,
        "min_sites": 1,
        "round_timeout_s": 3600.0,
        "seed": seed,
        "dataset": DATASET,
        "task": {"id": "glioma-multitask"},
        "model": {"base_filters": budget.base_filters},
        "strategy": dict(strategy),
        "selection": {"metric": "WT/dice_pooled", "direction": "max"},
        "train": {
            "batch_size": 2,
            "learning_rate": budget.learning_rate,
            "samples_per_epoch": budget.samples,
            "augment": False,
            "preprocess": {
                "spacing": [budget.spacing] * 3,
                "spatial_shape": list(budget.shape),
            },
        },
    }
    return Study.from_dict(data, source="bench/distill.py")


def _sent_bytes(audit: Path) -> dict[str, float]:
    """Mean bytes a site sent per training answer: parameters, payload, all (payload records)."""

    def size(described: Any) -> int:
        if isinstance(described, Mapping) and "array" in described:
            array = described["array"]
            return int(np.prod(array["shape"])) * int(np.dtype(array["dtype"]).itemsize)
        if isinstance(described, Mapping):
            return sum(size(v) for v in described.values())
        return 0

    params, payload, answers = 0, 0, 0
    for record in sorted(audit.glob("*/*-train-round-*.json")):
        data = json.loads(record.read_text())
        params += size(data["params"])
        payload += size(data["meta"].get("condensed", {}))
        answers += 1
    if not answers:
        return {"parameters": math.nan, "payload": math.nan, "total": math.nan}
    return {
        "parameters": params / answers,
        "payload": payload / answers,
        "total": (params + payload) / answers,
    }


def _gradcam_share(model_dir: Path, site: Path) -> dict[str, Any]:
    """The IDH head's Grad-CAM: share of the hottest brain voxels inside the tumour, per case."""
    trained = load_model(model_dir)
    from neurofed.training.site_data import SiteData

    shares = []
    for case in SiteData(site, trained.task, trained.preprocess).split(None):
        if case.label is None or not (case.label > 0).any():
            continue
        image = torch.from_numpy(case.image[None])
        heat = head_heatmaps(trained.model, image, ["idh"], trained.config.spatial_divisor())["idh"]
        brain = np.any(case.image != 0, axis=0)
        shares.append(top_share_inside(heat, case.label > 0, brain, TOP_FRACTION))
    values = np.asarray(shares, np.float64)
    return mean_with_ci(values[np.isfinite(values)]).to_json()


def _score(model_dir: Path, held_out: Path, seed: int, resamples: int) -> dict[str, Any]:
    state, _, trained = evaluate_model(model_dir, held_out, None)
    cases = {k: np.asarray(v) for k, v in state.cases.items()}
    metrics = finalize_metrics(trained.task, state)
    dice = np.asarray(cases["WT/dice"], np.float64)
    row: dict[str, Any] = {
        "WT/dice": mean_with_ci(dice[np.isfinite(dice)], seed=seed).to_json(),
        "WT/dice_per_case": dice.tolist(),
        "metrics": {k: v for k, v in metrics.items() if isinstance(v, float)},
    }
    scored = marker_scores(cases)
    for marker in MARKERS:
        y, s = scored[Marker(marker)]
        row[f"{marker}/auc"] = auc_with_ci(y, s, seed=seed, resamples=resamples).to_json()
    return row


# -- membership inference ------------------------------------------------------------------------


def _trainer(study: Study, site: Path, model_dir: Path) -> LocalTrainer:
    """Site ``site``'s trainer of ``study`` holding the weights of ``model_dir``."""
    config = study.train_config(device="cpu").with_changes(validate_every=0)
    trainer = LocalTrainer.from_sites(config, site)
    trainer.set_parameters(
        {k: v.detach().numpy() for k, v in load_model(model_dir).model.state_dict().items()}
    )
    return trainer


def _losses(
    model: torch.nn.Module, trainer: LocalTrainer, cases: Sequence[TrainingCase]
) -> np.ndarray:
    """The task's loss of ``model`` on each case, whole volume."""
    model.eval()
    divisor = trainer.config.spatial_divisor()
    out = []
    with torch.no_grad():
        for case in cases:
            batch = collate([(case.image, case.label, case.clinical)], trainer.task, divisor)
            out.append(float(trainer.task.loss(model(batch.image), batch)))
    return np.asarray(out)


def _members(trainer: LocalTrainer) -> tuple[list[TrainingCase], list[TrainingCase]]:
    assert trainer.source is not None
    return list(trainer.source.split(Split.TRAIN)), list(trainer.source.split(Split.VALIDATION))


def _attack_auc(members: np.ndarray, others: np.ndarray, seed: int) -> dict[str, Any]:
    """AUC of telling members (higher score expected) from non-members."""
    y = np.r_[np.ones(len(members), np.int64), np.zeros(len(others), np.int64)]
    s = np.r_[members, others]
    keep = np.isfinite(s)
    result = auc_with_ci(y[keep], s[keep], seed=seed).to_json()
    return result | {
        "members": int(keep[: len(members)].sum()),
        "non_members": int(keep[len(members) :].sum()),
    }


def _attack_parameters(study: Study, site: Path, model_dir: Path, seed: int) -> dict[str, Any]:
    trainer = _trainer(study, site, model_dir)
    trainer.reset_optimizer()
    trainer.fit(1, resume=False)  # the update the site sends
    train, validation = _members(trainer)
    model = trainer.model
    return _attack_auc(-_losses(model, trainer, train), -_losses(model, trainer, validation), seed)


def _attack_condensed(study: Study, site: Path, model_dir: Path, seed: int) -> dict[str, Any]:
    params = study.strategy_params
    assert isinstance(params, DistillParams)
    trainer = _trainer(study, site, model_dir)
    train, validation = _members(trainer)
    payload = condensed_payload(trainer, params, {}, seed)
    out: dict[str, Any] = {}
    volumes = payload.get("volumes")
    if volumes is None:
        out["condensed volumes"] = {"auc": None, "note": "no volume released (n_min or the gate)"}
    else:
        flat = np.asarray(volumes, np.float64).reshape(len(volumes), -1)
        flat = (flat - flat.mean(1, keepdims=True)) / (flat.std(1, keepdims=True) + 1e-12)

        def ncc(cases: Sequence[TrainingCase]) -> np.ndarray:
            x = np.stack([c.image.ravel() for c in cases]).astype(np.float64)
            x = (x - x.mean(1, keepdims=True)) / (x.std(1, keepdims=True) + 1e-12)
            return np.asarray((x @ flat.T / flat.shape[1]).max(axis=1))

        out["condensed volumes"] = _attack_auc(ncc(train), ncc(validation), seed) | {
            "volumes": len(volumes)
        }
    anchor = params.anchor
    means = np.asarray(payload[f"class_logits/{anchor}"], np.float64)
    counts = np.asarray(payload[f"class_counts/{anchor}"])
    from neurofed.models.multitask_unet import MultitaskUNet
    from neurofed.training.condense import proxy_logits

    network = trainer.model
    assert isinstance(network, MultitaskUNet)

    def distance(cases: Sequence[TrainingCase]) -> np.ndarray:
        z = proxy_logits(network, cases)[f"proxy_logits/{anchor}"].astype(np.float64)
        scores = []
        for case, row in zip(cases, z, strict=True):
            k = case_class(case.clinical, anchor)
            scores.append(
                -float(np.linalg.norm(row - means[k])) if k is not None and counts[k] else math.nan
            )
        return np.asarray(scores)

    out["class-mean logits"] = _attack_auc(distance(train), distance(validation), seed)
    return out


def _attack_proxy(
    study: Study, site: Path, proxy_dir: Path, model_dir: Path, seed: int
) -> dict[str, Any]:
    params = study.strategy_params
    assert isinstance(params, DistillParams)
    trainer = _trainer(study, site, model_dir)
    train, validation = _members(trainer)
    proxy = load_proxy(PROXY, proxy_dir, study.build_task(), trainer.config.preprocess)
    global_state = copy.deepcopy(trainer.model.state_dict())
    trainer.reset_optimizer()
    trainer.fit(1, resume=False)
    sent = proxy_payload(trainer, proxy)  # what site-1 sends
    assert PROXY_FINGERPRINT in sent
    trainer.model.load_state_dict(global_state)  # the attacker holds the global model ...
    digest(trainer, params, proxy, sent)  # ... and distils it on site-1's proxy logits
    model = trainer.model
    return _attack_auc(-_losses(model, trainer, train), -_losses(model, trainer, validation), seed)


# -- the comparison ------------------------------------------------------------------------------


def run(work: Path, budget: Budget, seed: int, draws: int, resamples: int) -> dict[str, Any]:
    started = time.perf_counter()
    sites = _phantom(work, budget, seed)
    training, held_out, proxy = sites[:3], sites[3], sites[4]
    models: dict[str, Path] = {}
    sent: dict[str, dict[str, float]] = {}
    studies: dict[str, Study] = {}
    for name, strategy in FEDERATED.items():
        study = _study(name, strategy, budget, seed)
        studies[name] = study
        folder = work / name.replace(" ", "").replace(",", "-").replace("+", "-")
        settings = {
            f"site-{k}": {"allow_condensed": (DATASET,), "public_datasets": {PROXY: proxy}}
            for k in range(1, len(training) + 1)
        }
        print(f"{name}: {budget.rounds} rounds on the NVFlare simulator …", flush=True)
        result = run_simulation(
            study, training, folder / "run", audit_dir=folder / "sent", site_settings=settings
        )
        models[name] = result.run_dir / LAST_MODEL
        sent[name] = _sent_bytes(folder / "sent")
    baseline = studies["fedavg, masked heads"]
    print("pooled and local-only training …", flush=True)
    train_pooled(baseline.baseline_config(len(training), device="cpu"), training, work / "pooled")
    models["pooled"] = work / "pooled" / "model"
    for k, site in enumerate(training, start=1):
        train_local(baseline.baseline_config(1, device="cpu"), site, work / f"local-{k}")
        models[f"local site-{k}"] = work / f"local-{k}" / "model"
    print("scoring on the held-out site …", flush=True)
    rows = {name: _score(folder, held_out, seed, resamples) for name, folder in models.items()}
    reference = np.asarray(rows["fedavg, masked heads"]["WT/dice_per_case"])
    for name, row in rows.items():
        mine = np.asarray(row.pop("WT/dice_per_case"))
        keep = np.isfinite(mine) & np.isfinite(reference)
        if name != "fedavg, masked heads":
            row["WT/dice_vs_fedavg"] = paired_comparison(
                mine[keep], reference[keep], seed=seed
            ).to_json()
        row["gradcam_idh_share_inside"] = _gradcam_share(models[name], held_out)
        row["bytes_per_round"] = sent.get(name)
    print("oracle …", flush=True)
    population = oracle_table(*population_draws(seed, draws), seed=seed, resamples=resamples)
    oracle = {str(m.value): r.estimate.to_json() for m, r in population.items()}
    print("membership inference against site-1 …", flush=True)
    attacks = {
        "parameters": _attack_parameters(
            baseline, training[0], models["fedavg, masked heads"], seed
        ),
        **_attack_condensed(studies["distill"], training[0], models["distill"], seed),
        "proxy logits": _attack_proxy(
            studies["distill + proxy"], training[0], proxy, models["distill + proxy"], seed
        ),
    }
    return {
        "bench": "distill",
        "budget": asdict(budget),
        "seed": seed,
        "neurofed": __version__,
        "machine": {"platform": platform.platform(), "threads": torch.get_num_threads()},
        "models": rows,
        "oracle": oracle,
        "membership_inference": attacks,
        "seconds": time.perf_counter() - started,
    }


def _cell(estimate: Mapping[str, Any] | None, key: str = "auc") -> str:
    if not estimate or estimate.get(key) is None:
        return "—"
    ci = estimate.get("ci")
    if not ci or ci[0] is None:
        return f"{estimate[key]:.3f}"
    return f"{estimate[key]:.3f} [{ci[0]:.2f}, {ci[1]:.2f}]"


def _p(value: float | None) -> str:
    if value is None:
        return "—"
    return "<1e-6" if value < 1e-6 else f"{value:.2g}"


def show(result: Mapping[str, Any]) -> None:
    header = [
        "model",
        *(f"{m} AUC" for m in MARKERS),
        "WT Dice",
        "Dice vs FedAvg p",
        "Grad-CAM in",
        "MB/round",
    ]
    print(" | ".join(header))
    for name, row in result["models"].items():
        versus = row.get("WT/dice_vs_fedavg")
        sent = row.get("bytes_per_round") or {}
        cells = [
            name,
            *(_cell(row[f"{m}/auc"]) for m in MARKERS),
            _cell(row["WT/dice"], "mean"),
            "—" if versus is None else f"{versus['difference']:+.3f} p={_p(versus['p'])}",
            _cell(row["gradcam_idh_share_inside"], "mean"),
            "—" if not sent else f"{sent['total'] / 1e6:.2f} ({sent['payload'] / 1e6:.2f} payload)",
        ]
        print(" | ".join(cells))
    print(
        " | ".join(["oracle", *(_cell(result["oracle"].get(m)) for m in MARKERS), "", "", "", ""])
    )
    print("\nmembership inference against site-1 (AUC, 0.5 = chance):")
    for kind, attack in result["membership_inference"].items():
        note = attack.get(
            "note",
            f"{attack.get('members', 0)} members, {attack.get('non_members', 0)} non-members",
        )
        print(f"  {kind:18} {_cell(attack)}  ({note})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", choices=sorted(BUDGETS), default="quick")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    parser.add_argument("--draws", type=int, default=5000, help="oracle draws per half")
    parser.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples")
    parser.add_argument("--out", type=Path, default=Path("bench/results/distill.json"))
    parser.add_argument("--show", type=Path, default=None, help="print a results JSON again")
    args = parser.parse_args()
    if args.show is not None:
        show(json.loads(args.show.read_text()))
        return
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work) if args.work is not None else Path(scratch)
        result = run(work, BUDGETS[args.budget], args.seed, args.draws, args.resamples)
    result["budget_name"] = args.budget
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    show(result)
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
