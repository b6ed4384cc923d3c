"""Tiny sites for the training tests (session-scoped: tests only add cache files to them)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from tests.training.sites import prepare_site, write_bids_site, write_glioma_site


@pytest.fixture(scope="session")
def glioma_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 BraTS-2021 cases of 24³ voxels: 9 train, 3 validation."""
    return prepare_site(write_glioma_site(tmp_path_factory.mktemp("sites") / "glioma-1", 12))


@pytest.fixture(scope="session")
def bids_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """12 BIDS cases of 32³ voxels (T1w, FLAIR, lesion masks, age): 9 train, 3 validation."""
    return prepare_site(write_bids_site(tmp_path_factory.mktemp("sites") / "bids-1", 12))


@pytest.fixture(scope="session")
def lesion_site(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Like ``bids_site`` (same draws) with lesions of radius 3 voxels instead of 2: the tiny
    ms-lesion network then finds them within seconds for every seed tried (0-9; with radius 2
    some seeds predict no lesion at all for 20 epochs or more)."""
    root = tmp_path_factory.mktemp("sites") / "lesions-1"
    return prepare_site(write_bids_site(root, 12, lesion_radius=3.0))


@pytest.fixture(autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny networks run fastest on one thread, and two threads stall badly when another
    process shares the CPU (each OpenMP region waits for a descheduled thread)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
