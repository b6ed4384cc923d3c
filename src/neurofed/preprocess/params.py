"""What preprocessing does, as a frozen record with a stable id, and what it produces.

:class:`PreprocessParams` is parsed once (from a study or a plan) and then only read. Its
:attr:`~PreprocessParams.params_id` is a short hash of its canonical JSON: the name of the cache
folder today, the plan id later.

Examples
--------
>>> params = PreprocessParams(spacing=(1.0, 1.0, 1.0), spatial_shape=(128, 128, 128))
>>> PreprocessParams.from_json(params.to_json()) == params
True
>>> len(params.params_id)
12
>>> PreprocessParams(margin=-1)  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
neurofed.preprocess.params.PreprocessError: PreprocessParams.margin: got -1; give a whole ...
"""

from __future__ import annotations

import difflib
import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["BrainMaskMethod", "PreprocessError", "PreprocessParams", "PreprocessedCase"]

PARAMS_ID_LENGTH = 12
#: Flags added after the first release, written to JSON only when true (see PreprocessParams).
_LATER_FLAGS = ("bias_correction", "registration", "brain_extraction")


class PreprocessError(ValueError):
    """A case or a setting cannot be preprocessed; the message names what, the value and the fix."""


class BrainMaskMethod(StrEnum):
    """How :func:`neurofed.preprocess.ops.brain_mask` found the brain."""

    NONZERO = "nonzero"  # background exactly 0 (skull-stripped data such as BraTS)
    OTSU = "otsu"  # Otsu threshold of the smoothed channel mean, largest component, holes filled
    DEEPBET = "deepbet"  # a full head: deepbet's brain (preprocess.skull), zero outside it


def _positive_triple(name: str, value: Any, kind: type[int] | type[float]) -> tuple[Any, ...]:
    example = "(1.0, 1.0, 1.0)" if kind is float else "(128, 128, 128)"
    fix = f"give three positive numbers, e.g. {example}, or None"
    if isinstance(value, str | bytes) or not hasattr(value, "__len__") or len(value) != 3:
        raise PreprocessError(f"PreprocessParams.{name}: got {value!r}; {fix}")
    if any(isinstance(v, bool) or not isinstance(v, int | float) for v in value):
        raise PreprocessError(f"PreprocessParams.{name}: got {value!r}; {fix}")
    if kind is int and any(float(v) != int(v) for v in value):
        raise PreprocessError(f"PreprocessParams.{name}: got {value!r}; {fix} (whole voxels)")
    if any(not math.isfinite(v) or v <= 0 for v in value):
        raise PreprocessError(f"PreprocessParams.{name}: got {value!r}; {fix}")
    return tuple(kind(v) for v in value)


