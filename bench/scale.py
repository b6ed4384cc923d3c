"""Scale: what a round costs the server as sites grow, what NVFlare's simulator costs for many
sites in few processes, what a round costs beyond training, and what each participation policy
costs in accuracy and in time at real sites.

Four parts, side by side in one run:

``server``
    The server's side of one round for 10, 30, 71 and 100 sites, on the brain-age SFCN at its
    real width (~3 M parameters): every site's answer is made here (the global model plus a
    small shift, long-tailed case counts) and handed to the same :class:`FederatedRun` the NVFlare
    controller drives. Per round: aggregation (FedAvg), the validation merge, the checkpoint,
    and the server's peak memory beyond the answers it holds (``tracemalloc``); median of 5.
``engine``
    ``neurofed simulate``'s path (:func:`run_simulation`, NVFlare's simulator) for 10, 30, 71
    and 100 phantom brain-age sites of long-tailed sizes in 2 worker processes that host the
    sites (``--processes 2``), each keeping one site loaded between tasks and then all of its
    sites (``--sites-in-memory``), and 10 sites also in one process each (the default); 3
    rounds of a tiny SFCN: round 1 (which starts the processes), the later rounds, and the
    peak memory of the whole process tree (sampled every 0.2 s).
``overhead``
    What a round costs beyond training and validation on the simulator (2 and 8 sites in one
    process each, 10 sites hosted by 2 processes, where a process's sites work in turn; 6
    rounds of a tiny SFCN), each with two trips per round and with one (``[participation]
    validate_incoming``: the sites score the model they receive before they train); where that
    time goes is read from the server's and the sites' logs (docs/scale.md).
    ``--overhead-intervals`` compares values of the server's ``task_request_interval`` (how
    long a site waits before it asks for its next task) side by side.
``policies``
    A 71-site long-tailed phantom federation, 30 rounds of FedAvg under each policy: every
    site; a fraction of 0.2 per round; a deadline of 900 s of simulated time (chosen
    beforehand: 15 minutes, not tuned); every site with 6 of them joining at round 5 (FeTS held
    its 6 late sites out). The task is FeTS's (``tumor-regions`` on a glioma phantom, scored by
    the whole tumour's Dice) or ``--task brain-age`` (MAE); see :class:`PolicyModel`. The sites
    run in this process through the same site worker and server run as NVFlare's executor and
    controller (71 NVFlare site processes would not fit 2 cores); each policy gets the same
    sites, seed and clock. Reported: the global model's score on every site's validation cases
    after the last round (95 % CI by bootstrap over sites) and every 5 rounds; each policy
    against every site training on the same sites' cases (the case-weighted mean difference,
    its 95 % CI by paired bootstrap over sites, the two-sided Wilcoxon signed-rank test over
    sites); cases trained per round; and the estimated duration at real sites
    (:mod:`neurofed.federated.clock`), with two trips per round and with one
    (``validate_incoming``, estimated from the same rounds: it trains and scores the same
    models; not under the deadline, where it would change which sites are late).

Usage::

    python bench/scale.py [--part all|server|engine|overhead|policies] [--sites 10,30,71,100]
                          [--engine-sites 10,30,71,100] [--overhead-sites 2,8,10@2]
                          [--overhead-rounds 6] [--overhead-intervals 0.2,0.15,0.1]
                          [--rounds 30] [--samples 8]
                          [--policies all,...] [--task tumor-regions|brain-age]
                          [--base-filters 4] [--width 0.0625] [--spacing MM] [--device cpu]
                          [--work DIR] [--out FILE]

Prints tables and writes JSON (default ``bench/results/scale.json``).
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import tempfile
import threading
import time
import tracemalloc
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import psutil
import torch
from scipy import stats

from neurofed.federated.engine import run_simulation, site_names
from neurofed.federated.engine.hosting import assign_sites
from neurofed.federated.engine.simulation import SERVER_CONFIG
from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName
from neurofed.federated.server import FederatedRun, RoundRecord
from neurofed.federated.server.timing import estimate_run
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.study import Study
from neurofed.federated.study.participation import ParticipationConfig
from neurofed.phantom import PhantomConfig
from neurofed.tasks import MetricState
from phantoms import checked_sites

SEED = 0
DEADLINE_S = 900.0
#: The policies part also compares the mean of the last rounds: a round's score swings by a few
#: Dice points from one round to the next, more than some of the policies' differences.
WINDOW = 10


def _study(
    name: str,
    width: float,
    rounds: int,
    samples: int = 8,
    learning_rate: float | None = None,
    spacing: float = 8.0,
) -> Study:
    train: dict[str, Any] = {
        "batch_size": 2,
        "samples_per_epoch": samples,
        "augment": False,
        "preprocess": {"spacing": [spacing] * 3},
    }
    if learning_rate is not None:
        train["learning_rate"] = learning_rate
    return Study.from_dict(
        {
            "name": f"bench-scale-{name}",
            "rounds": rounds,
            "local_epochs": 1,
            "min_sites": 1,
            "round_timeout_s": 3600.0,
            "seed": SEED,
            "task": {"id": "brain-age"},
            "model": {"width": width},
            "strategy": {"name": "fedavg"},
            "selection": {"metric": "mae", "direction": "min"},
            "train": train,
        },
        source="bench/scale.py",
    )


def _tail(count: int, median: int = 6) -> list[int]:
    """The long-tailed site sizes of the phantom federation of ``count`` sites."""
    config = PhantomConfig(
        preset="brain-age",  # type: ignore[arg-type]
        sites=count,
        cases=median,
        seed=SEED,
        long_tail=True,
    )
    return [config.cases_at(site) for site in range(1, count + 1)]


# -- server ------------------------------------------------------------------------------------


def _train_answer(run: FederatedRun, site: str, shift: float, cases: int) -> SiteAnswer:
    params = {
        k: (v + shift).astype(v.dtype) if v.dtype.kind == "f" else v.copy()
        for k, v in run.params.items()
    }
    meta = {MetaField.NUM_EXAMPLES.value: cases, MetaField.LABEL_COUNTS.value: {}}
    return SiteAnswer.decode(TaskName.TRAIN, site, params, meta)


def _validate_answer(site: str, cases: int, rng: np.random.Generator) -> SiteAnswer:
    ages = rng.uniform(20, 80, size=cases)
    guess = ages + rng.normal(0, 5, size=cases)
    sums = {
        "num_examples": int(cases),
        "sum_abs_error": float(np.abs(guess - ages).sum()),
        "sum_x": float(guess.sum()),
        "sum_y": float(ages.sum()),
        "sum_xx": float((guess**2).sum()),
        "sum_yy": float((ages**2).sum()),
        "sum_xy": float((guess * ages).sum()),
    }
    meta = {"metric_state": MetricState(sums=sums, cases={}).to_arrays()}
    return SiteAnswer.decode(TaskName.VALIDATE, site, {}, meta)


def _timed(log: dict[str, float], key: str, call: Callable[..., Any]) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        began = time.perf_counter()
        try:
            return call(*args, **kwargs)
        finally:
            log[key] = log.get(key, 0.0) + time.perf_counter() - began

    return wrapper


def server_round(count: int, work: Path, measure_memory: bool) -> dict[str, float]:
    """One round of ``count`` synthetic sites through :class:`FederatedRun`."""
    study = _study("server", width=1.0, rounds=2)
    run = FederatedRun(study, work)
    sites = [f"site-{k}" for k in range(1, count + 1)]
    run.start(sites)
    sizes = _tail(count)
    rng = np.random.default_rng(count)
    # small shifts: every update passes the server's checks (a norm bound rejects large ones)
    answers = [
        _train_answer(run, s, 1e-4 * (k + 1), n)
        for k, (s, n) in enumerate(zip(sites, sizes, strict=True))
    ]
    held = sum(v.nbytes for a in answers for v in a.params.values())
    log: dict[str, float] = {}
    run.strategy.aggregate = _timed(log, "aggregate", run.strategy.aggregate)  # type: ignore[method-assign]
    run._checkpoint = _timed(log, "checkpoint", run._checkpoint)  # type: ignore[method-assign]
    if measure_memory:
        tracemalloc.start()
        tracemalloc.reset_peak()
    base = tracemalloc.get_traced_memory()[0] if measure_memory else 0
    record = RoundRecord(round=1)
    began = time.perf_counter()
    assert run.record_training(record, sites, answers), record.quorum_error
    assert record.accepted == sorted(sites), (record.rejected, record.failed)
    trained = time.perf_counter()
    checks = [_validate_answer(s, max(1, n // 4), rng) for s, n in zip(sites, sizes, strict=True)]
    merge_began = time.perf_counter()
    run.record_validation(record, sites, checks)
    merged = time.perf_counter()
    peak = tracemalloc.get_traced_memory()[1] - base if measure_memory else 0
    if measure_memory:
        tracemalloc.stop()
    return {
        "round_seconds": (trained - began) + (merged - merge_began),
        "aggregate_seconds": log["aggregate"],
        "checkpoint_seconds": log["checkpoint"],
        "checks_seconds": (trained - began) - log["aggregate"] - log["checkpoint"],
        "validation_merge_seconds": merged - merge_began,
        "answers_mb": held / 1e6,
        "peak_beyond_answers_mb": peak / 1e6,
    }


def run_server(counts: list[int], work: Path) -> list[dict[str, Any]]:
    rows = []
    for count in counts:
        print(f"server: {count} sites …", flush=True)
        runs = [server_round(count, work / f"server-{count}-{k}", False) for k in range(5)]
        memory = server_round(count, work / f"server-{count}-memory", True)
        row: dict[str, Any] = {"sites": count}
        for key in runs[0]:
            values = [r[key] for r in runs]
            row[key] = memory[key] if key.endswith("_mb") else statistics.median(values)
        rows.append(row)
    return rows


# -- engine ------------------------------------------------------------------------------------


def _brain_age_phantom(sites: int) -> PhantomConfig:
    """Long-tailed brain-age phantom sites (median 6 cases) at 4 mm."""
    return PhantomConfig(
        preset="brain-age",  # type: ignore[arg-type]
        sites=sites,
        cases=6,
        seed=SEED,
        spacing=4.0,
        long_tail=True,
    )


def _phantom(work: Path, sites: int) -> list[Path]:
    """:func:`_brain_age_phantom`'s sites, each checked."""
    return checked_sites(work / f"phantom-{sites}", _brain_age_phantom(sites))


