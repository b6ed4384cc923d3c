"""What a site may send of a metric state: per-case values as fixed-bin histograms and sums.

A task's :class:`~neurofed.tasks.MetricState` holds per-case arrays (a Dice per case, a marker
score per case) because some statistics need them. At a small site they describe single
patients, so by default they never leave it: :func:`share_state` turns each into entries that
merge by addition and identify no one —

- a value per case (``dice``, ``hd95``): ``<name>@sum`` (the finite values' sum, so the mean is
  exact), ``<name>@count``, ``<name>@nan`` (cases without a value) and ``<name>@hist`` (counts
  in fixed bins, the last one open-ended);
- a binary score with its target (``<group>/score`` + ``<group>/target``):
  ``<group>/score@hist`` of shape ``(2, bins)``, the scores' histogram per true class;
- class probabilities with their target (``<group>/probabilities`` + ``<group>/target``):
  ``<group>/probabilities@hist`` of shape ``(K, K, bins)``: per true class, each class's
  probability histogram.

Other per-case arrays (a regression's ``<target>/prediction`` and ``<target>/target``) have no
shared form: without ``allow_cases`` nothing of them leaves.

A state over fewer than ``min_cases`` cases (its ``num_examples``) sends zeros for every sum
(nothing: a sum over one case is that case's value, e.g. a patient's age or lesion volume) and
says so in the withheld list. Otherwise a group (the name's part before the last ``/``) whose
cases number fewer than ``min_cases`` sends zeros instead of its shared forms and its own sums
(a marker's counts over the few cases that know it), and is named in the withheld list (when
it had something to send: a shared form, or per-case arrays the custodian allows). A
custodian may allow the per-case arrays too (``allow_cases``): they are then sent beside the
histograms, shuffled (groups of one length in one order, so a case's values stay together),
with no identifier.

The readers (:func:`case_mean`, :func:`binary_auc`, :func:`class_auc`) give the same numbers from
either form — exactly for means, and for an AUC up to ties within one bin of width 1/100.

Examples
--------
>>> import numpy as np
>>> state = MetricState(sums={}, cases={"dice": np.array([0.5, 0.7, 0.9, 0.6, 0.8])})
>>> shared, withheld = share_state(state, min_cases=5)
>>> sorted(shared.sums), shared.cases == {}, withheld
(['dice@count', 'dice@hist', 'dice@nan', 'dice@sum'], True, [])
>>> round(case_mean(shared, "dice"), 6) == round(case_mean(state, "dice"), 6) == 0.7
True
>>> share_state(state, min_cases=6)[1]
['every metric: 5 case(s), fewer than 6']
>>> age = MetricState(sums={"num_examples": np.array(1), "sum_y": np.array(17.0)}, cases={})
>>> shared, withheld = share_state(age, min_cases=5)
>>> float(shared.sums["sum_y"]), int(shared.sums["num_examples"]), withheld
(0.0, 0, ['every metric: 1 case(s), fewer than 5'])
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.tasks.classification_metrics import auc_or_nan
from neurofed.tasks.metric_state import MetricState, StateKey
from neurofed.tasks.segmentation_metrics import fmean

__all__ = [
    "BINS",
    "auc_from_histograms",
    "binary_auc",
    "case_mean",
    "class_auc",
    "share_state",
]

#: Fixed bins per kind of per-case value: ``(low, high, bins)``; values above ``high`` (and
#: below ``low``) land in the last (first) bin.
BINS: Mapping[str, tuple[float, float, int]] = {
    StateKey.DICE: (0.0, 1.0, 20),
    StateKey.HD95: (0.0, 200.0, 40),  # mm
    StateKey.SCORE: (0.0, 1.0, 100),
    StateKey.PROBABILITIES: (0.0, 1.0, 100),
}
_VALUES = (StateKey.DICE, StateKey.HD95)
_PAIRED = (StateKey.SCORE, StateKey.PROBABILITIES)


def _split(name: str) -> tuple[str, str]:
    """``"ET/dice"`` → ``("ET", "dice")``; ``"dice"`` → ``("", "dice")``."""
    group, _, key = name.rpartition("/")
    return group, key


def _join(group: str, key: str) -> str:
    return f"{group}/{key}" if group else key


def _bin_index(values: npt.NDArray[Any], kind: str) -> npt.NDArray[np.int64]:
    low, high, bins = BINS[kind]
    scaled = np.floor((values - low) / (high - low) * bins)
    return np.clip(scaled, 0, bins - 1).astype(np.int64)


def _value_entries(name: str, values: npt.NDArray[Any], kind: str) -> dict[str, np.ndarray]:
    finite = values[np.isfinite(values)]
    hist = np.bincount(_bin_index(finite, kind), minlength=BINS[kind][2]).astype(np.int64)
    return {
        f"{name}@sum": np.array(math.fsum(finite.tolist()), dtype=np.float64),
        f"{name}@count": np.array(finite.size, dtype=np.int64),
        f"{name}@nan": np.array(values.size - finite.size, dtype=np.int64),
        f"{name}@hist": hist,
    }


def _paired_entries(
    name: str, scores: npt.NDArray[Any], targets: npt.NDArray[Any], kind: str
) -> dict[str, np.ndarray]:
    bins = BINS[kind][2]
    targets = targets.astype(np.int64)
    if scores.ndim == 1:  # binary: (2, bins)
        hist = np.zeros((2, bins), dtype=np.int64)
        np.add.at(hist, (np.clip(targets, 0, 1), _bin_index(scores, kind)), 1)
        return {f"{name}@hist": hist}
    k = scores.shape[1]  # (n, K) probabilities: (K, K, bins)
    hist = np.zeros((k, k, bins), dtype=np.int64)
    true = np.clip(targets, 0, k - 1)
    for cls in range(k):
        column = np.full(true.shape, cls, dtype=np.int64)
        np.add.at(hist, (true, column, _bin_index(scores[:, cls], kind)), 1)
    return {f"{name}@hist": hist}


def _state_size(state: MetricState) -> int:
    """The cases a state is over: its ``num_examples``, else its largest group's."""
    count = state.sums.get(StateKey.NUM_EXAMPLES)
    if count is not None:
        return int(np.asarray(count).sum())
    return max((int(np.asarray(v).shape[0]) for v in state.cases.values()), default=0)


