"""Ditto's personalised model at one site: trained beside the global model, never sent.

When a study's client settings carry ``ditto_lambda``, a site keeps a personalised model ``v``
besides the global model it trains and sends: a second trainer on the same cases with FedProx's
proximal term at ``mu = lambda`` against the round's global weights
(``loss + lambda/2·||v - w_global||²``), trained for the same local epochs each round. ``v``
starts as the site's view of the first global model it sees and never leaves the site: a
validation answer adds only its metric state (sums and counts). After the last round's training
it is saved as a model folder in the study's state folder
(:data:`~neurofed.federated.site.state.PERSONALISED_MODEL`); the path goes to the site's log
only.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from neurofed.federated.site.state import save_site_model
from neurofed.federated.study import Study
from neurofed.federated.update import Parameters
from neurofed.preprocess.plan import Plan
from neurofed.tasks import MetricState
from neurofed.training import LocalTrainer
from neurofed.training.parameters import check_arrays, load_arrays

__all__ = ["PersonalisedModel"]


class PersonalisedModel:
    """One site's personalised model of a Ditto study.

    Parameters
    ----------
    base
        The site's trainer of the global model (its cases and config are shared).
    ditto_lambda
        The proximal weight towards the round's global model.
    """

    def __init__(self, base: LocalTrainer, ditto_lambda: float) -> None:
        self.ditto_lambda = float(ditto_lambda)
        self.trainer = LocalTrainer(
            base.config.with_changes(fedprox_mu=self.ditto_lambda),
            base.train_data,
            base.validation_data,
            source=base.source,
        )
        self.ready = False  # v holds a model (the first global one seen, or restored)

    def start_from(self, global_trainer: LocalTrainer) -> None:
        """Start ``v`` as the site's view of the global model, unless it already holds one."""
        if self.ready:
            return
        everything = global_trainer.get_parameters(include_local=True)
        load_arrays(self.trainer.model, check_arrays(self.trainer.model, everything))
        self.ready = True

    def parameters(self) -> dict[str, np.ndarray] | None:
        """Every entry of the personalised model (``None``: no personalised model yet)."""
        if not self.ready:
            return None
        return self.trainer.get_parameters(include_local=True)

    def checked(self, whole: Mapping[str, Any]) -> dict[str, Any]:
        """``whole`` (every entry, e.g. read from the state folder) checked against the model.

        Raises
        ------
        ParameterError
            A missing, unexpected or mis-shaped entry.
        """
        return check_arrays(self.trainer.model, whole)

    def load(self, tensors: Mapping[str, Any]) -> None:
        """Load checked entries (:meth:`checked`); ``v`` then holds a model."""
        load_arrays(self.trainer.model, tensors)
        self.ready = True

    def reference(self, global_params: Parameters) -> None:
        """Pull ``v`` towards this round's global weights (``lambda/2·||v - w_global||²``)."""
        self.trainer.set_proximal_reference(global_params)

    def evaluate(self) -> MetricState | None:
        """``v`` on the site's validation split (``None``: it has not trained yet)."""
        if not self.ready:
            return None
        return self.trainer.evaluate()

    def save(
        self, folder: Path, study: Study, plan: Plan | None, round_number: int, site_id: str
    ) -> Path | None:
        """Save ``v`` as a model folder (a failure is logged: training went well)."""
        if not self.ready:
            return None
        return save_site_model(
            folder,
            self.trainer.model,
            study,
            plan,
            round_number,
            site_id,
            run="federated-personalised",
            ditto_lambda=self.ditto_lambda,
        )
