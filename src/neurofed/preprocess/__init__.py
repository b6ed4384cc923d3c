"""Training-time preprocessing: pure ops, an on-disk cache of their results, and augmentation.

Site-local training turns one case's arrays into network-ready arrays with
:func:`preprocess_case`, keeps them in a :class:`PreprocessedCache` keyed by
:attr:`PreprocessParams.params_id`, and augments them with :func:`sample_augmentation` /
:func:`apply_augmentation` and :func:`sample_patch`, all driven by an explicit
``numpy.random.Generator``. Before training, each site sends a :class:`Fingerprint`
(:func:`compute_site_fingerprint`); the server merges them (:func:`merge_fingerprints`) and makes
a :class:`Plan` (:func:`make_plan`). At each site, ``neurofed site preprocess``
(:mod:`~neurofed.preprocess.pipeline`) fills the same cache with the harmonised steps (N4 and
rigid co-registration, :mod:`~neurofed.preprocess.harmonise`) and judges every case
(:mod:`~neurofed.preprocess.qc`).

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
from neurofed.preprocess.fingerprint import (
    Fingerprint,
    FingerprintError,
    FingerprintSpec,
    compute_site_fingerprint,
    merge_fingerprints,
)
from neurofed.preprocess.harmonise import N4Settings, RegistrationSettings
from neurofed.preprocess.ops import (
    CaseArrays,
    HarmonisedCase,
    brain_mask,
    crop_or_pad,
    crop_to_mask,
    finish_case,
    harmonise_case,
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
from neurofed.preprocess.plan import Plan, PlanError, PlannerSettings, make_plan
from neurofed.preprocess.qc import QCConfig

__all__ = [
    "AugmentConfig",
    "AugmentParams",
    "BrainMaskMethod",
    "CaseArrays",
    "Fingerprint",
    "FingerprintError",
    "FingerprintSpec",
    "HarmonisedCase",
    "N4Settings",
    "Plan",
    "PlanError",
    "PlannerSettings",
    "PreprocessError",
    "PreprocessParams",
    "PreprocessedCache",
    "PreprocessedCase",
    "QCConfig",
    "RegistrationSettings",
    "apply_augmentation",
    "brain_mask",
    "compute_site_fingerprint",
    "crop_or_pad",
    "crop_to_mask",
    "finish_case",
    "harmonise_case",
    "make_plan",
    "merge_fingerprints",
    "preprocess_case",
    "reorient_to_ras",
    "resample_to_spacing",
    "safe_file_stem",
    "sample_augmentation",
    "sample_patch",
    "zscore_in_mask",
]
