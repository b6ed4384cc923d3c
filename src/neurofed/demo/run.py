"""``neurofed demo``: the whole path on the embedded phantom, offline, in one command.

Stages (each resumes when the demo is run again with the same run folder):

1. **phantom** — a non-IID glioma federation: three training sites and one held-out site, one
   broken case planted at each (kept when ``sites/phantom.json`` already holds the same config);
2. **check** — ``site check`` of every site and its fixed splits;
3. **federated** — the FedAvg study over the training sites in NVFlare's simulator; its
   fingerprint round plans the target spacing (``federated/plan.json``);
4. **local-only** — one model per training site, same budget and plan;
5. **pooled** — one model on the training sites' cases together, same budget and plan;
6. **evaluate** — every model on every training site's validation split and on all cases of
   the held-out site, by one evaluation study in the simulator
   (:mod:`neurofed.demo.cross_site`); the training sites' validation is also merged (sums and
   counts, exactly).

The run folder::

    <out>/sites/            the phantom sites (site-4 is held out)
    <out>/federated/        the simulated run (plan.json, rounds/, checkpoints/, model/)
    <out>/local/site-<k>/   each local-only run (metrics.json, model/)
    <out>/pooled/           the pooled run
    <out>/evaluation/       the evaluation study's run (cross-site/), with
                            evaluation.json: every model's metrics per site
    <out>/summary.json      everything below, machine-readable
    <out>/summary.md        the tables a person reads
    <out>/report.html       the federated run's report with figures, the held-out comparison
                            and every model on every site (opens offline)
    <out>/stage_seconds.json each finished stage's time (a re-run keeps those of stages it
                            found finished)

**A fair comparison**: every model is compared as it ended — the federated model after its last
round (``federated/last_model``), every baseline after its last epoch. None is selected on
validation data (the federated run's best round, ``federated/model``, is reported but not
compared: chosen on the training sites' validation cases, which the baselines never see, it
would be favoured by construction). On the held-out site every model is scored on the same
cases, with intervals and paired tests (:mod:`neurofed.demo.comparison`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed import __version__
from neurofed.artifacts import write_json_atomically
from neurofed.data.manifest import check_site
from neurofed.data.splits import site_splits
from neurofed.demo.comparison import compare_on_held_out
from neurofed.demo.config import DemoConfig
from neurofed.demo.cross_site import federated_cross_site
from neurofed.demo.html import write_demo_report
from neurofed.demo.report import SUMMARY_JSON, SUMMARY_MD, headline, markdown
from neurofed.evaluate.report import REPORT_HTML
from neurofed.federated.protocol import RunSummary
from neurofed.federated.server.run_folder import LAST_MODEL
from neurofed.federated.study import Study
from neurofed.keys import Split
from neurofed.phantom import PhantomSummary, generate_federation
from neurofed.preprocess.plan import Plan
from neurofed.training import (
    train_local,
    train_pooled,
)
from neurofed.types import ProgressCallback

__all__ = ["DemoResult", "StageProgress", "run_demo"]

#: ``stage(label)`` → a context manager yielding the stage's :data:`ProgressCallback`.
StageProgress = Callable[[str], AbstractContextManager[ProgressCallback]]

SITES = "sites"
FEDERATED = "federated"
LOCAL = "local"
POOLED = "pooled"
EVALUATION = "evaluation"
STAGE_SECONDS = "stage_seconds.json"
#: How the compared models were chosen (the same rule for every one).
COMPARED = "every model as it ended: the federated model after its last round, each baseline "
COMPARED += "after its last epoch; none is selected on validation data"
#: How the table of every model on every site was made.
SCORED = "by one evaluation study in the simulator (evaluation/): every site scored each model "
SCORED += "itself and sent aggregate metrics; the held-out site also sent per-case values, "
SCORED += "without identifiers, for the paired comparison"


@dataclass(frozen=True)
class DemoResult:
    out: Path
    summary: dict[str, Any]
    seconds: float


def _no_progress(label: str) -> AbstractContextManager[ProgressCallback]:
    return nullcontext(lambda done, total, text: None)


@contextmanager
def _one_thread_per_site() -> Iterator[None]:
    """Simulated sites are processes sharing the CPU: one torch thread each (more threads than
    cores stall every OpenMP region). Child processes inherit the variable."""
    before = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = "1"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = before


def _phantom(config: DemoConfig, folder: Path, progress: ProgressCallback) -> list[Path]:
    """Generate the sites, or keep those already generated with the same config."""
    manifest = folder / "phantom.json"
    if manifest.is_file():
        stored = json.loads(manifest.read_text(encoding="utf-8"))
        if stored.get("config") == config.phantom.to_json():
            sites = sorted(stored.get("sites", []), key=lambda s: int(s["site"]))
            return [folder / str(s["dir"]) for s in sites]
    summary: PhantomSummary = generate_federation(config.phantom, folder, progress=progress)
    return list(summary.site_dirs)


def _site_row(site_dir: Path, held_out: bool) -> dict[str, Any]:
    report = check_site(site_dir)
    splits, _ = site_splits(site_dir, report.manifest.subjects)
    ids = [s.subject_id for s in report.manifest.subjects]
    return {
        "site": site_dir.name,
        "role": "held-out" if held_out else "training",
        "layout": report.manifest.layout.value,
        "cases": len(report.cases),
        "usable": len(ids),
        "excluded": list(report.excluded_ids),
        "problems": [p.line() for c in report.cases for p in c.problems],
        "splits": {s.value: len(splits.subject_ids(s, ids)) for s in Split},
        "check_seconds": round(report.seconds, 2),
    }


def _federated_plan(study: Study, run_dir: Path) -> Plan:
    """The plan the federation's fingerprint round wrote (the baselines train under it)."""
    from neurofed.federated.server.planning import read_run_plan

    plan, _ = read_run_plan(run_dir, study)
    if plan is None:
        raise RuntimeError(f"{run_dir} has no plan.json although its study has [plan]")
    return plan


