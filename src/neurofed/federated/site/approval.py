"""The custodian's control at a site: a study runs here only when this site allows it.

Before any task runs, :meth:`StudyGate.admit` checks the study it carries: it must parse as a
study at this site, its content hash must be the one the server claims, and the site config
must not refuse it (:meth:`~neurofed.federated.site.config.SiteConfig.refusal`: with
``require_approval`` its content hash must be approved, and a non-empty ``allowed_datasets``
must hold its ``dataset``). Anything else raises :class:`StudyRefusedError` with the reason the
site sends back (``refused: …``).

Given ``config_path``, the gate re-reads its config whenever the file changed since it was read
(one ``stat`` per task — modification time, size and inode; neurofed writes the file atomically,
so every change is a new inode — and no read while it is unchanged, whatever study or round
arrives), so approving takes effect without restarting the site and a revoked study is refused
from its next task on. An unreadable or missing config refuses every study.

Examples
--------
>>> import tempfile
>>> from pathlib import Path
>>> config = SiteConfig(data_root=Path(tempfile.mkdtemp()), require_approval=True)
>>> gate = StudyGate("site-1", config)
>>> gate.admit({"name": "x"}, "ab" * 32)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.federated.site.approval.StudyRefusedError: refused: the study sent is invalid here ...
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from neurofed.federated.site.config import SiteConfig, SiteConfigError
from neurofed.federated.strategies import StrategyName
from neurofed.federated.study import Study

__all__ = ["Admission", "StudyGate", "StudyRefusedError"]

logger = logging.getLogger(__name__)


class StudyRefusedError(Exception):
    """This site does not run the study; the message is the reason sent to the server.

    Attributes
    ----------
    study
        The study's name when it could be read (for the audit log), else ``None``.
    """

    def __init__(self, reason: str, study: str | None = None) -> None:
        super().__init__(reason)
        self.study = study


@dataclass(frozen=True)
class Admission:
    """A study the gate let through.

    Attributes
    ----------
    study
        The study, parsed at this site.
    first
        The first time this process admits this study (the site logs ``study-accepted``).
    new
        Another study than the previous task's (the site builds new trainers).
    """

    study: Study
    first: bool
    new: bool


class StudyGate:
    """Admits the studies a site's custodian allows (see the module docstring).

    Parameters
    ----------
    site_id
        The site's name in the federation.
    config
        The site-only settings (approvals, allowed datasets).
    config_path
        The file ``config`` was read from; given, it is re-read whenever it changes.
    """

    def __init__(
        self, site_id: str, config: SiteConfig, *, config_path: Path | None = None
    ) -> None:
        self.site_id = site_id
        self.config = config
        self.config_path = None if config_path is None else Path(config_path)
        self._config_stamp = self._stamp()
        self._config_error: str | None = None
        self._accepted: set[str] = set()  # study hashes admitted by this process
        self._study: Study | None = None  # the last study admitted, parsed once

    def admit(self, sent: Mapping[str, Any], claimed: str) -> Admission:
        """The study ``sent`` (claimed to hash to ``claimed``), verified and allowed here.

        Raises
        ------
        StudyRefusedError
            The study is invalid here, its hash is not the claimed one, the site config is
            unreadable, or the config refuses it; the message is the reason.
        """
        known = (
            self._study if self._study is not None and claimed == self._study.content_hash else None
        )
        self._refresh_config()
        study = known or self._parse(sent, claimed)
        proxy = getattr(study.strategy_params, "proxy", None)
        reason = self._config_error or self.config.refusal(
            study.content_hash,
            study.name,
            study.dataset,
            condensed=study.strategy is StrategyName.DISTILL and proxy is None,
            proxy=proxy,
        )
        if reason is not None:
            raise StudyRefusedError(reason, study.name)
        first = study.content_hash not in self._accepted
        self._accepted.add(study.content_hash)
        self._study = study
        return Admission(study=study, first=first, new=known is None)

    @staticmethod
    def _parse(sent: Mapping[str, Any], claimed: str) -> Study:
        try:
            study = Study.from_dict(sent, source="the study sent by the server")
        except ValueError as exc:
            raise StudyRefusedError(f"refused: the study sent is invalid here ({exc})") from None
        if study.content_hash != claimed:
            raise StudyRefusedError(
                f"refused: the study's content hash is sha256:{study.content_hash}, not the "
                f"claimed sha256:{claimed}",
                study.name,
            )
        return study

    def _stamp(self) -> tuple[int, int, int] | None:
        """What tells whether the config file changed (``None``: unknown or missing)."""
        if self.config_path is None:
            return None
        try:
            info = os.stat(self.config_path)
        except OSError:
            return None
        return (info.st_mtime_ns, info.st_size, info.st_ino)

    def _refresh_config(self) -> None:
        """Re-read the config file when it changed since it was read (or could not be read)."""
        if self.config_path is None:
            return
        stamp = self._stamp()
        if stamp is not None and stamp == self._config_stamp and self._config_error is None:
            return
        try:
            config = SiteConfig.load(self.config_path)
        except SiteConfigError as exc:
            logger.error("site %s: refusing every study: %s", self.site_id, exc)
            self._config_error = (
                "refused: this site's settings file is unreadable; the custodian runs "
                "`neurofed site doctor`"
            )
        else:
            self.config, self._config_error = config, None
        self._config_stamp = stamp