@dataclass(frozen=True)
class PreprocessParams:
    """Settings of :func:`neurofed.preprocess.ops.preprocess_case`.

    Parameters
    ----------
    spacing
        Target voxel size in mm along the RAS array axes; ``None`` keeps the native spacing.
    spatial_shape
        Final ``(X, Y, Z)`` after a centred crop or zero pad; ``None`` keeps the cropped shape.
    crop_to_brain
        Crop to the bounding box of the brain mask (plus ``margin``) before ``spatial_shape``.
    margin
        Voxels kept around the brain's bounding box when cropping.
    zscore
        Normalise each channel to mean 0, std 1 inside the brain mask, 0 outside.
    bias_correction
        N4 bias-field correction of every channel on its native grid (SimpleITK; see
        :mod:`neurofed.preprocess.harmonise` for the settings).
    registration
        Rigid co-registration (mutual information) of every channel to the first one, the
        task's reference modality, before resampling.
    brain_extraction
        When a case shows a full head (:func:`neurofed.preprocess.skull.detect_skull_stripped`
        says so from its shape, not from zero borders), find its brain with deepbet
        (:func:`~neurofed.preprocess.skull.extract_brain`, on the T1-weighted channel when there
        is one) and set every channel to 0 outside it, after registration; the brain mask is
        then deepbet's. Skull-stripped cases are left as they are.

    Notes
    -----
    ``bias_correction``, ``registration`` and ``brain_extraction`` came after the first
    release: :meth:`to_json` (and so :attr:`params_id`) leaves them out while they are false,
    so the ids of settings made before them, and the cache folders named by those ids, stay
    valid.

    Examples
    --------
    >>> PreprocessParams(spacing=[2, 2, 2]).spacing  # lists from JSON/TOML become tuples
    (2.0, 2.0, 2.0)
    """

    spacing: tuple[float, float, float] | None = None
    spatial_shape: tuple[int, int, int] | None = None
    crop_to_brain: bool = True
    margin: int = 0
    zscore: bool = True
    bias_correction: bool = False
    registration: bool = False
    brain_extraction: bool = False

    def __post_init__(self) -> None:
        if self.spacing is not None:
            object.__setattr__(self, "spacing", _positive_triple("spacing", self.spacing, float))
        if self.spatial_shape is not None:
            shape = _positive_triple("spatial_shape", self.spatial_shape, int)
            object.__setattr__(self, "spatial_shape", shape)
        for name in ("crop_to_brain", "zscore", *_LATER_FLAGS):
            value = getattr(self, name)
            if not isinstance(value, bool | np.bool_):
                raise PreprocessError(f"PreprocessParams.{name}: got {value!r}; give true or false")
            object.__setattr__(self, name, bool(value))
        margin = self.margin
        if isinstance(margin, bool) or not isinstance(margin, int | np.integer) or margin < 0:
            raise PreprocessError(
                f"PreprocessParams.margin: got {margin!r}; give a whole number of voxels >= 0"
            )
        object.__setattr__(self, "margin", int(margin))

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types: lists for tuples, ``None`` kept; later flags only when true.

        Examples
        --------
        >>> sorted(PreprocessParams(bias_correction=True).to_json())
        ['bias_correction', 'crop_to_brain', 'margin', 'spacing', 'spatial_shape', 'zscore']
        """
        data: dict[str, Any] = {
            "spacing": list(self.spacing) if self.spacing is not None else None,
            "spatial_shape": list(self.spatial_shape) if self.spatial_shape is not None else None,
            "crop_to_brain": self.crop_to_brain,
            "margin": self.margin,
            "zscore": self.zscore,
        }
        for name in _LATER_FLAGS:
            if getattr(self, name):
                data[name] = True
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PreprocessParams:
        """Parse :meth:`to_json` output; missing fields take their defaults, unknown ones fail.

        Examples
        --------
        >>> PreprocessParams.from_json({"spacnig": [1, 1, 1]})  # doctest: +ELLIPSIS
        Traceback (most recent call last):
        ...
        neurofed.preprocess.params.PreprocessError: ... 'spacnig'; did you mean 'spacing'?
        """
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                close = difflib.get_close_matches(str(key), known, n=1)
                hint = f"did you mean {close[0]!r}?" if close else f"known fields: {known}"
                raise PreprocessError(f"PreprocessParams: unknown field {key!r}; {hint}")
        values = dict(data)
        for name in ("spacing", "spatial_shape"):
            if isinstance(values.get(name), list):
                values[name] = tuple(values[name])
        return cls(**values)

    @property
    def params_id(self) -> str:
        """First 12 hex digits of the SHA-256 of the canonical (sorted, compact) JSON."""
        canonical = json.dumps(self.to_json(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode("utf-8")).hexdigest()[:PARAMS_ID_LENGTH]


@dataclass(frozen=True, eq=False)
class PreprocessedCase:
    """One case ready for a network, with what is needed to map results back to the scan.

    ``image`` is float32 ``(C, X, Y, Z)``; ``label`` uint8 ``(X, Y, Z)`` or ``None``; ``affine``
    maps the result's voxels to world (RAS+ mm). ``original_*`` describe the array as it came in
    (before reorientation), so a prediction can be resampled back onto the scan's grid.
    """

    image: npt.NDArray[np.float32]
    label: npt.NDArray[np.uint8] | None
    affine: npt.NDArray[np.float64]
    brain_mask_method: BrainMaskMethod
    original_spacing: tuple[float, float, float]
    original_shape: tuple[int, int, int]
    original_affine: npt.NDArray[np.float64]

    def __post_init__(self) -> None:
        if self.image.ndim != 4 or self.image.dtype != np.float32:
            raise PreprocessError(
                f"PreprocessedCase.image: got {self.image.dtype} of shape {self.image.shape}; "
                "expected float32 (C, X, Y, Z)"
            )
        if self.label is not None and (
            self.label.shape != self.image.shape[1:] or self.label.dtype != np.uint8
        ):
            raise PreprocessError(
                f"PreprocessedCase.label: got {self.label.dtype} of shape {self.label.shape}; "
                f"expected uint8 {self.image.shape[1:]}"
            )
        for name in ("affine", "original_affine"):
            if np.shape(getattr(self, name)) != (4, 4):
                raise PreprocessError(f"PreprocessedCase.{name}: expected a 4x4 matrix")
        object.__setattr__(self, "brain_mask_method", BrainMaskMethod(self.brain_mask_method))

    @property
    def spatial_shape(self) -> tuple[int, int, int]:
        _, x, y, z = self.image.shape
        return int(x), int(y), int(z)
