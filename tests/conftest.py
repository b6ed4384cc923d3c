"""Session-wide settings: the suite runs in two pytest-xdist workers on a two-core machine."""

from __future__ import annotations

import os

import pytest


def pytest_configure(config: pytest.Config) -> None:
    """One compute thread per worker (and per process a test starts): two workers with torch's
    default of one thread per core would ask for twice the cores there are."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        os.environ["MKL_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)
