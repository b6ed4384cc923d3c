"""Network plans: the per-axis architecture of a ``dynunet``, derived nnU-Net style.

A :class:`NetworkPlan` fixes the patch size, the voxel spacing it was planned for, and per
resolution level the convolution kernel size, the stride that reaches that level and the number
of filters. :func:`default_plan` derives one from a spatial shape and spacing; a later step derives
them from a federated dataset fingerprint and stores the plan next to the model (``plan.json``).

Rules of :func:`default_plan` (after nnU-Net's ``get_pool_and_conv_props``), level by level:

1. An axis is pooled (stride 2) while its current size is at least ``2 · min_feature_size``
   (8 by default, so the coarsest feature map keeps at least 4 voxels) **and** its current
   spacing is not more than twice the smallest current spacing (thick-slice axes wait until the
   in-plane axes have been pooled up to a comparable spacing).
2. A level's kernel is 3 along axes whose current spacing is at most twice the smallest, else 1.
3. Pooling stops when no axis can be pooled or after ``max_depth`` down-samplings.
4. Filters are ``base_filters · 2**level`` capped at ``max_filters`` (32 … 320 by default).
5. The patch size is ``spatial_shape`` rounded up to a multiple of the per-axis product of the
   strides (pad inputs to it). nnU-Net's shrinking of the patch to a GPU memory budget is not done
   here.

Examples
--------
>>> plan = default_plan((32, 32, 20), spacing=(1.0, 1.0, 3.0), base_filters=8, max_filters=64)
>>> plan.strides
((1, 1, 1), (2, 2, 1), (2, 2, 2), (2, 2, 2))
>>> plan.kernel_sizes
((3, 3, 1), (3, 3, 3), (3, 3, 3), (3, 3, 3))
>>> plan.filters, plan.spatial_divisor(), plan.patch_size
((8, 16, 32, 64), (8, 8, 4), (32, 32, 20))
>>> NetworkPlan.from_json(plan.to_json()) == plan
True
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from neurofed.config import ConfigBase, is_positive_int, require

__all__ = ["NetworkPlan", "default_plan"]

Triple = tuple[int, int, int]


def _is_triple(value: object) -> bool:
    return isinstance(value, tuple) and len(value) == 3 and all(is_positive_int(v) for v in value)


@dataclass(frozen=True)
class NetworkPlan(ConfigBase):
    """Per-level architecture of a ``dynunet``.

    Parameters
    ----------
    patch_size
        Training patch size (voxels per axis); a multiple of :meth:`spatial_divisor`.
    spacing
        Voxel spacing (mm) the plan was made for.
    kernel_sizes
        Convolution kernel per level, top level first.
    strides
        Stride reaching each level (the first is ``(1, 1, 1)``).
    filters
        Feature channels per level.
    """

    patch_size: Triple = (128, 128, 128)
    spacing: tuple[float, float, float] = (1.0, 1.0, 1.0)
    kernel_sizes: tuple[Triple, ...] = ((3, 3, 3),) * 6
    strides: tuple[Triple, ...] = ((1, 1, 1),) + ((2, 2, 2),) * 5
    filters: tuple[int, ...] = (32, 64, 128, 256, 320, 320)

    def __post_init__(self) -> None:
        require(_is_triple(self.patch_size), self, "patch_size", "give three positive integers")
        require(
            isinstance(self.spacing, tuple)
            and len(self.spacing) == 3
            and all(isinstance(s, int | float) and 0 < s < math.inf for s in self.spacing),
            self,
            "spacing",
            "give three positive finite spacings in mm",
        )
        object.__setattr__(self, "spacing", tuple(float(s) for s in self.spacing))
        levels = len(self.strides)
        require(
            isinstance(self.strides, tuple) and levels >= 3 and all(map(_is_triple, self.strides)),
            self,
            "strides",
            "give at least three per-axis strides (DynUNet needs >= 2 down-samplings); "
            "a larger spatial_shape in default_plan gives more levels",
        )
        require(
            self.strides[0] == (1, 1, 1)
            and all(s in (1, 2) for stride in self.strides for s in stride),
            self,
            "strides",
            "start with (1, 1, 1) and use strides of 1 or 2",
        )
        require(
            isinstance(self.kernel_sizes, tuple)
            and len(self.kernel_sizes) == levels
            and all(_is_triple(k) and all(v % 2 == 1 for v in k) for k in self.kernel_sizes),
            self,
            "kernel_sizes",
            f"give {levels} per-axis odd kernel sizes (one per level, as strides)",
        )
        require(
            isinstance(self.filters, tuple)
            and len(self.filters) == levels
            and all(is_positive_int(f) for f in self.filters),
            self,
            "filters",
            f"give {levels} positive channel counts (one per level, as strides)",
        )
        divisor = self.spatial_divisor()
        require(
            all(p % d == 0 for p, d in zip(self.patch_size, divisor, strict=True)),
            self,
            "patch_size",
            f"use multiples of the strides' product {divisor} on each axis",
        )

    @property
    def depth(self) -> int:
        """Number of down-samplings."""
        return len(self.strides) - 1

    def spatial_divisor(self) -> Triple:
        """Inputs must be multiples of the per-axis product of the strides."""
        x, y, z = (math.prod(s[axis] for s in self.strides) for axis in range(3))
        return (x, y, z)


def _kernel(spacing: Sequence[float]) -> Triple:
    smallest = min(spacing)
    x, y, z = (3 if s <= 2 * smallest else 1 for s in spacing)
    return (x, y, z)


def default_plan(
    spatial_shape: Sequence[int],
    spacing: Sequence[float],
    *,
    base_filters: int = 32,
    max_filters: int = 320,
    max_depth: int = 5,
    min_feature_size: int = 4,
) -> NetworkPlan:
    """Derive a :class:`NetworkPlan` with nnU-Net-style rules (see the module docstring).

    Parameters
    ----------
    spatial_shape
        Representative (e.g. median) image shape in voxels, three axes.
    spacing
        Voxel spacing in mm, three axes.
    base_filters, max_filters
        Filters at the top level, and their cap.
    max_depth
        Most down-samplings.
    min_feature_size
        Smallest size an axis may be pooled down to.

    Raises
    ------
    ValueError
        If an argument is malformed, or the shape is too small for two down-samplings.
    """
    shape = tuple(spatial_shape)
    if len(shape) != 3 or not all(is_positive_int(s) for s in shape):
        raise ValueError(f"spatial_shape = {shape!r} is invalid: give three positive integers")
    sp = [float(s) for s in spacing]
    if len(sp) != 3 or not all(0 < s < math.inf for s in sp):
        raise ValueError(f"spacing = {tuple(spacing)!r} is invalid: give three positive mm values")
    for name, value in (
        ("base_filters", base_filters),
        ("max_filters", max_filters),
        ("max_depth", max_depth),
        ("min_feature_size", min_feature_size),
    ):
        if not is_positive_int(value):
            raise ValueError(f"{name} = {value!r} is invalid: use an integer >= 1")
    size = list(shape)
    kernels = [_kernel(sp)]
    strides: list[Triple] = [(1, 1, 1)]
    while len(strides) - 1 < max_depth:
        smallest = min(sp)
        x, y, z = (
            2 if size[a] >= 2 * min_feature_size and sp[a] <= 2 * smallest else 1 for a in range(3)
        )
        pool = (x, y, z)
        if pool == (1, 1, 1):
            break
        size = [math.ceil(s / p) for s, p in zip(size, pool, strict=True)]
        sp = [s * p for s, p in zip(sp, pool, strict=True)]
        strides.append(pool)
        kernels.append(_kernel(sp))
    if len(strides) < 3:
        raise ValueError(
            f"spatial_shape = {shape!r} allows only {len(strides) - 1} down-sampling(s) "
            f"(an axis is pooled while >= {2 * min_feature_size} voxels); dynunet needs 2 — "
            "use a larger shape or a smaller min_feature_size"
        )
    divisor = [math.prod(s[a] for s in strides) for a in range(3)]
    px, py, pz = (math.ceil(s / d) * d for s, d in zip(shape, divisor, strict=True))
    return NetworkPlan(
        patch_size=(px, py, pz),
        spacing=(float(spacing[0]), float(spacing[1]), float(spacing[2])),
        kernel_sizes=tuple(kernels),
        strides=tuple(strides),
        filters=tuple(min(base_filters * 2**i, max_filters) for i in range(len(strides))),
    )
