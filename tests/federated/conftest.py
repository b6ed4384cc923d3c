"""Tiny brain-age sites (4 BIDS cases of 16³ voxels, 8 mm preprocessing), tiny studies, and
tiny planned studies (`[plan]`: configured by the fingerprint round)."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from nvflare.app_common.abstract.fl_model import FLModel

from neurofed.federated.protocol import MetaField, SiteAnswer, TaskName
from neurofed.federated.server import FederatedRun
from neurofed.federated.study import Study
from tests.training.sites import prepare_site, write_bids_site

#: The round timeout of the tests' studies: only a safety net (a test that drops a late site sets
#: its own). 120 s was a guess a busy 2-core machine broke: a site's first round, preparing its
#: cases beside three others, took longer and the site was dropped.
SAFETY_TIMEOUT_S = 900.0

STUDY = """\
name = "tiny-age"
rounds = {rounds}
local_epochs = {local_epochs}
min_sites = {min_sites}
round_timeout_s = {timeout}
seed = 3

[task]
id = "brain-age"

[model]
width = 0.0625

[strategy]
{strategy}

[selection]
metric = "{metric}"
direction = "{direction}"

[train]
batch_size = 2
samples_per_epoch = 4
augment = false
{train}

[train.preprocess]
spacing = [8.0, 8.0, 8.0]
"""


def tiny_study(
    *,
    rounds: int = 2,
    min_sites: int = 1,
    timeout: float = SAFETY_TIMEOUT_S,
    metric: str = "mae",
    direction: str = "min",
    strategy: str = "fedavg",
    ditto_lambda: float | None = None,
    local_parameters: Sequence[str] | None = None,
    local_epochs: int = 1,
    train: Mapping[str, str | float] | None = None,
) -> Study:
    """A brain-age study of a ~1k-parameter SFCN (FedAvg, 1 epoch per round by default).

    ``ditto_lambda`` and ``local_parameters`` go into the ``[strategy]`` table when given,
    ``train`` into ``[train]``.
    """
    table = f'name = "{strategy}"'
    if ditto_lambda is not None:
        table += f"\nditto_lambda = {ditto_lambda!r}"
    if local_parameters is not None:
        table += f"\nlocal_parameters = {json.dumps(list(local_parameters))}"
    return Study.from_toml(
        STUDY.format(
            rounds=rounds,
            local_epochs=local_epochs,
            min_sites=min_sites,
            timeout=timeout,
            metric=metric,
            direction=direction,
            strategy=table,
            train="".join(f"{k} = {json.dumps(v)}\n" for k, v in (train or {}).items()),
        )
    )


def train_reply(run: FederatedRun, site: str, shift: float, num_examples: int = 2) -> SiteAnswer:
    """``site``'s training answer as the server decodes it: the global model, every float entry
    shifted by ``shift``, trained on ``num_examples`` cases."""
    params = {
        k: (v + shift).astype(v.dtype) if v.dtype.kind == "f" else v.copy()
        for k, v in run.params.items()
    }
    meta = {MetaField.NUM_EXAMPLES.value: num_examples, MetaField.LABEL_COUNTS.value: {}}
    return SiteAnswer.decode(TaskName.TRAIN, site, params, meta)


#: Site settings under which the tiny sites' scores leave them. They validate on one case
#: (and an evaluation scores their 4), fewer than a site's default privacy minimum of 5, below
#: which a site withholds every score; tests about something else let the scores through.
SCORED: dict[str, Any] = {"min_cases_per_metric": 1}


def scored(count: int) -> dict[str, dict[str, Any]]:
    """:data:`SCORED` for each of ``count`` simulated sites (``site-1`` …)."""
    return {f"site-{k}": dict(SCORED) for k in range(1, count + 1)}


def write_site(root: Path, seed: int) -> Path:
    """4 cases (3 train, 1 validation), checked and split."""
    return prepare_site(write_bids_site(root, 4, shape=(16, 16, 16), seed=seed))


@pytest.fixture(scope="session")
def age_sites(tmp_path_factory: pytest.TempPathFactory) -> list[Path]:
    """Two checked brain-age sites (tests only add cache files to them)."""
    base = tmp_path_factory.mktemp("age-sites")
    return [write_site(base / f"hospital-{k}", seed=k) for k in (1, 2)]


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


PLANNED_STUDY = """\
name = "tiny-planned-{task}"
rounds = {rounds}
min_sites = {min_sites}
round_timeout_s = {timeout}
seed = 3

[task]
id = "{task}"
{model}
[strategy]
name = "fedavg"

[selection]
metric = "{metric}"
direction = "{direction}"

[train]
samples_per_epoch = 4
augment = false

[plan]
memory_budget_gb = 0.05
base_filters = 4
max_filters = 16
min_feature_size = 3
"""


def planned_study(task: str = "ms-lesion", *, rounds: int = 1, min_sites: int = 2) -> Study:
    """A study planned from the fingerprint round: ``ms-lesion`` (a 3-level dynunet of 4…16
    filters on the 16³ sites) or ``brain-age`` (the tiny SFCN at the planned spacing)."""
    lesion = task == "ms-lesion"
    return Study.from_toml(
        PLANNED_STUDY.format(
            task=task,
            rounds=rounds,
            min_sites=min_sites,
            timeout=SAFETY_TIMEOUT_S,
            model="" if lesion else "[model]\nwidth = 0.0625\n",
            metric="dice" if lesion else "mae",
            direction="max" if lesion else "min",
        )
    )


#: An NVFlare client as the controller sees it: (task name, params, meta) -> (params, meta).
Handler = Callable[[str, dict[str, Any], dict[str, Any]], tuple[Any, dict[str, Any]]]


def worker_client(worker: Any) -> Handler:
    """A site worker as an NVFlare client: its answer encoded as the executor sends it."""
    return lambda task, params, meta: worker.handle(task, params, meta).encode()


def drive_controller(
    study: Study,
    run_dir: Path,
    clients: Mapping[str, Handler],
    *,
    hosts: dict[str, list[str]] | None = None,
    before_send: Callable[[str, FLModel, list[str], float], None] | None = None,
) -> Any:
    """Run the study's :class:`StudyController` over ``clients`` (sites, or the hosts of
    ``hosts``) without NVFlare's transport: each task goes to its clients as NVFlare hands it.
    ``before_send`` sees each task (name, model, targets, timeout) first and may raise to stop
    the run there. Returns the controller."""
    from neurofed.federated.engine.controller import StudyController

    controller = StudyController(study=study.to_dict(), run_dir=str(run_dir), hosts=hosts)
    controller.sample_clients = lambda *a, **k: sorted(clients)

    def send(
        task_name: str, data: FLModel, targets: list[str], timeout: float = 0.0, **_: Any
    ) -> list[FLModel]:
        if before_send is not None:
            before_send(task_name, data, targets, timeout)
        out = []
        for client in targets:
            params, meta = clients[client](task_name, dict(data.params), dict(data.meta))
            out.append(FLModel(params=params, meta={**meta, MetaField.CLIENT_NAME.value: client}))
        return out

    controller.send_model_and_wait = send
    controller.run()
    return controller
