"""A shallow marker baseline: hand-crafted features of a glioma case + logistic regression.

Where :mod:`~neurofed.phantom.oracle` reads the tumour's latents, this baseline reads only what
was written: the four images and the BraTS 2021 label map. It is a ceiling-type baseline — the
features are measured inside the *ground-truth* label map, which a deployed model would have to
segment first.

Features (:data:`SHALLOW_FEATURES`) of one case, intensities divided by the median of the
normal-appearing brain (inside the brain, outside the tumour) of the same image, so that sites'
scanner scales cancel:

- sub-region volumes (mL) of NCR (label 1), ED (2), ET (4), TC and WT, the enhancing share of
  the core, the oedema's share of the whole tumour and the envelope-to-core radius ratio
  ``(WT / TC)^(1/3)``;
- per modality, the mean intensity in NCR, ET, ED and TC and the coefficient of variation in
  NCR (texture);
- ratios for named signs: T1CE / T1 in the core (enhancement), T2 / FLAIR in the core (the
  T2-FLAIR mismatch sign), FLAIR of the oedema minus that of the core (the mismatch's bright rim);
- T2-dark foci in the core (voxels below half the core's median T2): their number (connected
  components) and share of the core (calcifications);
- boundary sharpness: the mean gradient magnitude at the core's (T2) and the whole tumour's
  (FLAIR) boundary over the contrast across it (an ill-defined margin gives small values);
- location: the whole tumour's centroid relative to the brain's, over the brain's half-extent
  (``|x|``, ``y`` anterior, ``z`` superior in RAS).

A missing sub-region gives volume 0, mean 1 (like the normal brain) and variation 0, so every
feature is finite.

Examples
--------
>>> from neurofed.keys import Modality
>>> label = np.zeros((12, 12, 12), np.uint8)
>>> label[4:8, 4:8, 4:8] = 2
>>> label[5:7, 5:7, 5:7] = 1
>>> images = {m: np.where(label > 0, 2.0, 1.0).astype(np.float32) for m in Modality}
>>> features = case_features(images, label, np.diag([2.0, 2.0, 2.0, 1.0]))
>>> list(features) == list(SHALLOW_FEATURES), features["tc_ml"], features["t2_mean_ed"]
(True, 0.064, 2.0)
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt
from scipy import ndimage
from sklearn.linear_model import LogisticRegressionCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from neurofed.data.nifti import read_image, read_label, voxel_spacing
from neurofed.keys import Modality, PhantomPreset
from neurofed.phantom.writers import LABEL, case_paths

__all__ = [
    "SHALLOW_FEATURES",
    "SHALLOW_MODALITIES",
    "case_features",
    "read_case_features",
    "shallow_scores",
]

F32 = npt.NDArray[np.float32]
F64 = npt.NDArray[np.float64]
U8 = npt.NDArray[np.uint8]
Mask = npt.NDArray[np.bool_]

SHALLOW_MODALITIES: tuple[Modality, ...] = (Modality.T1, Modality.T1CE, Modality.T2, Modality.FLAIR)
_REGIONS = ("ncr", "et", "ed", "tc")
_DARK = 0.5  # a T2-dark focus: below this share of the core's median T2

#: Feature names, in the order :func:`case_features` returns them.
SHALLOW_FEATURES: tuple[str, ...] = (
    "wt_ml",
    "tc_ml",
    "et_ml",
    "ncr_ml",
    "ed_ml",
    "et_share_of_tc",
    "ed_share_of_wt",
    "envelope_ratio",
    *(f"{m.value.lower()}_mean_{r}" for m in SHALLOW_MODALITIES for r in _REGIONS),
    *(f"{m.value.lower()}_cv_ncr" for m in SHALLOW_MODALITIES),
    "t1ce_over_t1_tc",
    "t2_over_flair_tc",
    "flair_ed_minus_tc",
    "dark_foci",
    "dark_share_of_tc",
    "edge_t2_tc",
    "edge_flair_wt",
    "centre_abs_x",
    "centre_y",
    "centre_z",
)


def _mean(image: F64, mask: Mask, empty: float = 1.0) -> float:
    return float(image[mask].mean()) if mask.any() else empty


def _cv(image: F64, mask: Mask) -> float:
    if mask.sum() < 2:
        return 0.0
    values = image[mask]
    return float(values.std() / max(abs(float(values.mean())), 1e-6))


def _edge(image: F64, region: Mask, spacing: tuple[float, float, float]) -> float:
    """Mean gradient magnitude on ``region``'s boundary over the contrast across it (1/mm)."""
    inner = region & ~ndimage.binary_erosion(region)
    outer = ndimage.binary_dilation(region) & ~region
    if not inner.any() or not outer.any():
        return 0.0
    gradient = np.sqrt(sum(g**2 for g in np.gradient(image, *spacing)))
    contrast = abs(float(image[inner].mean()) - float(image[outer].mean()))
    boundary = inner | outer
    return float(gradient[boundary].mean()) / max(contrast, 1e-3)


