"""Dataset fingerprints that a site may share: fixed-bin histograms, counts and exact sums.

A :class:`Fingerprint` describes a set of cases by aggregates only — the number of cases, per
axis histograms of voxel spacing (after reorientation to RAS), of the brain's bounding box in
voxels and in mm, and per modality the foreground intensities (:class:`IntensityStats`): a
histogram and exact sums. Every histogram has fixed, study-wide bins (:class:`FingerprintSpec`),
so the payload's structure never depends on the data (no list has one entry per case), and
:func:`merge_fingerprints` is integer addition: merging the sites' fingerprints gives, byte for
byte, the fingerprint of all their cases pooled, in any order and grouping. Nothing in a
fingerprint names a case, a file or a site; min/max intensities are left out on purpose (they
would be single voxels' values).

**Foreground intensities, as nnU-Net v2 computes them.** nnU-Net's
``DatasetFingerprintExtractor`` takes the voxels whose label is > 0 (cases without any
contribute nothing) and draws the same number of them, with replacement, from every case, so
each labelled case weighs the same however large its foreground. Here each case's foreground
histogram is scaled to the same total weight, :data:`CASE_WEIGHT` (largest-remainder rounding,
so every case sums to exactly that integer), and the sums kept are each case's mean and mean
square. The percentiles, mean and std are therefore those of the equal-weight mixture of the
cases' foreground distributions — what nnU-Net's random sample estimates — with no sampling
noise; the only departures are the bins (half a bin) and the weight rounding (at most
``1 / CASE_WEIGHT`` of a case per bin). The brain (the bounding box) plays no part in them.

**Site side** (the payload is ``fingerprint.to_json()``)::

    fingerprint = compute_site_fingerprint(site_dir, (Modality.FLAIR, Modality.T1))

**Server side** (see :func:`neurofed.preprocess.plan.make_plan`)::

    merged = merge_fingerprints([Fingerprint.from_json(p) for p in payloads])
    plan = make_plan(merged, PlannerSettings(memory_budget_gb=8.0))

**Bins** (:data:`DEFAULT_SPEC`). A value is counted in the bin of the grid point nearest to it
(bins are centred on ``origin + k / per_unit``), so values on the grid are kept exactly and
others move by at most half a bin; values beyond the grid are counted as under/overflow.

============  ==========================  =====================================
histogram     grid                        half a bin (error bound per value)
============  ==========================  =====================================
spacing       0 … 12 mm, 0.01 mm          0.005 mm
shape         0 … 1024 voxels, 1 voxel    0 (exact)
extent        0 … 512 mm, 0.5 mm          0.25 mm
intensity     0 … 32768, 8 units          4 units
============  ==========================  =====================================

**Error bounds.** Rounding to the grid is monotone, so the k-th smallest rounded value is the
rounded k-th smallest value, and a percentile (numpy's default linear interpolation between
order statistics) of the rounded values is within half a bin of the true percentile — exact when
the values lie on the grid (for intensities: of the equal-weight mixture, see above). Intensity
mean and std are computed from exact integer sums of each case's float64 mean and mean square
(see :class:`IntensityStats`).

**Small sites.** :func:`compute_site_fingerprint` refuses (:class:`FingerprintError`) when fewer
than ``min_cases`` (default :data:`MIN_CASES` = 3) cases could be fingerprinted, so that no
histogram describes a single patient. This is a k-anonymity-style guard, not differential privacy.

Examples
--------
>>> import numpy as np
>>> image = np.zeros((1, 10, 10, 6), np.float32)
>>> image[0, 2:8, 3:7, 1:5] = 120.0  # on the intensity grid (8 units): no rounding
>>> lesion = np.zeros((10, 10, 6), np.uint8)
>>> lesion[4, 4, 2] = 1  # one labelled voxel ...
>>> one = case_fingerprint(image, lesion, np.diag([1.0, 1.0, 3.0, 1.0]), ("T1",))
>>> big = (image[0] > 0).astype(np.uint8)  # ... and 96: both cases weigh the same
>>> two = case_fingerprint(2 * image, big, np.diag([0.5, 0.5, 5.0, 1.0]), ("T1",))
>>> merged = merge_fingerprints([one, two])
>>> merged.num_cases, merged.spacing_percentile(50), merged.shape_percentile(50)
(2, (0.75, 0.75, 4.0), (6.0, 4.0, 4.0))
>>> merged.extent_percentile(50)  # (6, 4, 4) voxels of (1, 1, 3) and of (0.5, 0.5, 5) mm
(4.5, 3.0, 16.0)
>>> none = case_fingerprint(3 * image, None, np.eye(4), ("T1",))  # no label: no intensities
>>> stats = merge_fingerprints([merged, none]).intensity_stats(Modality.T1)
>>> stats.num_cases, stats.num_voxels, stats.mean(), stats.std(), stats.percentile(50)
(2, 97, 180.0, 60.0, 180.0)
>>> Fingerprint.from_json(merged.to_json()) == merged
True
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.data.loading import load_subject
from neurofed.data.manifest import ManifestError, load_manifest
from neurofed.data.nifti import VolumeError, voxel_spacing
from neurofed.data.splits import SplitsError, site_splits
from neurofed.data.subject import Subject
from neurofed.keys import Modality, Split
from neurofed.preprocess.ops import brain_mask, reorient_to_ras
from neurofed.preprocess.params import PreprocessError
from neurofed.types import ProgressCallback

__all__ = [
    "CASE_WEIGHT",
    "DEFAULT_SPEC",
    "FORMAT_VERSION",
    "MIN_CASES",
    "SUM_FRACTION_BITS",
    "Fingerprint",
    "FingerprintError",
    "FingerprintSpec",
    "Grid",
    "Histogram",
    "IntensityStats",
    "case_fingerprint",
    "compute_site_fingerprint",
    "merge_fingerprints",
]

logger = logging.getLogger(__name__)

#: Version of the JSON layout; fingerprints of different versions do not merge. Version 2:
#: intensities of labelled voxels only, each case weighted equally (see the module docstring).
FORMAT_VERSION = 2
#: What each version's intensity statistics were, for the message refusing an old fingerprint.
_OLD_VERSIONS = {
    1: "its intensity statistics pooled every voxel, and the whole brain of cases without a "
    "lesion, instead of weighing each labelled case equally as nnU-Net does",
}
#: Total weight of each case's foreground intensity histogram (see the module docstring).
CASE_WEIGHT = 2**32
#: Intensity sums are stored as integers in units of ``2 ** -SUM_FRACTION_BITS``.
SUM_FRACTION_BITS = 32
#: Fewest cases a site fingerprints by default (see the module docstring).
MIN_CASES = 3
ID_LENGTH = 12

Triple = tuple[float, float, float]


class FingerprintError(ValueError):
    """A fingerprint cannot be computed, merged or read; the message says why and the fix."""


def _whole(value: Any) -> bool:
    return isinstance(value, int | np.integer) and not isinstance(value, bool)


def _finite(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


@dataclass(frozen=True)
class Grid:
    """``size`` bins centred on ``origin + k / per_unit`` for ``k = 0 … size - 1``.

    Examples
    --------
    >>> grid = Grid(origin=0.0, per_unit=100.0, size=1201)  # 0 … 12 mm in steps of 0.01 mm
    >>> grid.indices(np.array([0.5, 0.4999999, 0.9375, 12.5])).tolist()  # 1201: overflow
    [50, 50, 94, 1201]
    >>> grid.value(94), grid.step, grid.half_bin
    (0.94, 0.01, 0.005)
    """

    origin: float
    per_unit: float
    size: int

    def __post_init__(self) -> None:
        ok = _finite(self.origin) and _finite(self.per_unit) and self.per_unit > 0
        if not ok or not _whole(self.size) or self.size < 1:
            raise FingerprintError(
                f"Grid(origin={self.origin!r}, per_unit={self.per_unit!r}, size={self.size!r}) "
                "is invalid: give a finite origin, per_unit > 0 and a whole size >= 1"
            )
        object.__setattr__(self, "origin", float(self.origin))
        object.__setattr__(self, "per_unit", float(self.per_unit))
        object.__setattr__(self, "size", int(self.size))

    @property
    def step(self) -> float:
        """Width of a bin."""
        return 1.0 / self.per_unit

    @property
    def half_bin(self) -> float:
        """Largest distance between a value on the grid's range and the value it is counted as."""
        return 0.5 / self.per_unit

    def value(self, index: int) -> float:
        """The grid point of bin ``index`` (what a value counted there is taken to be)."""
        return self.origin + index / self.per_unit

    def indices(self, values: npt.NDArray[np.floating]) -> npt.NDArray[np.int64]:
        """Bin of each value (nearest grid point; may be < 0 or >= size: under/overflow)."""
        scaled = np.rint((np.asarray(values, dtype=np.float64) - self.origin) * self.per_unit)
        return np.clip(scaled, -1, self.size).astype(np.int64)

    def to_json(self) -> dict[str, Any]:
        return {"origin": self.origin, "per_unit": self.per_unit, "size": self.size}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Grid:
        return cls(data["origin"], data["per_unit"], data["size"])


