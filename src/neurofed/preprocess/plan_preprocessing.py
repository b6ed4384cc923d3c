"""What preprocessing a plan stands for, and each way it departs from nnU-Net v2's.

Every :class:`~neurofed.preprocess.plan.Plan` carries a :class:`PlanPreprocessing` record (its
``plan.json`` field ``preprocessing``) and the plain sentences of
:func:`departures_from_nnunet` (field ``departures_from_nnunet``), so a reader of ``plan.json``
sees how the data will be cropped, normalised and resampled without reading code, and where that
is not what nnU-Net v2 (``ExperimentPlanner``, ``3d_fullres``) would do on the same files.

What neurofed does (:mod:`neurofed.preprocess.ops`) against nnU-Net v2, field by field:

``crop``
    ``brain-mask-box``: the bounding box of :func:`~neurofed.preprocess.ops.brain_mask` — the
    voxels nonzero in some channel, holes filled, when at least 90 % of the array's faces are
    exactly 0; else an Otsu mask of the head. nnU-Net: ``crop_to_nonzero``, the box of the
    voxels nonzero in some channel, holes filled.
``normalization_mask`` / ``use_mask_for_norm``
    ``brain``: z-score inside that mask, 0 outside, every channel. nnU-Net: inside the nonzero
    mask only when its crop shrank the median case below 3/4 of its size, else over the whole
    cropped image.
``image_order``, ``label_order``, ``separate_z``
    1 (linear, MONAI ``Spacing``), 0 (nearest), never. nnU-Net: 3 (cubic spline), 1 (linear on
    one-hot labels), and order 0 along an axis whose spacing is over 3 times the others'.
``intensity_foreground``
    Labelled voxels, each labelled case weighted equally (fingerprint histograms). nnU-Net: the
    same, from a random sample of 10⁸ / cases voxels per case.

On zero-background (skull-stripped) data the two crops are the same box, so shapes and patches
agree with nnU-Net's up to the fingerprint's bins; on raw scans with a non-zero background they
do not, by design: nnU-Net then keeps the whole field of view.

Examples
--------
>>> from neurofed.preprocess.params import PreprocessParams
>>> record = PlanPreprocessing.of(PreprocessParams(), num_channels=2)
>>> record.crop.value, record.normalization_mask.value, record.use_mask_for_norm
('brain-mask-box', 'brain', (True, True))
>>> record.image_order, record.label_order, record.separate_z
(1, 0, False)
>>> PlanPreprocessing.from_json(record.to_json()) == record
True
>>> [d.split(":")[0] for d in departures_from_nnunet(record)]
['crop', 'normalisation', 'resampling', 'axes', 'fingerprint']
>>> PlanPreprocessing.from_json(record.to_json() | {"image_order": 3})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
ValueError: preprocessing.image_order = 3, but this neurofed's is 1; the plan was made by ...
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass, fields
from enum import StrEnum
from typing import Any

from neurofed.preprocess.fingerprint import DEFAULT_SPEC, FingerprintSpec
from neurofed.preprocess.params import PreprocessParams

__all__ = [
    "BrainMaskRule",
    "CropRule",
    "IntensityForeground",
    "Normalization",
    "NormalizationMask",
    "PlanPreprocessing",
    "departures_from_nnunet",
    "known_fields",
]


class CropRule(StrEnum):
    """What a case is cropped to before training."""

    BRAIN_MASK_BOX = "brain-mask-box"  # bounding box of ops.brain_mask (+ the margin)
    NONE = "none"


class BrainMaskRule(StrEnum):
    """How :func:`neurofed.preprocess.ops.brain_mask` finds the brain (crop and normalisation)."""

    NONZERO_ELSE_OTSU = "nonzero-else-otsu"  # nonzero if >= 90 % of the faces are 0, else Otsu


class Normalization(StrEnum):
    """Intensity normalisation per case and channel."""

    ZSCORE = "zscore"
    NONE = "none"


class NormalizationMask(StrEnum):
    """Which voxels the normalisation's mean and std come from."""

    BRAIN = "brain"  # the brain mask; voxels outside it are set to 0
    NONE = "none"  # no normalisation


class IntensityForeground(StrEnum):
    """Which voxels the fingerprint's intensity statistics describe."""

    LABELLED_CASES_EQUAL = "label>0, each labelled case weighted equally"


#: Resampling as :func:`neurofed.preprocess.ops.resample_to_spacing` does it (fixed in code).
_RESAMPLING: Mapping[str, Any] = {
    "image_interpolation": "linear",
    "image_order": 1,
    "label_interpolation": "nearest",
    "label_order": 0,
    "separate_z": False,
}
#: Fields no plan can change: they describe this neurofed's code.
_FIXED: Mapping[str, Any] = {
    "brain_mask": BrainMaskRule.NONZERO_ELSE_OTSU,
    "intensity_foreground": IntensityForeground.LABELLED_CASES_EQUAL,
    **_RESAMPLING,
}