def _group_size(cases: Mapping[str, np.ndarray], group: str) -> int:
    sizes = [int(v.shape[0]) for n, v in cases.items() if _split(n)[0] == group]
    return max(sizes, default=0)


def share_state(
    state: MetricState,
    *,
    min_cases: int,
    allow_cases: bool = False,
    rng: np.random.Generator | None = None,
) -> tuple[MetricState, list[str]]:
    """The state a site may send, and the groups it withholds (see the module docstring).

    ``rng`` shuffles the per-case arrays a custodian allows (a fresh generator when ``None``).
    """
    cases = dict(state.cases)
    sums = dict(state.sums)
    withheld: list[str] = []
    for name, values in cases.items():
        group, key = _split(name)
        if key in _VALUES:
            sums |= _value_entries(name, np.asarray(values, np.float64), key)
        elif key in _PAIRED:
            target = cases.get(_join(group, StateKey.TARGET))
            if target is not None:
                scores = np.asarray(values, np.float64)
                sums |= _paired_entries(name, scores, np.asarray(target), key)
    total = _state_size(state)
    if 0 < total < min_cases:  # every sum is over these few cases: nothing of them leaves
        withheld.append(f"every metric: {total} case(s), fewer than {min_cases}")
        empty = {name: np.zeros_like(np.asarray(value)) for name, value in sums.items()}
        return MetricState(sums=empty, cases={}), withheld
    for group in sorted({_split(n)[0] for n in cases}):
        size = _group_size(cases, group)
        derived = [n for n in sums if "@" in n and _split(n.split("@")[0])[0] == group]
        # the group's plain sums (counts, a confusion matrix) are over the same few cases
        plain = [n for n in sums if "@" not in n and group and _split(n)[0] == group]
        if size < min_cases and (derived or allow_cases):
            label = group or ", ".join(sorted(n for n in cases if not _split(n)[0]))
            withheld.append(f"{label}: {size} case(s), fewer than {min_cases}")
            for name in derived + plain:
                sums[name] = np.zeros_like(np.asarray(sums[name]))
    shared_cases: dict[str, np.ndarray] = {}
    if allow_cases:
        generator = rng if rng is not None else np.random.default_rng()
        orders: dict[int, np.ndarray] = {}  # one order per length: a case's values stay together
        for group in sorted({_split(n)[0] for n in cases}):  # a seeded rng: same order
            names = [n for n in cases if _split(n)[0] == group]
            size = _group_size(cases, group)
            if size < min_cases:
                continue
            order = orders.setdefault(size, generator.permutation(size))
            for name in names:
                array = np.asarray(cases[name])
                shared_cases[name] = array[order] if array.shape[0] == size else array
    return MetricState(sums=sums, cases=shared_cases), withheld


