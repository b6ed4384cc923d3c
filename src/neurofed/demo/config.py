"""What ``neurofed demo`` generates and how much it trains: one frozen :class:`DemoConfig`.

The demo is the FeTS comparison in miniature: a non-IID glioma federation (three training sites
and one held-out site, a broken case planted at each), the ``tumor-regions`` task, and three
ways to train the same network for the same budget:

- **federated**: FedAvg over the training sites, ``rounds`` rounds of one local epoch each;
- **local-only**: one model per training site, ``rounds`` epochs on that site alone;
- **pooled**: one model on all training sites' cases together, ``rounds`` epochs of
  ``samples_per_epoch × training sites`` samples — the same number of optimisation steps as the
  whole federation took.

Every model sees ``samples_per_epoch`` training patches per site per epoch (or round), with the
same seed, network, patch size and learning rate, at the same voxel spacing: the study has a
``[plan]``, so the federation's fingerprint round plans the target spacing (nnU-Net's rules on
the training sites' merged fingerprints) and the baselines train under that same plan.

Examples
--------
>>> from pathlib import Path
>>> config = DemoConfig(out=Path("demo"), quick=True)
>>> config.budget.rounds, config.phantom.sites, config.phantom.spacing
(6, 4, 4.0)
>>> config.study().to_dict()["strategy"]["name"]
'fedavg'
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed.federated.study import Study
from neurofed.keys import ClinicalField, TaskId, TumorRegion
from neurofed.phantom import PhantomConfig, PhantomPreset
from neurofed.preprocess.plan import Plan
from neurofed.training.config import TrainConfig

__all__ = ["DEFAULT", "QUICK", "DemoBudget", "DemoConfig"]

#: Training sites of the demo federation; one more site is held out from all training.
TRAINING_SITES = 3


@dataclass(frozen=True)
class DemoBudget:
    """How big the phantom is and how long every model trains.

    Parameters
    ----------
    cases
        Cases per training site (one of them deliberately broken).
    held_out_cases
        Cases of the held-out site (one of them broken): every model is compared on all the
        others, so they decide how narrow the intervals are and which differences a paired
        test can find (with 5 cases none can reach p < 0.05).
    spacing
        Voxel size of the phantom, in mm (training resamples to the plan's target spacing,
        which the fingerprint round finds to be this one).
    rounds
        Federated rounds (one local epoch each) = epochs of every baseline.
    samples_per_epoch
        Training patches per site per epoch (pooled: times the number of training sites).
    patch
        Training patch edge, in voxels.
    base_filters
        Residual U-Net base filters.
    learning_rate
        Adam's step size (constant) for every model.
    """

    cases: int
    spacing: float
    rounds: int
    samples_per_epoch: int
    patch: int
    base_filters: int
    learning_rate: float = 3e-3
    held_out_cases: int = 0  # 0: as many as a training site


#: Small enough for about a minute on two cores, large enough to learn: 6 rounds of 16 patches at
#: a step size of 1e-2 (at 3 rounds of 8 patches every model stayed below 0.1 mean Dice).
QUICK = DemoBudget(
    cases=6,
    spacing=4.0,
    rounds=6,
    samples_per_epoch=16,
    patch=32,
    base_filters=4,
    learning_rate=1e-2,
    held_out_cases=12,
)
DEFAULT = DemoBudget(
    cases=12,
    spacing=2.0,
    rounds=16,
    samples_per_epoch=16,
    patch=48,
    base_filters=8,
    held_out_cases=30,
)


@dataclass(frozen=True)
class DemoConfig:
    """The demo's run folder and size. ``quick`` is the CI-sized variant (about a minute)."""

    out: Path
    quick: bool = False
    seed: int = 0
    device: str = "cpu"
    custom_budget: DemoBudget | None = None  # e.g. a longer run for bench/federation.py

    @property
    def budget(self) -> DemoBudget:
        if self.custom_budget is not None:
            return self.custom_budget
        return QUICK if self.quick else DEFAULT

    @property
    def phantom(self) -> PhantomConfig:
        return PhantomConfig(
            preset=PhantomPreset.GLIOMA,
            sites=TRAINING_SITES + 1,  # the last site is held out from training
            cases=self.budget.cases,
            seed=self.seed,
            spacing=self.budget.spacing,
            missing_markers={2: (ClinicalField.MGMT,)},
            broken_per_site=1,
            site_cases=(
                {TRAINING_SITES + 1: self.budget.held_out_cases}
                if self.budget.held_out_cases
                else {}
            ),
        )

    def study(self) -> Study:
        """The federated study: FedAvg on ``tumor-regions``, best round by WT Dice."""
        b = self.budget
        data: dict[str, Any] = {
            "name": "demo-tumor-regions-fedavg",
            "rounds": b.rounds,
            "local_epochs": 1,
            "min_sites": 2,
            "round_timeout_s": 900.0,
            "seed": self.seed,
            "task": {"id": TaskId.TUMOR_REGIONS.value},
            "model": {"base_filters": b.base_filters, "depth": 4, "num_res_units": 1},
            "strategy": {"name": "fedavg"},
            # pooled Dice: voxel sums, which every site sends however few its cases are
            "selection": {"metric": f"{TumorRegion.WT}/dice_pooled", "direction": "max"},
            "train": {
                "patch_shape": [b.patch] * 3,
                "samples_per_epoch": b.samples_per_epoch,
                "batch_size": 2,
                "learning_rate": b.learning_rate,
                "foreground_probability": 0.5,
            },
            "plan": {"source": "fingerprint"},  # tumor-regions takes its spacing from the plan
        }
        return Study.from_dict(data, source="the demo study")

    def baseline_config(self, training_sites: int, plan: Plan) -> TrainConfig:
        """The study's training settings under the federation's ``plan`` (its ``plan.json``) for
        a baseline over ``training_sites`` sites (:meth:`Study.baseline_config`): the same
        network, patch, learning rate, seed and planned spacing; ``rounds`` epochs; pooled runs
        draw ``samples_per_epoch`` per site per epoch, i.e. the federation's number of steps.
        """
        return self.study().baseline_config(training_sites, device=self.device, plan=plan)
