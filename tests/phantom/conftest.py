"""Small phantom federations (4 mm, a few cases), generated once per test session."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from neurofed.keys import ClinicalField
from neurofed.phantom import PhantomConfig, PhantomSummary, generate_federation

SPACING = 4.0


@dataclass(frozen=True)
class Federation:
    config: PhantomConfig
    summary: PhantomSummary

    @property
    def root(self) -> Path:
        return self.summary.root

    @property
    def manifest(self) -> dict[str, Any]:
        return json.loads(self.summary.manifest.read_text(encoding="utf-8"))


def _make(factory: pytest.TempPathFactory, name: str, config: PhantomConfig) -> Federation:
    out = factory.mktemp(name) / "federation"
    return Federation(config, generate_federation(config, out))


GLIOMA = PhantomConfig(
    preset="glioma",
    sites=2,
    cases=3,
    seed=11,
    spacing=SPACING,
    unlabelled_sites=(2,),
    missing_markers={2: (ClinicalField.MGMT,)},
)
MS = PhantomConfig(
    preset="ms", sites=2, cases=3, seed=5, spacing=SPACING, missing_markers={1: ("sdmt",)}
)


@pytest.fixture(scope="session")
def glioma_fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return _make(tmp_path_factory, "glioma", GLIOMA)


@pytest.fixture(scope="session")
def ms_fed(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    return _make(tmp_path_factory, "ms", MS)


@pytest.fixture(scope="session")
def broken_glioma(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    config = PhantomConfig(
        preset="glioma", sites=1, cases=11, seed=2, spacing=SPACING, broken_per_site=11
    )
    return _make(tmp_path_factory, "broken-glioma", config)


@pytest.fixture(scope="session")
def broken_bids(tmp_path_factory: pytest.TempPathFactory) -> Federation:
    config = PhantomConfig(
        preset="brain-age", sites=1, cases=11, seed=2, spacing=SPACING, broken_per_site=11
    )
    return _make(tmp_path_factory, "broken-bids", config)