@dataclass(frozen=True)
class PlanPreprocessing:
    """The preprocessing a plan's cases get (the ``preprocessing`` field of ``plan.json``).

    Attributes
    ----------
    crop, crop_margin
        :class:`CropRule` and the voxels kept around the box.
    brain_mask
        :class:`BrainMaskRule`: the mask the crop and the normalisation use.
    normalization, normalization_mask
        :class:`Normalization` of every channel and :class:`NormalizationMask`.
    use_mask_for_norm
        Per channel, nnU-Net's name for "normalised inside the mask only".
    image_interpolation, image_order, label_interpolation, label_order, separate_z
        Resampling to the target spacing (no separate-z rule in neurofed).
    bias_correction, registration
        N4 and rigid co-registration before resampling (neurofed's own steps).
    brain_extraction
        deepbet's brain of cases that show a full head, 0 outside it (neurofed's own step;
        plans made before it have none: false).
    intensity_foreground
        :class:`IntensityForeground`: what the fingerprint's intensity statistics describe.
    """

    crop: CropRule
    crop_margin: int
    brain_mask: BrainMaskRule
    normalization: Normalization
    normalization_mask: NormalizationMask
    use_mask_for_norm: tuple[bool, ...]
    image_interpolation: str
    image_order: int
    label_interpolation: str
    label_order: int
    separate_z: bool
    bias_correction: bool
    registration: bool
    intensity_foreground: IntensityForeground
    brain_extraction: bool = False

    def __post_init__(self) -> None:
        set_ = object.__setattr__
        kinds: dict[str, type[StrEnum]] = {
            "crop": CropRule,
            "brain_mask": BrainMaskRule,
            "normalization": Normalization,
            "normalization_mask": NormalizationMask,
            "intensity_foreground": IntensityForeground,
        }
        for name, kind in kinds.items():
            value = getattr(self, name)
            try:
                set_(self, name, kind(value))
            except ValueError:
                allowed = ", ".join(repr(k.value) for k in kind)
                raise ValueError(
                    f"preprocessing.{name} = {value!r} is unknown; this neurofed knows {allowed}"
                ) from None
        for name, value in _FIXED.items():
            if getattr(self, name) != value or type(getattr(self, name)) is not type(value):
                raise ValueError(
                    f"preprocessing.{name} = {getattr(self, name)!r}, but this neurofed's is "
                    f"{value!r}; the plan was made by another neurofed version — plan again "
                    "with this one"
                )
        margin = self.crop_margin
        if isinstance(margin, bool) or not isinstance(margin, int) or margin < 0:
            raise ValueError(f"preprocessing.crop_margin = {margin!r}: give voxels >= 0")
        masks = tuple(self.use_mask_for_norm)
        if not masks or any(not isinstance(m, bool) for m in masks):
            raise ValueError(f"preprocessing.use_mask_for_norm = {masks!r}: one bool per channel")
        set_(self, "use_mask_for_norm", masks)
        zscore = self.normalization is Normalization.ZSCORE
        expected_mask = NormalizationMask.BRAIN if zscore else NormalizationMask.NONE
        if self.normalization_mask is not expected_mask or any(m != zscore for m in masks):
            raise ValueError(
                f"preprocessing: normalization {self.normalization.value!r} goes with "
                f"normalization_mask {expected_mask.value!r} and use_mask_for_norm {zscore} "
                f"for every channel, not {self.normalization_mask.value!r} and {masks}"
            )
        for name in ("bias_correction", "registration", "brain_extraction"):
            if not isinstance(getattr(self, name), bool):
                raise ValueError(f"preprocessing.{name} = {getattr(self, name)!r}: give a bool")

    @classmethod
    def of(cls, params: PreprocessParams, num_channels: int) -> PlanPreprocessing:
        """The record of what :func:`~neurofed.preprocess.ops.preprocess_case` does with
        ``params`` (its spacing and shape aside) to cases of ``num_channels`` channels."""
        zscore = params.zscore
        return cls(
            crop=CropRule.BRAIN_MASK_BOX if params.crop_to_brain else CropRule.NONE,
            crop_margin=params.margin if params.crop_to_brain else 0,
            normalization=Normalization.ZSCORE if zscore else Normalization.NONE,
            normalization_mask=NormalizationMask.BRAIN if zscore else NormalizationMask.NONE,
            use_mask_for_norm=(zscore,) * num_channels,
            bias_correction=params.bias_correction,
            registration=params.registration,
            brain_extraction=params.brain_extraction,
            **_FIXED,
        )

    def to_json(self) -> dict[str, Any]:
        """Plain JSON types (enums as their values, tuples as lists); ``brain_extraction`` only
        when true, so plans written before it read and hash as they did."""
        out: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name == "brain_extraction" and not value:
                continue
            out[f.name] = list(value) if isinstance(value, tuple) else value
            if isinstance(value, StrEnum):
                out[f.name] = value.value
        return out

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> PlanPreprocessing:
        """Parse :meth:`to_json` output; unknown, missing or impossible values raise
        ``ValueError`` naming the field."""
        values = known_fields(cls, data, "preprocessing")
        later = {"brain_extraction"}  # fields added after plans were first written
        missing = [f.name for f in fields(cls) if f.name not in values and f.name not in later]
        if missing:
            raise ValueError(f"preprocessing: missing field(s) {missing}")
        if isinstance(values["use_mask_for_norm"], list):
            values["use_mask_for_norm"] = tuple(values["use_mask_for_norm"])
        return cls(**values)


