"""A simulated clock: how long a round would take at real sites, from the FeTS federation's
own timings.

The FeTS Challenge code (``Task_1/fets_challenge/time_utils.py``, FeTS-AI/Challenge) ships per-
institution timings measured in the real FeTS federation, as (mean, standard deviation) in
seconds: training one case (21 institutions, 1.8–20.7 s), validating one case (9.7–40.2 s),
downloading the model (16 institutions' networks, 13–217 s) and uploading it (20–431 s). They
are the tables below. Each simulated site draws one institution's compute profile (training and
validation together) and one network profile (download and upload together) from the seed; each
round it draws its per-case and transfer times from those normal distributions (at least 1 s),
from the seed, the round and its name — so the clock is deterministic.

neurofed's rounds make two trips: ``train`` (download the model, train, upload the update) and,
after aggregation, ``validate`` (download the new model, validate; the metrics sent back are a few
numbers). A round takes the slowest site's training trip — or the deadline, under the deadline
policy, where the sites past it are left out — plus the slowest site's validation trip. Under
``[participation] validate_incoming`` a training trip first scores the model it downloaded
(``scored``), and only the sites that score a model outside a training trip make a validation
trip.

Examples
--------
>>> clocks = site_clocks(["site-1", "site-2"], seed=0)
>>> clocks == site_clocks(["site-2", "site-1"], seed=0)
True
>>> timing = round_time(
...     {s: site_round(c, s, seed=0, round_number=1, train_cases=20, val_cases=5)
...      for s, c in clocks.items()}
... )
>>> timing.bound_by in clocks, timing.seconds == timing.train_seconds + timing.validate_seconds
(True, True)
"""

from __future__ import annotations

import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = [
    "DOWNLOAD_TIMES",
    "TRAINING_TIMES",
    "UPLOAD_TIMES",
    "VALIDATION_TIMES",
    "RoundTime",
    "SiteClock",
    "SiteRound",
    "round_time",
    "site_clocks",
    "site_round",
]

#: Seconds to train one case, per FeTS institution: (mean, sd).
TRAINING_TIMES = (
    (6.71, 0.87), (2.73, 0.02), (3.17, 0.04), (6.58, 0.22), (3.45, 0.47), (6.09, 0.09),
    (3.21, 0.19), (3.34, 0.30), (4.39, 0.37), (6.32, 0.14), (7.42, 1.12), (5.81, 0.03),
    (6.30, 0.25), (5.89, 0.02), (5.48, 0.05), (6.32, 0.16), (20.66, 6.09), (3.20, 0.07),
    (6.52, 0.25), (2.65, 0.03), (1.80, 0.07),
)  # fmt: skip
#: Seconds to validate one case, per FeTS institution (the same order): (mean, sd).
VALIDATION_TIMES = (
    (23.13, 2.60), (12.97, 0.35), (14.78, 0.53), (16.44, 0.43), (15.73, 4.33), (12.95, 0.24),
    (15.34, 1.16), (24.02, 3.09), (38.36, 2.24), (16.32, 0.50), (30.81, 3.18), (12.10, 0.41),
    (13.10, 0.67), (9.69, 0.18), (10.07, 0.79), (14.61, 0.60), (36.30, 9.24), (16.91, 0.75),
    (40.24, 3.77), (13.16, 0.20), (11.22, 0.70),
)  # fmt: skip
#: Seconds to download the model, per FeTS network: (mean, sd).
DOWNLOAD_TIMES = (
    (112.43, 14.46), (117.27, 12.55), (13.06, 4.87), (47.50, 14.92), (162.28, 32.56),
    (99.46, 13.81), (33.63, 25.00), (216.25, 19.18), (217.41, 20.76), (98.39, 13.21),
    (88.88, 23.15), (66.97, 16.68), (36.67, 13.76), (149.32, 26.02), (139.85, 80.05),
    (54.98, 16.65),
)  # fmt: skip
#: Seconds to upload the model, per FeTS network (the same order): (mean, sd).
UPLOAD_TIMES = (
    (192.28, 21.54), (194.60, 24.19), (20.00, 0.00), (52.44, 5.05), (182.82, 14.79),
    (143.38, 7.91), (30.70, 9.67), (430.95, 54.98), (348.32, 30.14), (141.44, 5.27),
    (158.74, 64.88), (81.06, 7.00), (32.61, 5.04), (281.54, 90.60), (194.34, 36.65),
    (66.54, 16.46),
)  # fmt: skip


