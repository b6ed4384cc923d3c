"""The report's figures: matplotlib (Agg, no display), one concept per figure, as PNG data URIs.

Each figure reads in greyscale: series differ by line style and marker as well as colour, the
selected round is a dashed vertical line labelled in words, and every axis names its metric.

- :func:`round_curves` — per round, each site's training loss and its validation of the global
  model, the merged validation, the selected round marked;
- :func:`compare_curves` — the merged validation metric of several runs over rounds;
- :func:`case_distributions` — per model, the per-case values on the same cases (box and points);
- :func:`site_dots` — per model, its value at each site (the worst site is the lowest dot);
- :func:`roc_curves` — per marker, one ROC curve per site with its AUC and DeLong interval;
- :func:`bland_altman_plot` — a regression's predicted against true values with the identity
  line, and Bland–Altman's difference against mean with the bias and limits of agreement.

Examples
--------
>>> uri = case_distributions({"federated": [0.7, 0.8, 0.75], "local": [0.6, 0.7, 0.5]},
...                          "mean Dice")
>>> uri.startswith("data:image/png;base64,")
True
"""

from __future__ import annotations

import base64
import io
import math
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = [
    "bland_altman_plot",
    "case_distributions",
    "compare_curves",
    "roc_curves",
    "round_curves",
    "site_dots",
]

#: Line styles and markers cycled per series, so that greyscale prints keep them apart.
_STYLES = ("-", "--", "-.", ":")
_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _figure(width: float = 7.0, height: float = 3.2, columns: int = 1) -> tuple[Figure, Any]:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    figure, axes = plt.subplots(1, columns, figsize=(width, height), squeeze=False)
    return figure, axes[0]


def _uri(figure: Figure) -> str:
    from matplotlib import pyplot as plt

    buffer = io.BytesIO()
    figure.tight_layout()
    figure.savefig(buffer, format="png", dpi=110)
    plt.close(figure)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _style(k: int) -> dict[str, Any]:
    return {"linestyle": _STYLES[k % len(_STYLES)], "marker": _MARKERS[k % len(_MARKERS)]}


def _series(points: Sequence[tuple[int, float | None]]) -> tuple[list[int], list[float]]:
    kept = [(x, float(y)) for x, y in points if y is not None and math.isfinite(float(y))]
    return [x for x, _ in kept], [y for _, y in kept]


def round_curves(
    loss: Mapping[str, Sequence[tuple[int, float | None]]],
    validation: Mapping[str, Sequence[tuple[int, float | None]]],
    metric: str,
    selected: int | None,
) -> str:
    """Training loss (left) and validation ``metric`` (right) per round, one series per site
    (``validation`` may hold ``"all sites"``, the merged value, drawn in black)."""
    figure, axes = _figure(columns=2, width=9.0)
    for ax, series, label in ((axes[0], loss, "training loss"), (axes[1], validation, metric)):
        for k, (name, points) in enumerate(series.items()):
            x, y = _series(points)
            merged = name == "all sites"
            ax.plot(
                x,
                y,
                label=name,
                color="black" if merged else None,
                linewidth=2.2 if merged else 1.2,
                **_style(k),
            )
        if selected is not None:
            ax.axvline(selected, color="grey", linestyle="--", linewidth=1)
            ax.annotate(
                f"selected: round {selected}",
                (selected, 1.0),
                xycoords=("data", "axes fraction"),
                fontsize=7,
                ha="right",
                va="top",
                rotation=90,
            )
        ax.set_xlabel("round")
        ax.set_ylabel(label)
        ax.legend(fontsize=7)
    return _uri(figure)


def compare_curves(runs: Mapping[str, Sequence[tuple[int, float | None]]], metric: str) -> str:
    """The merged validation ``metric`` of several runs over rounds."""
    figure, axes = _figure()
    for k, (name, points) in enumerate(runs.items()):
        x, y = _series(points)
        axes[0].plot(x, y, label=name, **_style(k))
    axes[0].set_xlabel("round")
    axes[0].set_ylabel(f"{metric} (all sites)")
    axes[0].legend(fontsize=7)
    return _uri(figure)


def case_distributions(values: Mapping[str, Sequence[float]], metric: str) -> str:
    """Per model, its per-case values as a box with the cases as points."""
    figure, axes = _figure(height=3.6)
    ax = axes[0]
    names = list(values)
    data = [[v for v in values[n] if math.isfinite(v)] for n in names]
    ax.boxplot(data, showfliers=False, medianprops={"color": "black"})
    for k, points in enumerate(data, start=1):
        offsets = [k + 0.18 * ((j % 7) - 3) / 3 for j in range(len(points))]
        ax.scatter(offsets, points, s=10, color="dimgrey", marker=_MARKERS[k % len(_MARKERS)])
    ax.set_xticks(range(1, len(names) + 1), names, rotation=20, fontsize=8)
    ax.set_ylabel(metric)
    return _uri(figure)


