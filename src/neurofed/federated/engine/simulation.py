"""A study on one machine: NVFlare's simulator with the same controller and executor as a
deployed federation.

:func:`run_simulation` writes one site config per site folder (``<out>/sites/site-<k>.json``,
outside the job: the job only names that file), builds a config-only ``FedJob``
(:func:`~neurofed.federated.engine.job.build_job`, shared with a deployed federation;
``set_app_packages(["neurofed"])``: no ``custom/`` code) with
:class:`~neurofed.federated.engine.controller.StudyController` on the server and
:class:`~neurofed.federated.engine.site_executor.SiteExecutor` on clients ``site-1`` … ``site-N``,
sets the server's task request interval to 0.2 s (the 2 s default is pure overhead per round)
and runs the simulator with its workspace in ``<out>/simulator``. The run folder is ``<out>``
(see :mod:`~neurofed.federated.server.run_folder`); running again resumes it. What a simulated
site keeps for itself (FedBN's local layers, Ditto's personalised model) goes to its state folder
inside its site folder, as at a deployed site (``<site>/neurofed/federated/<study hash[:16]>/``,
:mod:`~neurofed.federated.site.state`).

The simulated sites are processes sharing this machine's cores: unless ``OMP_NUM_THREADS`` is
set, each gets ``max(1, cores // sites)`` torch threads (:func:`site_threads`). More threads than
cores make OpenMP regions wait for descheduled threads (the demo runs one thread per site for
the same reason).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import signal
import threading
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.data.manifest import site_file
from neurofed.federated.protocol import RunSummary
from neurofed.federated.server.run_folder import (
    ROUNDS,
    SUMMARY,
    check_run_folder,
    latest_round_checkpoint,
    settle_round_checkpoints,
)
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.study import Study, StudyError, StudyKind
from neurofed.federated.study.initial_model import InitialModelError
from neurofed.keys import SiteFile
from neurofed.types import ProgressCallback

__all__ = [
    "ALLOWED_CLASSES",
    "SERVER_CONFIG",
    "SIMULATOR_FOLDER",
    "SITES_FOLDER",
    "SimulationError",
    "SimulationResult",
    "run_simulation",
    "site_names",
]

#: Server settings of every simulated job (ENGINE.md: 0.2 s keeps round overhead ~1 s).
SERVER_CONFIG: dict[str, Any] = {"server": {"task_request_interval": 0.2}}
#: The only neurofed classes a job may build (each site's ``local/resources.json`` allow-list).
ALLOWED_CLASSES: tuple[str, ...] = (
    "neurofed.federated.engine.controller.StudyController",
    "neurofed.federated.engine.site_executor.SiteExecutor",
)
SIMULATOR_FOLDER = "simulator"
SITES_FOLDER = "sites"


class SimulationError(RuntimeError):
    """A simulation cannot start or did not finish; the message says why and what to do."""


@dataclass(frozen=True)
class SimulationResult:
    """A finished simulated run."""

    run_dir: Path
    summary: RunSummary
    seconds: float

    @property
    def model_dir(self) -> Path | None:
        """The selected model's folder (``None``: no round was aggregated, so no model)."""
        return None if self.summary.model is None else self.run_dir / self.summary.model


#: What NVFlare's ``simulator_run`` returns after it caught a ``KeyboardInterrupt`` itself.
_NVFLARE_INTERRUPTED = -9
#: Seconds the simulator's processes get to end after ``SIGTERM`` before ``SIGKILL``.
STOP_GRACE_S = 5.0


def _raise_interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


@contextlib.contextmanager
def _stop_cleanly() -> Iterator[None]:
    """Run the simulator so that Ctrl-C or ``SIGTERM`` stops every process it started.

    NVFlare starts the simulator in a session of its own (``setsid``), so a terminal's Ctrl-C
    never reaches it; ``SIGTERM`` would leave it running. Here ``SIGTERM`` becomes a
    ``KeyboardInterrupt``, and on any interruption every process started since (found through
    ``/proc``, whatever its session) is ended: ``SIGTERM``, then ``SIGKILL`` after
    :data:`STOP_GRACE_S` seconds. The run folder keeps the rounds already checkpointed, so the
    same command resumes it.
    """
    from neurofed.federated.engine.services import descendants, stop_processes

    before = set(descendants(os.getpid()))
    main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, _raise_interrupt) if main else None
    try:
        yield
    except BaseException:
        started = [p for p in descendants(os.getpid()) if p not in before]
        stop_processes(started, grace_s=STOP_GRACE_S)
        raise
    finally:
        if main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


