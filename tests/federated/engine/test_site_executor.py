"""The site executor: a deployed site (one with its own config file) never reads a config that
a job names, nor hosts sites a job names; the simulator's executor does."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from nvflare.app_common.abstract.fl_model import FLModel
from nvflare.app_common.utils.fl_model_utils import FLModelUtils

from neurofed.federated.engine.site_executor import SiteExecutor
from neurofed.federated.protocol import MetaField
from neurofed.federated.site.config import SITE_CONFIG_FILE, SiteConfig


class _Context:
    """What the executor asks of NVFlare's FLContext: the site's name and its workspace."""

    def __init__(self, local: Path) -> None:
        self.local = local

    def get_identity_name(self) -> str:
        return "site-1"

    def get_engine(self) -> Any:
        return self

    def get_workspace(self) -> Any:
        return self

    def get_site_config_dir(self) -> str:
        return str(self.local)


def _execute(executor: SiteExecutor, local: Path) -> dict[str, Any]:
    task = FLModelUtils.to_shareable(FLModel(params={}, meta={MetaField.ROUND.value: 1}))
    answer = executor.execute("validate", task, _Context(local), None)
    return dict(FLModelUtils.from_shareable(answer).meta or {})


@pytest.mark.parametrize(
    "executor",
    [
        SiteExecutor(site_config="/elsewhere/permissive.json"),
        SiteExecutor(hosted={"site-1": "/elsewhere/permissive.json"}),
    ],
    ids=["named-config", "hosted-sites"],
)
def test_a_deployed_site_refuses_a_job_that_names_its_config(
    executor: SiteExecutor, tmp_path: Path
) -> None:
    # Prepare: the kit's own config, as `neurofed site init` writes it
    SiteConfig(tmp_path, device="cpu").write(tmp_path / "local" / SITE_CONFIG_FILE)
    # Execute
    meta = _execute(executor, tmp_path / "local")
    # Assert
    assert "the job names a site config, but this site has its own" in meta["error"]
    assert "/elsewhere" not in meta["error"]


def test_the_simulator_and_a_plain_deployed_job_are_not_refused(tmp_path: Path) -> None:
    # Prepare: a simulator site's workspace has no config of its own; a kit has one
    (tmp_path / "simulator").mkdir()
    SiteConfig(tmp_path, device="cpu").write(tmp_path / "kit" / SITE_CONFIG_FILE)
    # Execute / Assert
    named = SiteExecutor(site_config=str(tmp_path / "site-1.json"))
    assert named.refusal(_Context(tmp_path / "simulator")) is None  # type: ignore[arg-type]
    assert SiteExecutor().refusal(_Context(tmp_path / "kit")) is None  # type: ignore[arg-type]
    # the simulator's named config is read (here it is missing, so the site says so)
    meta = _execute(named, tmp_path / "simulator")
    assert meta["error"].startswith("site config:")