# -- reading either form -----------------------------------------------------------------------


def case_mean(state: MetricState, name: str) -> float:
    """The mean of a per-case value: from the cases when present, else from the shared sums;
    NaN when a case has no value, or no case reached the server."""
    if name in state.cases:
        return fmean(state.cases[name])
    count = state.sums.get(f"{name}@count")
    if count is None or int(count) == 0 or int(state.sums.get(f"{name}@nan", 0)) > 0:
        return math.nan
    return float(state.sums[f"{name}@sum"]) / int(count)


def auc_from_histograms(positive: npt.ArrayLike, negative: npt.ArrayLike) -> float:
    """ROC AUC from the score histograms of the positive and negative cases (same bins): the
    probability that a positive scores higher, ties within a bin counting one half.

    >>> auc_from_histograms([0, 0, 1, 1], [1, 1, 0, 0]), auc_from_histograms([1, 0], [1, 0])
    (1.0, 0.5)
    """
    pos = np.asarray(positive, dtype=np.float64)
    neg = np.asarray(negative, dtype=np.float64)
    n_pos, n_neg = pos.sum(), neg.sum()
    if n_pos == 0 or n_neg == 0:
        return math.nan
    below = np.concatenate([[0.0], np.cumsum(neg)[:-1]])  # negatives in lower bins
    wins = float(np.sum(pos * below) + 0.5 * np.sum(pos * neg))
    return wins / float(n_pos * n_neg)


def binary_auc(state: MetricState, group: str) -> float:
    """ROC AUC of a binary marker: from its cases when present, else its score histograms."""
    scores = _join(group, StateKey.SCORE)
    if scores in state.cases:
        return auc_or_nan(state.cases[_join(group, StateKey.TARGET)], state.cases[scores])
    hist = state.sums.get(f"{scores}@hist")
    return math.nan if hist is None else auc_from_histograms(hist[1], hist[0])


def class_auc(state: MetricState, group: str, cls: int) -> float:
    """One-vs-rest ROC AUC of class ``cls``: from the cases when present, else histograms."""
    probabilities = _join(group, StateKey.PROBABILITIES)
    if probabilities in state.cases:
        targets = np.asarray(state.cases[_join(group, StateKey.TARGET)]) == cls
        return auc_or_nan(targets, state.cases[probabilities][:, cls])
    hist = state.sums.get(f"{probabilities}@hist")
    if hist is None:
        return math.nan
    positive = hist[cls, cls]
    negative = hist[:, cls].sum(axis=0) - positive
    return auc_from_histograms(positive, negative)