@dataclass(frozen=True)
class SiteClock:
    """A simulated site's speeds: (mean, sd) seconds per training case, per validation case,
    per model download and per model upload."""

    training: tuple[float, float]
    validation: tuple[float, float]
    download: tuple[float, float]
    upload: tuple[float, float]


def _rng(*parts: int | str) -> np.random.Generator:
    return np.random.default_rng([zlib.crc32(str(p).encode()) for p in parts])


def site_clocks(sites: Sequence[str], seed: int) -> dict[str, SiteClock]:
    """Each site's profile, drawn from the FeTS tables by ``seed`` and the site's name."""
    clocks = {}
    for site in sorted(sites):
        rng = _rng("clock", seed, site)
        compute = int(rng.integers(len(TRAINING_TIMES)))
        network = int(rng.integers(len(DOWNLOAD_TIMES)))
        clocks[site] = SiteClock(
            TRAINING_TIMES[compute],
            VALIDATION_TIMES[compute],
            DOWNLOAD_TIMES[network],
            UPLOAD_TIMES[network],
        )
    return clocks


@dataclass(frozen=True)
class SiteRound:
    """One site's simulated seconds in one round."""

    download: float
    train: float
    upload: float
    validate: float
    scored: float = 0.0  # validate_incoming: scoring the downloaded model before training
    validates: bool = True  # whether the site makes a validation trip

    @property
    def train_trip(self) -> float:
        """Download the model (and score it, under validate_incoming), train, upload."""
        return self.download + self.scored + self.train + self.upload

    @property
    def validate_trip(self) -> float:
        """Download the new model, validate it (0: no validation trip)."""
        return self.download + self.validate if self.validates else 0.0


def site_round(
    clock: SiteClock,
    site: str,
    *,
    seed: int,
    round_number: int,
    train_cases: int,
    val_cases: int,
    epochs: int = 1,
    scored_cases: int = 0,
    validates: bool = True,
) -> SiteRound:
    """``site``'s seconds in ``round_number`` (``train_cases`` 0: it did not train;
    ``scored_cases``: validation cases scored inside its training trip; ``validates``: whether
    it makes a validation trip)."""
    rng = _rng("round", seed, round_number, site)

    def draw(profile: tuple[float, float]) -> float:
        return max(1.0, float(rng.normal(*profile)))

    download, per_train, per_val, upload = (
        draw(clock.download),
        draw(clock.training),
        draw(clock.validation),
        draw(clock.upload),
    )
    trained = train_cases > 0
    return SiteRound(
        download=download,
        train=per_train * train_cases * epochs,
        upload=upload if trained else 0.0,
        validate=per_val * val_cases,
        scored=per_val * scored_cases if trained else 0.0,
        validates=validates,
    )


@dataclass(frozen=True)
class RoundTime:
    """A round's simulated duration and who bounds it.

    Attributes
    ----------
    seconds
        The whole round: ``train_seconds + validate_seconds``.
    train_seconds
        The slowest training trip (or the deadline, when a site was past it).
    validate_seconds
        The slowest validation trip.
    bound_by
        The site whose training trip is the slowest of those aggregated ('' when none trained).
    late
        Sites whose training trip went past the deadline (left out of the round).
    """

    seconds: float
    train_seconds: float
    validate_seconds: float
    bound_by: str
    late: tuple[str, ...] = ()


def round_time(rounds: Mapping[str, SiteRound], deadline_s: float | None = None) -> RoundTime:
    """The round's duration from each site's simulated seconds (see the module docstring)."""
    trips = {s: r.train_trip for s, r in rounds.items() if r.train > 0}
    late = tuple(sorted(s for s, t in trips.items() if deadline_s is not None and t > deadline_s))
    kept = {s: t for s, t in trips.items() if s not in late}
    bound = max(kept, key=lambda s: kept[s], default="")
    train = max(kept.values(), default=0.0)
    if late and deadline_s is not None:
        train = deadline_s
    validate = max((r.validate_trip for r in rounds.values()), default=0.0)
    return RoundTime(train + validate, train, validate, bound, late)
