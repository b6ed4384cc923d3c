"""Which sites a round asks, and which of their answers count: the study's ``[participation]``
(:mod:`neurofed.federated.study.participation`) applied by the server.

Examples
--------
>>> from neurofed.federated.study.participation import ParticipationConfig
>>> config = ParticipationConfig(policy="fraction", fraction=0.5, join={"site-4": 3})
>>> sites = ["site-1", "site-2", "site-3", "site-4"]
>>> chosen = select_sites(config, sites, round_number=1, seed=0, min_sites=1)
>>> len(chosen), "site-4" in chosen
(2, False)
>>> chosen == select_sites(config, sites, round_number=1, seed=0, min_sites=1)
True
>>> select_sites(None, sites, round_number=1, seed=0, min_sites=1) == sites
True
"""

from __future__ import annotations

import math
import zlib
from collections.abc import Mapping, Sequence

import numpy as np

from neurofed.federated.clock import SiteClock, site_round
from neurofed.federated.study.participation import ParticipationConfig, Policy

__all__ = ["past_deadline", "select_sites"]


def select_sites(
    config: ParticipationConfig | None,
    live: Sequence[str],
    *,
    round_number: int,
    seed: int,
    min_sites: int,
) -> list[str]:
    """The sites ``round_number`` asks to train, sorted (all live sites without the table)."""
    if config is None:
        return sorted(live)
    eligible = sorted(s for s in live if config.joins(s) <= round_number)
    if config.policy is not Policy.FRACTION or not eligible:
        return eligible
    count = min(len(eligible), max(min_sites, math.ceil((config.fraction or 1.0) * len(eligible))))
    rng = np.random.default_rng([zlib.crc32(b"participation"), seed, round_number])
    chosen = rng.choice(len(eligible), size=count, replace=False)
    return sorted(eligible[int(i)] for i in chosen)


def past_deadline(
    config: ParticipationConfig | None,
    clocks: Mapping[str, SiteClock],
    num_examples: Mapping[str, int],
    *,
    round_number: int,
    seed: int,
    epochs: int,
    scored: Mapping[str, int] | None = None,
) -> list[str]:
    """In simulation, the sites whose simulated training trip ends after the deadline (none
    without the deadline policy, or for a site without a clock); ``scored``: the validation
    cases each site scored inside its trip (``validate_incoming``)."""
    if config is None or config.policy is not Policy.DEADLINE or config.deadline_s is None:
        return []
    late = []
    for site, cases in sorted(num_examples.items()):
        if site not in clocks:
            continue
        timing = site_round(
            clocks[site],
            site,
            seed=seed,
            round_number=round_number,
            train_cases=cases,
            val_cases=0,
            epochs=epochs,
            scored_cases=(scored or {}).get(site, 0),
        )
        if timing.train_trip > config.deadline_s:
            late.append(site)
    return late