@contextlib.contextmanager
def site_threads(sites: int) -> Iterator[int]:
    """Within the block, child processes run ``max(1, cores // sites)`` OpenMP (torch) threads,
    unless ``OMP_NUM_THREADS`` is already set (then it is kept); yields the number in force.

    Examples
    --------
    >>> import os
    >>> with site_threads(10_000) as threads:
    ...     threads == int(os.environ["OMP_NUM_THREADS"])
    True
    """
    before = os.environ.get("OMP_NUM_THREADS")
    if before is None:
        os.environ["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // max(sites, 1)))
    try:
        yield int(os.environ["OMP_NUM_THREADS"]) if os.environ["OMP_NUM_THREADS"].isdigit() else 1
    finally:
        if before is None:
            os.environ.pop("OMP_NUM_THREADS", None)


def _quiet_weights_hash(study: Study) -> None:
    """Inside ``warnings.catch_warnings()``: no NVFlare warning about a "potential secret" for a
    study's ``[initial_model] sha256`` (NVFlare's scan of the job config flags every 64-digit hex
    string; this one is the weights' hash, which custodians read when they approve the study)."""
    if study.initial_model is None and not study.evaluated_models():
        return
    from nvflare.fuel.utils.secret_utils import PotentialSecretWarning

    warnings.filterwarnings(
        "ignore", message=r".*high-entropy hex string", category=PotentialSecretWarning
    )


def site_names(count: int) -> list[str]:
    """Client names of ``count`` simulated sites.

    >>> site_names(2)
    ['site-1', 'site-2']
    """
    return [f"site-{k}" for k in range(1, count + 1)]


def _check_sites(site_dirs: Sequence[Path]) -> list[Path]:
    if not site_dirs:
        raise SimulationError("no site given; pass --site DIR for each site folder")
    roots = [Path(s).resolve() for s in site_dirs]
    if len(set(roots)) != len(roots):
        raise SimulationError("a site folder is given twice; give each site once")
    for root in roots:
        if not root.is_dir():
            raise SimulationError(f"{root}: no such site folder")
        if not site_file(root, SiteFile.MANIFEST).is_file():
            raise SimulationError(
                f"{root} has not been checked: run `neurofed site check {root}` first"
            )
    return roots


def _write_allow_list(workspace: Path) -> Path:
    """``<workspace>/local/resources.json``: NVFlare's default classes plus ours, enforced.

    The simulator copies ``<workspace>/local`` into every participant's ``local/`` folder, as a
    custodian would configure a deployed site.
    """
    from nvflare.app_common.default_component_policy import DEFAULT_CLASS_ALLOW_LIST

    return write_json_atomically(
        workspace / "local" / "resources.json",
        {
            "class_allow_list": [*DEFAULT_CLASS_ALLOW_LIST, *ALLOWED_CLASSES],
            "class_list_enforcement_mode": "enforce",
        },
    )


def _write_log_config(workspace: Path) -> Path:
    """``<workspace>/local/log_config.json``: NVFlare's logging with the console at WARNING.

    Every INFO line still goes to the log files under the simulator workspace (``server/``,
    ``site-<k>/``); only warnings and errors reach the user's terminal.
    """
    from nvflare.fuel.utils.log_utils import default_log_dict

    config = copy.deepcopy(default_log_dict)
    config["handlers"]["consoleHandler"]["level"] = "WARNING"
    return write_json_atomically(workspace / "local" / "log_config.json", config)


def _watch(
    run_dir: Path,
    study: Study,
    progress: ProgressCallback,
    stop: threading.Event,
) -> None:
    """Report each round once it closed, with the study's selection metric.

    A round's ``metrics.json`` is first written right after aggregation (with the checkpoint),
    then again once the sites validated the new model: a round is reported when it holds its
    validation, was not aggregated, or a later round began (validation failed everywhere);
    the rounds still open when the run ends are reported then.
    """
    seen = 0
    metric = study.selection.metric
    finished = False
    while not finished:
        finished = stop.wait(0.5)
        done = sorted(
            int(p.parent.name)
            for p in (run_dir / ROUNDS).glob("*/metrics.json")
            if p.parent.name.isdigit()
        )
        for number in (n for n in done if n > seen):
            try:
                record = json.loads((run_dir / ROUNDS / str(number) / "metrics.json").read_text())
            except (OSError, ValueError):  # being replaced: read at the next look
                break
            closed = bool(record.get("validation")) or not record.get("aggregated", True)
            if not (closed or number < done[-1] or finished):
                break
            seen = number
            progress(seen, study.rounds, f"round {seen}: {_round_label(study, record, metric)}")


def _round_label(study: Study, record: Mapping[str, Any], metric: str) -> str:
    value = (record.get("validation") or {}).get(metric)
    if study.kind is StudyKind.EVALUATE:  # round k scored the k-th model
        name = study.evaluated_models()[int(record["round"]) - 1].name
        return f"{name!r} scored" + ("" if value is None else f", {metric} {value:.4g}")
    if not record.get("aggregated", True):
        return "not aggregated"
    if value is not None:
        return f"{metric} {value:.4g}"
    if record.get("withheld"):  # the sites' privacy minimum, not a failure
        return (
            "aggregated, not validated: the sites withheld their scores (fewer validation "
            "cases than their min_cases_per_metric; a simulation may lower it with "
            "--min-cases-per-metric)"
        )
    return "aggregated, not validated"


def _finished(run_dir: Path, study: Study, checkpoint: Path | None) -> RunSummary | None:
    """The summary of a run of ``study`` in ``run_dir`` whose newest round checkpoint is
    ``checkpoint`` and that did all its rounds (else ``None``)."""
    if checkpoint is None:
        return None
    try:
        summary = RunSummary.from_json(json.loads((run_dir / SUMMARY).read_text("utf-8")))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    done = summary.study_hash == study.content_hash and summary.rounds_done == study.rounds
    last = checkpoint.name == f"round-{study.rounds}"
    model = summary.model is not None and (run_dir / summary.model).is_dir()
    return summary if done and last and model else None


def run_simulation(
    study: Study,
    site_dirs: Sequence[Path],
    out: Path,
    *,
    progress: ProgressCallback | None = None,
    device: str = "cpu",
    audit_dir: Path | None = None,
    site_settings: Mapping[str, Mapping[str, Any]] | None = None,
    clock_seed: int | None = None,
    processes: int | None = None,
    sites_in_memory: int = 1,
) -> SimulationResult:
    """Run ``study`` over ``site_dirs`` in NVFlare's simulator; the run folder is ``out``.

    Parameters
    ----------
    study
        The validated study.
    site_dirs
        Site folders checked with ``neurofed site check`` (simulated as ``site-1`` …).
    out
        The run folder (resumed when it already holds checkpoints of the same study).
    progress
        Called as ``progress(round, rounds, label)`` after each round.
    device
        Device of every simulated site.
    audit_dir
        If set, each site records every payload it sends under ``audit_dir/<site>/``
        (:attr:`~neurofed.federated.site.config.SiteConfig.audit_dir`).
    site_settings
        Per simulated site name (``site-1`` …), fields of its
        :class:`~neurofed.federated.site.config.SiteConfig` to set, e.g.
        ``{"site-2": {"require_approval": True, "audit_log": path}}``.
    clock_seed
        Seed of the sites' simulated speeds (:mod:`neurofed.federated.clock`; default: the
        study's seed): the deadline policy applies to simulated time.
    processes
        Worker processes (default: one per site). Fewer than the sites: each process hosts a
        fixed group of the sites for the whole run and runs their tasks in turn
        (:mod:`~neurofed.federated.engine.hosting`); secure aggregation needs one process per
        site.
    sites_in_memory
        With fewer processes than sites: the sites each process keeps loaded (cases and model)
        between tasks; the others are loaded again at their next task. More is faster and
        needs more memory; the run is the same.

    Raises
    ------
    SimulationError
        An unchecked site folder, a new run whose ``[initial_model]`` is missing, changed or
        does not fit the study, or a run that ended without its summary.
    RunFolderError
        ``out`` holds a run of another study.
    """
    from neurofed.federated.engine.hosting import assign_sites
    from neurofed.federated.engine.job import build_job

    roots = _check_sites(site_dirs)
    workers = len(roots) if processes is None else int(processes)
    if not 1 <= workers <= len(roots):
        raise SimulationError(f"processes = {processes}: give 1 to {len(roots)} (the sites)")
    if sites_in_memory < 1:
        raise SimulationError(
            f"sites_in_memory = {sites_in_memory}: give 1 or more (1: a process keeps only the "
            "site it serves)"
        )
    if workers < len(roots) and study.strategy_params.secagg:
        raise SimulationError(
            f"secure aggregation keeps each site's round secrets in its process; run the "
            f"{len(roots)} sites in {len(roots)} processes (leave out processes)"
        )
    if study.min_sites > len(roots):
        raise SimulationError(
            f"study {study.name!r} needs {study.min_sites} sites per round (min_sites) but "
            f"{len(roots)} were given; give more --site folders or lower min_sites"
        )
    run_dir = Path(out).resolve()
    check_run_folder(run_dir, study.content_hash)  # before any process starts
    settle_round_checkpoints(run_dir)
    latest = latest_round_checkpoint(run_dir)
    finished = _finished(run_dir, study, latest)
    if finished is not None:  # nothing left to run: the run's result, without starting NVFlare
        return SimulationResult(run_dir=run_dir, summary=finished, seconds=0.0)
    if latest is None:  # a new run starts from the initial model
        try:
            study.load_initial_model()
        except InitialModelError as error:
            raise SimulationError(str(error)) from None
    names = site_names(len(roots))
    try:
        study.check_evaluated_sites(names)
    except StudyError as error:
        raise SimulationError(str(error)) from None
    run_dir.mkdir(parents=True, exist_ok=True)
    configs = []
    unknown = sorted(set(site_settings or {}) - set(names))
    if unknown:
        raise SimulationError(f"site_settings names {unknown}; the sites are {names}")
    for name, root in zip(names, roots, strict=True):
        config = SiteConfig(
            data_root=root,
            device=device,
            audit_dir=None if audit_dir is None else Path(audit_dir).resolve() / name,
        )
        config = dataclasses.replace(config, **dict((site_settings or {}).get(name, {})))
        path = config.write(run_dir / SITES_FOLDER / f"{name}.json")
        configs.append(path)
    summary_path = run_dir / SUMMARY
    summary_path.unlink(missing_ok=True)

    hosts = assign_sites(names, workers) if workers < len(names) else None
    job = build_job(
        study,
        run_dir=str(run_dir),
        site_configs={name: str(path) for name, path in zip(names, configs, strict=True)},
        min_clients=study.min_sites if hosts is None else len(hosts),
        clock_seed=study.seed if clock_seed is None else clock_seed,
        hosts=hosts,
        sites_in_memory=sites_in_memory,
    )

    _write_allow_list(run_dir / SIMULATOR_FOLDER)
    log_config = _write_log_config(run_dir / SIMULATOR_FOLDER)
    stop = threading.Event()
    watcher = None
    if progress is not None:
        watcher = threading.Thread(
            target=_watch, args=(run_dir, study, progress, stop), daemon=True
        )
        watcher.start()
    began = time.perf_counter()
    try:
        with _stop_cleanly(), warnings.catch_warnings(), site_threads(workers):
            _quiet_weights_hash(study)
            code = job.simulator_run(
                str(run_dir / SIMULATOR_FOLDER), threads=workers, log_config=str(log_config)
            )
        if code == _NVFLARE_INTERRUPTED:  # NVFlare caught a Ctrl-C itself and returned -9
            raise KeyboardInterrupt
    finally:
        stop.set()
        if watcher is not None:
            watcher.join()
    seconds = time.perf_counter() - began
    if not summary_path.is_file():
        raise SimulationError(
            f"the simulation ended without {summary_path}; see the server log under "
            f"{run_dir / SIMULATOR_FOLDER} for why. Running the same command again resumes "
            "from the last finished round"
        )
    summary = RunSummary.from_json(json.loads(summary_path.read_text(encoding="utf-8")))
    return SimulationResult(run_dir=run_dir, summary=summary, seconds=seconds)