def case_features(images: Mapping[Modality, F32], label: U8, affine: F64) -> dict[str, float]:
    """The :data:`SHALLOW_FEATURES` of one case (BraTS 2021 ``label``, any orientation)."""
    missing = [m.value for m in SHALLOW_MODALITIES if m not in images]
    if missing:
        raise ValueError(f"case_features needs {', '.join(missing)} too; got {sorted(images)}")
    spacing = voxel_spacing(affine)
    ml = float(np.prod(spacing)) / 1000.0
    brain = np.zeros(label.shape, dtype=bool)
    for m in SHALLOW_MODALITIES:
        brain |= images[m] > 0
    ncr, ed, et = label == 1, label == 2, label == 4
    tc = ncr | et
    wt = tc | ed
    normal = brain & ~wt
    norm: dict[Modality, F64] = {}
    for m in SHALLOW_MODALITIES:
        image = images[m].astype(np.float64)
        reference = float(np.median(image[normal])) if normal.any() else 1.0
        norm[m] = image / max(reference, 1e-6)
    out: dict[str, float] = {}
    volumes = {name: float(mask.sum()) * ml for name, mask in (("wt", wt), ("tc", tc))}
    volumes |= {name: float(mask.sum()) * ml for name, mask in (("et", et), ("ncr", ncr))}
    volumes["ed"] = float(ed.sum()) * ml
    out |= {f"{name}_ml": value for name, value in volumes.items()}
    out["et_share_of_tc"] = volumes["et"] / volumes["tc"] if volumes["tc"] else 0.0
    out["ed_share_of_wt"] = volumes["ed"] / volumes["wt"] if volumes["wt"] else 0.0
    out["envelope_ratio"] = (volumes["wt"] / volumes["tc"]) ** (1 / 3) if volumes["tc"] else 1.0
    regions = {"ncr": ncr, "et": et, "ed": ed, "tc": tc}
    for m in SHALLOW_MODALITIES:
        for r in _REGIONS:
            out[f"{m.value.lower()}_mean_{r}"] = _mean(norm[m], regions[r])
    for m in SHALLOW_MODALITIES:
        out[f"{m.value.lower()}_cv_ncr"] = _cv(norm[m], ncr)
    t1, t1ce, t2, flair = (norm[m] for m in SHALLOW_MODALITIES)
    out["t1ce_over_t1_tc"] = _mean(t1ce, tc) / max(_mean(t1, tc), 1e-6)
    out["t2_over_flair_tc"] = _mean(t2, tc) / max(_mean(flair, tc), 1e-6)
    out["flair_ed_minus_tc"] = _mean(flair, ed) - _mean(flair, tc) if ed.any() else 0.0
    dark = tc & (t2 < _DARK * float(np.median(t2[tc]))) if tc.any() else tc
    out["dark_foci"] = float(ndimage.label(dark)[1])
    out["dark_share_of_tc"] = float(dark.sum()) / max(float(tc.sum()), 1.0)
    out["edge_t2_tc"] = _edge(t2, tc, spacing)
    out["edge_flair_wt"] = _edge(flair, wt, spacing)
    out |= _location(wt, brain, affine)
    return {name: out[name] for name in SHALLOW_FEATURES}


def _location(wt: Mask, brain: Mask, affine: F64) -> dict[str, float]:
    """The tumour's centroid relative to the brain's, over the brain's half-extent (RAS)."""
    if not wt.any() or not brain.any():
        return {"centre_abs_x": 0.0, "centre_y": 0.0, "centre_z": 0.0}
    points = np.argwhere(brain).astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]  # (P, 3)
    tumour = np.argwhere(wt).astype(np.float64) @ affine[:3, :3].T + affine[:3, 3]
    centre, half = points.mean(axis=0), np.ptp(points, axis=0) / 2.0
    x, y, z = (tumour.mean(axis=0) - centre) / np.maximum(half, 1e-6)
    return {"centre_abs_x": abs(float(x)), "centre_y": float(y), "centre_z": float(z)}


def read_case_features(site_dir: Path, subject_id: str) -> dict[str, float]:
    """:func:`case_features` of one written phantom glioma case (its label map is needed)."""
    paths = case_paths(PhantomPreset.GLIOMA, subject_id)
    images = {m: read_image(Path(site_dir) / paths[m]).array for m in SHALLOW_MODALITIES}
    label = read_label(Path(site_dir) / paths[LABEL])
    return case_features(
        {m: np.asarray(v, dtype=np.float32) for m, v in images.items()},
        np.asarray(label.array, dtype=np.uint8),
        label.affine,
    )


def shallow_scores(train_x: F64, train_y: npt.ArrayLike, test_x: F64) -> F64:
    """Standardise, fit an L2 logistic regression (strength by 5-fold AUC) on the training
    cases and return the positive-class scores of the test cases; ``nan`` scores when the
    training cases hold one class only (or too few of one for the folds)."""
    y = np.asarray(train_y).astype(np.int64)
    if np.bincount(y, minlength=2).min() < 5:
        return np.full(len(test_x), math.nan)
    model = make_pipeline(
        StandardScaler(),
        LogisticRegressionCV(
            Cs=np.logspace(-3, 1, 9),
            l1_ratios=(0.0,),
            cv=5,
            scoring="roc_auc",
            max_iter=5000,
            use_legacy_attributes=False,
        ),
    )
    with threadpool_limits(limits=1):  # small problems; threads only contend on busy machines
        model.fit(train_x, y)
        probabilities = model.predict_proba(test_x)  # (N, 2)
    return np.asarray(probabilities[:, 1], dtype=np.float64)
