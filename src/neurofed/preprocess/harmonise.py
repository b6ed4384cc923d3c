"""Harmonisation on arrays: N4 bias-field correction and rigid co-registration (SimpleITK).

Both take a channel ``(X, Y, Z)`` and the 4x4 voxel-to-world ``affine`` (RAS+ mm) it lies on, and
return the new array on the **same grid** together with a frozen record of what was done (the
settings used, the bias field's strength, the rigid transform and the mutual-information metric
before and after), so that the pipeline's ``provenance.json`` says exactly what happened.

SimpleITK sees each array as an image whose origin, spacing and direction come from the affine,
so its physical space *is* the RAS world: the transforms recorded here are in RAS mm.

- :func:`correct_bias`: N4 (``N4BiasFieldCorrectionImageFilter``) fitted on a copy shrunk by
  :attr:`N4Settings.shrink_factor` per axis (never below :attr:`N4Settings.min_voxels` voxels),
  three fitting levels of 50/50/30 iterations; the fitted log field is evaluated on the full grid
  (``GetLogBiasFieldAsImage``) and divided out, so the output keeps full resolution.
- :func:`register_rigid`: Mattes mutual information (32 bins; 25 % random samples, at most
  100 000 per level, fixed seed), ``Euler3DTransform`` about the reference brain's centre,
  regular-step gradient descent with scales from physical shifts, three resolution levels
  (shrink 4/2/1, smoothing 2/1/0 voxels) on copies block-averaged to about 2 mm voxels (rigid
  accuracy needs no finer grid; it makes 1 mm scans cost what 2 mm ones do). Gradients are
  taken at the samples only (no gradient images). The moving channel is resampled (linear)
  onto the reference grid only if the result improves the metric and moves some brain voxel
  by more than a fifth of the largest voxel edge (smaller corrections would blur more than
  they fix, above all across thick slices); voxels that were exactly 0 stay 0 (the support is
  resampled nearest-neighbour), so skull-stripped data stay skull-stripped.

Examples
--------
>>> import numpy as np
>>> x, y, z = np.meshgrid(*[np.arange(24.0)] * 3, indexing="ij")
>>> ball = ((x - 12) ** 2 + (y - 12) ** 2 + (z - 12) ** 2 < 64).astype(np.float32)
>>> bias = np.exp(0.3 * (x - 12) / 12).astype(np.float32)  # 35 % brighter on the right
>>> corrected, record = correct_bias(100 * ball * bias, np.eye(4), ball > 0)
>>> record.applied, record.shrink_factors
(True, (1, 1, 1))
>>> bool(np.std(corrected[ball > 0]) < 0.5 * np.std((100 * ball * bias)[ball > 0]))
True
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.data.nifti import voxel_spacing
from neurofed.preprocess.params import PreprocessError

__all__ = [
    "BiasCorrection",
    "N4Settings",
    "Registration",
    "RegistrationSettings",
    "correct_bias",
    "register_rigid",
]

Channel = npt.NDArray[np.float32]  # (X, Y, Z)
Mask = npt.NDArray[np.bool_]  # (X, Y, Z)
Affine = npt.NDArray[np.float64]  # (4, 4)


@dataclass(frozen=True)
class N4Settings:
    """How N4 is run (see the module docstring for why these values)."""

    shrink_factor: int = 4
    iterations: tuple[int, ...] = (50, 50, 30)  # per fitting level (the B-spline mesh doubles)
    convergence_threshold: float = 1e-3
    control_points: int = 4  # per axis at the first level
    min_voxels: int = 16  # no axis is shrunk below this many voxels
    threads: int | None = None  # None: SimpleITK's global default

    def to_json(self) -> dict[str, Any]:
        return {
            "shrink_factor": self.shrink_factor,
            "iterations": list(self.iterations),
            "convergence_threshold": self.convergence_threshold,
            "control_points": self.control_points,
            "min_voxels": self.min_voxels,
        }


@dataclass(frozen=True)
class RegistrationSettings:
    """How rigid co-registration is run (see the module docstring)."""

    shrink_factors: tuple[int, ...] = (4, 2, 1)
    smoothing_sigmas: tuple[float, ...] = (2.0, 1.0, 0.0)  # voxels, per level
    histogram_bins: int = 32
    sampling_fraction: float = 0.25
    max_samples: int = 100_000  # per level: at 1 mm the fraction drops to a few per cent
    iterations: int = 200
    learning_rate: float = 1.0  # mm of the largest physical shift per step, at the start
    min_step: float = 1e-3
    min_voxels: int = 16  # no axis is shrunk below this many voxels
    working_voxel_mm: float = 2.0  # finer scans are block-averaged to about this first
    apply_above_voxels: float = 0.2  # resample only if a brain voxel moves further than this
    seed: int = 20240601
    threads: int | None = None  # None: SimpleITK's global default

    def to_json(self) -> dict[str, Any]:
        return {
            "metric": "mattes-mutual-information",
            "transform": "euler-3d",
            "optimizer": "regular-step-gradient-descent",
            "shrink_factors": list(self.shrink_factors),
            "smoothing_sigmas_voxels": list(self.smoothing_sigmas),
            "histogram_bins": self.histogram_bins,
            "sampling_fraction": self.sampling_fraction,
            "max_samples": self.max_samples,
            "iterations": self.iterations,
            "learning_rate": self.learning_rate,
            "min_step": self.min_step,
            "min_voxels": self.min_voxels,
            "working_voxel_mm": self.working_voxel_mm,
            "apply_above_voxels": self.apply_above_voxels,
            "seed": self.seed,
        }


@dataclass(frozen=True)
class BiasCorrection:
    """What :func:`correct_bias` did to one channel.

    ``field_ratio`` is the 99th over the 1st percentile of the fitted multiplicative field inside
    the mask (1.0 = no bias); ``reason`` says why nothing was done when ``applied`` is false.
    """

    applied: bool
    shrink_factors: tuple[int, int, int] = (1, 1, 1)
    iterations: tuple[int, ...] = ()
    convergence: float = math.nan
    mask_voxels: int = 0
    field_ratio: float = 1.0
    seconds: float = 0.0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "applied": self.applied,
            "shrink_factors": list(self.shrink_factors),
            "iterations": list(self.iterations),
            "convergence": _finite_or_none(self.convergence),
            "mask_voxels": self.mask_voxels,
            "field_ratio": self.field_ratio,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> BiasCorrection:
        shrink = [int(v) for v in data.get("shrink_factors", (1, 1, 1))]
        convergence = data.get("convergence")
        return cls(
            applied=bool(data["applied"]),
            shrink_factors=(shrink[0], shrink[1], shrink[2]),
            iterations=tuple(int(v) for v in data.get("iterations", ())),
            convergence=math.nan if convergence is None else float(convergence),
            mask_voxels=int(data.get("mask_voxels", 0)),
            field_ratio=float(data.get("field_ratio", 1.0)),
            seconds=float(data.get("seconds", 0.0)),
            reason=str(data.get("reason", "")),
        )


@dataclass(frozen=True)
class Registration:
    """What :func:`register_rigid` found for one moving channel.

    ``matrix`` maps reference world points (RAS mm) to where the same anatomy lies in the
    moving channel before correction. ``rotation_deg`` is its rotation angle, ``shift_mm`` the
    distance it moves the reference brain's centre, ``max_displacement_mm`` the largest
    distance it moves a brain voxel. ``metric_*`` are Mattes mutual
    information values (lower is better) at the identity and at the result.
    """

    matrix: tuple[tuple[float, ...], ...]
    rotation_deg: float
    shift_mm: float
    max_displacement_mm: float
    metric_before: float
    metric_after: float
    iterations: int
    stop: str
    applied: bool
    seconds: float = 0.0
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        return {
            "matrix": [list(row) for row in self.matrix],
            "rotation_deg": self.rotation_deg,
            "shift_mm": self.shift_mm,
            "max_displacement_mm": self.max_displacement_mm,
            "metric_before": self.metric_before,
            "metric_after": self.metric_after,
            "iterations": self.iterations,
            "stop": self.stop,
            "applied": self.applied,
            "seconds": round(self.seconds, 4),
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Registration:
        return cls(
            matrix=tuple(tuple(float(v) for v in row) for row in data["matrix"]),
            rotation_deg=float(data["rotation_deg"]),
            shift_mm=float(data["shift_mm"]),
            max_displacement_mm=float(data["max_displacement_mm"]),
            metric_before=float(data["metric_before"]),
            metric_after=float(data["metric_after"]),
            iterations=int(data["iterations"]),
            stop=str(data["stop"]),
            applied=bool(data["applied"]),
            seconds=float(data.get("seconds", 0.0)),
            reason=str(data.get("reason", "")),
        )


def _sitk() -> Any:
    """SimpleITK, imported on first use (it is needed only when a step runs)."""
    import SimpleITK

    return SimpleITK


def _finite_or_none(value: float) -> float | None:
    return float(value) if math.isfinite(value) else None


def _check_channel(channel: Channel, affine: npt.ArrayLike, name: str) -> Affine:
    if channel.ndim != 3:
        raise PreprocessError(f"{name}: got shape {channel.shape}; expected one (X, Y, Z) channel")
    matrix = np.asarray(affine, dtype=np.float64)
    if matrix.shape != (4, 4) or abs(np.linalg.det(matrix[:3, :3])) < 1e-12:
        raise PreprocessError(f"affine: got {matrix.tolist()}; expected an invertible 4x4 matrix")
    return matrix


def _to_sitk(array: npt.NDArray[Any], affine: Affine) -> Any:
    """A SimpleITK image of an (X, Y, Z) array whose physical space is the affine's world.

    A sheared affine (non-orthogonal axes) cannot be an ITK direction: the image then lives in
    a frame with the affine's voxel sizes along orthogonal axes (rigid maps stay rigid there
    only approximately; a sheared scan should be resliced before harmonising).
    """
    sitk = _sitk()

    image = sitk.GetImageFromArray(np.ascontiguousarray(np.transpose(array, (2, 1, 0))))
    spacing = np.array(voxel_spacing(affine))
    direction = affine[:3, :3] / spacing
    if np.allclose(direction.T @ direction, np.eye(3), atol=1e-4):
        image.SetDirection(tuple(float(v) for v in direction.ravel()))
        image.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    image.SetSpacing(tuple(float(v) for v in spacing))
    return image


def _from_sitk(image: Any) -> npt.NDArray[Any]:
    sitk = _sitk()

    return np.ascontiguousarray(np.transpose(sitk.GetArrayFromImage(image), (2, 1, 0)))


def _shrink_factors(shape: tuple[int, ...], factor: int, min_voxels: int) -> tuple[int, int, int]:
    x, y, z = (max(1, min(factor, n // max(min_voxels, 1))) for n in shape)
    return x, y, z


def correct_bias(
    channel: Channel,
    affine: npt.ArrayLike,
    mask: Mask,
    settings: N4Settings | None = None,
) -> tuple[Channel, BiasCorrection]:
    """Divide out a smooth multiplicative bias field fitted by N4 inside ``mask``.

    Only voxels of ``mask`` with a positive value are used for the fit (N4 works on the log of
    the intensities); the field is then applied everywhere, so a zero background stays zero.
    A channel with fewer than 100 such voxels is returned unchanged (``applied`` false, with
    the reason). See the module docstring for an example.
    """
    settings = settings or N4Settings()
    matrix = _check_channel(channel, affine, "channel")
    if mask.shape != channel.shape:
        raise PreprocessError(f"mask: shape {mask.shape} is not the channel's {channel.shape}")
    sitk = _sitk()

    start = time.perf_counter()
    fit_mask = mask & (channel > 0)
    voxels = int(fit_mask.sum())
    if voxels < 100:
        reason = f"only {voxels} positive voxels inside the mask; N4 needs at least 100"
        return channel, BiasCorrection(applied=False, mask_voxels=voxels, reason=reason)
    image = _to_sitk(channel.astype(np.float32, copy=False), matrix)
    mask_image = _to_sitk(fit_mask.astype(np.uint8), matrix)
    factors = _shrink_factors(channel.shape, settings.shrink_factor, settings.min_voxels)
    small = sitk.Shrink(image, list(factors))
    small_mask = sitk.Shrink(mask_image, list(factors))
    corrector = sitk.N4BiasFieldCorrectionImageFilter()
    corrector.SetMaximumNumberOfIterations([int(n) for n in settings.iterations])
    corrector.SetConvergenceThreshold(settings.convergence_threshold)
    corrector.SetNumberOfControlPoints([settings.control_points] * 3)
    if settings.threads is not None:
        corrector.SetNumberOfThreads(settings.threads)
    try:
        corrector.Execute(small, small_mask)
    except RuntimeError as exc:
        raise PreprocessError(
            f"N4 bias-field correction failed ({str(exc).strip().splitlines()[-1]}); "
            "run with --no-bias-correction or exclude the case"
        ) from exc
    log_field = _from_sitk(corrector.GetLogBiasFieldAsImage(image)).astype(np.float32)
    corrected = (channel / np.exp(log_field)).astype(np.float32)
    inside = np.exp(log_field[fit_mask])
    low, high = np.percentile(inside, [1, 99])
    return corrected, BiasCorrection(
        applied=True,
        shrink_factors=factors,
        iterations=tuple(int(n) for n in settings.iterations),
        convergence=float(corrector.GetCurrentConvergenceMeasurement()),
        mask_voxels=voxels,
        field_ratio=float(high / max(low, 1e-12)),
        seconds=time.perf_counter() - start,
    )


def _world_matrix(transform: Any) -> Affine:
    """The 4x4 world map x -> R (x - c) + c + t of a SimpleITK Euler3DTransform."""
    rotation = np.array(transform.GetMatrix(), dtype=np.float64).reshape(3, 3)
    centre = np.array(transform.GetCenter(), dtype=np.float64)
    shift = np.array(transform.GetTranslation(), dtype=np.float64)
    out = np.eye(4)
    out[:3, :3] = rotation
    out[:3, 3] = centre + shift - rotation @ centre
    return out


def _method(settings: RegistrationSettings, levels: bool, voxels: int) -> Any:
    sitk = _sitk()

    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsMattesMutualInformation(numberOfHistogramBins=settings.histogram_bins)
    method.SetMetricSamplingStrategy(method.RANDOM)
    fraction = min(settings.sampling_fraction, settings.max_samples / max(voxels, 1))
    method.SetMetricSamplingPercentage(fraction, settings.seed)
    method.SetInterpolator(sitk.sitkLinear)
    method.MetricUseFixedImageGradientFilterOff()  # gradients at the samples only, not whole
    method.MetricUseMovingImageGradientFilterOff()  # gradient images at every level
    if settings.threads is not None:
        method.SetNumberOfThreads(settings.threads)
    if levels:
        method.SetOptimizerAsRegularStepGradientDescent(
            learningRate=settings.learning_rate,
            minStep=settings.min_step,
            numberOfIterations=settings.iterations,
            gradientMagnitudeTolerance=1e-8,
        )
        method.SetOptimizerScalesFromPhysicalShift()
    return method


def register_rigid(
    fixed: Channel,
    moving: Channel,
    affine: npt.ArrayLike,
    mask: Mask | None = None,
    settings: RegistrationSettings | None = None,
) -> tuple[Channel, Registration]:
    """Rigidly align ``moving`` to ``fixed`` (both on the grid of ``affine``).

    ``mask`` (the reference brain; default every nonzero voxel of ``fixed``) sets the rotation
    centre and the points whose displacement decides whether the result is applied. Returns the
    moving channel resampled onto the grid (or unchanged when not applied, with the reason)
    and the :class:`Registration` record.

    Examples
    --------
    >>> import numpy as np
    >>> x, y, z = np.meshgrid(*[np.arange(32.0)] * 3, indexing="ij")
    >>> head = ((x - 16) ** 2 / 144 + (y - 15) ** 2 / 100 + (z - 16) ** 2 / 81 < 1) * 100.0
    >>> head = head * (1 + (x > 16)).astype(np.float32)  # a left-right contrast to lock onto
    >>> moving = np.roll(head, 2, axis=1).astype(np.float32)  # 2 mm towards anterior
    >>> _, found = register_rigid(head.astype(np.float32), moving, np.eye(4))
    >>> found.applied, round(found.matrix[1][3])  # reference y maps to y + 2 in the moving
    (True, 2)
    """
    settings = settings or RegistrationSettings()
    matrix = _check_channel(fixed, affine, "fixed")
    if moving.shape != fixed.shape:
        raise PreprocessError(
            f"moving: shape {moving.shape} is not the reference's {fixed.shape}; both channels "
            "must lie on one grid (run `neurofed site check`, which excludes grid mismatches)"
        )
    region = (fixed != 0) if mask is None else mask
    if not region.any():
        raise PreprocessError("reference channel is empty: nothing to register to")
    sitk = _sitk()

    start = time.perf_counter()
    fixed_image = _to_sitk(fixed.astype(np.float32, copy=False), matrix)
    moving_image = _to_sitk(moving.astype(np.float32, copy=False), matrix)
    where = np.argwhere(region)
    centre = fixed_image.TransformContinuousIndexToPhysicalPoint(
        [float(v) for v in where.mean(axis=0)]
    )
    initial = sitk.Euler3DTransform()
    initial.SetCenter(centre)
    binning = [max(1, int(settings.working_voxel_mm // s)) for s in voxel_spacing(matrix)]
    fixed_work, moving_work = fixed_image, moving_image
    if max(binning) > 1:  # register block averages: rigid accuracy needs no finer voxels
        fixed_work = sitk.BinShrink(fixed_image, binning)
        moving_work = sitk.BinShrink(moving_image, binning)
    shape = tuple(int(n) for n in fixed_work.GetSize())
    levels = [min(_shrink_factors(shape, f, settings.min_voxels)) for f in settings.shrink_factors]
    voxels = math.prod(shape)
    method = _method(settings, levels=True, voxels=voxels)
    method.SetShrinkFactorsPerLevel(levels)
    sizes = [math.prod(-(-n // f) for n in shape) for f in levels]
    fractions = [min(settings.sampling_fraction, settings.max_samples / n) for n in sizes]
    method.SetMetricSamplingPercentagePerLevel(fractions, settings.seed)
    method.SetSmoothingSigmasPerLevel(list(settings.smoothing_sigmas))
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOff()
    method.SetInitialTransform(initial, inPlace=False)
    evaluate = _method(settings, levels=False, voxels=voxels)
    evaluate.SetInitialTransform(initial)
    try:
        before = float(evaluate.MetricEvaluate(fixed_work, moving_work))
        found = method.Execute(fixed_work, moving_work)
        transform = sitk.Euler3DTransform(sitk.CompositeTransform(found).GetNthTransform(0))
        evaluate.SetInitialTransform(transform)
        after = float(evaluate.MetricEvaluate(fixed_work, moving_work))
    except RuntimeError as exc:
        raise PreprocessError(
            f"rigid registration failed ({str(exc).strip().splitlines()[-1]}); "
            "run with --no-registration or exclude the case"
        ) from exc
    world = _world_matrix(transform)
    sample = where[:: max(1, len(where) // 20_000)].astype(np.float64)  # (N, 3) brain voxels
    points = (matrix @ np.c_[sample, np.ones(len(sample))].T)[:3].T  # (N, 3) world mm
    moved = (world @ np.c_[points, np.ones(len(points))].T)[:3].T
    max_displacement = float(np.linalg.norm(moved - points, axis=1).max())
    centre_mm = np.array(centre)
    shift = float(np.linalg.norm(world[:3, :3] @ centre_mm + world[:3, 3] - centre_mm))
    cosine = (np.trace(world[:3, :3]) - 1.0) / 2.0
    rotation = float(np.degrees(np.arccos(np.clip(cosine, -1.0, 1.0))))
    threshold = settings.apply_above_voxels * max(voxel_spacing(matrix))
    reason = ""
    if not after < before:
        reason = f"the metric did not improve ({before:.4f} -> {after:.4f}); kept as it was"
    elif max_displacement <= threshold:
        reason = f"largest brain displacement {max_displacement:.2f} mm <= {threshold:.2f} mm"
    out = moving
    if not reason:
        resampled = sitk.Resample(moving_image, fixed_image, transform, sitk.sitkLinear, 0.0)
        inside = sitk.Resample(  # keep a zero background zero (skull-stripped data)
            sitk.Cast(moving_image != 0, sitk.sitkUInt8), fixed_image, transform,
            sitk.sitkNearestNeighbor, 0,
        )  # fmt: skip
        out = (_from_sitk(resampled) * (_from_sitk(inside) > 0)).astype(np.float32)
    return out, Registration(
        matrix=tuple(tuple(float(v) for v in row) for row in world),
        rotation_deg=rotation,
        shift_mm=shift,
        max_displacement_mm=max_displacement,
        metric_before=before,
        metric_after=after,
        iterations=int(method.GetOptimizerIteration()),
        stop=str(method.GetOptimizerStopConditionDescription()),
        applied=not reason,
        seconds=time.perf_counter() - start,
        reason=reason,
    )
