"""The fingerprint round of a planned study, and the run's plan on disk.

A study with ``[plan]`` (:mod:`~neurofed.federated.study.plan`) runs one extra round before
round 1, unless its run folder already holds ``plan.json`` (a resumed run reads it back):

1. the server sends ``fingerprint`` to every site;
2. each site answers with the fingerprint of its training split for the study's task
   (:func:`~neurofed.training.planning.compute_task_fingerprint`) as the text of its JSON
   (its integer sums may exceed the 64 bits NVFlare's serialiser takes): fixed-length
   histograms, counts and integer sums only — or with an error reason (e.g. too few cases);
3. :func:`plan_from_answers` merges the fingerprints of the sites that sent one (exactly:
   :func:`~neurofed.preprocess.fingerprint.merge_fingerprints`) once at least ``min_sites``
   did, and makes the plan (:func:`~neurofed.preprocess.plan.make_plan`) with the study's
   planner settings, recording the study's ``[train.preprocess]`` (crop, normalisation, N4,
   registration) and each departure from nnU-Net in the plan;
4. :func:`write_run_plan` writes ``<run>/fingerprint.json`` (the merged aggregate),
   ``<run>/plan.json`` and a ``plan`` entry in ``run.json`` saying which sites contributed.

From then on every training and validation task carries the plan
(:func:`~neurofed.federated.protocol.encode_plan`); a site checks it
(:func:`~neurofed.federated.protocol.decode_plan`,
:func:`~neurofed.federated.study.plan.check_plan`) and trains
with :meth:`Study.train_config(plan=...) <neurofed.federated.study.Study.train_config>`. Saved
models get ``plan.json`` and ``fingerprint.json`` beside their ``model.json``
(:func:`copy_plan_files`).

Examples
--------
>>> PlanningRecord(targets=["site-1"]).to_json()["targets"]
['site-1']
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.federated.protocol import FingerprintResult, PlanSummary, SiteAnswer
from neurofed.federated.study import Study
from neurofed.federated.study.plan import FINGERPRINT_FILE, PLAN_FILE
from neurofed.preprocess.fingerprint import Fingerprint, FingerprintError, merge_fingerprints
from neurofed.preprocess.plan import Plan, PlanError, make_plan
from neurofed.training.model_folder import seal_model

__all__ = [
    "PlanningError",
    "PlanningRecord",
    "copy_plan_files",
    "plan_from_answers",
    "plan_summary",
    "read_run_plan",
    "write_run_plan",
]

logger = logging.getLogger(__name__)

_RUN_JSON = "run.json"


class PlanningError(RuntimeError):
    """The fingerprint round cannot give a plan; the message says why and what to do."""


@dataclass
class PlanningRecord:
    """Who took part in the fingerprint round (written to ``run.json`` as ``plan``).

    Attributes
    ----------
    targets
        Sites the fingerprint task was sent to.
    contributed
        Sites whose fingerprints were merged.
    failed
        Site → the reason it gave instead of a fingerprint (or why its answer was unusable).
    dropped
        Sites that did not answer in time.
    plan_id, fingerprint_id, num_cases
        The plan, the merged fingerprint, and its number of cases (empty until planned).
    """

    targets: list[str] = field(default_factory=list)
    contributed: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)
    plan_id: str = ""
    fingerprint_id: str = ""
    num_cases: int = 0

    def to_json(self) -> dict[str, Any]:
        return {
            "plan_id": self.plan_id,
            "fingerprint_id": self.fingerprint_id,
            "num_cases": self.num_cases,
            "targets": list(self.targets),
            "sites": list(self.contributed),
            "failed": dict(self.failed),
            "dropped": list(self.dropped),
        }


def plan_from_answers(
    study: Study,
    targets: Sequence[str],
    answers: Sequence[SiteAnswer],
) -> tuple[Plan, Fingerprint, PlanningRecord]:
    """Merge the sites' fingerprints and plan (step 3 of the module docstring).

    Parameters
    ----------
    study
        A study with ``[plan]``.
    targets
        Sites the fingerprint task went to.
    answers
        Every answer received.

    Raises
    ------
    PlanningError
        Fewer than ``study.min_sites`` sites sent a usable fingerprint, or the merged
        fingerprint cannot be planned; the message names every site's reason.
    """
    if study.plan is None:
        raise PlanningError(f"study {study.name!r} has no [plan]; it needs no fingerprint round")
    record = PlanningRecord(targets=sorted(targets))
    answered = {a.site_id for a in answers}
    record.dropped = [s for s in record.targets if s not in answered]
    fingerprints: list[Fingerprint] = []
    for answer in sorted(answers, key=lambda a: a.site_id):  # order-independent result
        site = answer.site_id
        if not isinstance(answer.result, FingerprintResult):
            error = answer.error or "it answered with another task's result"
            record.failed[site] = error
            logger.warning("fingerprint round: %s sent no fingerprint: %s", site, error)
            continue
        try:
            fingerprint = Fingerprint.from_json(json.loads(answer.result.fingerprint))
        except (TypeError, ValueError) as exc:  # FingerprintError is a ValueError
            record.failed[site] = f"unusable fingerprint ({exc})"
            logger.warning("fingerprint round: %s sent an unusable fingerprint: %s", site, exc)
            continue
        fingerprints.append(fingerprint)
        record.contributed.append(site)
    if len(fingerprints) < study.min_sites:
        reasons = "; ".join(f"{s}: {r}" for s, r in record.failed.items())
        late = f"; no answer in time from {record.dropped}" if record.dropped else ""
        raise PlanningError(
            f"the fingerprint round needs {study.min_sites} site(s) (the study's min_sites) but "
            f"{len(fingerprints)} sent a fingerprint ({reasons or 'no failure reported'}{late}); "
            "fix the sites' data (a site needs at least 3 training cases with the task's "
            "modalities) and run the study again"
        )
    try:
        merged = merge_fingerprints(fingerprints)
        plan = make_plan(merged, study.plan.settings, study.train.preprocess)
    except (FingerprintError, PlanError) as exc:
        raise PlanningError(f"the merged fingerprint cannot be planned: {exc}") from exc
    record.plan_id = plan.plan_id
    record.fingerprint_id = merged.fingerprint_id
    record.num_cases = merged.num_cases
    return plan, merged, record


def write_run_plan(
    run_dir: Path, plan: Plan, fingerprint: Fingerprint, record: PlanningRecord
) -> Path:
    """Write ``fingerprint.json``, ``plan.json`` (last: its presence means planned) and the
    ``plan`` entry of ``run.json``; returns the path of ``plan.json``."""
    run_dir = Path(run_dir)
    write_json_atomically(run_dir / FINGERPRINT_FILE, fingerprint.to_json())
    run_json = run_dir / _RUN_JSON
    if run_json.is_file():
        data = json.loads(run_json.read_text(encoding="utf-8"))
        write_json_atomically(run_json, data | {"plan": record.to_json()})
    return write_json_atomically(run_dir / PLAN_FILE, plan.to_json())


def read_run_plan(
    run_dir: Path, study: Study, *, resuming: bool = False
) -> tuple[Plan | None, dict[str, Any]]:
    """The run's ``plan.json`` (``None``: not planned yet), checked against ``study``, and the
    ``plan`` entry of ``run.json`` (who contributed to it).

    Raises
    ------
    PlanningError
        The file is unreadable, is not a plan of this study (another task's, other settings),
        or is missing although the run has round checkpoints (``resuming``) of a planned study.
    """
    path = Path(run_dir) / PLAN_FILE
    if not path.is_file():
        if study.plan is not None and resuming:
            raise PlanningError(
                f"{run_dir} holds round checkpoints of a planned study but no plan.json; "
                "copy the run's plan.json back, or choose another --out"
            )
        return None, {}
    if study.plan is None:
        raise PlanningError(
            f"{path}: the run folder holds a plan but study {study.name!r} has no [plan]; "
            "choose another run folder"
        )
    try:
        plan = study.read_plan(path)
    except PlanError as exc:
        raise PlanningError(
            f"unusable plan ({exc}); delete plan.json (and fingerprint.json) to plan again "
            "with a new fingerprint round, or choose another run folder"
        ) from exc
    run_json = Path(run_dir) / _RUN_JSON
    stored = json.loads(run_json.read_text(encoding="utf-8")) if run_json.is_file() else {}
    logger.info("%s: read plan %s back", run_dir, plan.plan_id)
    return plan, dict(stored.get("plan") or {})


def plan_summary(plan: Plan | None, planning: Mapping[str, Any]) -> PlanSummary | None:
    """The run summary's ``plan`` entry (none for a study without [plan])."""
    if plan is None:
        return None
    return PlanSummary(
        plan_id=plan.plan_id,
        spacing=tuple(plan.spacing),
        patch_size=tuple(plan.patch_size),
        volume_shape=tuple(plan.volume_shape),
        batch_size=plan.batch_size,
        num_cases=plan.num_cases,
        fingerprint_id=plan.fingerprint_id,
        sites=tuple(planning.get("sites", [])),
        failed=dict(planning.get("failed", {})),
    )


def copy_plan_files(run_dir: Path, folder: Path) -> None:
    """Copy the run's ``plan.json`` and ``fingerprint.json`` into a model ``folder`` and seal
    the folder again (its seal covers them)."""
    copied = False
    for name in (PLAN_FILE, FINGERPRINT_FILE):
        source = Path(run_dir) / name
        if source.is_file():
            shutil.copyfile(source, Path(folder) / name)
            copied = True
    if copied:
        seal_model(folder)
