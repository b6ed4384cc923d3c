"""The NVFlare job of a study: config only, the same for the simulator and a deployed federation.

:func:`build_job` makes a ``FedJob`` that names installed classes only
(``set_app_packages(["neurofed"])``: no ``custom/`` folder, so every site can forbid custom code
and allow-list ``neurofed.`` classes):
:class:`~neurofed.federated.engine.controller.StudyController` on the server and
:class:`~neurofed.federated.engine.site_executor.SiteExecutor` on the sites, with the server's
task request interval at 0.2 s (NVFlare's 2 s default is pure overhead per round).

A simulated job names each site and the path of its site config (outside the job); a deployed
job goes to every site connected when it starts and names no path at all: each site's executor
reads its own ``local/neurofed_site.json``, and the server keeps the run folder inside its own
workspace (``<server kit>/neurofed/runs/<run name>/``), so resubmitting the study resumes it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from neurofed.federated.study import Study

if TYPE_CHECKING:
    from nvflare.job_config.api import FedJob

__all__ = ["DEPLOYED_SERVER_CONFIG", "build_job", "job_name"]

#: Extra server settings of a deployed job. NVFlare waits ``dead_client_check_lead_time``
#: (default 30 s) after a task is sent before it looks for dead sites at all, and
#: ``fail_fast`` sets its 60 s grace after a site is reported dead to 0: a killed site then ends
#: a round about ``heart_beat_timeout`` after it died (ENGINE.md "Faults").
DEPLOYED_SERVER_CONFIG: dict[str, Any] = {"dead_client_check_lead_time": 5}


def job_name(study: Study) -> str:
    """The NVFlare job name of ``study`` (``neurofed-<name>``)."""
    return f"neurofed-{study.name}"


def build_job(
    study: Study,
    *,
    run_dir: str = "",
    run_name: str = "",
    site_configs: Mapping[str, str] | None = None,
    min_clients: int | None = None,
    deployed: bool = False,
    clock_seed: int = -1,
    hosts: Mapping[str, Sequence[str]] | None = None,
    sites_in_memory: int = 1,
) -> FedJob:
    """The config-only ``FedJob`` of ``study``.

    Parameters
    ----------
    study
        The validated study.
    run_dir
        The server's run folder (the simulator); empty: the server resolves
        ``<workspace>/neurofed/runs/<run_name>`` itself (a deployed server).
    run_name
        Name of the run folder on a deployed server (empty: ``<study name>-<hash[:12]>``).
    site_configs
        Site name → path of its site config (the simulator); ``None``: one executor for every
        site, which reads its kit's ``local/neurofed_site.json``.
    min_clients
        Sites the job needs to start (default: the study's ``min_sites``).
    deployed
        Tune dead-site detection for a real federation (:data:`DEPLOYED_SERVER_CONFIG`,
        ``fail_fast``).
    clock_seed
        The simulator: seed of the sites' simulated speeds (-1: none; the wall clock rules).
    hosts
        The simulator: NVFlare client name → the sites (of ``site_configs``) it hosts
        (:mod:`~neurofed.federated.engine.hosting`); ``None``: every site is a client.
    sites_in_memory
        With ``hosts``: the sites each host keeps loaded between tasks.
    """
    from nvflare.job_config.api import FedJob

    from neurofed.federated.engine.controller import StudyController
    from neurofed.federated.engine.simulation import SERVER_CONFIG
    from neurofed.federated.engine.site_executor import SiteExecutor

    job = FedJob(
        name=job_name(study),
        min_clients=study.min_sites if min_clients is None else min_clients,
        fail_fast=deployed,
    )
    job.set_app_packages(["neurofed"])
    hosted = {host: list(sites) for host, sites in (hosts or {}).items()}
    controller = StudyController(
        study=study.to_dict(),
        run_dir=run_dir,
        run_name=run_name,
        clock_seed=clock_seed,
        hosts=hosted or None,
    )
    job.to_server(controller)
    server_config = dict(SERVER_CONFIG)
    if deployed:
        server_config.update(DEPLOYED_SERVER_CONFIG)
    job.to_server(server_config)
    if site_configs is None:
        job.to_clients(SiteExecutor())
    elif hosted:
        for host, sites in hosted.items():
            hosted_configs = {s: str(site_configs[s]) for s in sites}
            job.to(SiteExecutor(hosted=hosted_configs, keep=sites_in_memory), host)
    else:
        for name, path in site_configs.items():
            job.to(SiteExecutor(site_config=str(path)), name)
    return job
