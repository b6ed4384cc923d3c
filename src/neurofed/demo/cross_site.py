"""The demo's cross-site matrix, built the way a federation builds it: by evaluation studies.

Every model (the federated one, the pooled one, each site's local one) is sent to every site by
two studies of ``kind = "evaluate"`` run in NVFlare's simulator, one model per round:

- the **training sites** score each model on their validation split (their training cases would
  flatter their own local model); the round's merge over sites is the "training sites" column;
- the **held-out site** scores each model on every case. Its custodian allows per-case values for
  the demo's dataset (``share_case_values``), so the held-out comparison can pair the models case
  by case; the values carry no identifiers and come in the same case order for every model.

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

#: The dataset name the demo's evaluation studies carry; the held-out site shares per-case
#: values for it only.
DEMO_DATASET = "neurofed-demo-phantom"
TRAINING_RUN = "training-sites"
HELD_OUT_RUN = "held-out"


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
    """``{model: {column: cell}}`` from two evaluation studies run under ``folder`` (each a run
    folder, resumed when run again); ``study`` is the training study (its selection and seed)."""
    total = 2 * len(models)

    def evaluate(name: str, sites: Sequence[Path], split: Split | None, offset: int) -> Any:
        evaluation = evaluation_study(
            models,
            name=f"{study.name}-{name}",
            selection=study.selection,
            split=split,
            seed=study.seed,
            dataset=DEMO_DATASET,
            round_timeout_s=study.round_timeout_s,
        )
        policy: dict[str, Any] = {"min_cases_per_metric": 1}  # phantom sites (see above)
        if split is None:  # the held-out site: per-case values for the paired comparison
            policy["share_case_values"] = [DEMO_DATASET]
        settings = {n: policy for n in site_names(len(sites))}
        run_simulation(
            evaluation,
            sites,
            folder / name,
            device=device,
            site_settings=settings,
            progress=lambda done, _, label: progress(offset + done, total, f"{name}: {label}"),
        )
        results = json.loads((folder / name / EVALUATION).read_text(encoding="utf-8"))
        return {row["name"]: row for row in results["models"]}

    on_training = evaluate(TRAINING_RUN, training, Split.VALIDATION, 0)
    on_held_out = evaluate(HELD_OUT_RUN, [held_out], None, len(models))
    names = dict(zip(site_names(len(training)), training, strict=True))
    (alone,) = site_names(1)  # the held-out run's one site
    table: dict[str, dict[str, dict[str, Any]]] = {}
    for model in models:
        scored, held = on_training[model], on_held_out[model]
        row = {
            site.name: _cell(scored.get("validation_per_site", {}).get(sim), "validation")
            for sim, site in names.items()
        }
        row[ALL_TRAINING] = _cell(scored.get("validation"), "validation")
        row[held_out.name] = _cell(held.get("validation_per_site", {}).get(alone), "all")
        row[held_out.name]["per_case"] = held.get("cases_per_site", {}).get(alone, {})
        table[model] = row
    return table
