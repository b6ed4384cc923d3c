"""Several simulated sites in one long-lived simulator worker (``neurofed simulate --processes K``).

NVFlare's simulator runs each client in a worker process. With fewer processes than clients it
starts a new process for every task of every client (``simulator_runner.do_one_task``): the
imports, the model and the site's cases are loaded again each time, about 7 s per site per
round on 2 cores. Here the simulator gets ``K`` clients instead, ``host-1`` … ``host-K``, one
process each for the whole run, and each *hosts* a fixed group of the sites
(:func:`assign_sites`). A host answers for each of its sites with that site's own
:class:`~neurofed.federated.site.worker.SiteWorker` (its own site config, data, state folder and
audit log; never another host's sites), one site after the other. It keeps the workers of the
``keep`` sites it served last in memory (their cases and model stay loaded) and lets the others
go, so a host's memory is bounded by ``keep`` sites' data whatever the number of sites it hosts.
A site whose worker was let go is made again at its next task from what it keeps in its state
folder, as a restarted site process would be: the run is the same whatever ``keep`` is.

The server still runs the study over sites, not hosts: :class:`~neurofed.federated.engine
.controller.StudyController` sends each task once to the hosts of its sites, with the task's
sites in ``meta`` (:data:`~neurofed.federated.protocol.MetaField.HOSTED_SITES`, all of them); a
host answers for those it hosts (:meth:`HostedSites.handle`), and the server reads every site's
answer back out (:func:`unpack_answers`) exactly as if the site had answered alone. A site whose
answer is missing or malformed fails that task with the reason; the others of its host stand.
A host runs its sites one after the other, so its task gets the round's timeout once for each
of its sites in it.

This is a simulation device only (every site is on this machine anyway). A deployed federation
has one NVFlare client per site, and secure aggregation, which keeps each site's round secrets
in its own process, is refused with hosts.

Wire format of a host's answer: the parameter arrays as ``"<site>/<name>"`` and ``meta`` as
``{"hosted_answers": {site: that site's meta}}`` — each site's part is what
:meth:`~neurofed.federated.protocol.SiteAnswer.encode` makes of its answer.

Examples
--------
>>> assign_sites(["site-1", "site-2", "site-3"], 2)
{'host-1': ['site-1', 'site-3'], 'host-2': ['site-2']}
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from neurofed.federated.protocol import MetaField, ProtocolError, SiteAnswer, TaskName
from neurofed.federated.site.config import SiteConfig
from neurofed.federated.site.worker import SiteWorker
from neurofed.federated.update import Parameters

__all__ = [
    "HostedSites",
    "assign_sites",
    "pack_answers",
    "read_answer",
    "requested_sites",
    "unpack_answers",
]

logger = logging.getLogger(__name__)


def assign_sites(sites: Sequence[str], hosts: int) -> dict[str, list[str]]:
    """``hosts`` host names → the sites each hosts: dealt in turn, so that sites listed by size
    spread over the hosts."""
    if not 1 <= hosts <= len(sites):
        raise ValueError(f"{hosts} hosts for {len(sites)} sites: give 1 to {len(sites)}")
    return {f"host-{k + 1}": list(sites[k::hosts]) for k in range(hosts)}


def requested_sites(meta: Mapping[str, Any]) -> list[str]:
    """The sites a task asks a host to answer for (its ``hosted_sites``).

    Raises
    ------
    ProtocolError
        The list is missing, not a list of names, or names a site twice.
    """
    sites = meta.get(MetaField.HOSTED_SITES.value)
    if not isinstance(sites, list | tuple) or not all(isinstance(s, str) and s for s in sites):
        raise ProtocolError("the task names no hosted_sites (a list of site names)")
    if len(set(sites)) != len(sites):
        raise ProtocolError("the task's hosted_sites names a site twice")
    return list(sites)


def pack_answers(answers: Mapping[str, SiteAnswer]) -> tuple[Parameters, dict[str, Any]]:
    """One host's answers to a task as ``(params, meta)`` (see the module docstring)."""
    params: Parameters = {}
    metas: dict[str, Any] = {}
    for site, answer in answers.items():
        site_params, metas[site] = answer.encode()
        params.update({f"{site}/{name}": value for name, value in site_params.items()})
    return params, {MetaField.HOSTED_ANSWERS.value: metas}


