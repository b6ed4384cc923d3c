"""NVIDIA FLARE integration — the only package of neurofed that imports ``nvflare``.

- :class:`~neurofed.federated.engine.controller.StudyController` — the server workflow: rounds
  with a quorum and a timeout, dropped sites, federated validation, selection, checkpoints and
  resume (its bookkeeping is the engine-free
  :class:`~neurofed.federated.engine.coordinator.FederatedRun`);
- :class:`~neurofed.federated.engine.site_executor.SiteExecutor` — the site side, wrapping the
  engine-free :class:`~neurofed.federated.engine.site_worker.SiteWorker` around
  :class:`neurofed.training.LocalTrainer`; it never crashes a job;
- :func:`~neurofed.federated.engine.simulation.run_simulation` — a study on one machine through
  NVFlare's simulator;
- a deployed federation: :mod:`~neurofed.federated.engine.provision` (kits and bundles),
  :mod:`~neurofed.federated.engine.services` (participants as background processes),
  :mod:`~neurofed.federated.engine.submit` (submit, follow, download through the FLARE API) and
  :mod:`~neurofed.federated.engine.job` (the config-only job both share).

``nvflare`` is imported only by the modules that need it (``controller``, ``site_executor`` and
inside :func:`run_simulation`), so the bookkeeping here works without it.

Examples
--------
>>> from neurofed.federated.engine import TaskName, site_names
>>> [t.value for t in TaskName], site_names(2)
(['train', 'validate', 'fingerprint'], ['site-1', 'site-2'])
"""

from neurofed.federated.engine.coordinator import FederatedRun, RunFolderError, SiteReply
from neurofed.federated.engine.messages import MetaField, TaskName
from neurofed.federated.engine.run_folder import (
    RoundCheckpoint,
    RoundRecord,
    latest_round_checkpoint,
    load_round_checkpoint,
    save_round_checkpoint,
)
from neurofed.federated.engine.simulation import (
    SimulationError,
    SimulationResult,
    run_simulation,
    site_names,
)
from neurofed.federated.engine.site_config import SITE_CONFIG_FILE, SiteConfig, SiteConfigError
from neurofed.federated.engine.site_worker import (
    SiteAnswer,
    SiteWorker,
    describe_payload,
    label_counts,
    site_seed,
)

__all__ = [
    "SITE_CONFIG_FILE",
    "FederatedRun",
    "MetaField",
    "RoundCheckpoint",
    "RoundRecord",
    "RunFolderError",
    "SimulationError",
    "SimulationResult",
    "SiteAnswer",
    "SiteConfig",
    "SiteConfigError",
    "SiteReply",
    "SiteWorker",
    "TaskName",
    "describe_payload",
    "label_counts",
    "latest_round_checkpoint",
    "load_round_checkpoint",
    "run_simulation",
    "save_round_checkpoint",
    "site_names",
    "site_seed",
]
