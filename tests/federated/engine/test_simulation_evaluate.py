"""An evaluation-only study (``kind = "evaluate"``) in NVFlare's simulator: the given model is
scored on every case of every site and nothing is trained; several models are scored one per round
on the split the study names, or a named site's own (each ~20 s simulation)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from neurofed.artifacts import sha256_file
from neurofed.evaluate import evaluate_model
from neurofed.keys import Split
from neurofed.training import LocalTrainer, save_model
from neurofed.training.model_folder import MODEL_WEIGHTS
from neurofed.training.records import finalize_metrics
from tests.federated.conftest import tiny_study
from tests.federated.engine.test_simulation_initial_model import _public_model, _simulate

#: The tiny sites have 4 cases, fewer than a site's privacy minimum of 5: their scores leave
#: only where the simulated custodians lower it (``simulate --min-cases-per-metric``).
SCORES_LEAVE = ("--min-cases-per-metric", "1")


def _model_for(folder: Path, seed: int = 99) -> tuple[Path, str]:
    """A tiny brain-age model trained (here: initialised) as the study preprocesses."""
    config = tiny_study().train_config(device="cpu").with_changes(seed=seed)
    save_model(folder, LocalTrainer(config).model, config)
    return folder, sha256_file(folder / MODEL_WEIGHTS)


def _evaluation_study(folder: Path, sha256: str) -> Path:
    study = tiny_study(rounds=1, min_sites=2)
    text = (
        f'kind = "evaluate"\n{study.to_toml()}\n'
        f'[initial_model]\npath = "models/public"\nsha256 = "{sha256}"\n'
    )
    path = folder / "study.toml"
    path.write_text(text, encoding="utf-8")
    return path


@pytest.mark.slow
def test_an_evaluation_study_scores_the_given_model_on_every_case_and_trains_nothing(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare
    model, sha = _model_for(tmp_path / "lead" / "models" / "public")
    study = _evaluation_study(tmp_path / "lead", sha)

    # Execute
    code, output = _simulate(study, age_sites, tmp_path / "run", *SCORES_LEAVE)

    # Assert: no training task, each site's metrics are the model's on all its cases
    assert code == 0, output
    assert "evaluation of its initial model" in output and "all sites" in output
    record = json.loads((tmp_path / "run/rounds/1/metrics.json").read_text())
    assert record["train"] == {} and record["aggregated"] is False
    assert set(record["validation_per_site"]) == {"site-1", "site-2"}
    for k, site in enumerate(age_sites, start=1):
        state, cases, trained = evaluate_model(model, site, None)
        expected = finalize_metrics(trained.task, state)
        scored = record["validation_per_site"][f"site-{k}"]
        assert scored["num_examples"] == len(cases) > 1  # every case, not the validation split
        assert scored["mae"] == pytest.approx(expected["mae"], rel=1e-5)
    summary = json.loads((tmp_path / "run/summary.json").read_text())
    assert summary["model"] is None and summary["rounds_done"] == 1


def test_a_model_trained_with_other_preprocessing_is_refused_before_any_site_runs(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: a model trained at its native spacing, the study preprocesses at 8 mm
    _, sha = _public_model(tmp_path / "lead" / "models" / "public")
    study = _evaluation_study(tmp_path / "lead", sha)

    # Execute
    code, output = _simulate(study, age_sites, tmp_path / "run")

    # Assert
    assert code != 0
    assert "the model was trained with [train.preprocess] spacing = None" in output
    assert "give the study's [train.preprocess] the model's values" in output


def _several_models(lead: Path, sites: str = 'site-2 = "all"') -> dict[str, tuple[Path, str]]:
    """Two models in ``lead``, scored on each site's validation split except those ``sites``
    names (``[evaluate.site_splits]``)."""
    models = {name: _model_for(lead / name, seed) for name, seed in (("a", 5), ("b", 6))}
    study = tiny_study(rounds=2, min_sites=2)
    text = f'kind = "evaluate"\n{study.to_toml()}\n[evaluate]\nsplit = "validation"\n'
    text += f"[evaluate.site_splits]\n{sites}\n"
    for name, (_, sha) in models.items():
        text += f'[[evaluate.models]]\nname = "{name}"\npath = "{name}"\nsha256 = "{sha}"\n'
    (lead / "study.toml").write_text(text, encoding="utf-8")
    return models


@pytest.mark.slow
def test_an_evaluation_of_several_models_scores_each_in_its_round_on_the_named_split(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: two models, scored on site-1's validation split and on every case of site-2
    lead = tmp_path / "lead"
    models = _several_models(lead)

    # Execute
    code, output = _simulate(lead / "study.toml", age_sites, tmp_path / "run", *SCORES_LEAVE)

    # Assert: evaluation.json has each model's metrics from its own round, as scored locally,
    # and the sites merged by the split they scored
    assert code == 0, output
    assert "evaluation of 2 model(s), one per round over 2 site(s)" in output
    results = json.loads((tmp_path / "run/evaluation.json").read_text())
    assert results["split"] == "validation"
    assert results["site_splits"] == {"site-1": "validation", "site-2": "all"}
    assert [(m["name"], m["round"]) for m in results["models"]] == [("a", 1), ("b", 2)]
    splits = {"site-1": Split.VALIDATION, "site-2": None}
    for row in results["models"]:
        folder = models[row["name"]][0]
        assert row["validation_per_site"]
        for k, site in enumerate(age_sites, start=1):
            state, cases, trained = evaluate_model(folder, site, splits[f"site-{k}"])
            scored = row["validation_per_site"].get(f"site-{k}")
            if not cases:  # a site with no usable validation case sends nothing to merge
                assert scored is None
                continue
            assert scored is not None and scored["num_examples"] == len(cases)
            assert scored["mae"] == pytest.approx(finalize_metrics(trained.task, state)["mae"])
            label = "all" if splits[f"site-{k}"] is None else "validation"
            assert row["validation_per_split"][label] == pytest.approx(scored)  # one site each
    a, b = (r["validation"]["mae"] for r in results["models"])
    assert a != pytest.approx(b)  # two different models, not one scored twice


def test_a_site_split_for_a_site_not_in_the_federation_stops_the_run_naming_it(
    tmp_path: Path, age_sites: list[Path]
) -> None:
    # Prepare: a misspelt site name would silently score the wrong cases
    _several_models(tmp_path / "lead", sites='site2 = "all"')

    # Execute
    code, output = _simulate(tmp_path / "lead/study.toml", age_sites, tmp_path / "run")

    # Assert
    assert code != 0
    assert "names site2, not a site of this federation (its sites: site-1, site-2)" in output
    assert not (tmp_path / "run/rounds").exists()
