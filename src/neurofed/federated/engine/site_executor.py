"""The NVFlare executor every site installs: moves weights and metrics in and out of a site.

:class:`SiteExecutor` is installed code (``neurofed`` is a package the custodian installs; jobs
ship no ``custom/`` folder). It only converts NVFlare messages to and from the pure
:class:`~neurofed.federated.site.worker.SiteWorker`, which does the work and never raises:
a failing site answers with an error reason instead of crashing the job (a crashed site process
fails the whole NVFlare job).

Where the site's data is: the executor's one argument, ``site_config``, is the path of the
site's config JSON (:class:`~neurofed.federated.site.config.SiteConfig`) — written by
``neurofed simulate`` for each simulated site outside the job. Left empty (a deployed site), the
executor reads :data:`~neurofed.federated.site.config.SITE_CONFIG_FILE` from the site's
kit ``local/`` folder. The data root itself never appears in a job, nor does the site's state
folder (``state_dir``: local layers and personalised models kept between rounds, read back when
the site process restarts).

A simulator worker that hosts several sites (``neurofed simulate --processes K``) gets
``hosted`` instead: site name → path of that site's config; it answers for each site a task names
(:mod:`~neurofed.federated.engine.hosting`).

A site that has its own config file (every deployed site: ``neurofed site init`` writes it)
refuses a job that names a config path or hosted sites, with the reason: the config a job may
name is the simulator's, never a deployed site's.

The worker is given the config's path, so the custodian's approvals (``neurofed site approve`` /
``revoke``) take effect without restarting the site; a study the site refuses is answered with
the reason and ``refused: true`` (see :mod:`~neurofed.federated.site.worker`), never by
crashing the job.
"""

from __future__ import annotations

import logging
from pathlib import Path

from nvflare.apis.executor import Executor
from nvflare.apis.fl_context import FLContext
from nvflare.apis.shareable import Shareable
from nvflare.apis.signal import Signal
from nvflare.app_common.abstract.fl_model import FLModel, ParamsType
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from neurofed.federated.engine.hosting import HostedSites
from neurofed.federated.protocol import SiteAnswer
from neurofed.federated.site.config import SITE_CONFIG_FILE, SiteConfig
from neurofed.federated.site.worker import SiteWorker

__all__ = ["SiteExecutor"]

logger = logging.getLogger(__name__)


class SiteExecutor(Executor):  # type: ignore[misc]
    """Runs ``train`` and ``validate`` tasks of a neurofed study at one site.

    Parameters
    ----------
    site_config
        Path of the site's config JSON; empty: ``<kit>/local/neurofed_site.json``.
    hosted
        The simulator only: this worker hosts these sites (site name → path of its config JSON)
        instead of being one site itself.
    keep
        With ``hosted``: how many of its sites stay loaded in memory between tasks.
    """

    def __init__(
        self, site_config: str = "", hosted: dict[str, str] | None = None, keep: int = 1
    ) -> None:
        super().__init__()
        self.site_config = site_config
        self.hosted = dict(hosted or {})
        self.keep = int(keep)
        self._worker: SiteWorker | None = None
        self._hosts = HostedSites(self.hosted, keep=self.keep) if self.hosted else None

    def _kit_config(self, fl_ctx: FLContext) -> Path:
        workspace = fl_ctx.get_engine().get_workspace()
        return Path(workspace.get_site_config_dir()) / SITE_CONFIG_FILE

    def _config_path(self, fl_ctx: FLContext) -> Path:
        return Path(self.site_config) if self.site_config else self._kit_config(fl_ctx)

    def refusal(self, fl_ctx: FLContext) -> str | None:
        """Why this site refuses the job's executor (``None``: it does not): a site with its own
        config (a deployed site's kit) never reads a config that a job names, which could
        otherwise point it at settings its custodian did not choose."""
        if (self.site_config or self.hosted) and self._kit_config(fl_ctx).is_file():
            return (
                f"the job names a site config, but this site has its own "
                f"(local/{SITE_CONFIG_FILE}) and reads only that; submit the study with "
                "`neurofed study submit`, whose jobs name none"
            )
        return None

    def worker(self, fl_ctx: FLContext) -> SiteWorker:
        """This site's worker (its config is read on the first task)."""
        if self._worker is None:
            site_id = fl_ctx.get_identity_name()
            path = self._config_path(fl_ctx)
            self._worker = SiteWorker(site_id, SiteConfig.load(path), config_path=path)
        return self._worker

    def answer(self, task_name: str, model: FLModel, fl_ctx: FLContext) -> SiteAnswer:
        """The site's answer (never raises)."""
        try:
            worker = self.worker(fl_ctx)
        except Exception as exc:  # answer, never crash the job
            logger.exception("site config unusable")
            return SiteAnswer.failure(f"site config: {type(exc).__name__}")
        return worker.handle(task_name, model.params or {}, model.meta or {})

    def execute(
        self, task_name: str, shareable: Shareable, fl_ctx: FLContext, abort_signal: Signal
    ) -> Shareable:
        refused = self.refusal(fl_ctx)
        if refused is not None:
            logger.error("task %s refused: %s", task_name, refused)
            params, meta = SiteAnswer.failure(refused).encode()
            return FLModelUtils.to_shareable(
                FLModel(params_type=ParamsType.FULL, params=params, meta=meta)
            )
        try:
            model = FLModelUtils.from_shareable(shareable)
        except Exception as exc:
            logger.exception("unreadable task %s", task_name)
            params, meta = SiteAnswer.failure(f"unreadable task: {exc}").encode()
        else:
            if self._hosts is not None:
                params, meta = self._hosts.handle(task_name, model.params or {}, model.meta or {})
            else:
                params, meta = self.answer(task_name, model, fl_ctx).encode()
        return FLModelUtils.to_shareable(
            FLModel(params_type=ParamsType.FULL, params=params, meta=meta)
        )
