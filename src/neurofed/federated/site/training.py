"""One study at one site: its trainers, its plan, and the results of its tasks.

:class:`StudyTraining` keeps the site's :class:`~neurofed.training.LocalTrainer` of a study
(and Ditto's personalised model), takes the plan a planned study's tasks carry, and computes the
results a site sends: :class:`~neurofed.federated.protocol.TrainResult`,
:class:`~neurofed.federated.protocol.ValidateResult` and
:class:`~neurofed.federated.protocol.FingerprintResult` — parameter arrays, counts and aggregate
metrics only.

Determinism: the site trains with a seed derived from the study seed and the site's name
(:func:`site_seed`), a fresh optimiser each round and the trainer's epoch counter set to
``(round - 1) · local_epochs``, so a round's result depends only on the global parameters, the
study, the round and what the site keeps itself (:class:`~neurofed.federated.site.keeper
.StateKeeper`).

Examples
--------
>>> site_seed(0, "site-1") == site_seed(0, "site-1") != site_seed(0, "site-2")
True
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import math
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from neurofed.artifacts import write_json_atomically
from neurofed.federated.protocol import (
    FingerprintResult,
    ProtocolError,
    TrainResult,
    ValidateResult,
)
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.distill import (
    ProxySet,
    condensed_payload,
    digest,
    load_proxy,
    proxy_payload,
)
from neurofed.federated.site.keeper import StateKeeper
from neurofed.federated.site.personalised import PersonalisedModel
from neurofed.federated.site.privacy import PrivacyLedger, PrivateRound, fresh_seed, plan_round
from neurofed.federated.site.state import (
    PERSONALISED_MODEL,
    SITE_MODEL,
    case_order_seed,
    save_site_model,
)
from neurofed.federated.strategies.distill import DistillParams
from neurofed.federated.study import Study, StudyKind
from neurofed.federated.study.plan import PLAN_FILE, check_plan
from neurofed.federated.update import Parameters
from neurofed.keys import ClinicalField, OutputKey, Split
from neurofed.preprocess.plan import Plan, PlanError
from neurofed.tasks.sharing import share_state
from neurofed.training import LocalTrainer
from neurofed.training.config import TrainConfig
from neurofed.training.dataset import CaseDataset
from neurofed.training.planning import compute_task_fingerprint
from neurofed.training.private import PrivateSGD, check_private_network
from neurofed.training.records import finalize_metrics
from neurofed.training.sampling import steps_per_epoch
from neurofed.training.site_data import SiteDataError

if TYPE_CHECKING:
    from neurofed.tasks import MetricState

__all__ = ["StudyTraining", "label_counts", "site_seed"]

logger = logging.getLogger(__name__)


def site_seed(study_seed: int, site_id: str) -> int:
    """A seed for ``site_id`` derived from the study's seed (stable across processes)."""
    digest = hashlib.sha256(f"{study_seed}\0{site_id}".encode()).digest()
    return int.from_bytes(digest[:4], "little")


def label_counts(dataset: CaseDataset) -> dict[str, int]:
    """Known labels per label kind (:class:`~neurofed.keys.OutputKey` values) in ``dataset``."""
    counts = {OutputKey.SEGMENTATION.value: sum(c.label is not None for c in dataset)}
    for key in OutputKey:
        if key is OutputKey.SEGMENTATION:
            continue
        name = ClinicalField(key.value)
        counts[key.value] = sum(c.clinical.get(name) is not None for c in dataset)
    return counts


def _fit(trainer: LocalTrainer, study: Study, round_number: int) -> dict[str, float]:
    """One round of local training from a fresh optimiser; its aggregate numbers."""
    trainer.reset_optimizer()
    trainer.epoch = (round_number - 1) * study.local_epochs
    records = trainer.fit(study.local_epochs, resume=False)
    losses = [r.train_loss for r in records if r.train_loss is not None]
    return {
        "train_loss": float(np.mean(losses)) if losses else math.nan,
        "steps": float(sum(r.steps for r in records)),
        "seconds": float(sum(r.seconds for r in records)),
    }


def _plain(arrays: dict[str, object]) -> dict[str, np.ndarray]:
    return {str(k): np.asarray(v) for k, v in arrays.items()}


