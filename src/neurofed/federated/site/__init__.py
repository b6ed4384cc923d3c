"""The site side of a federated run, without NVFlare: what a site does for a task, and keeps.

- :mod:`~neurofed.federated.site.worker` — :class:`SiteWorker`, the whole site-side logic of
  the NVFlare executor; it dispatches only:
- :mod:`~neurofed.federated.site.approval` — the custodian's control: which studies run here;
- :mod:`~neurofed.federated.site.training` — one study at one site: trainers, plan, results;
- :mod:`~neurofed.federated.site.personalised` — Ditto's personalised model (never sent);
- :mod:`~neurofed.federated.site.keeper` and :mod:`~neurofed.federated.site.state` — what a
  site keeps between rounds (FedBN's local layers, Ditto's model) and its folder on disk;
- :mod:`~neurofed.federated.site.recorder` and :mod:`~neurofed.federated.site.audit` — what a
  site did and sent: its payload records and its hash-chained audit log;
- :mod:`~neurofed.federated.site.config` — site-only settings and the custodian's approvals.
"""

from neurofed.federated.site.approval import StudyGate, StudyRefusedError
from neurofed.federated.site.config import SITE_CONFIG_FILE, SiteConfig, SiteConfigError
from neurofed.federated.site.recorder import describe_payload
from neurofed.federated.site.training import StudyTraining, label_counts, site_seed
from neurofed.federated.site.worker import SiteWorker

__all__ = [
    "SITE_CONFIG_FILE",
    "SiteConfig",
    "SiteConfigError",
    "SiteWorker",
    "StudyGate",
    "StudyRefusedError",
    "StudyTraining",
    "describe_payload",
    "label_counts",
    "site_seed",
]
