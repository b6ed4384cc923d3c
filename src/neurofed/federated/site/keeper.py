"""What a site keeps between rounds of one study, in memory and in its state folder.

Some strategies leave weights at the sites: FedBN's normalisation layers (``local_parameters``)
and Ditto's personalised model (:class:`~neurofed.federated.site.personalised.PersonalisedModel`).
:class:`StateKeeper` writes them to the study's state folder after every training round
(:mod:`~neurofed.federated.site.state`) and reads them back when a restarted site trains round
``r`` (the state after round ``r - 1``) or validates round ``r`` (after ``r``), so a restarted
site — or a resumed run — computes exactly the update an uninterrupted one would. A warm site
keeps them in memory and reads nothing. A damaged state folder is refused with a logged reason:
local layers then stay as the site's seed made them and the personalised model starts from the
global one.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from neurofed.artifacts import settle_folders
from neurofed.federated.site.personalised import PersonalisedModel
from neurofed.federated.site.state import (
    SiteState,
    SiteStateError,
    StatePart,
    latest_state_round,
    load_site_state,
    save_site_state,
)
from neurofed.federated.study import Study
from neurofed.training import LocalTrainer
from neurofed.training.parameters import ParameterError, check_arrays, load_arrays

__all__ = ["StateKeeper"]

logger = logging.getLogger(__name__)


class StateKeeper:
    """The kept state of one study at one site.

    Parameters
    ----------
    site_id
        The site's name (recorded with, and checked against, every round folder).
    study
        The study (its content hash names and guards the folder).
    folder
        The study's state folder at this site (never sent anywhere).
    """

    def __init__(self, site_id: str, study: Study, folder: Path) -> None:
        self.site_id = site_id
        self.study = study
        self.folder = Path(folder)
        self.round: int | None = None  # the round after which the state in memory was made

    def needed(self, personal: PersonalisedModel | None) -> bool:
        """Whether the study leaves anything at the site (local layers or a Ditto model)."""
        return bool(self.study.train.local_parameters) or personal is not None

    def restore(
        self, after_round: int, trainer: LocalTrainer, personal: PersonalisedModel | None
    ) -> None:
        """Bring the kept state to the one after ``after_round`` (newest folder not after it)."""
        memory = self.round
        if not self.needed(personal) or memory == after_round or after_round < 1:
            return
        settle_folders(self.folder)  # a kill while a round's state was written again
        found = latest_state_round(self.folder, at_most=after_round)
        if found is None:
            if memory is None:
                logger.info(
                    "site %s: no saved state of study %s up to round %d in %s; starting from "
                    "the global model",
                    self.site_id,
                    self.study.name,
                    after_round,
                    self.folder,
                )
            return
        if memory is not None and found <= memory <= after_round:
            return  # what is in memory is as new
        try:
            state = load_site_state(
                self.folder, found, study_hash=self.study.content_hash, site_id=self.site_id
            )
            self._apply(state, trainer, personal)
        except (SiteStateError, ParameterError) as exc:
            logger.warning(
                "site %s: refusing the saved state after round %d (%s); starting from the "
                "global model",
                self.site_id,
                found,
                exc,
            )
            return
        self.round = found
        logger.info(
            "site %s: restored its state after round %d from %s", self.site_id, found, self.folder
        )

    def _apply(
        self, state: SiteState, trainer: LocalTrainer, personal: PersonalisedModel | None
    ) -> None:
        """Load a state read from disk: everything is checked before anything is written."""
        local = trainer.local_names()
        checked_local: dict[str, Any] | None = None
        if local:
            saved = state.parts.get(StatePart.LOCAL.value, {})
            missing, extra = sorted(set(local) - set(saved)), sorted(set(saved) - set(local))
            if missing or extra:
                raise SiteStateError(
                    "its local parameters do not match the study's "
                    f"(missing {missing[:3]}, unexpected {extra[:3]})"
                )
            full = check_arrays(trainer.model, trainer.get_parameters(include_local=True) | saved)
            checked_local = {k: full[k] for k in local}
        checked_personal: dict[str, Any] | None = None
        if personal is not None:
            whole = state.parts.get(StatePart.PERSONALISED.value)
            if whole is None:
                raise SiteStateError("it holds no personalised model")
            checked_personal = personal.checked(whole)
        if checked_local is not None:
            load_arrays(trainer.model, checked_local)
        if personal is not None and checked_personal is not None:
            personal.load(checked_personal)

    def save(
        self, round_number: int, trainer: LocalTrainer, personal: PersonalisedModel | None
    ) -> None:
        """Remember the state after ``round_number`` and write it (a failure is logged)."""
        self.round = round_number
        if not self.needed(personal):
            return
        parts: dict[str, dict[str, Any]] = {}
        local = set(trainer.local_names())
        if local:
            everything = trainer.get_parameters(include_local=True)
            parts[StatePart.LOCAL.value] = {k: v for k, v in everything.items() if k in local}
        kept = None if personal is None else personal.parameters()
        if kept is not None:
            parts[StatePart.PERSONALISED.value] = kept
        if not parts:
            return
        try:
            save_site_state(
                self.folder,
                SiteState(round_number, parts),
                study_hash=self.study.content_hash,
                site_id=self.site_id,
            )
        except OSError:  # training went well; only a restart would lose this round's state
            logger.exception(
                "site %s: could not write its state after round %d to %s",
                self.site_id,
                round_number,
                self.folder,
            )
