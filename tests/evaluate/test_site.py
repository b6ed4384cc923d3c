"""One model on one site's split, and every model on every site: the evaluator everyone calls."""

from __future__ import annotations

from pathlib import Path

import pytest

from neurofed.evaluate import ALL_TRAINING, cross_site_table, evaluate_model
from neurofed.keys import Split
from neurofed.training import LocalTrainer, SiteDataError, finalize_metrics, save_model
from tests.training.sites import prepare_site, write_glioma_site
from tests.training.tiny import tiny_config


@pytest.fixture(scope="module")
def saved(glioma_site: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    config = tiny_config("tumor-regions", epochs=1)
    trainer = LocalTrainer.from_sites(config, glioma_site)
    trainer.fit()
    metrics = finalize_metrics(trainer.task, trainer.evaluate())
    folder = save_model(tmp_path_factory.mktemp("m") / "model", trainer.model, config)
    return folder, metrics


def test_a_saved_model_scores_a_split_as_its_trainer_did(
    saved: tuple[Path, dict], glioma_site: Path
) -> None:
    # Prepare
    folder, expected = saved
    # Execute
    state, cases, trained = evaluate_model(folder, glioma_site, Split.VALIDATION)
    everything, all_cases, _ = evaluate_model(trained, glioma_site, None)
    # Assert
    assert finalize_metrics(trained.task, state) == expected
    assert len(cases) == 3 and len(all_cases) == 12
    assert int(everything.sums["num_examples"]) == 12


def test_the_cross_site_table_has_every_site_their_merge_and_the_held_out_site(
    saved: tuple[Path, dict], glioma_site: Path, tmp_path: Path
) -> None:
    # Prepare: a second site, held out
    folder, expected = saved
    held_out = prepare_site(write_glioma_site(tmp_path / "held-out", 4, seed=5))
    seen: list[str] = []
    # Execute
    table = cross_site_table(
        {"local": folder}, [glioma_site], held_out, lambda d, t, label: seen.append(label)
    )
    # Assert
    row = table["local"]
    assert set(row) == {glioma_site.name, "held-out", ALL_TRAINING}
    assert row[glioma_site.name]["split"] == "validation" and row[glioma_site.name]["cases"] == 3
    assert row[ALL_TRAINING]["cases"] == 3  # the merge of the one training site's validation
    assert row["held-out"]["split"] == "all" and row["held-out"]["cases"] == 4
    assert row[ALL_TRAINING]["metrics"]["WT/dice"] == pytest.approx(expected["WT/dice"])
    assert seen == [f"local on {glioma_site.name}", "local on held-out"]


def test_a_site_that_cannot_serve_the_task_is_named(
    saved: tuple[Path, dict], tmp_path: Path
) -> None:
    with pytest.raises(SiteDataError, match="site check"):
        evaluate_model(saved[0], tmp_path, Split.VALIDATION)
