"""A site's privacy ledger and the round's DP-SGD settings under a study's ``[privacy]``.

The **ledger** (``<state root>/privacy-ledger.json``, never sent) keeps, per dataset name (the
study's ``dataset``; ``(unnamed)`` for a study that names none), every DP-SGD round this site
ran on it: the noise multiplier, the sampling rate, the steps, which study and round. The ε
spent on a dataset is all of them composed by the study's accountant at its δ
(:func:`neurofed.training.private.epsilon`), across studies: two studies on the same cases spend
one budget.

Before a round trains, :func:`plan_round` computes the ε the dataset will have spent after it.
If the custodian capped that dataset (``neurofed site privacy-budget --dataset D --epsilon E``,
:attr:`~neurofed.federated.site.config.SiteConfig.privacy_budgets`) and the round would cross
the cap, the round is refused (:class:`PrivacyBudgetError`, a refusal the server records and
the audit log keeps) and the federation goes on with the other sites. A round that trained is
written to the ledger (:meth:`PrivacyLedger.add`) before its answer leaves.
"""

from __future__ import annotations

import json
import math
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from neurofed.artifacts import write_json_atomically
from neurofed.federated.site.approval import StudyRefusedError
from neurofed.federated.study import Study
from neurofed.keys import MetricName

__all__ = [
    "LEDGER_FILE",
    "UNNAMED",
    "PrivacyBudgetError",
    "PrivacyLedger",
    "PrivateRound",
    "fresh_seed",
    "plan_round",
]

#: The ledger's file name in the site's state root.
LEDGER_FILE = "privacy-ledger.json"
#: The ledger's key for studies that name no dataset.
UNNAMED = "(unnamed)"
_FORMAT = 1


class PrivacyBudgetError(StudyRefusedError):
    """The round would spend more ε than the custodian allows on the dataset."""


@dataclass(frozen=True)
class PrivateRound:
    """One round's DP-SGD at this site, and the ε its dataset will have spent after it."""

    dataset: str
    noise_multiplier: float
    sample_rate: float
    steps: int
    cases: int
    epsilon_before: float
    epsilon_after: float
    cap: float | None

    def entry(self, study: Study, round_number: int) -> dict[str, Any]:
        """This round as a ledger entry."""
        return {
            "study": study.content_hash[:16],
            "round": round_number,
            "noise_multiplier": self.noise_multiplier,
            "sample_rate": self.sample_rate,
            "steps": self.steps,
            "at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        }

    def metrics(self) -> dict[str, float]:
        """What the site reports for the round (aggregate numbers about the mechanism only)."""
        return {
            MetricName.EPSILON.value: self.epsilon_after,
            MetricName.NOISE_MULTIPLIER.value: self.noise_multiplier,
        }


class PrivacyLedger:
    """The DP-SGD rounds this site ran, per dataset (see the module docstring)."""

    def __init__(self, state_root: Path) -> None:
        self.path = Path(state_root) / LEDGER_FILE

    def _read(self) -> dict[str, list[dict[str, Any]]]:
        if not self.path.is_file():
            return {}
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
            datasets = data["datasets"]
            assert isinstance(datasets, dict)
        except (OSError, ValueError, KeyError, AssertionError, TypeError):
            # a ledger that cannot be read must not read as "nothing spent"
            raise ValueError(
                f"{self.path}: the privacy ledger is unreadable; restore it from a backup (DP "
                "rounds stop until it can be read)"
            ) from None
        return datasets

    def datasets(self) -> list[str]:
        """The datasets with at least one round in the ledger."""
        return sorted(self._read())

    def entries(self, dataset: str) -> list[dict[str, Any]]:
        """The ledger's entries of ``dataset``, oldest first."""
        return list(self._read().get(dataset, []))

    def history(self, dataset: str) -> list[tuple[float, float, int]]:
        """``(noise multiplier, sample rate, steps)`` of every round on ``dataset``."""
        return [
            (float(e["noise_multiplier"]), float(e["sample_rate"]), int(e["steps"]))
            for e in self.entries(dataset)
        ]

    def add(self, dataset: str, entry: dict[str, Any]) -> None:
        """Append one round (atomically)."""
        datasets = self._read()
        datasets.setdefault(dataset, []).append(entry)
        write_json_atomically(self.path, {"format": _FORMAT, "datasets": datasets})


def plan_round(
    study: Study,
    round_number: int,
    cases: int,
    batch_size: int,
    steps: int,
    ledger: PrivacyLedger,
    caps: Mapping[str, float],
) -> PrivateRound:
    """The round's DP-SGD settings at this site, checked against the custodian's cap.

    Raises
    ------
    PrivacyBudgetError
        The dataset is capped and the round would cross the cap.
    ValueError
        The site has no training case, or its ledger is unreadable.
    """
    from neurofed.training.private import epsilon, noise_for_epsilon

    privacy = study.privacy
    assert privacy is not None
    if cases < 1:
        raise ValueError("DP-SGD needs training cases; this site has none")
    rate = min(1.0, batch_size / cases)
    sigma = privacy.noise_multiplier
    if sigma is None:
        assert privacy.target_epsilon is not None
        total = steps * study.rounds
        sigma = noise_for_epsilon(
            privacy.target_epsilon, privacy.delta, rate, total, privacy.accountant
        )
    dataset = study.dataset or UNNAMED
    history = ledger.history(dataset)
    before = epsilon(history, privacy.delta, privacy.accountant)
    after = epsilon([*history, (sigma, rate, steps)], privacy.delta, privacy.accountant)
    cap = caps.get(dataset)
    planned = PrivateRound(dataset, sigma, rate, steps, cases, before, after, cap)
    if cap is not None and (after > cap or not math.isfinite(after)):
        raise PrivacyBudgetError(
            f"refused: round {round_number} of study {study.name!r} would bring the ε spent on "
            f"dataset {dataset!r} at this site from {before:.3g} to {after:.3g} (δ = "
            f"{privacy.delta:g}), beyond the cap of {cap:g} its custodian set; the federation "
            "goes on without this site (the custodian may raise the cap with `neurofed site "
            "privacy-budget`)",
            study.name,
        )
    return planned


def fresh_seed() -> int:
    """A seed nobody else can know (the Poisson draws and the noise of one round)."""
    return secrets.randbits(63)
