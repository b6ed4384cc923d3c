"""Fixed train / validation / test splits of a site's cases, in ``<root>/neurofed/splits.json``.

Splits are made once, from a seed, and then never silently reshuffled: a case's split decides
what a model may be selected on, so moving cases between splits invalidates earlier scores.
They are group-aware (all sessions of one patient land in one split) and may be stratified on a
clinical field.

Examples
--------
>>> from pathlib import PurePosixPath
>>> from neurofed.data.subject import ImageRef, Subject
>>> from neurofed.keys import Modality
>>> cases = [
...     Subject(f"c{i:02d}", {Modality.T1: ImageRef(PurePosixPath(f"c{i:02d}.nii.gz"))})
...     for i in range(10)
... ]
>>> splits = make_splits(cases, seed=0)
>>> len(splits.subject_ids(Split.TRAIN)), len(splits.subject_ids(Split.VALIDATION))
(8, 2)
>>> make_splits(cases, seed=0) == splits
True
"""

from __future__ import annotations

import hashlib
import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np

from neurofed import __version__
from neurofed.data.manifest import read_site_file, site_file, write_site_file
from neurofed.data.split_defaults import (
    DEFAULT_SEED,
    DEFAULT_TEST_FRACTION,
    DEFAULT_VALIDATION_FRACTION,
)
from neurofed.data.subject import Problem, Subject
from neurofed.keys import ClinicalField, ProblemKind, Severity, SiteFile, Split

__all__ = [
    "DEFAULT_SEED",
    "DEFAULT_TEST_FRACTION",
    "DEFAULT_VALIDATION_FRACTION",
    "SplitParameters",
    "Splits",
    "SplitsError",
    "load_or_create_splits",
    "load_splits",
    "make_splits",
    "site_splits",
    "split_parameters",
]


FORMAT_VERSION = 1
_CONTINUOUS = frozenset({ClinicalField.AGE, ClinicalField.SDMT})
_BINS = 5  # quantile bins a continuous field is stratified on
_UNKNOWN = "unknown"
_SPLITS_PATH = f"{SiteFile.FOLDER.value}/{SiteFile.SPLITS.value}"


class SplitsError(ValueError):
    """Splits cannot be made or kept as asked; the message names the values and the fix."""


def _check_fractions(validation_fraction: float, test_fraction: float) -> None:
    for name, value in (
        ("validation_fraction", validation_fraction),
        ("test_fraction", test_fraction),
    ):
        if not 0 <= value < 1:
            raise SplitsError(
                f"{name}={value!r}: must lie in [0, 1); 0.2 gives FeTS's 4:1 train/validation split"
            )
    if validation_fraction + test_fraction >= 1:
        raise SplitsError(
            f"validation_fraction + test_fraction = {validation_fraction + test_fraction:g} "
            "leaves no training cases; keep their sum below 1"
        )


@dataclass(frozen=True)
class Splits:
    """Which split every subject is in, and how that was decided.

    ``groups`` maps subject id to group id (one patient's sessions share a group), so that a
    new session of a known patient joins that patient's split.
    """

    seed: int
    validation_fraction: float
    test_fraction: float
    stratify_on: ClinicalField | None
    assignment: Mapping[str, Split]
    groups: Mapping[str, str] = field(default_factory=dict)
    neurofed_version: str = __version__

    def __post_init__(self) -> None:
        _check_fractions(self.validation_fraction, self.test_fraction)
        if self.stratify_on is not None:
            object.__setattr__(self, "stratify_on", ClinicalField(self.stratify_on))
        assignment = {k: Split(v) for k, v in sorted(self.assignment.items())}
        object.__setattr__(self, "assignment", MappingProxyType(assignment))
        groups = {k: self.groups.get(k, k) for k in assignment}
        object.__setattr__(self, "groups", MappingProxyType(groups))

    def subject_ids(
        self, split: Split, available: Collection[str] | None = None
    ) -> tuple[str, ...]:
        """Sorted ids in ``split``; with ``available``, only those among them.

        Examples
        --------
        >>> s = Splits(0, 0.5, 0.0, None, {"a": Split.TRAIN, "b": Split.VALIDATION})
        >>> s.subject_ids(Split.TRAIN), s.subject_ids(Split.VALIDATION, available=["a"])
        (('a',), ())
        """
        keep = None if available is None else set(available)
        return tuple(
            sid
            for sid, assigned in self.assignment.items()
            if assigned is Split(split) and (keep is None or sid in keep)
        )

    def parameters(self) -> dict[str, Any]:
        """What the splits were made from (compared before an existing file is reused)."""
        return {
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "stratify_on": None if self.stratify_on is None else self.stratify_on.value,
        }

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": FORMAT_VERSION,
            "neurofed_version": self.neurofed_version,
            **self.parameters(),
            "counts": {s.value: len(self.subject_ids(s)) for s in Split},
            "assignment": {k: v.value for k, v in self.assignment.items()},
            "groups": dict(self.groups),
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Splits:
        version = data.get("format_version")
        if version != FORMAT_VERSION:
            raise ValueError(f"format_version is {version!r}, this neurofed reads {FORMAT_VERSION}")
        stratify_on = data.get("stratify_on")
        return cls(
            seed=int(data["seed"]),
            validation_fraction=float(data["validation_fraction"]),
            test_fraction=float(data["test_fraction"]),
            stratify_on=None if stratify_on is None else ClinicalField(stratify_on),
            assignment={k: Split(v) for k, v in data["assignment"].items()},
            groups=dict(data.get("groups", {})),
            neurofed_version=data.get("neurofed_version", ""),
        )


