"""Self-configuring plans from a (merged) fingerprint, by nnU-Net v2's ``3d_fullres`` rules.

:func:`make_plan` turns a :class:`~neurofed.preprocess.fingerprint.Fingerprint` into a frozen
:class:`Plan`: target spacing, median shape, patch size, per-level strides, kernels and filters,
batch size, the whole-volume shape for tasks that train on whole volumes, and a record of how
the cases are cropped, normalised and resampled with every departure from nnU-Net named. It
reads nothing but the fingerprint (and the preprocessing settings it records), so the plan made
from the sites' merged fingerprints equals, field by field, the plan made from all cases
pooled. A plan is a property of the data (as nnU-Net's plans are);
:func:`neurofed.training.planning.train_config_from_plan` makes it a task's training settings.

**Server side** (the payloads are the sites' ``Fingerprint.to_json()``)::

    merged = merge_fingerprints([Fingerprint.from_json(p) for p in payloads])
    plan = make_plan(merged, PlannerSettings(memory_budget_gb=8.0), study.train.preprocess)
    # plan.to_json() is saved as plan.json with the run and the exported model

**Rules** (after nnU-Net v2's ``ExperimentPlanner``; axes stay in RAS order, no transposition):

1. *Target spacing* = per-axis median spacing. *Anisotropy*: let ``w`` be the axis of largest
   median spacing. If that spacing exceeds ``anisotropy_threshold`` (3) × the largest other one
   **and** ``w``'s median cropped shape (voxels) × 3 is below the smallest other one, ``w``'s
   target is the 10th percentile of its spacings, raised to (largest other spacing + 1e-5) if
   it falls below that.
2. *Median shape* = per-axis median over cases of ``round(extent / target spacing)``.
3. *Initial patch*: the aspect ratio of ``1 / spacing`` scaled to 256³ voxels, rounded, then
   clipped to the median shape.
4. *Topology* (:func:`pool_and_conv_props`): per level, the axes that are at least
   ``2 · min_feature_size`` voxels and whose spacing is below twice the smallest spacing among
   those are pooled (one axis alone only if it has ``3 · min_feature_size`` voxels); an axis's
   kernel becomes 3 (and stays 3) once its spacing is below twice the smallest spacing; the
   bottleneck's kernel is 3; the patch is padded to a multiple of the strides' product.
5. *Memory*: :func:`feature_map_elements` counts the activations of one sample (encoder 2 convs
   per level, decoder transposed conv + 2 convs, input and output). nnU-Net's calibration is
   that 560·10⁶ such elements at batch size 2 fill 8 GB, so the budget is
   ``560e6 · memory_budget_gb / 8`` elements for a batch of 2. While ``min_batch_size`` samples
   do not fit, the axis whose patch is largest relative to the median shape (the last such axis
   on ties) shrinks by one step of its divisor, and the topology is derived again.
6. *Batch size* = ``round(budget / estimate · 2)``, capped so that one batch covers at most
   ``max_dataset_fraction`` (5 %) of the dataset's voxels (median shape × cases), at least
   ``min_batch_size`` (2).
7. *Filters* = ``base_filters · 2**level`` capped at ``max_filters`` (32 … 320).
8. *Volume shape* (whole-volume tasks) = ``ceil(extent / target spacing)`` at the
   ``volume_percentile`` (95th) of the cropped brains' extents, per axis.

9. *Preprocessing* (:class:`~neurofed.preprocess.plan_preprocessing.PlanPreprocessing`): the
   crop, brain mask, normalisation, resampling orders and intensity foreground the cases get
   (from the :class:`~neurofed.preprocess.params.PreprocessParams` given, the defaults if none),
   and one sentence per departure from nnU-Net
   (:func:`~neurofed.preprocess.plan_preprocessing.departures_from_nnunet`); both go into
   ``plan.json``.

Bounds: given the same per-case spacings and cropped shapes as nnU-Net's fingerprint, the rules
above give nnU-Net's plan up to the fingerprint's bins (module
:mod:`neurofed.preprocess.fingerprint`): the target spacing within 0.005 mm (exact for spacings
on the 0.01 mm grid), the median shape within 1 voxel (exact when extents lie on the 0.5 mm
grid). The cropped shapes are the same only where the crops are: nnU-Net crops to the box of
the nonzero voxels, neurofed to the box of its brain mask, which is that box when the
background is exactly 0 (skull-stripped data) and a smaller, Otsu, box on raw scans whose
background is not. There the median shape, and so the patch and batch size, differ from
nnU-Net's — a departure the plan names (``departures_from_nnunet``).

Examples
--------
>>> import numpy as np
>>> from neurofed.preprocess.fingerprint import case_fingerprint, merge_fingerprints
>>> def case(shape, spacing):  # a box "brain" of `shape` voxels in one voxel of background
...     image = np.zeros((1, *(n + 2 for n in shape)), np.float32)
...     image[:, 1:-1, 1:-1, 1:-1] = 1.0
...     return case_fingerprint(image, None, np.diag([*spacing, 1.0]), ["T1"])
>>> cases = [case((40, 40, 8), (0.5, 0.5, z)) for z in (3.0, 5.0, 5.0, 5.0, 6.0)]
>>> plan = make_plan(merge_fingerprints(cases), PlannerSettings(memory_budget_gb=0.05))
>>> plan.spacing, plan.anisotropic_axis  # z: the 10th percentile of (3, 5, 5, 5, 6) mm
((0.5, 0.5, 3.8), 2)
>>> plan.median_shape, plan.patch_size, plan.batch_size  # (40, 40, 12) shrunk to fit 0.05 GB
((40.0, 40.0, 11.0), (32, 32, 10), 2)
>>> plan.strides
((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2))
>>> plan.preprocessing.crop.value, plan.preprocessing.image_order  # rule 9
('brain-mask-box', 1)
>>> [d.split(":")[0] for d in plan.departures_from_nnunet]
['crop', 'normalisation', 'resampling', 'axes', 'fingerprint']
>>> Plan.from_json(plan.to_json()) == plan, len(plan.plan_id)
(True, 12)
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple

from neurofed.keys import Modality
from neurofed.preprocess.fingerprint import Fingerprint
from neurofed.preprocess.params import PreprocessParams
from neurofed.preprocess.plan_preprocessing import (
    PlanPreprocessing,
    departures_from_nnunet,
    known_fields,
)

__all__ = [
    "REFERENCE_BATCH_SIZE",
    "REFERENCE_ELEMENTS",
    "REFERENCE_GB",
    "Plan",
    "PlanError",
    "PlannerSettings",
    "Topology",
    "feature_map_elements",
    "make_plan",
    "pool_and_conv_props",
]

#: nnU-Net v2's calibration: this many activation elements per sample ...
REFERENCE_ELEMENTS = 560_000_000
#: ... fill this much GPU memory (GB) ...
REFERENCE_GB = 8.0
#: ... at this batch size.
REFERENCE_BATCH_SIZE = 2
#: The initial patch has this many voxels before it is clipped and shrunk.
INITIAL_PATCH_VOXELS = 256**3
ID_LENGTH = 12

Triple = tuple[int, int, int]
FloatTriple = tuple[float, float, float]


class PlanError(ValueError):
    """A plan cannot be made or read; the message names the value and the fix."""


def _whole(value: Any, low: int = 1) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= low


def _positive(value: Any) -> bool:
    return (
        isinstance(value, int | float)
        and not isinstance(value, bool)
        and math.isfinite(value)
        and value > 0
    )


@dataclass(frozen=True)
class PlannerSettings:
    """What :func:`make_plan` may use (see the module docstring's rules).

    Parameters
    ----------
    memory_budget_gb
        GPU memory a training step may use (nnU-Net's default 8 GB; tests use small ones).
    base_filters, max_filters
        Filters of the top level, and their cap.
    min_feature_size
        Smallest edge of the coarsest feature map (voxels).
    anisotropy_threshold
        Spacing ratio above which the thick-slice rule applies.
    min_batch_size
        Smallest batch; the patch shrinks until this many samples fit the budget.
    max_dataset_fraction
        Largest fraction of the dataset's voxels one batch may cover.
    out_channels
        Output channels counted in the memory estimate.
    volume_percentile
        Percentile of the brains' extents the whole-volume shape covers.

    Examples
    --------
    >>> PlannerSettings(memory_budget_gb=0)  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.preprocess.plan.PlanError: PlannerSettings.memory_budget_gb = 0 is invalid: ...
    """

    memory_budget_gb: float = 8.0
    base_filters: int = 32
    max_filters: int = 320
    min_feature_size: int = 4
    anisotropy_threshold: float = 3.0
    min_batch_size: int = 2
    max_dataset_fraction: float = 0.05
    out_channels: int = 2
    volume_percentile: float = 95.0

    def __post_init__(self) -> None:
        checks = {
            "memory_budget_gb": _positive(self.memory_budget_gb),
            "base_filters": _whole(self.base_filters),
            "max_filters": _whole(self.max_filters),
            "min_feature_size": _whole(self.min_feature_size),
            "anisotropy_threshold": _positive(self.anisotropy_threshold),
            "min_batch_size": _whole(self.min_batch_size),
            "max_dataset_fraction": _positive(self.max_dataset_fraction),
            "out_channels": _whole(self.out_channels),
            "volume_percentile": _positive(self.volume_percentile)
            and self.volume_percentile <= 100,
        }
        for name, ok in checks.items():
            if not ok:
                value = getattr(self, name)
                raise PlanError(
                    f"PlannerSettings.{name} = {value!r} is invalid: use a positive number "
                    "(whole for counts and filters; a percentile in (0, 100])"
                )
        for name in ("memory_budget_gb", "anisotropy_threshold", "max_dataset_fraction"):
            object.__setattr__(self, name, float(getattr(self, name)))
        object.__setattr__(self, "volume_percentile", float(self.volume_percentile))

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlannerSettings:
        return cls(**_known(cls, data))


def _known(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    return known_fields(cls, data, cls.__name__, PlanError)


class Topology(NamedTuple):
    """Per-level strides (first ``(1, 1, 1)``) and kernels, the padded patch and its divisor."""

    strides: tuple[Triple, ...]
    kernel_sizes: tuple[Triple, ...]
    patch_size: Triple
    divisor: Triple


def _triple(values: Sequence[int]) -> Triple:
    return (int(values[0]), int(values[1]), int(values[2]))


def pool_and_conv_props(
    spacing: Sequence[float], patch_size: Sequence[float], min_feature_size: int = 4
) -> Topology:
    """nnU-Net v2's pooling and kernel rule (rule 4 of the module docstring).

    Examples
    --------
    >>> t = pool_and_conv_props((0.5, 0.5, 3.8), (40, 40, 11))
    >>> t.strides, t.kernel_sizes
    (((1, 1, 1), (2, 2, 1), (2, 2, 1), (2, 2, 2)), ((3, 3, 1), (3, 3, 1), (3, 3, 3), (3, 3, 3)))
    >>> t.patch_size, t.divisor
    ((40, 40, 12), (8, 8, 2))
    >>> pool_and_conv_props((1.0, 1.0, 1.0), (70.5, 85, 65)).patch_size
    (80, 96, 80)
    """
    current_spacing = [float(s) for s in spacing]
    size = [float(s) for s in patch_size]
    kernel = [1, 1, 1]
    strides: list[Triple] = [(1, 1, 1)]
    kernels: list[Triple] = []
    pools = [0, 0, 0]
    while True:
        large = [a for a in range(3) if size[a] >= 2 * min_feature_size]
        if not large:
            break
        finest = min(current_spacing[a] for a in large)
        axes = [a for a in large if current_spacing[a] / finest < 2]
        if len(axes) == 1 and size[axes[0]] < 3 * min_feature_size:
            break
        smallest = min(current_spacing)
        kernel = [
            3 if k == 3 or s / smallest < 2 else 1
            for k, s in zip(kernel, current_spacing, strict=True)
        ]
        for a in axes:
            pools[a] += 1
            current_spacing[a] *= 2
            size[a] = math.ceil(size[a] / 2)
        strides.append(_triple([2 if a in axes else 1 for a in range(3)]))
        kernels.append(_triple(kernel))
    kernels.append((3, 3, 3))
    divisor = _triple([2**p for p in pools])
    padded = _triple([math.ceil(s / d) * d for s, d in zip(patch_size, divisor, strict=True)])
    return Topology(tuple(strides), tuple(kernels), padded, divisor)


def feature_map_elements(
    patch_size: Sequence[int],
    strides: Sequence[Sequence[int]],
    filters: Sequence[int],
    in_channels: int,
    out_channels: int,
) -> int:
    """Activation elements of one sample in a U-Net of this topology (rule 5).

    Encoder: 2 convolutions per level; decoder: a transposed convolution and 2 convolutions per
    level above the bottleneck; plus the input and the output map.

    Examples
    --------
    >>> feature_map_elements((8, 8, 8), ((1, 1, 1), (2, 2, 2)), (4, 8), 1, 2)
    12800
    >>> (1 + 2) * 512 + (2 * 4 * 512 + 2 * 8 * 64) + 3 * 4 * 512  # in/out, encoder, decoder
    12800
    """
    voxels: list[int] = []
    size = [int(s) for s in patch_size]
    for stride in strides:
        size = [s // t for s, t in zip(size, stride, strict=True)]
        voxels.append(math.prod(size))
    encoder = sum(2 * f * v for f, v in zip(filters, voxels, strict=True))
    decoder = sum(3 * f * v for f, v in zip(filters[:-1], voxels[:-1], strict=True))
    return (in_channels + out_channels) * voxels[0] + encoder + decoder


@dataclass(frozen=True)
class Plan:
    """A self-configured plan (see the module docstring for how each field is derived).

    Attributes
    ----------
    spacing
        Target voxel spacing (mm) per RAS axis.
    median_shape
        Median cropped shape after resampling to ``spacing`` (voxels; may end in .5).
    volume_shape
        Shape (voxels at ``spacing``) covering the ``volume_percentile`` of the brains.
    patch_size, strides, kernel_sizes, filters
        The network (``dynunet``) configuration.
    batch_size
        Patches per optimiser step.
    anisotropic_axis
        The axis whose target spacing the thick-slice rule set, or ``None``.
    estimated_memory_gb
        Estimated memory of a training step at ``batch_size``.
    modalities, num_cases, fingerprint_id
        What the plan was made from.
    settings
        The planner's settings.
    preprocessing
        How the cases are cropped, normalised and resampled (rule 9).
    departures_from_nnunet
        One short sentence per way the plan or its preprocessing departs from nnU-Net v2's.
    """

    spacing: FloatTriple
    median_shape: FloatTriple
    volume_shape: Triple
    patch_size: Triple
    strides: tuple[Triple, ...]
    kernel_sizes: tuple[Triple, ...]
    filters: tuple[int, ...]
    batch_size: int
    anisotropic_axis: int | None
    estimated_memory_gb: float
    modalities: tuple[Modality, ...]
    num_cases: int
    fingerprint_id: str
    settings: PlannerSettings
    preprocessing: PlanPreprocessing
    departures_from_nnunet: tuple[str, ...]

    def __post_init__(self) -> None:
        def fix(name: str, ok: bool, what: str) -> None:
            if not ok:
                raise PlanError(f"Plan.{name} = {getattr(self, name)!r} is invalid: {what}")

        set_ = object.__setattr__
        for name in ("spacing", "median_shape"):
            value = tuple(getattr(self, name))
            fix(name, len(value) == 3 and all(map(_positive, value)), "give 3 numbers > 0")
            set_(self, name, tuple(float(v) for v in value))
        for name in ("volume_shape", "patch_size"):
            value = tuple(getattr(self, name))
            fix(name, len(value) == 3 and all(map(_whole, value)), "give 3 whole numbers >= 1")
            set_(self, name, value)
        levels = len(self.strides)
        for name in ("strides", "kernel_sizes"):
            value = tuple(tuple(v) for v in getattr(self, name))
            ok = len(value) == levels and all(len(v) == 3 and all(map(_whole, v)) for v in value)
            fix(name, ok and levels >= 3, "give one triple of whole numbers per level (>= 3)")
            set_(self, name, value)
        set_(self, "filters", tuple(self.filters))
        fix("filters", len(self.filters) == levels, "give one filter count per level")
        fix("filters", all(map(_whole, self.filters)), "give whole numbers >= 1")
        fix("batch_size", _whole(self.batch_size), "give a whole number >= 1")
        fix("num_cases", _whole(self.num_cases), "give a whole number >= 1")
        fix("anisotropic_axis", self.anisotropic_axis in (None, 0, 1, 2), "give 0, 1, 2 or null")
        fix("estimated_memory_gb", _positive(self.estimated_memory_gb), "give a number > 0")
        set_(self, "estimated_memory_gb", float(self.estimated_memory_gb))
        set_(self, "modalities", tuple(Modality(m) for m in self.modalities))
        fix("fingerprint_id", isinstance(self.fingerprint_id, str), "give the fingerprint's id")
        if isinstance(self.settings, Mapping):
            set_(self, "settings", PlannerSettings.from_json(self.settings))
        fix("settings", isinstance(self.settings, PlannerSettings), "give PlannerSettings")
        if isinstance(self.preprocessing, Mapping):
            try:
                set_(self, "preprocessing", PlanPreprocessing.from_json(self.preprocessing))
            except ValueError as exc:
                raise PlanError(f"Plan.{exc}") from None
        fix(
            "preprocessing",
            isinstance(self.preprocessing, PlanPreprocessing)
            and len(self.preprocessing.use_mask_for_norm) == len(self.modalities),
            "give the PlanPreprocessing of the plan's modalities (one use_mask_for_norm each)",
        )
        departures = self.departures_from_nnunet
        if not isinstance(departures, str):
            set_(self, "departures_from_nnunet", tuple(departures))
        fix(
            "departures_from_nnunet",
            isinstance(self.departures_from_nnunet, tuple)
            and all(isinstance(d, str) and d for d in self.departures_from_nnunet),
            "give a list of sentences",
        )

    def preprocess_params(self, spatial_divisor: Sequence[int] | None = None) -> PreprocessParams:
        """The preprocessing this plan implies.

        Patch-based tasks (``spatial_divisor=None``) resample to :attr:`spacing` and keep the
        cropped shape. Whole-volume tasks pass their model's divisor: every case is then also
        cropped or padded to :attr:`volume_shape` rounded up to a multiple of it.

        Examples
        --------
        >>> from neurofed.preprocess.fingerprint import case_fingerprint, merge_fingerprints
        >>> import numpy as np
        >>> image = np.zeros((1, 32, 38, 32), np.float32)
        >>> image[:, 1:-1, 1:-1, 1:-1] = 1.0  # a brain of 30 x 36 x 30 voxels of 1 mm
        >>> one = case_fingerprint(image, None, np.eye(4), ["T1"])
        >>> plan = make_plan(merge_fingerprints([one]), PlannerSettings(memory_budget_gb=0.1))
        >>> plan.volume_shape, plan.preprocess_params().spatial_shape
        ((30, 36, 30), None)
        >>> plan.preprocess_params(spatial_divisor=(16, 16, 16)).spatial_shape
        (32, 48, 32)
        """
        if spatial_divisor is None:
            return PreprocessParams(spacing=self.spacing)
        divisor = tuple(int(d) for d in spatial_divisor)
        if len(divisor) != 3 or min(divisor) < 1:
            raise PlanError(f"spatial_divisor = {spatial_divisor!r}: give 3 whole numbers >= 1")
        x, y, z = (
            max(d, math.ceil(v / d) * d) for v, d in zip(self.volume_shape, divisor, strict=True)
        )
        return PreprocessParams(spacing=self.spacing, spatial_shape=(x, y, z))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (what ``plan.json`` holds)."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, PlannerSettings | PlanPreprocessing):
                value = value.to_json()
            elif f.name == "modalities":
                value = [m.value for m in value]
            elif isinstance(value, tuple):
                value = [list(v) if isinstance(v, tuple) else v for v in value]
            out[f.name] = value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Plan:
        """Parse :meth:`to_json` output; unknown or missing fields raise :class:`PlanError`."""
        values = _known(cls, data)
        missing = [f.name for f in fields(cls) if f.name not in values]
        record_only = {"preprocessing", "departures_from_nnunet"}
        if "preprocessing" in missing and set(missing) <= record_only:
            raise PlanError(
                "Plan: no 'preprocessing' record: the plan.json was made by a neurofed whose "
                "plans did not say how cases are cropped, normalised and resampled; plan again "
                "(delete plan.json and fingerprint.json for a new fingerprint round)"
            )
        if missing:
            raise PlanError(f"Plan: missing field(s) {missing}; the plan.json is incomplete")
        try:
            return cls(**values)
        except (TypeError, ValueError) as exc:
            if isinstance(exc, PlanError):
                raise
            raise PlanError(f"Plan: malformed plan.json ({exc})") from exc

    @property
    def plan_id(self) -> str:
        """First 12 hex digits of the SHA-256 of the canonical (sorted, compact) JSON."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:ID_LENGTH]


def _target_spacing(fingerprint: Fingerprint, threshold: float) -> tuple[FloatTriple, int | None]:
    """Rule 1 of the module docstring."""
    target = list(fingerprint.spacing_percentile(50))
    sizes = fingerprint.shape_percentile(50)
    worst = max(range(3), key=lambda a: (target[a], -a))  # first axis of the largest spacing
    others = [a for a in range(3) if a != worst]
    largest_other = max(target[a] for a in others)
    thick = target[worst] > threshold * largest_other
    few = sizes[worst] * threshold < min(sizes[a] for a in others)
    axis = None
    if thick and few:
        low = fingerprint.spacing[worst].percentile(10)
        target[worst] = low if low >= largest_other else largest_other + 1e-5
        axis = worst
    return (target[0], target[1], target[2]), axis


def _gigabytes(elements: int, batch_size: int) -> float:
    """Estimated memory of a training step (nnU-Net's calibration, rule 5)."""
    return elements * batch_size / REFERENCE_BATCH_SIZE / REFERENCE_ELEMENTS * REFERENCE_GB


def _filters(levels: int, settings: PlannerSettings) -> tuple[int, ...]:
    return tuple(min(settings.base_filters * 2**i, settings.max_filters) for i in range(levels))


def make_plan(
    fingerprint: Fingerprint,
    settings: PlannerSettings | None = None,
    preprocess: PreprocessParams | None = None,
) -> Plan:
    """Plan training from a fingerprint with nnU-Net v2's rules (see the module docstring).

    ``preprocess`` is the preprocessing the cases will get (a study's ``[train.preprocess]``;
    its spacing and shape are ignored, the plan sets them); it is only recorded (rule 9), with
    the defaults of :class:`~neurofed.preprocess.params.PreprocessParams` when ``None``.

    Raises
    ------
    PlanError
        When the fingerprint is empty, or the data or the budget allow fewer than two
        down-samplings.
    """
    settings = settings or PlannerSettings()
    if fingerprint.num_cases == 0:
        raise PlanError("the fingerprint holds no case; every site's fingerprint was empty")
    spacing, axis = _target_spacing(fingerprint, settings.anisotropy_threshold)
    median = fingerprint.resampled_shape_percentile(spacing, 50)
    if min(median) < 1:
        raise PlanError(f"median shape {median} at spacing {spacing} has an empty axis")
    inverse = [1 / s for s in spacing]
    scale = (INITIAL_PATCH_VOXELS / math.prod(inverse)) ** (1 / 3)
    initial = [min(round(i * scale), m) for i, m in zip(inverse, median, strict=True)]
    minimum = settings.min_feature_size
    topology = pool_and_conv_props(spacing, initial, minimum)
    in_channels = len(fingerprint.modalities)

    def estimate(t: Topology) -> int:
        filters = _filters(len(t.strides), settings)
        return feature_map_elements(
            t.patch_size, t.strides, filters, in_channels, settings.out_channels
        )

    budget = REFERENCE_ELEMENTS * settings.memory_budget_gb / REFERENCE_GB
    elements = estimate(topology)
    while elements * settings.min_batch_size / REFERENCE_BATCH_SIZE > budget:
        patch = list(topology.patch_size)
        ratios = [p / m for p, m in zip(patch, median, strict=True)]
        shrink = max(a for a in range(3) if ratios[a] == max(ratios))  # last axis on ties
        trial = list(patch)
        trial[shrink] -= topology.divisor[shrink]
        step = pool_and_conv_props(spacing, trial, minimum).divisor[shrink]
        patch[shrink] -= step
        if patch[shrink] < 1:
            raise PlanError(
                f"PlannerSettings.memory_budget_gb = {settings.memory_budget_gb:g} is too small: "
                f"even a patch of {topology.patch_size} needs about "
                f"{_gigabytes(elements, settings.min_batch_size):.3g} GB; raise the budget or "
                "lower base_filters"
            )
        topology = pool_and_conv_props(spacing, patch, minimum)
        elements = estimate(topology)
        if len(topology.strides) < 3:
            raise PlanError(
                f"PlannerSettings.memory_budget_gb = {settings.memory_budget_gb:g} is too small: "
                f"a patch that fits it, {topology.patch_size}, allows only "
                f"{len(topology.strides) - 1} down-sampling(s) and dynunet needs 2; raise the "
                "budget or lower base_filters"
            )
    levels = len(topology.strides)
    if levels < 3:
        raise PlanError(
            f"the median shape {median} at spacing {spacing} allows only {levels - 1} "
            f"down-sampling(s) and dynunet needs 2; plan at a finer spacing, or lower "
            f"min_feature_size (now {minimum})"
        )
    batch = round(budget / elements * REFERENCE_BATCH_SIZE)
    dataset_voxels = math.prod(median) * fingerprint.num_cases
    cap = round(dataset_voxels * settings.max_dataset_fraction / math.prod(topology.patch_size))
    batch = max(min(batch, cap), settings.min_batch_size)
    record = PlanPreprocessing.of(preprocess or PreprocessParams(), len(fingerprint.modalities))
    extent = fingerprint.extent_percentile(settings.volume_percentile)
    vx, vy, vz = (max(1, math.ceil(e / s)) for e, s in zip(extent, spacing, strict=True))
    return Plan(
        spacing=spacing,
        median_shape=median,
        volume_shape=(vx, vy, vz),
        patch_size=topology.patch_size,
        strides=topology.strides,
        kernel_sizes=topology.kernel_sizes,
        filters=_filters(levels, settings),
        batch_size=batch,
        anisotropic_axis=axis,
        estimated_memory_gb=_gigabytes(elements, batch),
        modalities=fingerprint.modalities,
        num_cases=fingerprint.num_cases,
        fingerprint_id=fingerprint.fingerprint_id,
        settings=settings,
        preprocessing=record,
        departures_from_nnunet=departures_from_nnunet(record, fingerprint.spec),
    )
