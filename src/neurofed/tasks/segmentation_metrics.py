"""Segmentation metrics as pure functions on numpy masks: counts, Dice, HD95, lesion detection.

Conventions (used by every segmentation task):

- **Dice** of a case is ``2·TP / (2·TP + FP + FN)``; when prediction and reference are both
  empty it is 1 (as MONAI's ``DiceMetric(ignore_empty=False)`` and BraTS). The pooled Dice uses the
  counts summed over cases.
- **Sensitivity** ``TP / (TP + FN)`` and **precision** ``TP / (TP + FP)`` are NaN when undefined.
- **HD95** of a case is MONAI's ``compute_hausdorff_distance(percentile=95)`` in mm (``spacing``);
  0 when both masks are empty, and ``empty_value`` when exactly one is (BraTS uses 373.13 mm,
  the diagonal of its 240 × 240 × 155 mm volume).
- **Lesion detection** labels connected components with ``scipy.ndimage.label`` and the
  structuring element ``generate_binary_structure(3, connectivity)``: connectivity 1 joins face
  neighbours (6-neighbourhood), 2 also edges (18), 3 also corners (26, the default). Matching
  follows the rule of the MSSEG-2016 challenge (Commowick et al., Sci. Rep. 8:13650, 2018, the
  rule of Anima's ``animaSegPerfAnalyzer``), applied both ways. A true lesion is **detected** when

  1. predicted voxels cover at least ``LESION_MIN_OVERLAP`` (10 %) of it, and
  2. the predicted components overlapping it, taken by decreasing overlap until they hold
     ``LESION_OVERLAP_SHARE`` (70 %) of that overlap, each have at most ``LESION_MAX_OUTSIDE``
     (65 %) of their voxels outside every true lesion.

  A predicted component is a true positive under the same rule with the roles swapped (true
  lesions cover ≥ 10 % of it, and the true lesions doing so lie ≤ 65 % outside the prediction);
  every other predicted component is a **false positive**. So one huge blob over every lesion
  detects nothing (it lies mostly outside them) and is itself a false positive, where "any
  overlap" rules (ISBI 2015) would score it lesion F1 = 1. Lesion F1 is
  ``2·TP / (2·TP + FP + FN)`` with TP the detected true lesions (1 when there are neither true
  nor predicted lesions).

Examples
--------
>>> import numpy as np
>>> pred = np.zeros((1, 4, 4, 4), bool); pred[0, 0, 0, :2] = True
>>> target = np.zeros((1, 4, 4, 4), bool); target[0, 0, 0, 1:3] = True
>>> counts = confusion_counts(pred, target)
>>> counts.tolist(), dice_per_case(counts).tolist()
([[1, 1, 1]], [0.5])
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import torch
from monai.metrics.hausdorff_distance import compute_hausdorff_distance
from scipy import ndimage

__all__ = [
    "LESION_MAX_OUTSIDE",
    "LESION_MIN_OVERLAP",
    "LESION_OVERLAP_SHARE",
    "confusion_counts",
    "dice_from_counts",
    "dice_per_case",
    "fmean",
    "hd95_per_case",
    "lesion_counts",
    "pooled_dice",
    "ratio",
]

LESION_MIN_OVERLAP = 0.10
"""α: least fraction of a lesion (true or predicted) that the other mask must cover."""
LESION_MAX_OUTSIDE = 0.65
"""β: most fraction of a matching component that may lie outside the other mask's lesions."""
LESION_OVERLAP_SHARE = 0.70
"""γ: the largest overlapping components checked against β must hold this share of the overlap."""

BoolArray = npt.NDArray[np.bool_]
IntArray = npt.NDArray[np.int64]
FloatArray = npt.NDArray[np.float64]


def _check_masks(pred: BoolArray, target: BoolArray) -> None:
    if pred.shape != target.shape or pred.ndim != 4:
        raise ValueError(f"masks must both be (N, X, Y, Z); got {pred.shape} and {target.shape}")


def confusion_counts(pred: BoolArray, target: BoolArray) -> IntArray:
    """Per-case ``[TP, FP, FN]`` voxel counts of ``(N, X, Y, Z)`` boolean masks → ``(N, 3)``."""
    _check_masks(pred, target)
    axes = (1, 2, 3)
    tp = np.count_nonzero(pred & target, axis=axes)
    fp = np.count_nonzero(pred & ~target, axis=axes)
    fn = np.count_nonzero(~pred & target, axis=axes)
    return np.stack([tp, fp, fn], axis=1).astype(np.int64)  # (N, 3)


def dice_from_counts(tp: int, fp: int, fn: int) -> float:
    """``2·TP / (2·TP + FP + FN)``, 1 when both masks are empty.

    >>> dice_from_counts(0, 0, 0), dice_from_counts(1, 2, 0)
    (1.0, 0.5)
    """
    denominator = 2 * tp + fp + fn
    return 1.0 if denominator == 0 else 2 * tp / denominator


def pooled_dice(tp: int, fp: int, fn: int, cases: float) -> float:
    """Dice of counts summed over ``cases`` cases; NaN over none.

    Zero counts from no case are not two empty masks: a site that withholds its metrics
    (:func:`~neurofed.tasks.sharing.share_state`) sends zeros, which must not read as a
    perfect Dice.

    >>> pooled_dice(0, 0, 0, cases=3), pooled_dice(0, 0, 0, cases=0)
    (1.0, nan)
    """
    return math.nan if cases == 0 else dice_from_counts(tp, fp, fn)


