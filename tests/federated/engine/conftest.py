"""Tiny brain-age sites (4 BIDS cases of 16³ voxels, 8 mm preprocessing) and tiny studies."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from neurofed.federated import Study
from tests.engine.sites import prepare_site, write_bids_site

STUDY = """\
name = "tiny-age"
rounds = {rounds}
min_sites = {min_sites}
round_timeout_s = {timeout}
seed = 3

[task]
id = "brain-age"

[model]
width = 0.0625

[strategy]
name = "fedavg"

[selection]
metric = "{metric}"
direction = "{direction}"

[train]
batch_size = 2
samples_per_epoch = 4
augment = false

[train.preprocess]
spacing = [8.0, 8.0, 8.0]
"""


def tiny_study(
    *,
    rounds: int = 2,
    min_sites: int = 1,
    timeout: float = 120,
    metric: str = "mae",
    direction: str = "min",
) -> Study:
    """A 1-epoch-per-round FedAvg brain-age study of a ~1k-parameter SFCN."""
    return Study.from_toml(
        STUDY.format(
            rounds=rounds, min_sites=min_sites, timeout=timeout, metric=metric, direction=direction
        )
    )


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
