"""The site side of a federated run, without NVFlare: what a site does for a task, and keeps.

- :mod:`~neurofed.federated.site.worker` — :class:`SiteWorker`, the whole site-side logic of
  the NVFlare executor: check the study, train, validate, answer;
- :mod:`~neurofed.federated.site.config` — site-only settings and the custodian's approvals;
- :mod:`~neurofed.federated.site.state` — what a site keeps between rounds (FedBN, Ditto);
- :mod:`~neurofed.federated.site.audit` — the site's hash-chained audit log.
"""

from neurofed.federated.site.config import SITE_CONFIG_FILE, SiteConfig, SiteConfigError
from neurofed.federated.site.worker import (
    SiteAnswer,
    SiteWorker,
    describe_payload,
    label_counts,
    site_seed,
)

__all__ = [
    "SITE_CONFIG_FILE",
    "SiteAnswer",
    "SiteConfig",
    "SiteConfigError",
    "SiteWorker",
    "describe_payload",
    "label_counts",
    "site_seed",
]