def _unique(subjects: Sequence[Subject]) -> None:
    repeated = sorted(sid for sid, n in Counter(s.subject_id for s in subjects).items() if n > 1)
    if repeated:
        raise SplitsError(
            f"subject ids {repeated} occur more than once; split the cases of the site manifest "
            "(`neurofed site check` excludes duplicates)"
        )


def _strata(
    groups: Mapping[str, Sequence[Subject]], stratify_on: ClinicalField | None
) -> dict[str, str]:
    """Group id -> stratum label. Continuous fields are cut at quantiles; unknown is a stratum."""
    if stratify_on is None:
        return dict.fromkeys(groups, "all")
    values: dict[str, Any] = {}  # a group's value: its first member's that is known
    for gid, members in groups.items():
        known = [v for v in (m.clinical.get(stratify_on) for m in members) if v is not None]
        values[gid] = known[0] if known else None
    if stratify_on not in _CONTINUOUS:
        return {g: _UNKNOWN if v is None else f"={v}" for g, v in values.items()}
    numbers = sorted(float(v) for v in values.values() if v is not None)
    bins = min(_BINS, len(numbers))
    edges = np.quantile(numbers, np.linspace(0, 1, bins + 1)[1:-1]) if bins > 1 else np.array([])
    return {
        g: _UNKNOWN if v is None else f"q{int(np.searchsorted(edges, float(v), side='right'))}"
        for g, v in values.items()
    }


def make_splits(
    subjects: Sequence[Subject],
    *,
    seed: int = DEFAULT_SEED,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    stratify_on: ClinicalField | None = None,
) -> Splits:
    """Assign every subject to a split, deterministically from ``seed``.

    Groups (``Subject.group_id``) are never divided. Within each stratum the groups are shuffled
    and dealt out so that every split keeps its share of the cases placed so far; the shares
    carry over from one stratum to the next, so small strata round towards the global fractions
    instead of all landing in train. Every split with a positive fraction gets at least one group
    when there are enough groups.

    Examples
    --------
    >>> from pathlib import PurePosixPath
    >>> from neurofed.data.subject import ImageRef, Subject
    >>> from neurofed.keys import Modality
    >>> ref = {Modality.T1: ImageRef(PurePosixPath("t1.nii.gz"))}
    >>> sessions = [Subject(f"p1-ses{i}", ref, group_id="p1") for i in range(3)]
    >>> others = [Subject(f"p{i}", ref) for i in range(2, 6)]
    >>> splits = make_splits(sessions + others, seed=3)
    >>> len({splits.assignment[s.subject_id] for s in sessions})  # one patient, one split
    1
    """
    _check_fractions(validation_fraction, test_fraction)
    _unique(subjects)
    groups: dict[str, list[Subject]] = {}
    for subject in sorted(subjects, key=lambda s: (s.group_id, s.subject_id)):
        groups.setdefault(subject.group_id, []).append(subject)
    strata: dict[str, list[str]] = {}
    for gid, label in sorted(_strata(groups, stratify_on).items()):
        strata.setdefault(label, []).append(gid)
    rng = np.random.default_rng(seed)
    labels = sorted(strata)
    order = [
        strata[labels[k]][i]
        for k in rng.permutation(len(labels))
        for i in rng.permutation(len(strata[labels[k]]))
    ]
    sizes = {gid: len(members) for gid, members in groups.items()}
    fractions = {
        Split.TRAIN: 1.0 - validation_fraction - test_fraction,
        Split.VALIDATION: validation_fraction,
        Split.TEST: test_fraction,
    }
    # scikit-learn's StratifiedShuffleSplit refuses strata with one member (common here: a rare
    # grade, a single unknown) and knows nothing of groups, so the allocation is written out:
    # each group goes to the split furthest below its share of the cases dealt so far.
    taken = dict.fromkeys(fractions, 0)
    placed = 0
    chosen: dict[str, Split] = {}
    for gid in order:
        placed += sizes[gid]
        split = max(fractions, key=lambda s: fractions[s] * placed - taken[s])
        chosen[gid] = split
        taken[split] += sizes[gid]
    _fill_empty(chosen, order, sizes, [s for s in fractions if fractions[s] > 0])
    return Splits(
        seed=seed,
        validation_fraction=validation_fraction,
        test_fraction=test_fraction,
        stratify_on=stratify_on,
        assignment={m.subject_id: chosen[gid] for gid, members in groups.items() for m in members},
        groups={m.subject_id: gid for gid, members in groups.items() for m in members},
    )