class StudyTraining:
    """The site's side of one study (see the module docstring).

    Parameters
    ----------
    site_id
        The site's name in the federation.
    study
        The study, admitted at this site.
    config
        Returns the site's current config (data root, device, state folders).
    """

    def __init__(self, site_id: str, study: Study, config: Callable[[], SiteConfig]) -> None:
        self.site_id = site_id
        self.study = study
        self._config = config
        self.ditto_lambda = study.client_settings().ditto_lambda
        self.plan: Plan | None = None  # the plan of a planned study's tasks
        self._plan_id: str | None = None  # the plan the trainers were built for
        self._trainer: LocalTrainer | None = None
        self._personal: PersonalisedModel | None = None
        self._proxy: ProxySet | None = None
        self.keeper = StateKeeper(site_id, study, self.state_dir)
        #: the last validation's metrics of every case this site scored (before any is
        #: withheld): for this site's own monitor, never sent
        self.own_metrics: dict[str, float] = {}

    @property
    def state_dir(self) -> Path:
        """This site's state folder of the study (never sent anywhere)."""
        return self._config().study_state_dir(self.study.content_hash)

    # -- the plan --------------------------------------------------------------------------------

    def accept_plan(self, plan: Plan | None) -> None:
        """Take the plan a training or validation task carries; a new plan builds new trainers.

        An accepted plan is kept as ``plan.json`` in the study's state folder, for
        ``neurofed site preprocess --plan``.

        Raises
        ------
        PlanError
            A planned study's task without a plan (or an unplanned one's with one), or a plan
            for another task or other planner settings.
        """
        study = self.study
        if study.plan is None:
            if plan is not None:
                raise PlanError(
                    f"the task carries plan {plan.plan_id} but study {study.name!r} has no "
                    "[plan]; refusing it"
                )
            return
        if plan is None:
            raise PlanError(
                f"study {study.name!r} is planned ([plan]) but the task carries no plan; "
                "refusing it"
            )
        if plan.plan_id == self._plan_id:
            return
        check_plan(plan, study.task, study.plan.settings)
        if self.plan is not None:
            logger.warning(
                "site %s: study %s now comes with plan %s (was %s); building new trainers",
                self.site_id,
                study.name,
                plan.plan_id,
                self.plan.plan_id,
            )
        self.plan, self._plan_id = plan, plan.plan_id
        self._trainer, self._personal = None, None
        self._proxy = None  # preprocessed under the old plan
        self.keeper = StateKeeper(self.site_id, study, self.state_dir)
        kept = write_json_atomically(self.state_dir / PLAN_FILE, plan.to_json())
        logger.info(
            "site %s: study %s trains under plan %s (spacing %s); plan kept in %s "
            "(preprocess for it: neurofed site preprocess DIR --study STUDY --plan %s)",
            self.site_id,
            study.name,
            plan.plan_id,
            plan.spacing,
            kept,
            kept,
        )

    # -- the trainers ----------------------------------------------------------------------------

    def train_config(self) -> TrainConfig:
        """The study's training config at this site (under the tasks' plan if it is planned)."""
        return self.study.train_config(device=self._config().device, plan=self.plan)

    @property
    def trainer(self) -> LocalTrainer:
        """This site's trainer of the global model (loads its cases once)."""
        if self._trainer is None:
            config = self.train_config().with_changes(
                seed=site_seed(self.study.seed, self.site_id), validate_every=0
            )
            self._trainer = LocalTrainer.from_sites(config, self._config().data_root)
        return self._trainer

    @property
    def personalised(self) -> PersonalisedModel | None:
        """Ditto's personalised model (``None`` unless the study is Ditto)."""
        if self.ditto_lambda is None:
            return None
        if self._personal is None:
            self._personal = PersonalisedModel(self.trainer, self.ditto_lambda)
        return self._personal

    @property
    def proxy(self) -> ProxySet:
        """The distill study's public proxy set, from the folder this site's custodian named
        (``public_datasets``), read once.

        Raises
        ------
        SiteDataError
            The site does not hold the named set, or its folder serves no case.
        """
        name = getattr(self.study.strategy_params, "proxy", None)
        if name is None:
            raise ValueError(f"study {self.study.name!r} names no proxy set")
        if self._proxy is None:
            root = self._config().public_datasets.get(name)
            if root is None:
                raise SiteDataError(
                    f"this site holds no public dataset {name!r}; the custodian runs "
                    f"`neurofed site public-dataset {name} DIR`"
                )
            self._proxy = load_proxy(
                name, root, self.study.build_task(), self.train_config().preprocess
            )
        return self._proxy

    def personalised_parameters(self) -> dict[str, np.ndarray] | None:
        """Every entry of the personalised model (``None``: none, or none yet)."""
        return None if self._personal is None else self._personal.parameters()

    # -- tasks -----------------------------------------------------------------------------------

    def weights(self) -> tuple[int, dict[str, int]]:
        """This round's weights before training: training cases and known labels per kind."""
        trainer = self.trainer
        return int(trainer.num_examples), label_counts(trainer.train_data)

    def train(
        self,
        round_number: int,
        params: Parameters,
        class_logits: Mapping[str, np.ndarray] | None = None,
    ) -> TrainResult:
        """Load the global parameters, train ``local_epochs``, return the new ones.

        A Ditto site also trains its personalised model; after the study's last round it is
        saved in the state folder. Under ``distill`` the site also condenses its payload from
        the global model (:mod:`neurofed.federated.site.distill`; ``class_logits`` are the
        federation's, sent with the task); in its proxy mode it first distils the heads towards
        the federation's consensus on the proxy set (``class_logits`` carry it) and sends its
        trained model's logits on that set instead.
        """
        if round_number < 1:
            raise ProtocolError(f"round {round_number} is invalid: rounds start at 1")
        trainer = self.trainer
        personal = self.personalised
        self.keeper.restore(round_number - 1, trainer, personal)
        trainer.set_parameters(params)  # local entries (FedBN) stay as they are
        condensed: dict[str, np.ndarray] = {}
        strategy = self.study.strategy_params
        distill = strategy if isinstance(strategy, DistillParams) else None
        proxy_mode = distill is not None and distill.proxy is not None
        if distill is not None and proxy_mode:
            digest(trainer, distill, self.proxy, class_logits or {})
        elif distill is not None:
            seed = (case_order_seed(self.state_dir) + round_number) % 2**31
            # the site's own floor applies too: no class of fewer cases than it allows
            floor = max(distill.n_min, self._config().min_cases_per_metric)
            floored = dataclasses.replace(distill, n_min=floor)
            condensed = condensed_payload(trainer, floored, class_logits or {}, seed)
        if personal is not None:
            personal.start_from(trainer)  # v starts as the site's view of the first global model
        private = self._private_round(round_number, trainer)
        try:
            metrics = _fit(trainer, self.study, round_number)
        finally:
            trainer.private = None
        if private is not None:  # spent: in the ledger before anything leaves
            PrivacyLedger(self._config().state_root).add(
                private.dataset, private.entry(self.study, round_number)
            )
            metrics |= private.metrics()
        if personal is not None:
            personal.reference(params)  # lambda/2·||v - w_global||²
            own = _fit(personal.trainer, self.study, round_number)
            metrics["personalised_train_loss"] = own["train_loss"]
        if proxy_mode:
            condensed = proxy_payload(trainer, self.proxy)
        self.keeper.save(round_number, trainer, personal)
        if personal is not None and round_number >= self.study.rounds:
            personal.save(
                self.state_dir / PERSONALISED_MODEL,
                self.study,
                self.plan,
                round_number,
                self.site_id,
            )
        return TrainResult(
            params=trainer.get_parameters(),
            num_examples=int(trainer.num_examples),
            label_counts=label_counts(trainer.train_data),
            metrics=metrics,
            condensed=condensed,
        )

    def _private_round(self, round_number: int, trainer: LocalTrainer) -> PrivateRound | None:
        """Under ``[privacy]``: the round's DP-SGD, checked against the custodian's cap and set
        on ``trainer`` (``None`` without ``[privacy]``).

        Raises
        ------
        PrivacyBudgetError
            The round would cross the cap (a refusal: the federation goes on without it).
        """
        if self.study.privacy is None:
            return None
        config = trainer.config
        check_private_network(trainer.model, self.study.model_name)
        steps = steps_per_epoch(config, trainer.train_data) * self.study.local_epochs
        site = self._config()
        planned = plan_round(
            self.study,
            round_number,
            len(trainer.train_data),
            config.batch_size,
            steps,
            PrivacyLedger(site.state_root),
            site.privacy_budgets,
        )
        trainer.private = PrivateSGD(
            clip_norm=self.study.privacy.clip_norm,
            noise_multiplier=planned.noise_multiplier,
            sample_rate=planned.sample_rate,
            cases=planned.cases,
            seed=fresh_seed(),
        )
        logger.info(
            "site %s: round %d trains with DP-SGD (noise %.3g, q %.3g, %d steps): ε on %r "
            "%.3g -> %.3g%s",
            self.site_id,
            round_number,
            planned.noise_multiplier,
            planned.sample_rate,
            planned.steps,
            planned.dataset,
            planned.epsilon_before,
            planned.epsilon_after,
            "" if planned.cap is None else f" (cap {planned.cap:g})",
        )
        return planned

    def validate(self, round_number: int, params: Parameters) -> ValidateResult:
        """Evaluate the global parameters on the validation split (an evaluation-only study:
        every case of the site): sums, counts and fixed-bin
        histograms only (:func:`~neurofed.tasks.sharing.share_state`: per-case values only for a
        dataset the custodian allows, nothing derived from fewer cases than its minimum).

        A Ditto site adds the metric state of its personalised model. With local parameters
        (FedBN) the site scores the global model with its own local layers, and saves the last
        round's as a model folder (:data:`~neurofed.federated.site.state.SITE_MODEL`): the
        model it validated, which it alone has.
        """
        began = time.perf_counter()
        trainer = self.trainer
        personal = self.personalised
        self.keeper.restore(round_number, trainer, personal)
        kept = trainer.get_parameters()
        trainer.set_parameters(params)
        # an evaluation-only study scores the given model on the cases it names for this site
        # (default: all)
        cases = None
        if self.study.kind is StudyKind.EVALUATE:
            assert trainer.source is not None  # from_sites
            cases = trainer.source.split(self.study.evaluation_split_for(self.site_id))
        try:
            state = trainer.evaluate(cases)
            if self._keeps_local_layers(round_number):
                save_site_model(
                    self.state_dir / SITE_MODEL,
                    trainer.model,
                    self.study,
                    self.plan,
                    round_number,
                    self.site_id,
                    run="federated-site",
                    local_parameters=list(trainer.config.local_parameters),
                )
        finally:
            trainer.set_parameters(kept)  # training continues from the site's own weights
        self.own_metrics = self._own_metrics(state)
        policy = self._config()
        allow = policy.shares_cases(self.study.dataset)
        # per-case values (if allowed) go in the site's secret order of this study: the same
        # in every round, so the lead can pair models case by case
        order = None
        if allow:
            seed = case_order_seed(policy.study_state_dir(self.study.content_hash))
            order = np.random.default_rng(seed)
        shared, withheld = share_state(
            state, min_cases=policy.min_cases_per_metric, allow_cases=allow, rng=order
        )
        own = None
        if personal is not None:
            evaluated = personal.evaluate()
            if evaluated is None:
                logger.warning(
                    "site %s: no personalised model to validate in round %d (it has not trained "
                    "yet); validating the global model only",
                    self.site_id,
                    round_number,
                )
            else:
                mine, _ = share_state(
                    evaluated, min_cases=policy.min_cases_per_metric, allow_cases=allow
                )
                own = _plain(dict(mine.to_arrays()))
        if withheld:
            logger.info("site %s: withheld (too few cases): %s", self.site_id, withheld)
        return ValidateResult(
            metric_state=_plain(dict(shared.to_arrays())),
            personalised_metric_state=own,
            seconds=time.perf_counter() - began,
            withheld=tuple(withheld),
        )

    def _keeps_local_layers(self, round_number: int) -> bool:
        """Whether this validation scores the final model of a study with local parameters."""
        return (
            bool(self.study.train.local_parameters)
            and self.study.kind is not StudyKind.EVALUATE
            and round_number >= self.study.rounds
        )

    def _own_metrics(self, state: MetricState) -> dict[str, float]:
        """The metrics of every case scored here, for the site's own monitor ({} when they
        cannot be computed: the answer never depends on them)."""
        try:
            return finalize_metrics(self.trainer.task, state)
        except Exception:
            logger.exception("site %s: own validation metrics not computed", self.site_id)
            return {}

    def fingerprint(self) -> FingerprintResult:
        """The fingerprint of this site's training split for the study's task: fixed-length
        histograms, counts and integer sums only.

        Raises
        ------
        PlanError
            The study has no ``[plan]`` (a site fingerprints its data only for a planned study).
        FingerprintError
            Fewer than :data:`~neurofed.preprocess.fingerprint.MIN_CASES` usable training cases.
        """
        study = self.study
        if study.plan is None:
            raise PlanError(
                f"study {study.name!r} has no [plan]; this site sends a fingerprint only for a "
                "planned study"
            )
        began = time.perf_counter()
        fingerprint = compute_task_fingerprint(self._config().data_root, study.task, Split.TRAIN)
        logger.info(
            "site %s: fingerprint of %d training case(s) (%d failed) for study %s in %.1f s",
            self.site_id,
            fingerprint.num_cases,
            fingerprint.num_failed,
            study.name,
            time.perf_counter() - began,
        )
        # JSON text: its integer sums may exceed 64 bits, which NVFlare's serialiser refuses
        return FingerprintResult(fingerprint=fingerprint.canonical_json())