def known_fields(
    cls: type, data: object, where: str, error: type[ValueError] = ValueError
) -> dict[str, Any]:
    """``data`` as keyword arguments of the dataclass ``cls``, once it is a JSON object with no
    field ``cls`` lacks (an unknown one is named, with the closest known one); raises ``error``
    prefixed with ``where``."""
    if not isinstance(data, Mapping):
        raise error(f"{where}: expected a JSON object, got {type(data).__name__}")
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            close = difflib.get_close_matches(str(key), names, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known fields: {names}"
            raise error(f"{where}: unknown field {key!r}; {hint}")
    return dict(data)


def departures_from_nnunet(
    record: PlanPreprocessing, spec: FingerprintSpec = DEFAULT_SPEC
) -> tuple[str, ...]:
    """Each way a plan with ``record`` (from fingerprints with ``spec``'s bins) departs from
    what nnU-Net v2's ``ExperimentPlanner`` and preprocessing would do on the same files, as a
    short sentence that starts with the topic (``crop:``, ``normalisation:`` …)."""
    out: list[str] = []
    if record.brain_extraction:
        out.append(
            "brain extraction: a case that shows a full head gets deepbet's brain and 0 outside "
            "it before anything else is measured; nnU-Net has no such step and expects "
            "skull-stripped data, or keeps the head"
        )
    if record.crop is CropRule.BRAIN_MASK_BOX:
        out.append(
            "crop: to the bounding box of neurofed's brain mask; on zero-background "
            "(skull-stripped) data that is nnU-Net's nonzero box, but on scans whose background "
            "is not exactly 0 it is an Otsu head box where nnU-Net keeps the whole field of "
            "view, so the median shape, patch and batch size differ from nnU-Net's"
            + (f"; {record.crop_margin} voxel(s) of margin kept" if record.crop_margin else "")
        )
    else:
        out.append("crop: none, where nnU-Net crops to the box of the nonzero voxels")
    if record.normalization is Normalization.ZSCORE:
        out.append(
            "normalisation: z-score per case and channel over the brain mask only, 0 outside "
            "(use_mask_for_norm true for every channel); nnU-Net uses the mask only when its "
            "crop shrank the median case below 3/4 of its size, else z-scores the whole "
            "cropped image, background included"
        )
    else:
        out.append("normalisation: none, where nnU-Net z-scores every MRI channel")
    out.append(
        "resampling: images linear (order 1), labels nearest (order 0), no separate-z rule; "
        "nnU-Net resamples images with cubic splines (order 3), labels linearly on one-hot "
        "maps (order 1), and with order 0 along an axis whose spacing is over 3 times the others'"
    )
    out.append(
        "axes: reoriented to RAS and planned in RAS order without transposition; nnU-Net keeps "
        "the files' voxel order and puts the axis of largest spacing first (the same network "
        "up to the order of its axes)"
    )
    out.append(
        "fingerprint: fixed-bin histograms (all a site may share): spacings within "
        f"{spec.spacing.half_bin:g} mm, extents within {spec.extent.half_bin:g} mm and "
        f"intensity percentiles within {spec.intensity.half_bin:g} of the exact values; the "
        "intensity statistics weigh each labelled case equally, as nnU-Net's random sample of "
        "10^8 / cases foreground voxels per case does on average"
    )
    if record.bias_correction:
        out.append("bias correction: N4 on every channel before resampling; nnU-Net does none")
    if record.registration:
        out.append(
            "registration: every channel rigidly co-registered to the first; nnU-Net expects "
            "aligned channels and does none"
        )
    return tuple(out)