def read_answer(
    task: TaskName, site: str, params: Mapping[str, Any] | None, meta: Any
) -> SiteAnswer:
    """``site``'s answer to ``task`` as received; never raises: a malformed answer is that
    site's failure, with the reason (logged), never the run's."""
    try:
        if not isinstance(meta, Mapping):
            raise ProtocolError("its meta is not a table")
        return SiteAnswer.decode(task, site, params, meta)
    except Exception as error:
        reason = str(error) if isinstance(error, ProtocolError) else type(error).__name__
        logger.warning("%s: site %s sent a malformed answer: %s", task.value, site, reason)
        return SiteAnswer.failure(f"malformed answer: {reason}", site_id=site)


def unpack_answers(
    task: TaskName,
    host: str,
    sites: Sequence[str],
    params: Mapping[str, Any] | None,
    meta: Mapping[str, Any] | None,
) -> list[SiteAnswer]:
    """The answers of ``sites`` (those of the task that ``host`` hosts) read out of the host's
    answer; never raises: a site whose part is missing or malformed gets a failure with the
    reason, and a host that failed as a whole fails each of its sites."""
    meta = dict(meta or {})
    if MetaField.ERROR.value in meta:
        reason = f"its host {host} failed: {str(meta[MetaField.ERROR.value])[:200]}"
        return [SiteAnswer.failure(reason, site_id=site) for site in sites]
    metas = meta.get(MetaField.HOSTED_ANSWERS.value)
    if not isinstance(metas, Mapping):
        reason = f"malformed answer: its host {host} sent no hosted_answers table"
        return [SiteAnswer.failure(reason, site_id=site) for site in sites]
    unasked = sorted(str(s) for s in metas if s not in sites)
    if unasked:
        logger.warning("%s: host %s answered for sites it was not asked: %s", task, host, unasked)
    grouped: dict[str, dict[str, Any]] = {site: {} for site in sites}
    for key, value in (params or {}).items():
        site, _, name = str(key).partition("/")
        if site in grouped and name:
            grouped[site][name] = value
    return [
        read_answer(task, site, grouped[site], metas[site])
        if site in metas
        else SiteAnswer.failure(f"its host {host} sent no answer for it", site_id=site)
        for site in sites
    ]


class HostedSites:
    """The sites one simulator worker hosts, each answered by its own
    :class:`~neurofed.federated.site.worker.SiteWorker` (made at its first task and kept).

    Parameters
    ----------
    configs
        Site name → path of its site config JSON.
    keep
        Sites whose workers stay in memory between tasks (the most recently served; at least 1).
    """

    def __init__(self, configs: Mapping[str, str | Path], *, keep: int = 1) -> None:
        if keep < 1:
            raise ValueError(f"keep = {keep}: a host keeps at least the site it serves (1)")
        self.configs = {str(site): Path(path) for site, path in configs.items()}
        self.keep = int(keep)
        self._workers: OrderedDict[str, SiteWorker] = OrderedDict()

    @property
    def loaded(self) -> list[str]:
        """The sites whose workers are in memory, least recently served first."""
        return list(self._workers)

    def worker(self, site: str) -> SiteWorker:
        """``site``'s worker (made, reading its config, when it is not in memory); the workers
        beyond the ``keep`` most recently served are let go."""
        if site in self._workers:
            self._workers.move_to_end(site)
        else:
            path = self.configs[site]
            self._workers[site] = SiteWorker(site, SiteConfig.load(path), config_path=path)
        while len(self._workers) > self.keep:
            self._workers.popitem(last=False)
        return self._workers[site]

    def answer(
        self, site: str, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> SiteAnswer:
        """``site``'s answer to the task (never raises)."""
        if site not in self.configs:
            return SiteAnswer.failure("this host does not host the site", site_id=site)
        try:
            worker = self.worker(site)
        except Exception as exc:  # answer, never crash the job
            logger.exception("site %s: site config unusable", site)
            return SiteAnswer.failure(f"site config: {type(exc).__name__}", site_id=site)
        return worker.handle(task, params, meta)

    def handle(
        self, task: str, params: Mapping[str, Any], meta: Mapping[str, Any]
    ) -> tuple[Parameters, dict[str, Any]]:
        """The host's answer to a task: the answer of each site the task names that this host
        hosts, one after the other (never raises; a task without a readable site list gets an
        error answer)."""
        try:
            sites = [site for site in requested_sites(meta) if site in self.configs]
        except ProtocolError as error:
            return {}, {MetaField.ERROR.value: str(error)}
        site_meta = {k: v for k, v in meta.items() if k != MetaField.HOSTED_SITES.value}
        answers = {site: self.answer(site, task, params, site_meta) for site in sites}
        return pack_answers(answers)
