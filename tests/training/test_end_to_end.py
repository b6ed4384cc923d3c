"""Every task trains end to end from a checked site and clearly beats the untrained model.

``tumor-regions`` trains on a small phantom glioma site (6 mm voxels); the other tasks on tiny
written sites whose signal a few CPU seconds can learn (phantom MS lesions and brain age need
minutes: see the few-minute CLI runs).

The margins hold for training seeds 0-9 and 1 or 2 torch threads, not just the default seed:
a tiny network's trajectory depends on the CPU's floating-point path, so a margin met by one
seed only fails elsewhere. Hence the decaying ("poly") learning rates, which end each run on
small steps instead of wherever the last large step left the weights.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from neurofed.phantom import PhantomConfig, generate_federation
from neurofed.training import RUN_CONFIG, RUN_METRICS, LocalTrainer, train_local, train_pooled
from neurofed.training.trainer import CHECKPOINTS
from tests.training.sites import prepare_site
from tests.training.test_checkpoint import assert_no_pickle
from tests.training.tiny import tiny_config


@pytest.fixture(scope="module")
def phantom_glioma(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two phantom glioma sites of 8 cases at 6 mm, checked, 6 train / 2 validation each."""
    config = PhantomConfig(preset="glioma", sites=2, cases=8, seed=3, spacing=6.0)
    summary = generate_federation(config, tmp_path_factory.mktemp("phantom"))
    return [prepare_site(site) for site in summary.site_dirs]


def test_tumor_regions_on_a_phantom_site_beats_the_untrained_model(
    phantom_glioma: list[Path],
) -> None:
    # Prepare
    config = tiny_config(
        "tumor-regions",
        epochs=8,
        samples_per_epoch=16,
        validate_every=8,
        learning_rate=3e-2,  # 1e-2 leaves some seeds stalled near the untrained Dice
        lr_schedule="poly",
    )
    trainer = LocalTrainer.from_sites(config, phantom_glioma[0])
    untrained = trainer.record_untrained().validation
    # Execute
    final = trainer.fit()[-1].validation
    # Assert
    assert final["WT/dice"] >= untrained["WT/dice"] + 0.4
    assert final["TC/dice"] >= untrained["TC/dice"] + 0.2
    assert final["num_examples"] == 2.0


def test_glioma_multitask_learns_the_region_and_keeps_marker_metrics(glioma_site: Path) -> None:
    config = tiny_config(
        "glioma-multitask",
        epochs=8,
        batch_size=2,  # 6 steps an epoch instead of 3: some seeds need them to leave the start
        samples_per_epoch=12,
        validate_every=8,
        learning_rate=2e-2,
        lr_schedule="poly",
    )
    trainer = LocalTrainer.from_sites(config, glioma_site)
    untrained = trainer.record_untrained().validation
    final = trainer.fit()[-1].validation
    assert final["WT/dice"] >= untrained["WT/dice"] + 0.3
    assert final["idh/num_examples"] == 3.0 and "grade/accuracy" in final
    assert trainer.history[-1].train_loss < trainer.history[1].train_loss  # type: ignore[operator]


def test_ms_lesion_learns_the_lesions(lesion_site: Path) -> None:
    config = tiny_config(
        "ms-lesion",
        epochs=10,
        samples_per_epoch=16,
        validate_every=10,
        learning_rate=2e-2,
        lr_schedule="poly",
    )
    trainer = LocalTrainer.from_sites(config, lesion_site)
    untrained = trainer.record_untrained().validation
    final = trainer.fit()[-1].validation
    # one validation case has no lesion left outside the ventricle (Dice 1 if nothing is
    # predicted there): lesion_f1 is what shows that lesions are found
    assert final["dice"] >= untrained["dice"] + 0.2
    assert final["lesion_f1"] > untrained["lesion_f1"]


def test_brain_age_error_goes_down(bids_site: Path) -> None:
    config = tiny_config(
        "brain-age",
        epochs=24,
        samples_per_epoch=12,
        validate_every=24,
        learning_rate=1e-2,
        lr_schedule="poly",
    )
    trainer = LocalTrainer.from_sites(config, bids_site)
    untrained = trainer.record_untrained().validation
    final = trainer.fit()[-1].validation
    assert final["mae"] <= 0.7 * untrained["mae"]
    assert final["pearson_r"] > 0.5


def test_local_and_pooled_baselines_write_their_run_folders(
    phantom_glioma: list[Path], tmp_path: Path
) -> None:
    # Prepare
    config = tiny_config("tumor-regions", epochs=2)
    # Execute
    local = train_local(config, phantom_glioma[0], tmp_path / "local")
    pooled = train_pooled(config, phantom_glioma, tmp_path / "pooled")
    # Assert
    assert (local.num_examples, pooled.num_examples) == (6, 12)
    for result in (local, pooled):
        run = result.run_dir
        assert {p.name for p in run.iterdir()} == {RUN_CONFIG, RUN_METRICS, CHECKPOINTS, "model"}
        assert [r.epoch for r in result.history] == [0, 1, 2]
        assert result.untrained and result.final
        assert_no_pickle(run)
    assert pooled.final["num_examples"] == 4.0  # both sites' validation cases
