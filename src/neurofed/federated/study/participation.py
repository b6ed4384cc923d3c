"""A study's ``[participation]`` table: which sites each round asks to train.

.. code-block:: toml

    [participation]
    policy = "fraction"   # "all" (default), "fraction" or "deadline"
    fraction = 0.3        # "fraction": this share of the eligible sites, drawn anew each round
    # deadline_s = 900    # "deadline": training answers later than this are left out of the
    #                     #   round; the late site stays in the federation (OpenFL's cut-off)
    join = { site-7 = 10, site-8 = 10 }   # sites that join late: not asked before that round
    validate_incoming = true   # one trip per round: a training site first scores the model it
                               #   receives (the last round's), as FeTS did

- ``all``: every live site, every round (the default, and what a study without the table does).
- ``fraction``: ``max(min_sites, ceil(fraction · eligible))`` sites drawn without replacement
  from the study's seed and the round, so a resumed run asks the same sites (FedAvg with client
  sampling, McMahan et al. 2017).
- ``deadline``: every eligible site is asked; the round aggregates what arrived within
  ``deadline_s`` and does not wait for the rest, which stay live (a site that never answers
  within ``round_timeout_s`` is still dropped). In simulation the deadline is applied to each
  site's simulated time (:mod:`neurofed.federated.clock`).
- ``join``: a site listed there is not asked before its round (FeTS held sites that would join
  late out of the federation altogether).
- ``validate_incoming``: every round's model is still scored at every live site, but a site
  that trains in the next round scores it at the start of that training task instead of in a
  validation task of its own, so a round costs one trip instead of two (FeTS). The last
  round's model, and sites that do not train in a round, are scored by a validation task as
  before. Not with ``secagg`` (its training task is one step of four).

FedAvg-family strategies weight each round by the cases of the sites that trained in it, so a
site that misses rounds simply does not weigh in them. The whole table is part of the study's
hash.

Examples
--------
>>> ParticipationConfig(policy="fraction", fraction=0.5).describe()
'each round asks 50 % of the eligible sites (at least min_sites), drawn from the seed'
>>> ParticipationConfig(policy="deadline")  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: ParticipationConfig.deadline_s = None is invalid: the deadline policy needs ...
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from neurofed.config import ConfigBase, coerce_enum, require

__all__ = ["ParticipationConfig", "Policy"]

_SITE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")


def _share(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and 0 < value <= 1


def _seconds(value: object) -> bool:
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    return ok and 0 < value <= 7 * 86_400  # type: ignore[operator]


class Policy(StrEnum):
    """Which sites a round asks to train."""

    ALL = "all"
    FRACTION = "fraction"
    DEADLINE = "deadline"


@dataclass(frozen=True)
class ParticipationConfig(ConfigBase):
    """The ``[participation]`` table (see the module docstring)."""

    policy: Policy = Policy.ALL
    fraction: float | None = None
    deadline_s: float | None = None
    join: Mapping[str, int] = field(default_factory=dict)
    validate_incoming: bool = False

    def __post_init__(self) -> None:
        coerce_enum(self, "policy", Policy)
        fraction, deadline = self.fraction, self.deadline_s
        if self.policy is Policy.FRACTION:
            require(_share(fraction), self, "fraction", "use a share in (0, 1], e.g. 0.3")
            object.__setattr__(self, "fraction", float(fraction or 0))
        else:
            require(fraction is None, self, "fraction", 'give it with policy = "fraction" only')
        if self.policy is Policy.DEADLINE:
            require(
                _seconds(deadline),
                self,
                "deadline_s",
                "the deadline policy needs deadline_s, the seconds a round waits for training",
            )
            object.__setattr__(self, "deadline_s", float(deadline or 0))
        else:
            require(deadline is None, self, "deadline_s", 'give it with policy = "deadline" only')
        join = self.join
        ok = isinstance(join, Mapping) and all(
            isinstance(s, str)
            and _SITE.match(s)
            and isinstance(r, int)
            and not isinstance(r, bool)
            and r >= 1
            for s, r in join.items()
        )
        require(ok, self, "join", "map site names to the round they join, e.g. { site-7 = 10 }")
        object.__setattr__(self, "join", dict(sorted(join.items())))
        require(
            isinstance(self.validate_incoming, bool),
            self,
            "validate_incoming",
            "use true (one trip per round) or false",
        )

    def joins(self, site: str) -> int:
        """The first round ``site`` is asked to train in (1 unless it joins late)."""
        return int(self.join.get(site, 1))

    def to_dict(self) -> dict[str, Any]:
        """The table as the study keeps it (what is not set is left out)."""
        out = {k: v for k, v in self.to_json().items() if v is not None}
        if not self.join:
            out.pop("join")
        if not self.validate_incoming:  # the default keeps the hashes studies had
            out.pop("validate_incoming")
        return out

    def describe(self) -> str:
        """One line for a custodian and the study lead."""
        if self.policy is Policy.FRACTION:
            text = (
                f"each round asks {100 * (self.fraction or 0):.0f} % of the eligible sites (at "
                "least min_sites), drawn from the seed"
            )
        elif self.policy is Policy.DEADLINE:
            text = (
                f"each round aggregates the training answers within {self.deadline_s:g} s; "
                "later sites stay in the federation"
            )
        else:
            text = "every live site trains every round"
        if self.join:
            text += "; joining late: " + ", ".join(f"{s} (round {r})" for s, r in self.join.items())
        if self.validate_incoming:
            text += "; training sites score the incoming model first (one trip per round)"
        return text
