"""Training-time preprocessing: pure ops, an on-disk cache of their results, and augmentation.

The site-local training engine turns one case's arrays into network-ready arrays with
:func:`preprocess_case`, keeps them in a :class:`PreprocessedCache` keyed by
:attr:`PreprocessParams.params_id`, and augments them with :func:`sample_augmentation` /
:func:`apply_augmentation` and :func:`sample_patch`, all driven by an explicit
``numpy.random.Generator``.

MONAI (and so torch) is imported only when resampling or augmenting, so that importing this
package stays fast for commands that only read the cache.
"""

from neurofed.preprocess.augment import (
    AugmentConfig,
    AugmentParams,
    apply_augmentation,
    sample_augmentation,
    sample_patch,
)
from neurofed.preprocess.cache import PreprocessedCache, safe_file_stem
from neurofed.preprocess.ops import (
    CaseArrays,
    brain_mask,
    crop_or_pad,
    crop_to_mask,
    preprocess_case,
    reorient_to_ras,
    resample_to_spacing,
    zscore_in_mask,
)
from neurofed.preprocess.params import (
    BrainMaskMethod,
    PreprocessedCase,
    PreprocessError,
    PreprocessParams,
)

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "BrainMaskMethod",
    "CaseArrays",
    "PreprocessError",
    "PreprocessParams",
    "PreprocessedCache",
    "PreprocessedCase",
    "apply_augmentation",
    "brain_mask",
    "crop_or_pad",
    "crop_to_mask",
    "preprocess_case",
    "reorient_to_ras",
    "resample_to_spacing",
    "safe_file_stem",
    "sample_augmentation",
    "sample_patch",
    "zscore_in_mask",
]
