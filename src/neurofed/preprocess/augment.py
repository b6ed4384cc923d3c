"""Training augmentation: sample parameters from a generator, then apply them deterministically.

:func:`sample_augmentation` draws an :class:`AugmentParams` record from an explicit
``numpy.random.Generator``; :func:`apply_augmentation` applies it with MONAI's deterministic array
transforms (``Flip``, ``Affine``, ``ScaleIntensity``, ``ShiftIntensity``, ``AdjustContrast``) and
Gaussian noise from the recorded seed. The record is JSON, so any augmented sample can be replayed.
Global random state (numpy's, torch's, MONAI's ``set_random_state``) is never used.

Examples
--------
>>> import numpy as np
>>> image = np.random.default_rng(0).standard_normal((2, 8, 8, 8)).astype(np.float32)
>>> label = (image[0] > 1).astype(np.uint8)
>>> params = sample_augmentation(AugmentConfig(), np.random.default_rng(7), (8, 8, 8))
>>> AugmentParams.from_json(params.to_json()) == params
True
>>> out, out_label = apply_augmentation(image, label, params)
>>> again, _ = apply_augmentation(image, label, params)
>>> np.array_equal(out, again), out.shape, set(np.unique(out_label)) <= {0, 1}
(True, (2, 8, 8, 8), True)
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from neurofed.preprocess.params import PreprocessError

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "apply_augmentation",
    "sample_augmentation",
    "sample_patch",
]

Shape3 = tuple[int, int, int]
Array = npt.NDArray[np.float32]


def _check_probability(owner: str, name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise PreprocessError(f"{owner}.{name}: got {value!r}; give a probability in [0, 1]")


def _check_range(owner: str, name: str, value: tuple[float, float], low: float) -> None:
    if len(value) != 2 or not low <= value[0] <= value[1] or not math.isfinite(value[1]):
        raise PreprocessError(
            f"{owner}.{name}: got {value!r}; give (low, high) with {low} <= low <= high"
        )


def _tuples(cls: type, data: Mapping[str, Any]) -> dict[str, Any]:
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise PreprocessError(f"{cls.__name__}: unknown fields {unknown}; known: {sorted(known)}")
    return {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}


@dataclass(frozen=True)
class AugmentConfig:
    """How often and how strongly to augment (defaults suit brain MRI, after z-scoring).

    Flips are off by default: set ``flip_probabilities=(0.5, 0.0, 0.0)`` to mirror left-right
    (axis 0 of RAS arrays). Rotation is about each axis by up to ``max_rotation_degrees``; scaling
    is isotropic; intensity scale/shift/gamma apply to all channels alike; noise std is in the
    units of the image (z-scores).

    Examples
    --------
    >>> AugmentConfig(gamma_range=(1.5, 0.7))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    neurofed.preprocess.params.PreprocessError: AugmentConfig.gamma_range: got (1.5, 0.7); ...
    """

    flip_probabilities: tuple[float, float, float] = (0.0, 0.0, 0.0)
    rotation_probability: float = 0.2
    max_rotation_degrees: float = 10.0
    scale_probability: float = 0.2
    scale_range: tuple[float, float] = (0.9, 1.1)
    intensity_scale_probability: float = 0.15
    intensity_scale_range: tuple[float, float] = (0.75, 1.25)
    intensity_shift_probability: float = 0.1
    intensity_shift_range: tuple[float, float] = (-0.1, 0.1)
    gamma_probability: float = 0.3
    gamma_range: tuple[float, float] = (0.7, 1.5)
    noise_probability: float = 0.1
    noise_std_range: tuple[float, float] = (0.0, 0.1)

    def __post_init__(self) -> None:
        owner = type(self).__name__
        if len(self.flip_probabilities) != 3:
            raise PreprocessError(f"{owner}.flip_probabilities: give one per axis (X, Y, Z)")
        for p in self.flip_probabilities:
            _check_probability(owner, "flip_probabilities", p)
        for f in fields(self):
            if f.name.endswith("_probability"):
                _check_probability(owner, f.name, getattr(self, f.name))
        if not 0.0 <= self.max_rotation_degrees <= 180.0:
            raise PreprocessError(
                f"{owner}.max_rotation_degrees: got {self.max_rotation_degrees!r}; give 0..180"
            )
        _check_range(owner, "scale_range", self.scale_range, 1e-3)
        _check_range(owner, "intensity_scale_range", self.intensity_scale_range, 0.0)
        _check_range(owner, "intensity_shift_range", self.intensity_shift_range, -math.inf)
        _check_range(owner, "gamma_range", self.gamma_range, 1e-3)
        _check_range(owner, "noise_std_range", self.noise_std_range, 0.0)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AugmentConfig:
        return cls(**_tuples(cls, data))


@dataclass(frozen=True)
class AugmentParams:
    """One sampled augmentation; the identity when every field has its default.

    Applied in this order: flips, rotation+scale (one resampling about the array centre, radians,
    MONAI ``Affine`` grid scale), intensity scale, intensity shift, gamma (per channel, on its
    min-max range), Gaussian noise of ``noise_std`` drawn from ``noise_seed``.
    """

    spatial_shape: Shape3
    flip_axes: tuple[int, ...] = ()
    rotation: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: tuple[float, float, float] = (1.0, 1.0, 1.0)
    intensity_scale: float = 1.0
    intensity_shift: float = 0.0
    gamma: float = 1.0
    noise_std: float = 0.0
    noise_seed: int = 0

    def __post_init__(self) -> None:
        if len(self.spatial_shape) != 3 or min(self.spatial_shape) <= 0:
            raise PreprocessError(f"AugmentParams.spatial_shape: got {self.spatial_shape!r}")
        if any(axis not in (0, 1, 2) for axis in self.flip_axes):
            raise PreprocessError(f"AugmentParams.flip_axes: got {self.flip_axes!r}; use 0, 1, 2")
        if len(self.rotation) != 3 or len(self.scale) != 3 or min(self.scale) <= 0:
            raise PreprocessError("AugmentParams: rotation and scale need 3 values, scale > 0")
        if self.gamma <= 0 or self.noise_std < 0:
            raise PreprocessError("AugmentParams: gamma must be > 0 and noise_std >= 0")

    @property
    def is_spatial_identity(self) -> bool:
        return all(r == 0.0 for r in self.rotation) and all(s == 1.0 for s in self.scale)

    def to_json(self) -> dict[str, Any]:
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> AugmentParams:
        return cls(**_tuples(cls, data))


def sample_augmentation(
    config: AugmentConfig, rng: np.random.Generator, spatial_shape: Shape3
) -> AugmentParams:
    """Draw one :class:`AugmentParams` for an array of ``spatial_shape``.

    The same number of values is always drawn, whatever is switched on, so changing one
    probability does not change the other draws. Rotation about an axis is skipped when the
    plane it turns has a side of one voxel.

    Examples
    --------
    >>> a = sample_augmentation(AugmentConfig(), np.random.default_rng(1), (16, 16, 16))
    >>> a == sample_augmentation(AugmentConfig(), np.random.default_rng(1), (16, 16, 16))
    True
    """
    x, y, z = (int(n) for n in spatial_shape)
    shape = (x, y, z)
    happens = rng.random(9)
    flips = tuple(i for i in range(3) if happens[i] < config.flip_probabilities[i])
    limit = math.radians(config.max_rotation_degrees)
    angles = rng.uniform(-limit, limit, 3)
    planes_ok = [min(n for j, n in enumerate(shape) if j != i) > 1 for i in range(3)]
    rotation = tuple(
        float(a) if happens[3] < config.rotation_probability and ok else 0.0
        for a, ok in zip(angles, planes_ok, strict=True)
    )
    scale = float(rng.uniform(*config.scale_range))
    intensity_scale = float(rng.uniform(*config.intensity_scale_range))
    shift = float(rng.uniform(*config.intensity_shift_range))
    gamma = float(rng.uniform(*config.gamma_range))
    noise_std = float(rng.uniform(*config.noise_std_range))
    noise_seed = int(rng.integers(0, 2**32))
    scaled = happens[4] < config.scale_probability
    noisy = happens[8] < config.noise_probability
    return AugmentParams(
        spatial_shape=shape,
        flip_axes=flips,
        rotation=(rotation[0], rotation[1], rotation[2]),
        scale=(scale, scale, scale) if scaled else (1.0, 1.0, 1.0),
        intensity_scale=intensity_scale if happens[5] < config.intensity_scale_probability else 1.0,
        intensity_shift=shift if happens[6] < config.intensity_shift_probability else 0.0,
        gamma=gamma if happens[7] < config.gamma_probability else 1.0,
        noise_std=noise_std if noisy else 0.0,
        noise_seed=noise_seed if noisy else 0,
    )


def apply_augmentation(
    image: npt.NDArray[np.float32],
    label: npt.NDArray[np.uint8] | None,
    params: AugmentParams,
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.uint8] | None]:
    """Apply ``params`` to ``image`` ``(C, X, Y, Z)`` and ``label`` ``(X, Y, Z)``.

    The label is flipped exactly and resampled with nearest neighbour (zeros outside), so it only
    ever holds values it held before; intensity changes never touch it.

    Examples
    --------
    >>> image = np.arange(8, dtype=np.float32).reshape(1, 2, 2, 2)
    >>> flipped, _ = apply_augmentation(image, None, AugmentParams((2, 2, 2), flip_axes=(0,)))
    >>> flipped[0, :, 0, 0].tolist()
    [4.0, 0.0]
    """
    import torch
    from monai.transforms.intensity.array import AdjustContrast, ScaleIntensity, ShiftIntensity
    from monai.transforms.spatial.array import Affine, Flip

    def run(transform: Callable[[torch.Tensor], Any], array: Array) -> Array:
        out = transform(torch.from_numpy(np.ascontiguousarray(array)))
        return np.ascontiguousarray(out.detach().cpu().numpy(), dtype=np.float32)

    if image.ndim != 4 or image.shape[1:] != params.spatial_shape:
        raise PreprocessError(
            f"image: shape {image.shape} does not match the sampled spatial_shape "
            f"{params.spatial_shape}; sample the augmentation for this array's shape"
        )
    if label is not None and label.shape != image.shape[1:]:
        raise PreprocessError(f"label: shape {label.shape} is not the image's {image.shape[1:]}")
    out = image.astype(np.float32, copy=True)  # (C, X, Y, Z)
    out_label = None if label is None else label[None].astype(np.float32)  # (1, X, Y, Z)
    if params.flip_axes:
        flip = Flip(spatial_axis=list(params.flip_axes))
        out = run(flip, out)
        out_label = None if out_label is None else run(flip, out_label)
    if not params.is_spatial_identity:

        def resample(mode: str) -> Affine:
            return Affine(
                rotate_params=list(params.rotation),
                scale_params=list(params.scale),
                mode=mode,
                padding_mode="zeros",
                image_only=True,
            )

        out = run(resample("bilinear"), out)
        out_label = None if out_label is None else run(resample("nearest"), out_label)
    if params.intensity_scale != 1.0:
        factor = params.intensity_scale - 1.0
        out = run(ScaleIntensity(minv=None, maxv=None, factor=factor), out)
    if params.intensity_shift != 0.0:
        out = run(ShiftIntensity(offset=params.intensity_shift), out)
    if params.gamma != 1.0:
        gamma = AdjustContrast(gamma=params.gamma)
        out = np.concatenate([run(gamma, channel[None]) for channel in out])
    if params.noise_std > 0.0:
        noise = np.random.default_rng(params.noise_seed).standard_normal(out.shape)
        out = (out + params.noise_std * noise).astype(np.float32)
    final_label = None if out_label is None else np.rint(out_label[0]).astype(np.uint8)
    return out, final_label


def sample_patch(
    rng: np.random.Generator,
    spatial_shape: Shape3,
    patch_shape: Shape3,
    label: npt.NDArray[np.integer] | None = None,
    foreground_probability: float = 0.33,
) -> tuple[slice, slice, slice]:
    """Where to cut a training patch, oversampling foreground as nnU-Net does.

    With probability ``foreground_probability`` (and a label with foreground), one foreground
    class present is chosen uniformly, then one of its voxels, and the patch is centred on it
    (moved inside the array if needed); otherwise the patch position is uniform. One value is
    always drawn first for that choice, so the result is fixed by the generator's state.

    Examples
    --------
    >>> sample_patch(np.random.default_rng(0), (10, 10, 10), (4, 10, 2))
    (slice(3, 7, None), slice(0, 10, None), slice(2, 4, None))
    """
    shape = np.array(spatial_shape, dtype=np.int64)
    patch = np.array(patch_shape, dtype=np.int64)
    if shape.shape != (3,) or patch.shape != (3,) or np.any(patch <= 0) or np.any(patch > shape):
        raise PreprocessError(
            f"patch_shape {tuple(patch_shape)} does not fit in spatial_shape "
            f"{tuple(spatial_shape)}; pad the case (PreprocessParams.spatial_shape) or shrink it"
        )
    _check_probability("sample_patch", "foreground_probability", foreground_probability)
    if label is not None and label.shape != tuple(spatial_shape):
        raise PreprocessError(f"label: shape {label.shape} is not {tuple(spatial_shape)}")
    forced = rng.random() < foreground_probability
    start: npt.NDArray[np.int64]
    if forced and label is not None and np.any(label > 0):
        classes = np.unique(label[label > 0])
        chosen = classes[int(rng.integers(len(classes)))]
        flat = np.flatnonzero(label.ravel() == chosen)
        voxel = np.array(np.unravel_index(flat[int(rng.integers(len(flat)))], label.shape))
        start = np.clip(voxel - patch // 2, 0, shape - patch)
    else:
        start = rng.integers(0, shape - patch + 1)
    x, y, z = (slice(s, s + n) for s, n in zip(start.tolist(), patch.tolist(), strict=True))
    return x, y, z