def _fill_empty(
    chosen: dict[str, Split],
    order: Sequence[str],
    sizes: Mapping[str, int],
    wanted: Sequence[Split],
) -> None:
    """Give every wanted split a group, taken from the split with the most groups."""
    if len(order) < len(wanted):
        return
    for split in wanted:
        members = Counter(chosen.values())
        if members[split]:
            continue
        donor = max(wanted, key=lambda s: members[s])
        # the donor's smallest group, the last dealt among equals (the order is random)
        candidates = [g for g in order if chosen[g] is donor]
        gid = min(reversed(candidates), key=lambda g: sizes[g])
        chosen[gid] = split


def _hash_split(
    seed: int, group_id: str, validation_fraction: float, test_fraction: float
) -> Split:
    """A split for a group the file does not know: a uniform draw from a hash of seed and group."""
    digest = hashlib.sha256(f"{seed}:{group_id}".encode()).digest()
    draw = int.from_bytes(digest[:8], "big") / 2**64
    if draw < validation_fraction:
        return Split.VALIDATION
    return Split.TEST if draw < validation_fraction + test_fraction else Split.TRAIN


def load_splits(root: Path) -> Splits:
    """Read ``<root>/neurofed/splits.json``.

    Raises
    ------
    SplitsError
        When the file is missing or unusable, naming it and the fix.
    """
    return read_site_file(
        root,
        SiteFile.SPLITS,
        Splits.from_json,
        SplitsError,
        f"restore it from a backup, or re-create it with "
        f"`neurofed site check {root} --reshuffle` (cases may change split)",
    )


def _warning(subject_id: str | None, message: str, fix: str) -> Problem:
    return Problem(ProblemKind.SPLIT, message, fix, subject_id, _SPLITS_PATH, Severity.WARNING)


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers):
        return math.isclose(a, b, rel_tol=0, abs_tol=1e-12)
    return bool(a == b)


def _same_parameters(existing: Splits, requested: Splits, path: Path) -> None:
    old, new = existing.parameters(), requested.parameters()
    differ = [k for k in old if not _same(old[k], new[k])]
    if differ:
        was = ", ".join(f"{k}={old[k]!r}" for k in differ)
        asked = ", ".join(f"{k}={new[k]!r}" for k in differ)
        raise SplitsError(
            f"{path} was made with {was}, but this run asks for {asked}; run with the file's "
            "values to keep the splits, or pass --reshuffle (or delete the file) to recompute "
            "them, which moves cases between splits and makes earlier scores incomparable"
        )


def _update(existing: Splits, subjects: Sequence[Subject]) -> tuple[Splits, tuple[Problem, ...]]:
    """Add subjects new since the file was written; report the ones that are gone."""
    present = {s.subject_id: s for s in subjects}
    assignment, groups = dict(existing.assignment), dict(existing.groups)
    group_split: dict[str, Split] = {}
    for sid, split in existing.assignment.items():
        group_split.setdefault(present[sid].group_id if sid in present else groups[sid], split)
    problems = []
    for sid, subject in sorted(present.items()):
        if sid in assignment:
            continue
        gid = subject.group_id
        how = f"the split of its group {gid!r}"
        if gid not in group_split:
            args = (existing.validation_fraction, existing.test_fraction)
            group_split[gid] = _hash_split(existing.seed, gid, *args)
            how = "drawn from a hash of the seed and its group id"
        assignment[sid], groups[sid] = group_split[gid], gid
        message = f"new since splits.json was written; added to {group_split[gid].value} ({how})"
        fix = "nothing to do if the case is meant to join; --reshuffle recomputes every split"
        problems.append(_warning(sid, message, fix))
    for sid in sorted(set(assignment) - set(present)):
        message = (
            f"in splits.json ({assignment[sid].value}) but not among the site's usable cases; "
            "kept in the file so that the splits stay stable"
        )
        fix = "restore or fix the case (see check-report.json), or ignore this"
        problems.append(_warning(sid, message, fix))
    spread: dict[str, set[str]] = {}
    for sid, subject in present.items():
        spread.setdefault(subject.group_id, set()).add(assignment[sid].value)
    for gid, names in sorted(spread.items()):
        if len(names) > 1:
            message = f"group {gid!r} spans {', '.join(sorted(names))}: grouped after the split"
            fix = "--reshuffle to recompute the splits with this grouping"
            problems.append(_warning(None, message, fix))
    return replace(existing, assignment=assignment, groups=groups), tuple(problems)