def dice_per_case(counts: IntArray) -> FloatArray:
    """Dice of each row of ``(N, 3)`` ``[TP, FP, FN]`` counts → ``(N,)``."""
    return np.array([dice_from_counts(int(t), int(p), int(n)) for t, p, n in counts], np.float64)


def ratio(numerator: float, denominator: float) -> float:
    """``numerator / denominator``, NaN when the denominator is 0."""
    return math.nan if denominator == 0 else float(numerator) / float(denominator)


def fmean(values: npt.ArrayLike) -> float:
    """Exactly rounded mean (``math.fsum``), independent of the order; NaN when empty.

    >>> fmean([0.1] * 10), fmean([])
    (0.1, nan)
    """
    flat = np.asarray(values, dtype=np.float64).ravel()
    return math.nan if flat.size == 0 else math.fsum(flat.tolist()) / flat.size


def hd95_per_case(
    pred: BoolArray,
    target: BoolArray,
    *,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    empty_value: float = 373.13,
) -> FloatArray:
    """95% Hausdorff distance per case of ``(N, X, Y, Z)`` masks → ``(N,)`` (module conventions)."""
    _check_masks(pred, target)
    pred_any = pred.reshape(len(pred), -1).any(axis=1)
    target_any = target.reshape(len(target), -1).any(axis=1)
    out = np.where(pred_any == target_any, 0.0, float(empty_value)).astype(np.float64)
    both = np.flatnonzero(pred_any & target_any)
    if both.size:
        y_pred = torch.from_numpy(pred[both, None].astype(np.float32))  # (n, 1, X, Y, Z)
        y = torch.from_numpy(target[both, None].astype(np.float32))  # (n, 1, X, Y, Z)
        with warnings.catch_warnings():
            # MONAI 1.6 warns about an argument it passes to itself internally.
            warnings.filterwarnings("ignore", message=".*always_return_as_numpy.*")
            distances = compute_hausdorff_distance(
                y_pred, y, include_background=True, percentile=95, spacing=list(spacing)
            )  # (n, 1)
        out[both] = distances[:, 0].double().cpu().numpy()
    return out


def lesion_counts(pred: BoolArray, target: BoolArray, *, connectivity: int = 3) -> IntArray:
    """Per-case ``[detected, missed, false positive]`` lesion counts → ``(N, 3)``.

    Matching is the MSSEG-2016 rule of the module docstring, so the counts add up over cases and
    sites.

    >>> import numpy as np
    >>> target = np.zeros((1, 8, 8, 8), bool); target[0, 1, 1, 1] = target[0, 5, 5, 5] = True
    >>> pred = np.zeros_like(target); pred[0, 1, 1, 1:3] = True; pred[0, 3, 0, 0] = True
    >>> lesion_counts(pred, target).tolist()
    [[1, 1, 1]]
    >>> blob = np.zeros_like(target); blob[0, :7, :7, :7] = True  # covers both lesions
    >>> lesion_counts(blob, target).tolist()
    [[0, 2, 1]]
    """
    _check_masks(pred, target)
    if connectivity not in (1, 2, 3):
        raise ValueError(f"connectivity = {connectivity!r} is invalid: use 1, 2 or 3")
    structure = ndimage.generate_binary_structure(3, connectivity)
    rows = []
    for p, t in zip(pred, target, strict=True):
        true_components, n_true = ndimage.label(t, structure=structure)
        pred_components, n_pred = ndimage.label(p, structure=structure)
        # voxels of true component i (0: background) in predicted component j (0: background)
        flat = true_components.ravel().astype(np.int64) * (n_pred + 1) + pred_components.ravel()
        overlap = np.bincount(flat, minlength=(n_true + 1) * (n_pred + 1)).reshape(
            n_true + 1, n_pred + 1
        )  # (n_true + 1, n_pred + 1)
        detected = _matched(overlap)
        true_predictions = _matched(overlap.T)
        rows.append((detected, n_true - detected, n_pred - true_predictions))
    return np.array(rows, dtype=np.int64).reshape(len(pred), 3)


def _matched(overlap: IntArray) -> int:
    """Row components (row 0: background) matched by the column components (column 0:
    background) of an overlap table, under the MSSEG-2016 rule of the module docstring."""
    sizes = overlap.sum(axis=0)  # voxels of each column component
    outside = overlap[0] / np.maximum(sizes, 1)  # fraction of each column component in background
    matched = 0
    for row in overlap[1:]:
        hits = row[1:]
        covered = int(hits.sum())
        if covered > 0 and covered >= LESION_MIN_OVERLAP * int(row.sum()):
            matched += _mostly_inside(hits, covered, outside[1:])
    return matched


def _mostly_inside(hits: IntArray, covered: int, outside: FloatArray) -> bool:
    """Whether the components holding the largest ``LESION_OVERLAP_SHARE`` of ``hits`` each lie
    at most ``LESION_MAX_OUTSIDE`` outside the other mask."""
    share = 0.0
    for j in np.argsort(-hits, kind="stable"):
        if hits[j] == 0:
            break
        if outside[j] > LESION_MAX_OUTSIDE:
            return False
        share += int(hits[j]) / covered
        if share >= LESION_OVERLAP_SHARE:
            break
    return True