def _fresh(folder: Path) -> Path:
    """``folder``, emptied of an earlier run: a kept run folder would resume its finished run
    (with ``--work``), and the bench would time nothing."""
    shutil.rmtree(folder, ignore_errors=True)
    return folder


@contextmanager
def _peak_tree_memory() -> Iterator[dict[str, float]]:
    """The peak resident memory of this process and all its children, sampled every 0.2 s."""
    out = {"peak_mb": 0.0}
    stop = threading.Event()
    me = psutil.Process()

    def sample() -> None:
        while not stop.wait(0.2):
            total = 0
            for proc in [me, *me.children(recursive=True)]:
                try:
                    total += proc.memory_info().rss
                except psutil.Error:
                    continue
            out["peak_mb"] = max(out["peak_mb"], total / 1e6)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield out
    finally:
        stop.set()
        thread.join()


def run_engine(
    counts: list[int], work: Path, processes: int = 2, rounds: int = 3
) -> list[dict[str, Any]]:
    """Each count in ``processes`` hosting workers (keeping one site loaded, then all of their
    sites); up to 10 sites also in one process per site. The sites are the first ``count`` of
    one long-tailed phantom federation."""
    rows = []
    federation = _phantom(work, max(counts))
    runs = [(n, n, 1) for n in counts if n <= 10]
    runs += [(n, processes, keep) for n in counts for keep in (1, -(-n // processes))]
    for count, workers, keep in runs:
        sites = federation[:count]
        study = _study(f"engine-{count}", width=0.0625, rounds=rounds, samples=4)
        shown = f"{count} sites in {workers} processes" + (
            f", {keep} site(s) loaded per process" if workers < count else ""
        )
        print(f"engine: {shown}, {rounds} rounds …", flush=True)
        with _peak_tree_memory() as memory:
            began = time.perf_counter()
            folder = _fresh(work / f"engine-{count}-{workers}-{keep}")
            result = run_simulation(study, sites, folder, processes=workers, sites_in_memory=keep)
            wall = time.perf_counter() - began
        records = [
            json.loads((result.run_dir / "rounds" / str(k) / "metrics.json").read_text())
            for k in range(1, rounds + 1)
        ]
        rows.append(
            {
                "sites": count,
                "processes": workers,
                "sites_in_memory": keep if workers < count else 1,
                "rounds": rounds,
                "wall_seconds": wall,
                "round_seconds": [float(r["seconds"]) for r in records],
                "first_round_seconds": float(records[0]["seconds"]),
                "later_round_seconds": statistics.median(float(r["seconds"]) for r in records[1:]),
                "accepted": min(len(r["accepted"]) for r in records),
                "failed": max(len(r["failed"]) for r in records),
                "peak_tree_mb": memory["peak_mb"],
            }
        )
    return rows


# -- overhead ----------------------------------------------------------------------------------


def _busy(groups: list[list[str]], seconds: dict[str, float]) -> float:
    """How long a trip kept the busiest worker process working: the sum of its sites' times
    (a process runs its sites one after the other)."""
    return max((sum(seconds.get(s, 0.0) for s in group) for group in groups), default=0.0)


def _overheads(run_dir: Path, rounds: int, one_trip: bool, groups: list[list[str]]) -> list[float]:
    """Per round: wall time minus the time the busiest worker process worked in it (``groups``:
    the sites of each process). With two trips that is its training plus its validation; with
    one, its sites' validation of the previous model plus their training (and, in the last
    round, the validation of the last model)."""
    records = [
        json.loads((run_dir / "rounds" / str(k) / "metrics.json").read_text())
        for k in range(1, rounds + 1)
    ]
    out = []
    for k, record in enumerate(records):
        assert record["aggregated"], record
        before = records[k - 1]["validation_seconds"] if one_trip and k > 0 else {}
        trained = {
            s: float(m.get("seconds", 0.0)) + float(before.get(s, 0.0))
            for s, m in record["train"].items()
        }
        busy = _busy(groups, trained)
        if not one_trip or k == rounds - 1:
            scored = {s: float(v) for s, v in record["validation_seconds"].items()}
            busy += _busy(groups, scored)
        out.append(float(record["seconds"]) - busy)
    return out


def run_overhead(
    work: Path, configs: list[str], rounds: int = 6, intervals: tuple[float, ...] = ()
) -> list[dict[str, Any]]:
    """Seconds per round beyond training and validation on the simulator, for each
    ``SITES`` (one process per site) or ``SITES@PROCESSES``, with two trips per round and
    with one; for each of ``intervals`` as the server's ``task_request_interval`` (how long a
    site waits before it asks for its next task; none: the server's own setting)."""
    rows = []
    shapes = [(int(c.partition("@")[0]), int(c.partition("@")[2] or 0)) for c in configs]
    sites = _phantom(work, max(n for n, _ in shapes))
    server = SERVER_CONFIG["server"]
    own = server["task_request_interval"]
    try:
        for interval in intervals or (own,):
            server["task_request_interval"] = interval
            for count, processes in shapes:
                for one_trip in (False, True):
                    row = _overhead_run(work, sites, count, processes, one_trip, rounds, interval)
                    rows.append(row | {"task_request_interval": interval})
    finally:
        server["task_request_interval"] = own
    return rows


def _overhead_run(
    work: Path,
    sites: list[Path],
    count: int,
    processes: int,
    one_trip: bool,
    rounds: int,
    interval: float,
) -> dict[str, Any]:
    """One overhead run, with the server's ``task_request_interval`` already set to
    ``interval``."""
    study = _study(f"overhead-{count}", width=0.0625, rounds=rounds, samples=4)
    if one_trip:
        study = replace(study, participation=ParticipationConfig(validate_incoming=True))
    trips = "one trip" if one_trip else "two trips"
    shown = f"{count} sites in {processes or count} processes, {trips}, asking every {interval} s"
    print(f"overhead: {shown}, {rounds} rounds …", flush=True)
    folder = _fresh(work / f"overhead-{count}-{processes}-{int(one_trip)}-{interval:g}")
    began = time.perf_counter()
    result = run_simulation(study, sites[:count], folder, processes=processes or None)
    wall = time.perf_counter() - began
    names = site_names(count)
    groups = (
        list(assign_sites(names, processes).values())
        if processes and processes < count
        else [[name] for name in names]
    )
    seconds = _overheads(result.run_dir, rounds, one_trip, groups)
    return {
        "sites": count,
        "processes": processes or count,
        "trips": 1 if one_trip else 2,
        "wall_seconds": wall,
        "overhead_seconds": seconds,
        "median_after_round_1": statistics.median(seconds[1:]),
    }


# -- policies ----------------------------------------------------------------------------------

POLICIES: dict[str, ParticipationConfig | None] = {
    "all": None,
    "fraction 0.2": ParticipationConfig(policy="fraction", fraction=0.2),  # type: ignore[arg-type]
    f"deadline {DEADLINE_S:.0f} s": ParticipationConfig(policy="deadline", deadline_s=DEADLINE_S),  # type: ignore[arg-type]
    "6 join at round 5": ParticipationConfig(join={f"site-{k}": 5 for k in range(66, 72)}),
}


@dataclass(frozen=True)
class PolicyModel:
    """The policies part's task and model.

    ``tumor-regions`` (FeTS's task, the default): a residual U-Net of ``base_filters`` 4 and
    depth 3 on 16³ patches of a glioma phantom written at ``spacing`` (6 mm), step 3e-2: the
    model and step size that learn the tumour on a phantom site in a few CPU seconds
    (tests/training/test_end_to_end.py). Scored by the whole tumour's Dice.

    ``brain-age``: the SFCN of ``width`` on a brain-age phantom written at 4 mm, preprocessed
    to ``spacing`` (8 mm), step 1e-2. At 8 mm its last pooling blocks see one voxel of a batch
    of 2, so its batch norms leave only the mean age to learn (docs/scale.md). Scored by MAE.
    """

    task: str = "tumor-regions"
    spacing: float | None = None  # None: the task's (6 mm, 8 mm)
    device: str = "cpu"
    width: float = 0.0625
    base_filters: int = 4

    @property
    def mm(self) -> float:
        if self.spacing is not None:
            return self.spacing
        return 6.0 if self.task == "tumor-regions" else 8.0

    @property
    def metric(self) -> str:
        return "WT/dice" if self.task == "tumor-regions" else "mae"

    @property
    def label(self) -> str:
        size = (
            f"filters-{self.base_filters}"
            if self.task == "tumor-regions"
            else f"width-{self.width:g}"
        )
        return f"{self.task}-{size}-{self.mm:g}mm"

    def sites(self, work: Path, count: int) -> list[Path]:
        """The task's long-tailed phantom sites (median 6 cases), each checked."""
        if self.task == "brain-age":
            return _phantom(work, count)
        config = PhantomConfig(
            preset="glioma",  # type: ignore[arg-type]
            sites=count,
            cases=6,
            seed=SEED,
            spacing=self.mm,
            long_tail=True,
        )
        return checked_sites(work / f"phantom-{count}-glioma-{self.mm:g}mm", config)

    def study(self, rounds: int, samples: int) -> Study:
        if self.task == "brain-age":
            return _study(
                "policies",
                self.width,
                rounds=rounds,
                samples=samples,
                learning_rate=1e-2,
                spacing=self.mm,
            )
        if self.task != "tumor-regions":
            raise SystemExit(f"--task {self.task!r}: give tumor-regions or brain-age")
        return Study.from_dict(
            {
                "name": "bench-scale-policies",
                "rounds": rounds,
                "local_epochs": 1,
                "min_sites": 1,
                "round_timeout_s": 3600.0,
                "seed": SEED,
                "task": {"id": "tumor-regions"},
                "model": {"base_filters": self.base_filters, "depth": 3, "num_res_units": 1},
                "strategy": {"name": "fedavg"},
                "selection": {"metric": "WT/dice_pooled", "direction": "max"},
                "train": {
                    "batch_size": 2,
                    "samples_per_epoch": samples,
                    "augment": False,
                    "patch_shape": [16, 16, 16],
                    "foreground_probability": 0.5,
                    "learning_rate": 3e-2,
                    "preprocess": {"spacing": [self.mm] * 3},
                },
            },
            source="bench/scale.py",
        )


def _site_values(
    history: list[RoundRecord], metric: str, window: int = 1
) -> dict[str, tuple[float, float]]:
    """Each site's (metric, validation cases), averaged over the last ``window`` rounds; only
    the sites that scored in every one of them."""
    records = history[-window:]
    scored = [
        {s: v for s, v in r.validation_per_site.items() if metric in v and v.get("num_examples")}
        for r in records
    ]
    sites = set.intersection(*(set(v) for v in scored)) if scored else set()
    return {
        s: (
            float(np.mean([float(v[s][metric]) for v in scored])),
            float(scored[-1][s]["num_examples"]),
        )
        for s in sorted(sites)
    }


def _weighted_mean(values: dict[str, tuple[float, float]]) -> float:
    """The case-weighted mean over sites of their (score, cases); NaN without sites."""
    if not values:
        return float("nan")
    scores, counts = np.array(list(values.values())).T
    return float((scores * counts).sum() / counts.sum())


def _bootstrap(values: dict[str, tuple[float, float]], draws: int = 2000) -> tuple[float, float]:
    """95 % interval of :func:`_weighted_mean`, by bootstrap over sites."""
    sites = sorted(values)
    if not sites:  # no site scored the model (every validation failed)
        return float("nan"), float("nan")
    scores = np.array([values[s][0] for s in sites])
    counts = np.array([values[s][1] for s in sites])
    rng = np.random.default_rng(SEED)
    picks = rng.integers(len(sites), size=(draws, len(sites)))
    means = (scores[picks] * counts[picks]).sum(axis=1) / counts[picks].sum(axis=1)
    low, high = np.percentile(means, [2.5, 97.5])
    return float(low), float(high)


def _versus(
    values: dict[str, tuple[float, float]], reference: dict[str, tuple[float, float]]
) -> dict[str, Any]:
    """This policy's model against the reference policy's on the same sites' validation cases:
    the case-weighted mean difference, its 95 % interval (paired bootstrap over sites) and the
    two-sided Wilcoxon signed-rank test over sites."""
    paired = {
        s: (values[s][0] - reference[s][0], values[s][1])
        for s in sorted(set(values) & set(reference))
    }
    diffs = np.array([d for d, _ in paired.values()])
    p = float("nan") if not np.any(diffs) else float(stats.wilcoxon(diffs).pvalue)
    return {
        "difference": _weighted_mean(paired),
        "difference_ci95": list(_bootstrap(paired)),
        "wilcoxon_p": p,
        "sites": len(paired),
    }


def run_policy(
    name: str,
    sites: list[Path],
    work: Path,
    rounds: int,
    samples: int = 8,
    model: PolicyModel = PolicyModel(),
) -> dict[str, Any]:
    """One policy's run of ``model``."""
    config = POLICIES[name]
    study = replace(model.study(rounds, samples), participation=config)
    label = name.replace(" ", "-").replace(".", "")
    folder = _fresh(work / f"{label}-rounds-{rounds}-samples-{samples}-{model.label}")
    names = [f"site-{k}" for k in range(1, len(sites) + 1)]
    workers = {
        n: SiteWorker(
            n,
            # phantom sites of a few validation cases: their scores leave from one case (a
            # hospital's default withholds them under 5 cases)
            SiteConfig(
                path,
                device=model.device,
                state_dir=folder / n / "state",
                audit_dir=None,
                min_cases_per_metric=1,
            ),
        )
        for n, path in zip(names, sites, strict=True)
    }
    run = FederatedRun(study, folder / "run")
    run.start(names)
    run.simulate_clock(SEED)
    history = []
    trained_cases = []
    began = time.perf_counter()
    for number in range(1, rounds + 1):
        record = RoundRecord(round=number)
        round_began = time.perf_counter()
        targets = run.participants(number)
        meta = run.task_request(number).encode()
        answers = [
            SiteAnswer.decode(
                TaskName.TRAIN, s, *workers[s].handle("train", dict(run.params), meta).encode()
            )
            for s in targets
        ]
        if run.record_training(record, targets, answers):
            live = list(run.live)
            checks = [
                SiteAnswer.decode(
                    TaskName.VALIDATE,
                    s,
                    *workers[s].handle("validate", dict(run.params), meta).encode(),
                )
                for s in live
            ]
            run.record_validation(record, live, checks)
        record.seconds = time.perf_counter() - round_began
        run.end_round(record)
        history.append(record)
        trained_cases.append(sum(record.train[s]["num_examples"] for s in record.accepted))
        print(
            f"  {name}: round {number}: {len(record.accepted)} sites trained, "
            f"{len(record.late)} late, {model.metric} "
            f"{record.validation.get(model.metric, float('nan')):.3f}",
            flush=True,
        )
    deadline = None if config is None else config.deadline_s
    estimate = estimate_run(history, seed=SEED, epochs=study.local_epochs, deadline_s=deadline)
    # one trip per round (validate_incoming) trains and scores the same models, so the same
    # rounds give its estimate; not under a deadline, where the scoring inside the trip
    # changes which sites are late (and so the training)
    one_trip = (
        None
        if deadline is not None
        else estimate_run(history, seed=SEED, epochs=study.local_epochs, incoming=True)
    )
    last = history[-1]
    values = _site_values(history, model.metric)
    window = min(WINDOW, rounds)
    steady = _site_values(history, model.metric, window)
    return {
        "policy": name,
        "task": model.task,
        "metric": model.metric,
        "metric_last_round": last.validation.get(model.metric),
        "metric_per_round": [r.validation.get(model.metric) for r in history],
        "metric_ci95": list(_bootstrap(values)),
        "window": window,
        "metric_window": _weighted_mean(steady),
        "metric_window_ci95": list(_bootstrap(steady)),
        "per_site": {s: v[0] for s, v in values.items()},
        "per_site_window": {s: v[0] for s, v in steady.items()},
        "validation_cases": last.validation.get("num_examples"),
        "sites_per_round": statistics.mean(len(r.accepted) for r in history),
        "cases_per_round": statistics.mean(trained_cases),
        "failed_sites": sorted({s for r in history for s in r.failed}),
        "estimated_hours": estimate.seconds / 3600,
        "estimated_hours_one_trip": None if one_trip is None else one_trip.seconds / 3600,
        "estimated_round_hours": [t.seconds / 3600 for _, t in estimate.rounds],
        "bounding_sites": [list(b) for b in estimate.bounding[:3]],
        "wall_seconds": time.perf_counter() - began,
        "_values": (values, steady),
    }


def run_policies(
    work: Path,
    rounds: int,
    samples: int = 8,
    only: list[str] | None = None,
    model: PolicyModel = PolicyModel(),
) -> list[dict[str, Any]]:
    sites = model.sites(work, 71)
    rows = []
    for name in only or list(POLICIES):
        if name not in POLICIES:
            raise SystemExit(f"--policies {name!r}: give some of {', '.join(POLICIES)}")
        print(f"policies: {name}, 71 sites, {rounds} rounds (in-process) …", flush=True)
        torch.manual_seed(SEED)
        rows.append(run_policy(name, sites, work, rounds, samples, model))
    # every policy against every site training, on the same sites' validation cases
    reference = next((r["_values"] for r in rows if r["policy"] == "all"), None)
    for r in rows:
        values, steady = r.pop("_values")
        if reference is not None and r["policy"] != "all":
            r["versus_all"] = _versus(values, reference[0])
            r["versus_all_window"] = _versus(steady, reference[1])
    return rows


# -- tables ------------------------------------------------------------------------------------


def show(result: dict[str, Any]) -> None:
    if result.get("server"):
        print("\nserver, one FedAvg round of the brain-age SFCN (median of 5; memory: a 6th run)")
        print(
            "sites | round s | aggregate s | checkpoint s | checks s | merge s | answers MB | "
            "peak beyond MB"
        )
        for r in result["server"]:
            print(
                f"{r['sites']:>5} | {r['round_seconds']:7.2f} | {r['aggregate_seconds']:11.2f} | "
                f"{r['checkpoint_seconds']:12.2f} | {r['checks_seconds']:8.2f} | "
                f"{r['validation_merge_seconds']:7.3f} | {r['answers_mb']:10.0f} | "
                f"{r['peak_beyond_answers_mb']:14.0f}"
            )
        first, last = result["server"][0], result["server"][-1]
        ratio = last["round_seconds"] / first["round_seconds"]
        print(f"round time ×{ratio:.1f} for ×{last['sites'] / first['sites']:.0f} sites")
    if result.get("engine"):
        print("\nNVFlare simulator, many sites in few processes (tiny SFCN)")
        print(
            "sites | processes | loaded per process | wall s | round 1 s | later rounds s | "
            "trained | failed | peak memory MB"
        )
        for r in result["engine"]:
            print(
                f"{r['sites']:>5} | {r['processes']:>9} | {r['sites_in_memory']:>18} | "
                f"{r['wall_seconds']:6.0f} | {r['first_round_seconds']:9.1f} | "
                f"{r['later_round_seconds']:14.1f} | {r['accepted']:>7} | {r['failed']:>6} | "
                f"{r['peak_tree_mb']:14.0f}"
            )
    if result.get("overhead"):
        print("\nNVFlare simulator: seconds per round beyond training and validation")
        print(
            "sites | processes | trips | asks every s | wall s | median after round 1 | per round"
        )
        for r in result["overhead"]:
            each = " ".join(f"{v:.2f}" for v in r["overhead_seconds"])
            asks = r.get("task_request_interval", float("nan"))
            print(
                f"{r['sites']:>5} | {r.get('processes', r['sites']):>9} | "
                f"{r.get('trips', 2):>5} | {asks:12.2f} | "
                f"{r.get('wall_seconds', float('nan')):6.0f} | "
                f"{r['median_after_round_1']:20.2f} | {each}"
            )
    if result.get("policies"):
        rows = result["policies"]
        metric = rows[0].get("metric", "mae")
        print(
            f"\n71 long-tailed sites, {rows[0].get('task', 'brain-age')}, FedAvg, participation "
            "policies (estimated time: FeTS speeds)"
        )
        print("policy             | sites/round | cases/round | est. hours | one trip | bound by")
        for r in rows:
            bound = ", ".join(f"{s} ×{n}" for s, n in r["bounding_sites"])
            one = r.get("estimated_hours_one_trip")
            print(
                f"{r['policy']:<18} | {r['sites_per_round']:11.1f} | "
                f"{r['cases_per_round']:11.0f} | {r['estimated_hours']:10.1f} | "
                f"{'—' if one is None else f'{one:8.1f}'} | {bound}"
            )
        window = rows[0].get("window")
        print(
            f"\npolicy             | {metric} last round (95% CI) | vs all: difference (95% CI), "
            "Wilcoxon p"
            + ("" if window is None else f" | mean of the last {window} rounds | vs all")
        )

        def than(versus: dict[str, Any] | None) -> str:
            if versus is None:
                return "—"
            low, high = versus["difference_ci95"]
            return (
                f"{versus['difference']:+.3f} ({low:+.3f}–{high:+.3f}), "
                f"p {versus['wilcoxon_p']:.2g}"
            )

        for r in rows:
            low, high = r.get("metric_ci95", r.get("mae_ci95"))
            value = r.get("metric_last_round", r.get("mae_last_round"))
            line = (
                f"{r['policy']:<18} | {value:6.3f} ({low:6.3f}–{high:6.3f}) | "
                f"{than(r.get('versus_all'))}"
            )
            if window is not None:
                w_low, w_high = r["metric_window_ci95"]
                line += (
                    f" | {r['metric_window']:6.3f} ({w_low:6.3f}–{w_high:6.3f}) | "
                    f"{than(r.get('versus_all_window'))}"
                )
            print(line)
        print(f"{metric} of the global model every 5 rounds:")
        for r in rows:
            curve = r.get("metric_per_round", r.get("mae_per_round", []))
            marks = " ".join(f"{v:.3f}" for v in curve[4::5])
            print(f"  {r['policy']:<18} {marks}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--part", choices=("all", "server", "engine", "overhead", "policies"), default="all"
    )
    parser.add_argument("--sites", default="10,30,71,100", help="server part: site counts")
    parser.add_argument("--engine-sites", default="10,30,71,100", help="engine part: site counts")
    parser.add_argument(
        "--overhead-sites",
        default="2,8,10@2",
        help="overhead part: SITES (one process each) or SITES@PROCESSES",
    )
    parser.add_argument("--rounds", type=int, default=30, help="policies part: rounds")
    parser.add_argument(
        "--overhead-rounds", type=int, default=6, help="overhead part: rounds per run"
    )
    parser.add_argument(
        "--overhead-intervals",
        default="",
        help="overhead part: the server's task_request_interval values to compare, e.g. "
        "0.2,0.15,0.1 (default: its own setting)",
    )
    parser.add_argument(
        "--samples", type=int, default=8, help="policies part: samples per site per round"
    )
    parser.add_argument(
        "--policies", default="", help="policies part: names to run (default: all of them)"
    )
    parser.add_argument(
        "--task",
        choices=("tumor-regions", "brain-age"),
        default="tumor-regions",
        help="policies part: FeTS's task (Dice) or brain age (MAE)",
    )
    parser.add_argument(
        "--base-filters", type=int, default=4, help="policies part: tumor-regions U-Net filters"
    )
    parser.add_argument(
        "--width", type=float, default=0.0625, help="policies part: brain-age SFCN width"
    )
    parser.add_argument(
        "--spacing",
        type=float,
        default=None,
        help="policies part: mm (default: tumor-regions 6, brain-age 8; brain-age native 4)",
    )
    parser.add_argument("--device", default="cpu", help="policies part: the sites' device")
    parser.add_argument("--work", type=Path, default=None, help="work folder (default: temporary)")
    parser.add_argument("--out", type=Path, default=Path("bench/results/scale.json"))
    parser.add_argument("--show", type=Path, default=None, help="print a results JSON again")
    args = parser.parse_args()
    if args.show is not None:
        show(json.loads(args.show.read_text()))
        return
    began = time.perf_counter()
    result: dict[str, Any] = {"bench": "scale", "cpus": psutil.cpu_count()}
    with tempfile.TemporaryDirectory() as scratch:
        work = Path(args.work) if args.work is not None else Path(scratch)
        if args.part in ("all", "server"):
            counts = [int(v) for v in str(args.sites).split(",") if v]
            result["server"] = run_server(counts, work)
        if args.part in ("all", "engine"):
            counts = [int(v) for v in str(args.engine_sites).split(",") if v]
            result["engine"] = run_engine(counts, work)
        if args.part in ("all", "overhead"):
            configs = [v for v in str(args.overhead_sites).split(",") if v]
            intervals = tuple(float(v) for v in str(args.overhead_intervals).split(",") if v)
            result["overhead"] = run_overhead(work, configs, args.overhead_rounds, intervals)
        if args.part in ("all", "policies"):
            only = [v for v in str(args.policies).split(",") if v] or None
            model = PolicyModel(args.task, args.spacing, args.device, args.width, args.base_filters)
            result["policies"] = run_policies(work, args.rounds, args.samples, only, model)
    result["seconds"] = time.perf_counter() - began
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    show(result)
    print(f"\n{result['seconds']:.0f} s; wrote {args.out}")


if __name__ == "__main__":
    main()