def site_dots(values: Mapping[str, Mapping[str, float | None]], metric: str) -> str:
    """Per model (x), its ``metric`` at each site (one marker per site)."""
    figure, axes = _figure(height=3.4)
    ax = axes[0]
    models = list(values)
    sites = sorted({s for row in values.values() for s in row})
    for k, site in enumerate(sites):
        x, y = [], []
        for m, model in enumerate(models, start=1):
            value = values[model].get(site)
            if value is not None and math.isfinite(value):
                x.append(m + 0.08 * (k - (len(sites) - 1) / 2))
                y.append(value)
        ax.scatter(x, y, label=site, marker=_MARKERS[k % len(_MARKERS)], color="dimgrey")
    ax.set_xticks(range(1, len(models) + 1), models, rotation=20, fontsize=8)
    ax.set_ylabel(metric)
    ax.legend(fontsize=7)
    return _uri(figure)


def roc_curves(
    markers: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]],
) -> str:
    """One panel per marker; in it one ROC curve per site (``labels, scores``), the legend
    giving each AUC with its DeLong interval. A site whose cases hold one class is left out."""
    from sklearn.metrics import roc_curve

    from neurofed.evaluate.roc import auc_delong

    figure, axes = _figure(
        width=3.0 * max(len(markers), 1), height=3.2, columns=max(len(markers), 1)
    )
    for ax, (marker, sites) in zip(axes, markers.items(), strict=False):
        for k, (site, (labels, scores)) in enumerate(sites.items()):
            estimate = auc_delong(scores, labels)
            if not math.isfinite(estimate.auc):
                continue
            fpr, tpr, _ = roc_curve(labels, scores)
            low, high = estimate.ci
            label = f"{site}: {estimate.auc:.2f} [{low:.2f}, {high:.2f}]"
            ax.plot(fpr, tpr, label=label, linestyle=_STYLES[k % len(_STYLES)])
        ax.plot([0, 1], [0, 1], color="lightgrey", linewidth=0.8)
        ax.set_title(marker, fontsize=9)
        ax.set_xlabel("1 − specificity")
        ax.set_ylabel("sensitivity")
        ax.legend(fontsize=6, loc="lower right")
    return _uri(figure)


def bland_altman_plot(
    sites: Mapping[str, tuple[Sequence[float], Sequence[float]]], target: str
) -> str:
    """Per site (``predicted, true``), one marker style: predicted against true with the
    identity line (left), and the difference predicted − true against their mean (right) with
    the bias over all cases (solid) and its 95 % limits of agreement (dashed), each labelled.
    Limits need two cases or more in all; with fewer, the right panel has the points only."""
    import numpy as np

    from neurofed.evaluate.statistics import bland_altman

    figure, axes = _figure(columns=2, width=9.0, height=3.8)
    left, right = axes
    guesses, reals = [np.empty(0)], [np.empty(0)]
    for k, (site, (predicted, truth)) in enumerate(sites.items()):
        guess, real = np.asarray(predicted, np.float64), np.asarray(truth, np.float64)
        style = {"marker": _MARKERS[k % len(_MARKERS)], "s": 14, "label": site}
        left.scatter(real, guess, **style)
        right.scatter((guess + real) / 2, guess - real, **style)
        guesses.append(guess)
        reals.append(real)
    pooled = np.concatenate(guesses), np.concatenate(reals)  # (n,) each, every site
    if pooled[0].size:
        low = float(min(pooled[0].min(), pooled[1].min()))
        high = float(max(pooled[0].max(), pooled[1].max()))
        left.plot([low, high], [low, high], color="grey", linestyle="--", linewidth=1)
        left.annotate("identity", (high, high), fontsize=7, ha="right", va="bottom")
    if pooled[0].size >= 2:
        agreement = bland_altman(*pooled)
        for value, name, line in (
            (agreement.bias, "bias", "-"),
            (agreement.upper, "+1.96 SD", "--"),
            (agreement.lower, "−1.96 SD", "--"),
        ):
            right.axhline(value, color="black", linestyle=line, linewidth=1)
            right.annotate(
                f"{name}: {value:.2f}",
                (1.0, value),
                xycoords=("axes fraction", "data"),
                fontsize=7,
                ha="right",
                va="bottom",
            )
    left.set_xlabel(f"true {target}")
    left.set_ylabel(f"predicted {target}")
    right.set_xlabel(f"mean of predicted and true {target}")
    right.set_ylabel(f"predicted − true {target}")
    left.legend(fontsize=7)
    return _uri(figure)