def load_or_create_splits(
    root: Path,
    subjects: Sequence[Subject],
    *,
    seed: int = DEFAULT_SEED,
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION,
    test_fraction: float = DEFAULT_TEST_FRACTION,
    stratify_on: ClinicalField | None = None,
    reshuffle: bool = False,
) -> tuple[Splits, tuple[Problem, ...]]:
    """The site's splits: made and written on first use, then reused as they are.

    An existing ``splits.json`` is never reshuffled unless ``reshuffle`` is True: asking for other
    parameters raises :class:`SplitsError`; subjects new since the file was written are added
    (a new session joins its patient's split, a new patient gets a split drawn from a hash of the
    seed and its group id) and reported as warnings, as are subjects no longer present, which
    stay in the file.

    Examples
    --------
    >>> import tempfile
    >>> from pathlib import PurePosixPath
    >>> from neurofed.data.subject import ImageRef, Subject
    >>> from neurofed.keys import Modality
    >>> ref = {Modality.T1: ImageRef(PurePosixPath("t1.nii.gz"))}
    >>> root = Path(tempfile.mkdtemp())
    >>> first, _ = load_or_create_splits(root, [Subject(f"c{i}", ref) for i in range(5)])
    >>> again, problems = load_or_create_splits(root, [Subject(f"c{i}", ref) for i in range(6)])
    >>> [p.subject_id for p in problems], again.assignment["c0"] == first.assignment["c0"]
    (['c5'], True)
    """
    path = site_file(root, SiteFile.SPLITS)
    if reshuffle or not path.exists():
        splits = make_splits(
            subjects,
            seed=seed,
            validation_fraction=validation_fraction,
            test_fraction=test_fraction,
            stratify_on=stratify_on,
        )
        write_site_file(root, SiteFile.SPLITS, splits.to_json())
        return splits, ()
    existing = load_splits(root)
    requested = Splits(seed, validation_fraction, test_fraction, stratify_on, assignment={})
    _same_parameters(existing, requested, path)
    _unique(subjects)
    splits, problems = _update(existing, subjects)
    if splits != existing:
        write_site_file(root, SiteFile.SPLITS, splits.to_json())
    return splits, problems


@dataclass(frozen=True)
class SplitParameters:
    """How a site's splits are made (the keyword arguments of :func:`load_or_create_splits`)."""

    seed: int = DEFAULT_SEED
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    test_fraction: float = DEFAULT_TEST_FRACTION
    stratify_on: ClinicalField | None = None

    def as_kwargs(self) -> dict[str, Any]:
        return {
            "seed": self.seed,
            "validation_fraction": self.validation_fraction,
            "test_fraction": self.test_fraction,
            "stratify_on": self.stratify_on,
        }


def split_parameters(
    root: Path,
    *,
    seed: int | None = None,
    validation_fraction: float | None = None,
    test_fraction: float | None = None,
    stratify_on: ClinicalField | None = None,
    reshuffle: bool = False,
) -> SplitParameters:
    """The parameters to make a site's splits with: when none is given (and no reshuffle), those
    of its existing ``splits.json``; else the ones given, the defaults for the rest.

    Raises
    ------
    SplitsError
        The existing ``splits.json`` is unreadable.

    Examples
    --------
    >>> import tempfile
    >>> split_parameters(Path(tempfile.mkdtemp()), validation_fraction=0.3).validation_fraction
    0.3
    """
    given = (seed, validation_fraction, test_fraction, stratify_on)
    path = site_file(root, SiteFile.SPLITS)
    if not reshuffle and all(v is None for v in given) and path.exists():
        existing = load_splits(root)
        return SplitParameters(
            existing.seed,
            existing.validation_fraction,
            existing.test_fraction,
            existing.stratify_on,
        )
    return SplitParameters(
        DEFAULT_SEED if seed is None else seed,
        DEFAULT_VALIDATION_FRACTION if validation_fraction is None else validation_fraction,
        DEFAULT_TEST_FRACTION if test_fraction is None else test_fraction,
        stratify_on,
    )


def site_splits(root: Path, subjects: Sequence[Subject]) -> tuple[Splits, tuple[Problem, ...]]:
    """The site's splits as training, fingerprinting and evaluation read them: an existing
    ``splits.json`` with its own parameters (cases new since then join it), else the default
    splits, made and written now.

    Raises
    ------
    SplitsError
        ``splits.json`` is unreadable or does not fit the subjects.
    """
    return load_or_create_splits(root, subjects, **split_parameters(root).as_kwargs())
