"""A study's ``[privacy]`` table: DP-SGD at every site, with a per-site privacy budget.

.. code-block:: toml

    [privacy]
    clip_norm = 1.0           # each case's gradient is clipped to this L2 norm
    noise_multiplier = 1.1    # noise std / clip_norm; or instead:
    # target_epsilon = 8.0    # each site picks the noise that spends this over the whole study
    delta = 1e-5              # the δ of (ε, δ)-DP, per site and dataset
    accountant = "rdp"        # "rdp" (Rényi DP) or "prv" (privacy random variables)

Every site then trains with DP-SGD (:mod:`neurofed.training.private`): Poisson-sampled cases,
per-case clipping, Gaussian noise. What leaves a site (its parameters) is then (ε, δ)-DP with
respect to any one of its cases, ε composed over every round it ran on that dataset
(:mod:`neurofed.federated.site.privacy`: the site's ledger, and the cap its custodian sets).
The whole table is part of the study's hash.

A study with ``target_epsilon`` lets each site choose its noise from its own number of cases
(the sampling rate), so that the study's ``rounds`` spend exactly that ε there.

Examples
--------
>>> PrivacyConfig(noise_multiplier=1.1).describe()
'DP-SGD at each site: gradients clipped to 1 per case, noise 1.1 x clip, δ = 1e-05, rdp accountant'
>>> PrivacyConfig()  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: PrivacyConfig.noise_multiplier = None is invalid: give noise_multiplier or ...
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from neurofed.config import ConfigBase, require

__all__ = ["ACCOUNTANTS", "PrivacyConfig"]

#: The accountants (Opacus's) a study may name.
ACCOUNTANTS = ("rdp", "prv")


def _positive(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value > 0


@dataclass(frozen=True)
class PrivacyConfig(ConfigBase):
    """The ``[privacy]`` table (see the module docstring)."""

    clip_norm: float = 1.0
    noise_multiplier: float | None = None
    target_epsilon: float | None = None
    delta: float = 1e-5
    accountant: str = "rdp"

    def __post_init__(self) -> None:
        require(
            (self.noise_multiplier is None) != (self.target_epsilon is None),
            self,
            "noise_multiplier",
            "give noise_multiplier or target_epsilon (one of them)",
        )
        require(_positive(self.clip_norm), self, "clip_norm", "use a norm > 0, e.g. 1.0")
        if self.noise_multiplier is not None:
            ok = _positive(self.noise_multiplier) and self.noise_multiplier <= 100
            require(ok, self, "noise_multiplier", "use a number in (0, 100], e.g. 1.1")
        if self.target_epsilon is not None:
            ok = _positive(self.target_epsilon) and self.target_epsilon <= 100
            require(ok, self, "target_epsilon", "use an ε in (0, 100], e.g. 8")
        ok = _positive(self.delta) and self.delta < 0.01
        require(ok, self, "delta", "use a δ well below 1/cases, e.g. 1e-5")
        require(
            self.accountant in ACCOUNTANTS,
            self,
            "accountant",
            f"use one of {', '.join(ACCOUNTANTS)}",
        )

    def to_dict(self) -> dict[str, Any]:
        """The table as the study keeps it (what is not set is left out)."""
        return {k: v for k, v in self.to_json().items() if v is not None}

    def describe(self) -> str:
        """One line for a custodian."""
        noise = (
            f"noise {self.noise_multiplier:g} x clip"
            if self.noise_multiplier is not None
            else f"noise chosen per site to spend ε = {self.target_epsilon:g} over the study"
        )
        return (
            f"DP-SGD at each site: gradients clipped to {self.clip_norm:g} per case, {noise}, "
            f"δ = {self.delta:g}, {self.accountant} accountant"
        )