def _copy_plan(run_dir: Path, folders: Iterable[Path]) -> None:
    """Every model folder carries the plan it was trained under (as the federated one does)."""
    from neurofed.federated.server.planning import copy_plan_files

    for folder in folders:
        copy_plan_files(run_dir, folder)


def _plan_summary(plan: Plan, federated: RunSummary) -> dict[str, Any]:
    """The plan's id, target spacing and who contributed (from the federated summary)."""
    entry = federated.plan
    return {
        "plan_id": plan.plan_id,
        "spacing": list(plan.spacing),
        "num_cases": plan.num_cases,
        "sites": [] if entry is None else list(entry.sites),
        "failed": {} if entry is None else dict(entry.failed),
    }


def run_demo(config: DemoConfig, stage: StageProgress | None = None) -> DemoResult:
    """Run every stage (see the module docstring) and write ``summary.json`` / ``summary.md``.

    ``stage(label)`` is entered around each stage and yields its progress callback.
    """
    stage = stage or _no_progress
    start = time.perf_counter()
    out = Path(config.out)
    out.mkdir(parents=True, exist_ok=True)
    recorded = _recorded_seconds(out, config)
    seconds: dict[str, float] = {}

    def timed(name: str, began: float) -> None:
        # a stage finished by an earlier run only found its work done: keep that run's time
        seconds[name] = recorded.get(name, round(time.perf_counter() - began, 2))
        write_json_atomically(
            out / STAGE_SECONDS, {"config": _config_key(config), "seconds": seconds}
        )

    began = time.perf_counter()
    with stage("generating the phantom sites") as progress:
        site_dirs = _phantom(config, out / SITES, progress)
    timed("phantom", began)
    training, held_out = site_dirs[:-1], site_dirs[-1]

    began = time.perf_counter()
    with stage("checking every site") as progress:
        rows = []
        for k, site_dir in enumerate(site_dirs, start=1):
            rows.append(_site_row(site_dir, held_out=site_dir == held_out))
            progress(k, len(site_dirs), site_dir.name)
    timed("check", began)

    study = config.study()
    began = time.perf_counter()
    with stage(f"federated training ({study.rounds} rounds of FedAvg)") as progress:
        from neurofed.federated.engine import run_simulation, site_names

        # phantom sites with a few validation cases each: their custodians let the round's
        # scores through (a hospital's default withholds them under 5 cases; cross_site.py)
        scored = {name: {"min_cases_per_metric": 1} for name in site_names(len(training))}
        with _one_thread_per_site():
            federated = run_simulation(
                study,
                training,
                out / FEDERATED,
                progress=progress,
                device=config.device,
                site_settings=scored,
            )
    timed("federated", began)
    plan = _federated_plan(study, out / FEDERATED)

    began = time.perf_counter()
    local_config = config.baseline_config(training_sites=1, plan=plan)
    for site_dir in training:
        with stage(f"local-only training on {site_dir.name}") as progress:
            train_local(local_config, site_dir, out / LOCAL / site_dir.name, progress=progress)
    timed("local", began)

    began = time.perf_counter()
    with stage("pooled training") as progress:
        train_pooled(
            config.baseline_config(training_sites=len(training), plan=plan),
            training,
            out / POOLED,
            progress=progress,
        )
    timed("pooled", began)

    if federated.model_dir is None:
        raise RuntimeError(
            f"the federated run aggregated no round, so it has no model; see "
            f"{out / FEDERATED / 'rounds'} for each round's reasons"
        )
    models = {"federated": out / FEDERATED / LAST_MODEL, "pooled": out / POOLED / "model"}
    models |= {f"local {s.name}": out / LOCAL / s.name / "model" for s in training}
    _copy_plan(out / FEDERATED, models.values())
    began = time.perf_counter()
    scoring = stage("evaluating every model on every site (an evaluation study)")
    with scoring as progress, _one_thread_per_site():
        evaluation = federated_cross_site(
            models,
            training,
            held_out,
            out / EVALUATION,
            study=study,
            device=config.device,
            progress=progress,
        )
    timed("evaluate", began)

    selected = federated.summary.selected
    summary: dict[str, Any] = {
        "neurofed_version": __version__,
        "seed": config.seed,
        "quick": config.quick,
        "task": study.task.value,
        "budget": vars(config.budget),
        "study": {
            "name": study.name,
            "sha256": study.content_hash,
            "rounds": study.rounds,
            "strategy": study.strategy.value,
            "selected": None if selected is None else selected.to_json(),
            "dropped": list(federated.summary.dropped),
        },
        "plan": _plan_summary(plan, federated.summary),
        "sites": rows,
        "held_out": held_out.name,
        "models": {name: str(path.relative_to(out)) for name, path in models.items()},
        "compared": COMPARED,
        "scored": SCORED,
        "evaluation": evaluation,
        "headline": headline(evaluation, held_out.name),
        "comparison": compare_on_held_out(evaluation, held_out.name, seed=config.seed),
        "stage_seconds": seconds,
    }
    wall = round(time.perf_counter() - start, 2)
    if recorded:  # a re-run: the demo's time is that of the runs that did the work
        summary["seconds"] = round(sum(seconds.values()), 2)
        summary["rerun_seconds"] = wall
    else:
        summary["seconds"] = wall
    summary["report"] = REPORT_HTML
    (out / SUMMARY_JSON).write_text(json.dumps(summary, indent=2) + "\n")
    (out / SUMMARY_MD).write_text(markdown(summary))
    write_demo_report(out, out / FEDERATED, summary)
    return DemoResult(out=out, summary=summary, seconds=summary["seconds"])


def _config_key(config: DemoConfig) -> dict[str, Any]:
    """What the stages' work depends on: a recorded time is kept only for the same key."""
    return {
        "seed": config.seed,
        "budget": vars(config.budget),
        "study": config.study().content_hash,
        "version": __version__,
    }


def _recorded_seconds(out: Path, config: DemoConfig) -> dict[str, float]:
    """The stage times an earlier run of the same demo recorded in ``out`` (``{}``: none)."""
    try:
        stored = json.loads((out / STAGE_SECONDS).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(stored, dict) or stored.get("config") != _config_key(config):
        return {}
    seconds = stored.get("seconds")
    if not isinstance(seconds, dict):
        return {}
    return {
        str(k): float(v)
        for k, v in seconds.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and v >= 0
    }
