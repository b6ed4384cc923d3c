"""NVIDIA FLARE integration — the only package of neurofed that imports or drives ``nvflare``.

- :class:`~neurofed.federated.engine.controller.StudyController` — the server workflow; its
  bookkeeping is :class:`~neurofed.federated.server.FederatedRun`;
- :class:`~neurofed.federated.engine.site_executor.SiteExecutor` — the site side, wrapping
  :class:`~neurofed.federated.site.SiteWorker`; it never crashes a job;
- :func:`~neurofed.federated.engine.simulation.run_simulation` — a study on one machine through
  NVFlare's simulator;
- a deployed federation: :mod:`~neurofed.federated.engine.provision` (kits and bundles),
  :mod:`~neurofed.federated.engine.kit` (a site's kit), :mod:`~neurofed.federated.engine.services`
  (participants as background processes), :mod:`~neurofed.federated.engine.submit` (submit,
  follow, download through the FLARE API), :mod:`~neurofed.federated.engine.run_progress` (a
  deployed run's folder and live progress) and :mod:`~neurofed.federated.engine.job` (the
  config-only job both share).

``nvflare`` itself is imported inside the modules and functions that need it, so importing this
package stays cheap.

Examples
--------
>>> from neurofed.federated.engine import site_names
>>> site_names(2)
['site-1', 'site-2']
"""

from neurofed.federated.engine.simulation import (
    SimulationError,
    SimulationResult,
    run_simulation,
    site_names,
)

__all__ = [
    "SimulationError",
    "SimulationResult",
    "run_simulation",
    "site_names",
]
