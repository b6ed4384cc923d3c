"""Mergeable metric records: sums and counts, plus per-case values where a statistic needs them.

A :class:`MetricState` is what a site sends for evaluation: named ``sums`` (added on merge;
counts are ``int64`` and merge exactly, float sums are ``float64``) and named per-case arrays
``cases`` (concatenated along axis 0 on merge; only statistics such as AUC or HD95 that cannot be
computed from sums use them). Tasks turn a merged state into numbers only at the end
(``Task.finalize``), so a federation aggregates exactly and per site.

``merge`` is order-independent: sums are added elementwise (commutative bit for bit) and the
finalised statistics of per-case arrays do not depend on the order of the cases. Integer counts
are associative too; float sums are associative up to float64 rounding.

Examples
--------
>>> import numpy as np
>>> a = MetricState(sums={"tp": np.array(3)}, cases={"dice": np.array([0.5])})
>>> b = MetricState(sums={"tp": np.array(4)}, cases={"dice": np.array([1.0, 0.0])})
>>> m = merge_states([a, b])
>>> int(m.sums["tp"]), m.cases["dice"].tolist()
(7, [0.5, 1.0, 0.0])
>>> MetricState.from_arrays(m.to_arrays()) == m
True
>>> MetricState.empty().merge(a) == a
True
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["MetricState", "StateKey", "merge_states"]

#: A metric array: ``int64`` counts or ``float64`` values.
Array = npt.NDArray[Any]

_SUM_PREFIX = "sum/"
_CASE_PREFIX = "case/"


class StateKey(StrEnum):
    """Names of the entries tasks put in a :class:`MetricState` (prefixed per region / marker)."""

    NUM_EXAMPLES = "num_examples"  # sum: cases that entered the metric
    TP = "tp"  # sum: true positives (voxels or cases)
    FP = "fp"
    TN = "tn"
    FN = "fn"
    DICE = "dice"  # case: Dice of one case
    HD95 = "hd95"  # case: 95% Hausdorff distance of one case
    LESION_TP = "lesion_tp"  # sum: true lesions detected (segmentation_metrics.lesion_counts)
    LESION_FN = "lesion_fn"  # sum: true lesions missed
    LESION_FP = "lesion_fp"  # sum: predicted components matching no true lesion
    SCORE = "score"  # case: predicted probability of the positive class
    TARGET = "target"  # case: true class (a regression: true value, original units)
    PREDICTION = "prediction"  # case: predicted value of a regression (original units)
    PROBABILITIES = "probabilities"  # case: (K,) predicted class probabilities
    CONFUSION = "confusion"  # sum: (K, K) counts, rows true class, columns predicted
    SUM_ABS_ERROR = "sum_abs_error"  # sum: Σ|prediction - target|
    SUM_X = "sum_x"  # sums for Pearson's r (x: prediction, y: target, both shifted)
    SUM_Y = "sum_y"
    SUM_XX = "sum_xx"
    SUM_YY = "sum_yy"
    SUM_XY = "sum_xy"


def _canonical(name: str, value: npt.ArrayLike) -> Array:
    array = np.asarray(value)
    if array.dtype.kind in "biu":
        array = array.astype(np.int64)
    elif array.dtype.kind == "f":
        array = array.astype(np.float64)
    else:
        raise TypeError(f"metric {name!r} has dtype {array.dtype}; expected integers or floats")
    array = array.copy()
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False)
class MetricState:
    """Named sums (added on merge) and per-case arrays (concatenated on merge).

    Attributes
    ----------
    sums
        ``int64`` counts or ``float64`` sums of any fixed shape.
    cases
        Arrays whose first axis runs over cases; the remaining shape is fixed per name.
    """

    sums: Mapping[str, Array]
    cases: Mapping[str, Array]

    def __post_init__(self) -> None:
        sums = {str(k): _canonical(str(k), v) for k, v in self.sums.items()}
        cases = {str(k): _canonical(str(k), v) for k, v in self.cases.items()}
        for name, array in cases.items():
            if array.ndim == 0:
                raise ValueError(f"per-case metric {name!r} must have a case axis; got a scalar")
        clash = sums.keys() & cases.keys()
        if clash:
            raise ValueError(f"metric names {sorted(clash)} are both sums and per-case arrays")
        object.__setattr__(self, "sums", MappingProxyType(sums))
        object.__setattr__(self, "cases", MappingProxyType(cases))

    @classmethod
    def empty(cls) -> MetricState:
        """The identity of :meth:`merge`."""
        return cls(sums={}, cases={})

    @property
    def is_empty(self) -> bool:
        """Whether the state holds no entry at all."""
        return not self.sums and not self.cases

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, MetricState):
            return NotImplemented
        return _same(self.sums, other.sums) and _same(self.cases, other.cases)

    def merge(self, other: MetricState) -> MetricState:
        """Add sums and concatenate per-case arrays; the empty state is the identity.

        Raises
        ------
        ValueError
            If the two states hold different names, or arrays of different shapes or kinds.
        """
        if other.is_empty:
            return self
        if self.is_empty:
            return other
        for kind, mine, theirs in (
            ("sums", self.sums, other.sums),
            ("cases", self.cases, other.cases),
        ):
            if mine.keys() != theirs.keys():
                raise ValueError(
                    f"cannot merge metric states with different {kind}: "
                    f"only in the first {sorted(mine.keys() - theirs.keys())}, "
                    f"only in the second {sorted(theirs.keys() - mine.keys())}"
                )
        sums = {}
        for name, a in self.sums.items():
            b = other.sums[name]
            if a.shape != b.shape or a.dtype != b.dtype:
                raise ValueError(
                    f"cannot add sum {name!r}: {a.dtype}{a.shape} and {b.dtype}{b.shape}"
                )
            sums[name] = a + b
        cases = {}
        for name, a in self.cases.items():
            b = other.cases[name]
            if a.shape[1:] != b.shape[1:] or a.dtype != b.dtype:
                raise ValueError(
                    f"cannot concatenate per-case {name!r}: {a.dtype}{a.shape} and "
                    f"{b.dtype}{b.shape}"
                )
            cases[name] = np.concatenate([a, b])
        return MetricState(sums=sums, cases=cases)

    def case_values(self) -> dict[str, list[float | None]]:
        """Every one-number-per-case float array (e.g. ``WT/dice``) as a JSON list, NaN and
        infinities as ``None`` (no identifiers: values only, in the state's case order).

        >>> MetricState(sums={}, cases={"dice": np.array([0.5, np.nan])}).case_values()
        {'dice': [0.5, None]}
        """
        return {
            name: [float(v) if np.isfinite(v) else None for v in values]
            for name, values in sorted(self.cases.items())
            if values.ndim == 1 and values.dtype.kind == "f"
        }

    def to_arrays(self) -> dict[str, Array]:
        """Flat named arrays for transport (``sum/<name>``, ``case/<name>``)."""
        out = {f"{_SUM_PREFIX}{k}": v for k, v in self.sums.items()}
        out.update({f"{_CASE_PREFIX}{k}": v for k, v in self.cases.items()})
        return out

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, npt.ArrayLike]) -> MetricState:
        """Inverse of :meth:`to_arrays`."""
        sums, cases = {}, {}
        for key, value in arrays.items():
            if key.startswith(_SUM_PREFIX):
                sums[key.removeprefix(_SUM_PREFIX)] = np.asarray(value)
            elif key.startswith(_CASE_PREFIX):
                cases[key.removeprefix(_CASE_PREFIX)] = np.asarray(value)
            else:
                raise ValueError(
                    f"array name {key!r} starts with neither {_SUM_PREFIX!r} nor {_CASE_PREFIX!r}"
                )
        return cls(sums=sums, cases=cases)


def _same(a: Mapping[str, Array], b: Mapping[str, Array]) -> bool:
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k], equal_nan=True) for k in a
    )


def merge_states(states: Iterable[MetricState]) -> MetricState:
    """Merge any number of states (the empty state when there are none)."""
    merged = MetricState.empty()
    for state in states:
        merged = merged.merge(state)
    return merged
