"""The demo's cross-site matrix, built the way a federation builds it: by an evaluation study.

Every model (the federated one, the pooled one, each site's local one) is sent to every site by
one study of ``kind = "evaluate"`` run in NVFlare's simulator, one model per round:

- the **training sites** score each model on their validation split (their training cases would
  flatter their own local model); the round's merge over these sites
  (``validation_per_split["validation"]``) is the "training sites" column;
- the **held-out site** scores each model on every case (``[evaluate.site_splits]``). Its
  custodian allows per-case values for the demo's dataset (``share_case_values``), so the
  held-out comparison can pair the models case by case; the values carry no identifiers and come
  in the same case order for every model.

One study rather than one per group of sites: the simulator's start-up and shutdown (about 20 s
on two cores) is paid once.

The demo's sites are phantoms with a few validation cases each, so their custodians send metrics
of any number of cases (``min_cases_per_metric = 1``); a hospital's default withholds a metric
behind fewer than 5 cases, which would blank most cells of a table this small.

The table has the shape of :func:`neurofed.evaluate.cross_site_table` (which scores the same
models in one process, reading every site directly): ``{model: {column: cell}}``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neurofed.evaluate import ALL_TRAINING
from neurofed.federated.engine import run_simulation
from neurofed.federated.engine.simulation import site_names
from neurofed.federated.server.run_folder import EVALUATION
from neurofed.federated.study import Study
from neurofed.federated.study.from_models import evaluation_study
from neurofed.keys import Split
from neurofed.types import ProgressCallback

__all__ = ["DEMO_DATASET", "federated_cross_site"]

#: The dataset name the demo's evaluation study carries; the held-out site shares per-case values
#: for it only.
DEMO_DATASET = "neurofed-demo-phantom"
#: The evaluation study's run folder, under the demo's ``evaluation/``.
CROSS_SITE_RUN = "cross-site"


def _cell(scored: Mapping[str, Any] | None, split: str) -> dict[str, Any]:
    metrics = dict(scored or {})
    return {
        "split": split,
        "cases": int(metrics.get("num_examples") or 0),
        "metrics": dict(sorted(metrics.items())),
    }


def federated_cross_site(
    models: Mapping[str, Path],
    training: Sequence[Path],
    held_out: Path,
    folder: Path,
    *,
    study: Study,
    device: str,
    progress: ProgressCallback,
) -> dict[str, dict[str, dict[str, Any]]]:
    """``{model: {column: cell}}`` from one evaluation study run in ``folder / CROSS_SITE_RUN``
    (resumed when run again); ``study`` is the training study (its selection and seed)."""
    sites = [*training, held_out]
    names = dict(zip(site_names(len(sites)), sites, strict=True))
    alone = next(name for name, site in names.items() if site == held_out)
    evaluation = evaluation_study(
        models,
        name=f"{study.name}-{CROSS_SITE_RUN}",
        selection=study.selection,
        split=Split.VALIDATION,
        site_splits={alone: None},  # a site that trained nothing: every case
        seed=study.seed,
        dataset=DEMO_DATASET,
        round_timeout_s=study.round_timeout_s,
    )
    policy: dict[str, Any] = {"min_cases_per_metric": 1}  # phantom sites (see above)
    settings = {name: dict(policy) for name in names}
    settings[alone]["share_case_values"] = [DEMO_DATASET]  # for the paired comparison
    run_dir = folder / CROSS_SITE_RUN
    run_simulation(
        evaluation, sites, run_dir, device=device, site_settings=settings, progress=progress
    )
    results = json.loads((run_dir / EVALUATION).read_text(encoding="utf-8"))
    scored = {row["name"]: row for row in results["models"]}
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        row_scored = scored[model]
        per_site = row_scored.get("validation_per_site", {})
        row = {
            site.name: _cell(per_site.get(sim), "validation")
            for sim, site in names.items()
            if site != held_out
        }
        merged = row_scored.get("validation_per_split", {}).get(Split.VALIDATION.value)
        row[ALL_TRAINING] = _cell(merged, "validation")
        row[held_out.name] = _cell(per_site.get(alone), "all")
        row[held_out.name]["per_case"] = row_scored.get("cases_per_site", {}).get(alone, {})
        table[model] = row
    return table
