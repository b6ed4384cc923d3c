"""How long a finished run would have taken at real sites: the simulated clock
(:mod:`neurofed.federated.clock`) applied to what each round did.

For each round the run folder says which sites trained on how many cases and how many
validation cases each site scored; each site's speeds come from the clock's seed. The estimate
is the slowest training trip (or the deadline) plus the slowest validation trip, per round.
With ``incoming`` (``[participation] validate_incoming``) a site that trained in round ``k``
scored round ``k - 1``'s model inside that trip; a model is scored in a validation trip only by
the sites that did not train in the next round, and by every site after the last round.

Examples
--------
>>> from neurofed.federated.server.run_folder import RoundRecord
>>> record = RoundRecord(round=1, train={"site-1": {"num_examples": 20.0}},
...                      validation_per_site={"site-1": {"WT/num_examples": 5.0}})
>>> [(k, t.bound_by) for k, t in estimate_rounds([record], seed=0, epochs=1)]
[(1, 'site-1')]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from neurofed.federated.clock import RoundTime, round_time, site_clocks, site_round
from neurofed.federated.server.run_folder import RoundRecord

__all__ = ["RunTime", "estimate_rounds", "estimate_run", "validation_cases"]


def validation_cases(metrics: Mapping[str, float]) -> int:
    """The cases a site's validation metrics rest on: the largest of their ``num_examples``
    counts (a multi-task model counts per output, e.g. ``WT/num_examples``)."""
    counts = [v for k, v in metrics.items() if k == "num_examples" or k.endswith("/num_examples")]
    return int(max((v for v in counts if v == v), default=0))


def estimate_rounds(
    history: Sequence[RoundRecord],
    *,
    seed: int,
    epochs: int,
    deadline_s: float | None = None,
    incoming: bool = False,
) -> list[tuple[int, RoundTime]]:
    """Each round's simulated duration (see the module docstring)."""
    # a site's clock depends on the seed and its name only, not on the other sites
    clocks = site_clocks(
        sorted({s for r in history for s in (*r.train, *r.validation_per_site)}), seed
    )
    out = []
    for k, record in enumerate(history):
        # under incoming: who scored the previous model in their training trip, and who scores
        # this round's model in the next round's
        previous = history[k - 1] if incoming and k > 0 and history[k - 1].aggregated else None
        following = history[k + 1] if incoming and k + 1 < len(history) else None
        scored_before = {} if previous is None else previous.validation_per_site
        scored_after = set() if following is None else set(following.train)
        rounds = {}
        for site in sorted({*record.train, *record.validation_per_site}):
            train = int(record.train.get(site, {}).get("num_examples", 0) or 0)
            val = validation_cases(record.validation_per_site.get(site, {}))
            rounds[site] = site_round(
                clocks[site],
                site,
                seed=seed,
                round_number=record.round,
                train_cases=train,
                val_cases=val,
                epochs=epochs,
                scored_cases=validation_cases(scored_before.get(site, {})) if train else 0,
                validates=not incoming
                or (site in record.validation_per_site and site not in scored_after),
            )
        out.append((record.round, round_time(rounds, deadline_s)))
    return out


@dataclass(frozen=True)
class RunTime:
    """A run's estimated duration at real sites.

    Attributes
    ----------
    rounds
        ``(round, RoundTime)`` per round.
    seconds
        Their sum.
    bounding
        How many rounds each site bounded, most first.
    """

    rounds: tuple[tuple[int, RoundTime], ...]
    seconds: float
    bounding: tuple[tuple[str, int], ...]


def estimate_run(
    history: Sequence[RoundRecord],
    *,
    seed: int,
    epochs: int,
    deadline_s: float | None = None,
    incoming: bool = False,
) -> RunTime:
    """The whole run's estimate and the sites that bound it."""
    rounds = estimate_rounds(
        history, seed=seed, epochs=epochs, deadline_s=deadline_s, incoming=incoming
    )
    counts = Counter(t.bound_by for _, t in rounds if t.bound_by)
    return RunTime(
        rounds=tuple(rounds),
        seconds=sum(t.seconds for _, t in rounds),
        bounding=tuple(counts.most_common()),
    )
