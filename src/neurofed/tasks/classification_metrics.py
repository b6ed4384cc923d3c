"""Classification metrics as pure functions: confusion counts and their reports, AUC.

Binary markers report accuracy, recall (sensitivity), F1, specificity from the summed confusion
counts and ROC AUC from the per-case scores (scikit-learn's ``roc_auc_score``). A ratio whose
denominator is 0 is NaN, and so is the AUC when the known cases hold only one class (see the
reported ``num_examples`` / ``num_positive`` to tell why).

Multi-class targets are reported one-vs-rest per class, plus a macro average (the mean over the
classes whose value is defined, as scikit-learn with ``zero_division=np.nan``) and the overall
accuracy.

Examples
--------
>>> import numpy as np
>>> scores, targets = np.array([0.9, 0.2, 0.6, 0.4]), np.array([1, 0, 0, 1])
>>> counts = binary_counts(scores, targets, threshold=0.5)
>>> counts.tolist()  # TP, FP, TN, FN
[1, 1, 1, 1]
>>> report = binary_report(counts, scores, targets)
>>> report["accuracy"], report["auc"]
(0.5, 0.75)
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from sklearn.metrics import roc_auc_score

from neurofed.keys import MetricName
from neurofed.tasks.segmentation_metrics import ratio

__all__ = [
    "auc_or_nan",
    "binary_counts",
    "binary_report",
    "binary_report_with_auc",
    "multiclass_confusion",
    "multiclass_report",
    "multiclass_report_with_aucs",
]

IntArray = npt.NDArray[Any]  # int64 counts / classes
FloatArray = npt.NDArray[Any]  # float64 scores


def auc_or_nan(targets: npt.ArrayLike, scores: npt.ArrayLike) -> float:
    """ROC AUC of binary ``targets`` (0/1) against ``scores``; NaN unless both classes occur."""
    t = np.asarray(targets)
    if t.size == 0 or np.unique(t).size < 2:
        return math.nan
    return float(roc_auc_score(t, np.asarray(scores, dtype=np.float64)))


def binary_counts(scores: FloatArray, targets: IntArray, *, threshold: float) -> IntArray:
    """``[TP, FP, TN, FN]`` with prediction ``score >= threshold``."""
    predicted = np.asarray(scores) >= threshold
    actual = np.asarray(targets).astype(bool)
    return np.array(
        [
            np.count_nonzero(predicted & actual),
            np.count_nonzero(predicted & ~actual),
            np.count_nonzero(~predicted & ~actual),
            np.count_nonzero(~predicted & actual),
        ],
        dtype=np.int64,
    )


def binary_report(counts: IntArray, scores: FloatArray, targets: IntArray) -> dict[str, float]:
    """Metrics of one binary target from ``[TP, FP, TN, FN]`` counts and per-case scores."""
    return binary_report_with_auc(counts, auc_or_nan(targets, scores))


def binary_report_with_auc(counts: IntArray, auc: float) -> dict[str, float]:
    """Metrics of one binary target from ``[TP, FP, TN, FN]`` counts and its ROC AUC."""
    tp, fp, tn, fn = (int(c) for c in counts)
    return {
        MetricName.AUC: auc,
        MetricName.ACCURACY: ratio(tp + tn, tp + fp + tn + fn),
        MetricName.RECALL: ratio(tp, tp + fn),
        MetricName.SPECIFICITY: ratio(tn, tn + fp),
        MetricName.F1: ratio(2 * tp, 2 * tp + fp + fn),
        MetricName.NUM_EXAMPLES: float(tp + fp + tn + fn),
        MetricName.NUM_POSITIVE: float(tp + fn),
    }


def multiclass_confusion(probabilities: FloatArray, targets: IntArray) -> IntArray:
    """``(K, K)`` counts (rows: true class, columns: arg-max predicted class)."""
    k = probabilities.shape[1]
    predicted = np.argmax(probabilities, axis=1)
    confusion = np.zeros((k, k), dtype=np.int64)
    np.add.at(confusion, (np.asarray(targets, dtype=np.int64), predicted), 1)
    return confusion


def _macro(values: Sequence[float]) -> float:
    defined = [v for v in values if not math.isnan(v)]
    return math.fsum(defined) / len(defined) if defined else math.nan


def multiclass_report(
    confusion: IntArray,
    probabilities: FloatArray,
    targets: IntArray,
    class_names: Sequence[str],
) -> dict[str, float]:
    """One-vs-rest metrics per class (``<class>/<metric>``), macro averages and accuracy.

    >>> import numpy as np
    >>> p = np.array([[0.8, 0.1, 0.1], [0.2, 0.7, 0.1], [0.1, 0.3, 0.6], [0.5, 0.4, 0.1]])
    >>> t = np.array([0, 1, 2, 1])
    >>> r = multiclass_report(multiclass_confusion(p, t), p, t, ["II", "III", "IV"])
    >>> r["accuracy"], r["III/recall"], r["recall"]
    (0.75, 0.5, 0.8333333333333334)
    """
    aucs = [
        auc_or_nan(np.asarray(targets) == k, probabilities[:, k]) for k in range(len(class_names))
    ]
    return multiclass_report_with_aucs(confusion, aucs, class_names)


def multiclass_report_with_aucs(
    confusion: IntArray, aucs: Sequence[float], class_names: Sequence[str]
) -> dict[str, float]:
    """As :func:`multiclass_report`, with each class's one-vs-rest AUC given."""
    total = int(confusion.sum())
    report: dict[str, float] = {}
    per_class: dict[str, list[float]] = {}
    for k, name in enumerate(class_names):
        tp = int(confusion[k, k])
        fn = int(confusion[k].sum()) - tp
        fp = int(confusion[:, k].sum()) - tp
        tn = total - tp - fn - fp
        values = {
            MetricName.AUC: aucs[k],
            MetricName.RECALL: ratio(tp, tp + fn),
            MetricName.SPECIFICITY: ratio(tn, tn + fp),
            MetricName.F1: ratio(2 * tp, 2 * tp + fp + fn),
        }
        for metric, value in values.items():
            report[f"{name}/{metric}"] = value
            per_class.setdefault(metric, []).append(value)
        report[f"{name}/{MetricName.NUM_POSITIVE}"] = float(tp + fn)
    for name_of_metric, values_of_metric in per_class.items():
        report[name_of_metric] = _macro(values_of_metric)
    report[MetricName.ACCURACY] = ratio(int(np.trace(confusion)), total)
    report[MetricName.NUM_EXAMPLES] = float(total)
    return report