@dataclass(frozen=True)
class Histogram:
    """Counts of values on a :class:`Grid`, with the values below and above it.

    Examples
    --------
    >>> h = Histogram.of(Grid(0.0, 1.0, 5), np.array([1.0, 2.2, 2.0, 9.0]))
    >>> h.counts, h.overflow, h.total
    ((0, 1, 2, 0, 0), 1, 4)
    >>> h.percentile(0), h.percentile(50)
    (1.0, 2.0)
    >>> h.percentile(100)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.preprocess.fingerprint.FingerprintError: the 100th percentile lies above the ...
    """

    grid: Grid
    counts: tuple[int, ...]
    underflow: int = 0
    overflow: int = 0
    _array: npt.NDArray[np.int64] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = np.asarray(self.counts)
        if raw.shape != (self.grid.size,) or raw.dtype.kind not in "iu" or np.any(raw < 0):
            raise FingerprintError(
                f"histogram: got {raw.size} counts of type {raw.dtype} for a grid of "
                f"{self.grid.size} bins; give one whole count >= 0 per bin"
            )
        for name in ("underflow", "overflow"):
            value = getattr(self, name)
            if not _whole(value) or value < 0:
                raise FingerprintError(f"histogram {name}: got {value!r}; give a count >= 0")
            object.__setattr__(self, name, int(value))
        array = raw.astype(np.int64)
        array.flags.writeable = False
        object.__setattr__(self, "_array", array)
        object.__setattr__(self, "counts", tuple(array.tolist()))

    @classmethod
    def empty(cls, grid: Grid) -> Histogram:
        return cls(grid, (0,) * grid.size)

    @classmethod
    def of(cls, grid: Grid, values: npt.NDArray[np.floating]) -> Histogram:
        """The histogram of ``values`` (any shape) on ``grid``."""
        index = grid.indices(np.ravel(values))
        inside = index[(index >= 0) & (index < grid.size)]
        counts = np.bincount(inside, minlength=grid.size)
        under, over = int(np.sum(index < 0)), int(np.sum(index >= grid.size))
        return cls(grid, tuple(counts.tolist()), under, over)

    @classmethod
    def sum(cls, histograms: Sequence[Histogram]) -> Histogram:
        """The histogram of all their values (exact: counts add)."""
        first = histograms[0]
        for other in histograms[1:]:
            if other.grid != first.grid:
                raise FingerprintError(
                    f"cannot merge histograms on different grids ({first.grid} vs "
                    f"{other.grid}); every site must use the study's FingerprintSpec"
                )
        counts: list[int] = np.add.reduce([h._array for h in histograms]).tolist()
        under = sum(h.underflow for h in histograms)
        return cls(first.grid, tuple(counts), under, sum(h.overflow for h in histograms))

    @property
    def total(self) -> int:
        """Number of values counted, under/overflow included."""
        return int(self._array.sum()) + self.underflow + self.overflow

    def _order_statistic(self, rank: int, q: float) -> float:
        if rank < self.underflow:
            raise FingerprintError(
                f"the {q:g}th percentile lies below the histogram's range (it starts at "
                f"{self.grid.value(0):g}); widen the grid in the study's FingerprintSpec"
            )
        cumulative = self.underflow + np.cumsum(self._array)
        index = int(np.searchsorted(cumulative, rank, side="right"))
        if index < self.grid.size:
            return self.grid.value(index)
        raise FingerprintError(
            f"the {q:g}th percentile lies above the histogram's range (it ends at "
            f"{self.grid.value(self.grid.size - 1):g}); widen the grid in the study's "
            "FingerprintSpec"
        )

    def percentile(self, q: float, transform: Callable[[float], float] | None = None) -> float:
        """The ``q``-th percentile (numpy's linear method) of the counted values.

        Each value is taken to be its bin's grid point, so the result is within
        :attr:`Grid.half_bin` of the percentile of the true values, and equal to it when they
        lie on the grid. ``transform`` (monotone non-decreasing) is applied to the grid points
        first: the percentile of ``transform(values)``.

        Raises
        ------
        FingerprintError
            When the histogram is empty, or the percentile falls in the under/overflow.
        """
        if not 0 <= q <= 100:
            raise FingerprintError(f"percentile q = {q!r}: give a number in [0, 100]")
        total = self.total
        if total == 0:
            raise FingerprintError("the histogram is empty: no case was fingerprinted")
        position = (total - 1) * (q / 100)
        low = math.floor(position)
        fraction = position - low
        f = transform if transform is not None else float
        a = f(self._order_statistic(low, q))
        if fraction == 0:
            return float(a)
        b = f(self._order_statistic(min(low + 1, total - 1), q))
        return float(a + (b - a) * fraction)

    def to_json(self) -> dict[str, Any]:
        return {
            **self.grid.to_json(),
            "counts": list(self.counts),
            "underflow": self.underflow,
            "overflow": self.overflow,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Histogram:
        grid = Grid.from_json(data)
        return cls(grid, tuple(data["counts"]), data["underflow"], data["overflow"])


@dataclass(frozen=True)
class FingerprintSpec:
    """The study-wide bins of every histogram (all sites must use the same).

    The defaults are in the module docstring's table; a study with other scanners (e.g. spacing
    above 12 mm or intensities above 32768) passes wider grids to every site.
    """

    spacing: Grid = Grid(0.0, 100.0, 1201)
    shape: Grid = Grid(0.0, 1.0, 1025)
    extent: Grid = Grid(0.0, 2.0, 1025)
    intensity: Grid = Grid(0.0, 0.125, 4097)

    def to_json(self) -> dict[str, Any]:
        """Plain JSON (what a study sends to every site with the fingerprint request).

        >>> FingerprintSpec.from_json(DEFAULT_SPEC.to_json()) == DEFAULT_SPEC
        True
        """
        return {name: getattr(self, name).to_json() for name in _SPEC_FIELDS}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> FingerprintSpec:
        unknown = sorted(set(data) - set(_SPEC_FIELDS))
        if unknown:
            raise FingerprintError(f"FingerprintSpec: unknown field(s) {unknown}")
        return cls(**{name: Grid.from_json(value) for name, value in data.items()})


_SPEC_FIELDS = ("spacing", "shape", "extent", "intensity")


#: The bins used unless a study says otherwise.
DEFAULT_SPEC = FingerprintSpec()


def _equal_weight(histogram: Histogram, weight: int) -> Histogram:
    """``histogram`` scaled to a total of exactly ``weight`` (largest remainder; ties: lowest bin).

    A bin without values gets nothing; a total that divides ``weight`` scales exactly.

    >>> h = Histogram(Grid(0.0, 1.0, 3), (1, 1, 1))
    >>> _equal_weight(h, 8).counts  # 8/3 each: the two remainders of 2/3 go to the lowest bins
    (3, 3, 2)
    >>> scaled = _equal_weight(Histogram(Grid(0.0, 1.0, 3), (0, 3, 1), overflow=4), 16)
    >>> scaled.counts, scaled.overflow  # 8 values in 16: exactly 2 each, none in the empty bin
    ((0, 6, 2), 8)
    """
    raw = [histogram.underflow, *histogram.counts, histogram.overflow]
    total = sum(raw)
    shares = [divmod(count * weight, total) for count in raw]
    scaled = [whole for whole, _ in shares]
    deficit = weight - sum(scaled)
    for index in sorted(range(len(raw)), key=lambda i: (-shares[i][1], i))[:deficit]:
        scaled[index] += 1
    return Histogram(histogram.grid, tuple(scaled[1:-1]), scaled[0], scaled[-1])


@dataclass(frozen=True)
class IntensityStats:
    """One modality's foreground (labelled) intensities, each case weighted equally.

    Attributes
    ----------
    modality
        The channel.
    histogram
        The sum over cases of each case's foreground histogram scaled to :data:`CASE_WEIGHT`
        (its total is ``num_cases * CASE_WEIGHT``).
    num_cases
        Cases with labelled foreground (the only ones counted).
    num_voxels
        Their foreground voxels, all cases together.
    sum_mean, sum_mean_square
        The sums over cases of each case's mean and mean square, in units of
        ``2 ** -SUM_FRACTION_BITS``.

    Notes
    -----
    Each case's mean and mean square are float64 (numpy's pairwise summation, relative error
    below ~1e-14), rounded to the unit. Integers add exactly, so merging sites in any order
    gives the same sums. :meth:`mean` and :meth:`std` (population std of the equal-weight
    mixture, as numpy's of nnU-Net's pooled sample) are then computed in exact rational
    arithmetic and rounded once; the std's relative error is about
    ``1e-14 · (1 + mean² / std²)``. :meth:`percentile` is within :attr:`Grid.half_bin` of the
    mixture's percentile (4 units with the default grid).
    """

    modality: Modality
    histogram: Histogram
    num_cases: int = 0
    num_voxels: int = 0
    sum_mean: int = 0
    sum_mean_square: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "modality", Modality(self.modality))
        for name in ("num_cases", "num_voxels", "sum_mean", "sum_mean_square"):
            if not _whole(getattr(self, name)):
                raise FingerprintError(f"intensity {name}: got {getattr(self, name)!r}")
            object.__setattr__(self, name, int(getattr(self, name)))
        ok = (
            0 <= self.num_cases <= self.num_voxels
            and self.sum_mean_square >= 0
            and self.histogram.total == self.num_cases * CASE_WEIGHT
            and (self.num_cases > 0 or (self.num_voxels, self.sum_mean) == (0, 0))
        )
        if not ok:
            raise FingerprintError(
                f"intensity of {self.modality.value}: {self.num_cases} case(s) of "
                f"{self.num_voxels} voxel(s) and a histogram of total {self.histogram.total} "
                f"do not fit: each case weighs {CASE_WEIGHT} and has at least one voxel"
            )

    @classmethod
    def empty(cls, modality: Modality, grid: Grid) -> IntensityStats:
        """No case (merging with it changes nothing)."""
        return cls(modality, Histogram.empty(grid))

    @classmethod
    def of(cls, modality: Modality, grid: Grid, values: npt.NDArray[np.floating]) -> IntensityStats:
        """One case's statistics of its foreground ``values`` (none: the case adds nothing)."""
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.size == 0:
            return cls.empty(modality, grid)
        scale = 2.0**SUM_FRACTION_BITS
        return cls(
            modality,
            _equal_weight(Histogram.of(grid, values), CASE_WEIGHT),
            1,
            int(values.size),
            round(float(np.mean(values)) * scale),
            round(float(np.mean(values * values)) * scale),
        )

    @classmethod
    def sum(cls, stats: Sequence[IntensityStats]) -> IntensityStats:
        """The statistics of all their cases (exact: weights, counts and sums add)."""
        first = stats[0]
        if any(s.modality is not first.modality for s in stats):
            raise FingerprintError(f"cannot merge {first.modality.value} with other modalities")
        return cls(
            first.modality,
            Histogram.sum([s.histogram for s in stats]),
            sum(s.num_cases for s in stats),
            sum(s.num_voxels for s in stats),
            sum(s.sum_mean for s in stats),
            sum(s.sum_mean_square for s in stats),
        )

    def _moments(self) -> tuple[Fraction, Fraction]:
        if self.num_cases == 0:
            raise FingerprintError(
                f"no {self.modality.value} foreground was counted: intensity statistics come "
                "from labelled voxels (label > 0) only, as nnU-Net's, and no case had any"
            )
        unit = 2**SUM_FRACTION_BITS * self.num_cases
        return Fraction(self.sum_mean, unit), Fraction(self.sum_mean_square, unit)

    def mean(self) -> float:
        """Mean foreground intensity, each case weighted equally (error: see the class)."""
        return float(self._moments()[0])

    def std(self) -> float:
        """Population standard deviation of the foreground intensities, cases weighted equally."""
        mean, mean_square = self._moments()
        return math.sqrt(max(float(mean_square - mean * mean), 0.0))

    def percentile(self, q: float) -> float:
        """The ``q``-th percentile, within half a bin (see :meth:`Histogram.percentile`)."""
        if self.num_cases == 0:
            self._moments()  # raises, saying why
        return self.histogram.percentile(q)

    def to_json(self) -> dict[str, Any]:
        return {
            "modality": self.modality.value,
            "histogram": self.histogram.to_json(),
            "num_cases": self.num_cases,
            "num_voxels": self.num_voxels,
            "sum_mean": self.sum_mean,
            "sum_mean_square": self.sum_mean_square,
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> IntensityStats:
        histogram = Histogram.from_json(data["histogram"])
        return cls(
            data["modality"],
            histogram,
            data["num_cases"],
            data["num_voxels"],
            data["sum_mean"],
            data["sum_mean_square"],
        )


def _axes(values: Sequence[Histogram]) -> tuple[Histogram, Histogram, Histogram]:
    if len(values) != 3:
        raise FingerprintError(f"expected one histogram per axis (3), got {len(values)}")
    return (values[0], values[1], values[2])


@dataclass(frozen=True)
class Fingerprint:
    """Aggregates over a set of cases (one site's, or several sites' merged).

    Attributes
    ----------
    modalities
        The channels fingerprinted, in order (cases lacking one are not counted).
    num_cases
        Cases fingerprinted.
    num_failed
        Cases that could not be read or processed (skipped, reasons logged at the site).
    num_label_foreground
        Cases with labelled foreground (label > 0): the only cases whose intensities are
        counted (``intensity[c].num_cases`` for every channel).
    spacing, shape, extent
        Per RAS axis: voxel spacing (mm), the brain's bounding box in voxels, and in mm.
    intensity
        Per modality, in the order of ``modalities``.
    """

    modalities: tuple[Modality, ...]
    num_cases: int = 0
    num_failed: int = 0
    num_label_foreground: int = 0
    spacing: tuple[Histogram, Histogram, Histogram] = field(
        default=(Histogram.empty(DEFAULT_SPEC.spacing),) * 3
    )
    shape: tuple[Histogram, Histogram, Histogram] = field(
        default=(Histogram.empty(DEFAULT_SPEC.shape),) * 3
    )
    extent: tuple[Histogram, Histogram, Histogram] = field(
        default=(Histogram.empty(DEFAULT_SPEC.extent),) * 3
    )
    intensity: tuple[IntensityStats, ...] = ()

    def __post_init__(self) -> None:
        modalities = tuple(Modality(m) for m in self.modalities)
        if not modalities or len(set(modalities)) != len(modalities):
            raise FingerprintError(f"modalities: got {self.modalities!r}; give distinct ones")
        object.__setattr__(self, "modalities", modalities)
        for name in ("num_cases", "num_failed", "num_label_foreground"):
            value = getattr(self, name)
            if not _whole(value) or value < 0:
                raise FingerprintError(f"Fingerprint.{name}: got {value!r}; give a count >= 0")
            object.__setattr__(self, name, int(value))
        for name in ("spacing", "shape", "extent"):
            histograms = _axes(tuple(getattr(self, name)))
            if any(h.total != self.num_cases for h in histograms):
                raise FingerprintError(f"Fingerprint.{name}: counts must add up to num_cases")
            object.__setattr__(self, name, histograms)
        if not self.intensity:
            grid = DEFAULT_SPEC.intensity
            empty = tuple(IntensityStats.empty(m, grid) for m in modalities)
            object.__setattr__(self, "intensity", empty)
        if tuple(s.modality for s in self.intensity) != modalities:
            raise FingerprintError("Fingerprint.intensity: give one entry per modality, in order")
        if self.num_label_foreground > self.num_cases:
            raise FingerprintError("Fingerprint.num_label_foreground exceeds num_cases")
        if any(s.num_cases != self.num_label_foreground for s in self.intensity):
            raise FingerprintError(
                "Fingerprint.intensity: every modality must count the num_label_foreground "
                f"({self.num_label_foreground}) labelled cases"
            )

    @classmethod
    def empty(
        cls, modalities: Sequence[Modality | str], spec: FingerprintSpec = DEFAULT_SPEC
    ) -> Fingerprint:
        """The fingerprint of no case (merging with it changes nothing)."""
        chosen = tuple(Modality(m) for m in modalities)
        return cls(
            chosen,
            spacing=(Histogram.empty(spec.spacing),) * 3,
            shape=(Histogram.empty(spec.shape),) * 3,
            extent=(Histogram.empty(spec.extent),) * 3,
            intensity=tuple(IntensityStats.empty(m, spec.intensity) for m in chosen),
        )

    @property
    def spec(self) -> FingerprintSpec:
        """The bins of this fingerprint's histograms."""
        return FingerprintSpec(
            self.spacing[0].grid,
            self.shape[0].grid,
            self.extent[0].grid,
            self.intensity[0].histogram.grid,
        )

    # -- derived statistics (bounds: see the module docstring) --------------------------------

    def spacing_percentile(self, q: float) -> Triple:
        """Per-axis ``q``-th percentile of the spacing (mm), within 0.005 mm by default."""
        x, y, z = (h.percentile(q) for h in self.spacing)
        return (x, y, z)

    def shape_percentile(self, q: float) -> Triple:
        """Per-axis ``q``-th percentile of the brain's bounding box in voxels (exact)."""
        x, y, z = (h.percentile(q) for h in self.shape)
        return (x, y, z)

    def extent_percentile(self, q: float) -> Triple:
        """Per-axis ``q``-th percentile of the brain's bounding box in mm, within 0.25 mm."""
        x, y, z = (h.percentile(q) for h in self.extent)
        return (x, y, z)

    def resampled_shape_percentile(self, spacing: Sequence[float], q: float = 50.0) -> Triple:
        """Per-axis ``q``-th percentile of the cropped shape after resampling to ``spacing``.

        Each case's shape is ``round(extent / spacing)`` per axis (nnU-Net's
        ``compute_new_shape``), taken from its extent rounded to the 0.5 mm grid: exact when the
        extents lie on that grid, otherwise within ``floor(0.25 mm / spacing) + 1`` voxels
        (1 voxel for spacings >= 0.25 mm).
        """
        if len(spacing) != 3 or not all(_finite(s) and s > 0 for s in spacing):
            raise FingerprintError(f"spacing = {tuple(spacing)!r}: give three sizes in mm > 0")

        def voxels(size: float) -> Callable[[float], float]:
            return lambda extent: float(round(extent / size))

        x, y, z = (
            h.percentile(q, voxels(float(s))) for h, s in zip(self.extent, spacing, strict=True)
        )
        return (x, y, z)

    def intensity_stats(self, modality: Modality | str) -> IntensityStats:
        """The foreground intensity statistics of ``modality`` (labelled voxels, cases weighted
        equally; see the module docstring)."""
        wanted = Modality(modality)
        for stats in self.intensity:
            if stats.modality is wanted:
                return stats
        names = ", ".join(m.value for m in self.modalities)
        raise FingerprintError(f"the fingerprint has no {wanted.value} (it has {names})")

    # -- JSON ----------------------------------------------------------------------------------

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types; this is the payload a site sends."""
        return {
            "format_version": FORMAT_VERSION,
            "modalities": [m.value for m in self.modalities],
            "num_cases": self.num_cases,
            "num_failed": self.num_failed,
            "num_label_foreground": self.num_label_foreground,
            "spacing": [h.to_json() for h in self.spacing],
            "shape": [h.to_json() for h in self.shape],
            "extent": [h.to_json() for h in self.extent],
            "intensity": [s.to_json() for s in self.intensity],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Fingerprint:
        """Parse :meth:`to_json` output (malformed input raises :class:`FingerprintError`)."""
        if not isinstance(data, Mapping) or data.get("format_version") != FORMAT_VERSION:
            version = data.get("format_version") if isinstance(data, Mapping) else None
            why = _OLD_VERSIONS.get(version) if isinstance(version, int) else None
            raise FingerprintError(
                f"fingerprint format_version is {version!r}; this neurofed reads "
                f"{FORMAT_VERSION}{f' ({why})' if why else ''} — compute it again with the "
                "same neurofed version at every site"
            )
        try:
            return cls(
                tuple(data["modalities"]),
                data["num_cases"],
                data["num_failed"],
                data["num_label_foreground"],
                _axes([Histogram.from_json(h) for h in data["spacing"]]),
                _axes([Histogram.from_json(h) for h in data["shape"]]),
                _axes([Histogram.from_json(h) for h in data["extent"]]),
                tuple(IntensityStats.from_json(s) for s in data["intensity"]),
            )
        except (KeyError, TypeError, ValueError) as exc:
            if isinstance(exc, FingerprintError):
                raise
            raise FingerprintError(f"malformed fingerprint JSON ({exc!r})") from exc

    def canonical_json(self) -> str:
        """Sorted, compact JSON: equal fingerprints give equal strings."""
        return json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))

    @property
    def fingerprint_id(self) -> str:
        """First 12 hex digits of the SHA-256 of :meth:`canonical_json`."""
        return hashlib.sha256(self.canonical_json().encode("utf-8")).hexdigest()[:ID_LENGTH]


def merge_fingerprints(fingerprints: Sequence[Fingerprint]) -> Fingerprint:
    """The fingerprint of all the cases of ``fingerprints`` together (exact: counts add).

    Merging is associative and commutative, and merging sites' fingerprints gives exactly the
    fingerprint of their cases pooled (equal :meth:`Fingerprint.canonical_json`).

    Raises
    ------
    FingerprintError
        When the list is empty, or the fingerprints differ in modalities or bins.

    Examples
    --------
    >>> a, b = Fingerprint.empty(["T1"]), Fingerprint.empty(["T1"])
    >>> merge_fingerprints([a, b]) == a
    True
    >>> merge_fingerprints([a, Fingerprint.empty(["FLAIR"])])  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.preprocess.fingerprint.FingerprintError: cannot merge fingerprints of T1 and FLAIR; ...
    """
    if not fingerprints:
        raise FingerprintError("no fingerprint to merge; pass at least one")
    first = fingerprints[0]
    for other in fingerprints[1:]:
        if other.modalities != first.modalities:
            have = "+".join(m.value for m in first.modalities)
            got = "+".join(m.value for m in other.modalities)
            raise FingerprintError(
                f"cannot merge fingerprints of {have} and {got}; every site must fingerprint "
                "the study's modalities, in the same order"
            )
        if other.spec != first.spec:
            raise FingerprintError(
                "cannot merge fingerprints made with different bins; every site must use the "
                "study's FingerprintSpec"
            )

    def per_axis(name: str) -> tuple[Histogram, Histogram, Histogram]:
        return _axes([Histogram.sum([getattr(f, name)[a] for f in fingerprints]) for a in range(3)])

    return Fingerprint(
        first.modalities,
        sum(f.num_cases for f in fingerprints),
        sum(f.num_failed for f in fingerprints),
        sum(f.num_label_foreground for f in fingerprints),
        per_axis("spacing"),
        per_axis("shape"),
        per_axis("extent"),
        tuple(
            IntensityStats.sum([f.intensity[c] for f in fingerprints])
            for c in range(len(first.modalities))
        ),
    )


def case_fingerprint(
    image: npt.NDArray[np.floating],
    label: npt.NDArray[np.integer] | None,
    affine: npt.ArrayLike,
    modalities: Sequence[Modality | str],
    spec: FingerprintSpec = DEFAULT_SPEC,
) -> Fingerprint:
    """The fingerprint of one case (never sent alone: sites send merges of at least ``MIN_CASES``).

    The arrays are reoriented to RAS (:func:`~neurofed.preprocess.ops.reorient_to_ras`); the
    brain is :func:`~neurofed.preprocess.ops.brain_mask` of all channels (its bounding box gives
    the shape and extent); intensities are those of the label map's foreground (``label > 0``),
    as nnU-Net's: a case without a label map, or with an empty one, adds no intensities.

    Parameters
    ----------
    image
        ``(C, X, Y, Z)``, channels in the order of ``modalities``.
    label
        ``(X, Y, Z)`` label map in the internal convention, or ``None``.
    affine
        Voxel-to-world affine (RAS+ mm).

    Raises
    ------
    PreprocessError
        When the arrays are malformed, not finite, or hold no brain.
    """
    chosen = tuple(Modality(m) for m in modalities)
    data = np.asarray(image, dtype=np.float32)
    if data.ndim != 4 or data.shape[0] != len(chosen):
        raise PreprocessError(
            f"image: got shape {data.shape}; expected ({len(chosen)}, X, Y, Z), one channel "
            f"per modality ({', '.join(m.value for m in chosen)})"
        )
    if not np.all(np.isfinite(data)):
        raise PreprocessError("image has NaN or infinite voxels; run `neurofed site check`")
    labels = None if label is None else np.asarray(label, dtype=np.uint8)
    arrays = reorient_to_ras(data, labels, affine)
    spacing = np.array(voxel_spacing(arrays.affine))
    mask, _ = brain_mask(arrays.image)
    box = []
    for axis in range(3):
        others = tuple(a for a in range(3) if a != axis)
        present = np.flatnonzero(mask.any(axis=others))
        box.append(int(present[-1] - present[0] + 1))
    voxels = np.array(box, dtype=np.float64)
    foreground = np.zeros(mask.shape, bool) if arrays.label is None else arrays.label > 0
    labelled = bool(foreground.any())
    return Fingerprint(
        chosen,
        1,
        0,
        int(labelled),
        _axes([Histogram.of(spec.spacing, spacing[a : a + 1]) for a in range(3)]),
        _axes([Histogram.of(spec.shape, voxels[a : a + 1]) for a in range(3)]),
        _axes([Histogram.of(spec.extent, (voxels * spacing)[a : a + 1]) for a in range(3)]),
        tuple(
            IntensityStats.of(m, spec.intensity, channel[foreground])
            for m, channel in zip(chosen, arrays.image, strict=True)
        ),
    )


def _split_ids(root: Path, subjects: Sequence[Subject], split: Split) -> set[str]:
    """Ids in ``split``, with the site's splits as training reads them.

    Like :class:`neurofed.training.SiteData`: an existing ``splits.json`` is reused with its own
    parameters (new cases join it), and the default splits are made when there is none.
    """
    try:
        splits, _ = site_splits(root, subjects)
    except SplitsError as exc:
        raise FingerprintError(str(exc)) from exc
    return set(splits.subject_ids(split, [s.subject_id for s in subjects]))


def compute_site_fingerprint(
    site_dir: Path | str,
    modalities: Sequence[Modality | str],
    split: Split | None = Split.TRAIN,
    *,
    subject_ids: Sequence[str] | None = None,
    spec: FingerprintSpec = DEFAULT_SPEC,
    min_cases: int = MIN_CASES,
    progress: ProgressCallback | None = None,
) -> Fingerprint:
    """Fingerprint a site's cases of ``split`` that have every one of ``modalities``.

    Cases come from the site manifest (``neurofed site check``) and are read with
    :func:`~neurofed.data.loading.load_subject`, then :func:`case_fingerprint`. A case that
    cannot be read or processed is skipped (reason logged here, at the site) and counted in
    :attr:`Fingerprint.num_failed`. The result's :meth:`~Fingerprint.to_json` is the payload.
    With a ``split``, the site's ``splits.json`` is read as training reads it (and
    made with the default parameters if the site has none yet).

    Parameters
    ----------
    site_dir
        The site folder.
    modalities
        Channels to fingerprint (the study's task modalities), in order.
    split
        Which split's cases (``None``: every case).
    subject_ids
        If given, only these cases (e.g. the cases a task can use).
    spec
        The study's bins; every site must use the same.
    min_cases
        Refuse when fewer cases were fingerprinted (see the module docstring).
    progress
        Called as ``progress(done, total, subject_id)`` after each case (local display only).

    Raises
    ------
    FingerprintError
        No manifest, unusable splits, or fewer than ``min_cases`` cases.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import PurePosixPath
    >>> from neurofed.data.layouts.base import LayoutScan
    >>> from neurofed.data.manifest import check_site
    >>> from neurofed.data.nifti import write_image
    >>> from neurofed.data.subject import ImageRef
    >>> from neurofed.keys import Layout
    >>> root = Path(tempfile.mkdtemp())
    >>> image = np.zeros((8, 8, 8))
    >>> image[2:6, 2:6, 3:5] = 50.0
    >>> cases = []
    >>> for i in range(3):
    ...     write_image(root / f"c{i}.nii.gz", image * (i + 1), np.diag([1.0, 1.0, 2.0, 1.0]))
    ...     cases.append(Subject(f"c{i}", {Modality.T1: ImageRef(PurePosixPath(f"c{i}.nii.gz"))}))
    >>> _ = check_site(root, scan=LayoutScan(Layout.TABLE, tuple(cases), (), (Modality.T1,)))
    >>> fingerprint = compute_site_fingerprint(root, ["T1"], split=None)
    >>> fingerprint.num_cases, fingerprint.extent_percentile(50)
    (3, (4.0, 4.0, 4.0))
    >>> fingerprint.intensity_stats("T1").num_cases  # no label map: no foreground intensities
    0
    >>> compute_site_fingerprint(root, ["T1"], split=None, min_cases=5)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.preprocess.fingerprint.FingerprintError: site ...: only 3 case(s) ... at least 5 ...
    """
    root = Path(site_dir)
    chosen = tuple(Modality(m) for m in modalities)
    if not _whole(min_cases) or min_cases < 1:
        raise FingerprintError(f"min_cases = {min_cases!r}: give a whole number >= 1")
    try:
        manifest = load_manifest(root)
    except ManifestError as exc:
        raise FingerprintError(str(exc)) from exc
    subjects = [s for s in manifest.subjects if all(m in s.images for m in chosen)]
    if subject_ids is not None:
        wanted = set(subject_ids)
        subjects = [s for s in subjects if s.subject_id in wanted]
    if split is not None:
        in_split = _split_ids(root, manifest.subjects, Split(split))
        subjects = [s for s in subjects if s.subject_id in in_split]
    result = Fingerprint.empty(chosen, spec)
    failed = 0
    for done, subject in enumerate(subjects, start=1):
        try:
            loaded = load_subject(root, subject, chosen)
            case = case_fingerprint(loaded.image, loaded.label, loaded.affine, chosen, spec)
            result = merge_fingerprints([result, case])
        except (VolumeError, PreprocessError, OSError) as exc:
            failed += 1
            logger.warning("%s: fingerprint skips %s: %s", root.name, subject.subject_id, exc)
        if progress is not None:
            progress(done, len(subjects), subject.subject_id)
    result = replace(result, num_failed=failed)
    if result.num_cases < min_cases:
        where = "every split" if split is None else f"split {Split(split).value!r}"
        raise FingerprintError(
            f"site {root}: only {result.num_cases} case(s) with "
            f"{', '.join(m.value for m in chosen)} in {where} could be fingerprinted "
            f"({failed} failed); a fingerprint needs at least {min_cases} so that no histogram "
            "describes a single patient — add cases, or lower min_cases if the data custodian "
            "accepts that"
        )
    return result
