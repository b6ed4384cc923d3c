"""``neurofed report``: one self-contained HTML file per federated run (figures embedded).

Built from what the run folder holds (:mod:`neurofed.federated.server.run_folder`), never from
site data: the study and its hash, the plan, each round's training numbers and the sites'
validation of the global model, who took part, and what kinds of payload left each site. With
``compare``, other runs' curves are set beside it; a caller with per-case values (the demo) adds
:class:`Section` s of its own, e.g. the held-out comparison with paired tests.

The page needs nothing online: figures are PNG data URIs (:mod:`neurofed.evaluate.figures`) and
the only script counts the figures that rendered into ``<body data-figures="rendered/total">``
(how a headless browser checks the page).

Examples
--------
>>> html = render_html("study x", [Section("Notes", "<p>hello</p>")])
>>> "<h2>Notes</h2>" in html and "data-figures" in html
True
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from markupsafe import Markup, escape

from neurofed import __version__
from neurofed.evaluate import figures
from neurofed.keys import MetricName

__all__ = [
    "REPORT_HTML",
    "ReportError",
    "RunView",
    "Section",
    "figure",
    "render_html",
    "run_report",
    "site_sections",
    "table",
]

REPORT_HTML = "report.html"

_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8">
<title>{{ title }}</title>
<style>
body { font-family: sans-serif; max-width: 60rem; margin: 2rem auto; color: #111; }
table { border-collapse: collapse; margin: 0.5rem 0 1rem; font-size: 0.9rem; }
th, td { border: 1px solid #999; padding: 0.2rem 0.5rem; text-align: right; }
th:first-child, td:first-child, td.text { text-align: left; }
.worst { font-weight: bold; }
img { max-width: 100%; }
.note { color: #444; font-size: 0.9rem; }
</style></head>
<body data-figures="0/0">
<h1>{{ title }}</h1>
<p class="note">neurofed {{ version }} · written {{ written }}</p>
{% for section in sections %}
<section><h2>{{ section.title }}</h2>
{{ section.html }}
</section>
{% endfor %}
<script>
window.addEventListener("load", function () {
  var images = Array.prototype.slice.call(document.images);
  var rendered = images.filter(function (i) { return i.complete && i.naturalWidth > 0; });
  document.body.setAttribute("data-figures", rendered.length + "/" + images.length);
});
</script>
</body></html>
"""


class ReportError(Exception):
    """The run folder cannot be reported on; the message names the file and the fix."""


@dataclass(frozen=True)
class Section:
    """A titled part of the page; ``html`` is trusted markup built with :func:`escape`."""

    title: str
    html: str


@dataclass(frozen=True)
class RunView:
    """What one run folder says, read once."""

    folder: Path
    study: Mapping[str, Any]
    summary: Mapping[str, Any]
    rounds: Sequence[Mapping[str, Any]] = field(default_factory=list)
    plan: Mapping[str, Any] | None = None
    weights_bytes: int | None = None

    @property
    def name(self) -> str:
        return str(self.summary.get("study") or self.folder.name)

    @property
    def metric(self) -> str:
        return str(self.study.get("selection", {}).get("metric", ""))

    @property
    def selected(self) -> int | None:
        chosen = self.summary.get("selected") or {}
        return int(chosen["round"]) if chosen.get("round") is not None else None

    @classmethod
    def read(cls, folder: Path) -> RunView:
        """Read ``folder`` (a federated run, as ``neurofed simulate`` or the server writes it).

        Raises
        ------
        ReportError
            No run there, or one of its files is unreadable.
        """
        from neurofed.federated.server.run_folder import LAST_MODEL, ROUNDS, SUMMARY
        from neurofed.federated.study import STUDY_FILE, StudyError, load_study

        folder = Path(folder)
        summary_path = folder / SUMMARY
        if not summary_path.is_file():
            raise ReportError(
                f"{folder}: no {SUMMARY} — give the folder of a federated run (what "
                "`neurofed simulate --out` or the server wrote), after its first round"
            )
        try:
            study = load_study(folder / STUDY_FILE).to_dict()
        except StudyError as exc:
            raise ReportError(str(exc)) from exc
        summary = _read_json(summary_path)
        rounds = []
        for path in sorted(
            (folder / ROUNDS).glob("*/metrics.json"), key=lambda p: int(p.parent.name)
        ):
            rounds.append(_read_json(path))
        plan_path = folder / "plan.json"
        plan = _read_json(plan_path) if plan_path.is_file() else None
        weights = folder / LAST_MODEL / "weights.safetensors"
        size = weights.stat().st_size if weights.is_file() else None
        return cls(folder, study, summary, rounds, plan, size)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ReportError(
            f"{path}: unreadable ({exc}); the run may still be writing it — try again"
        ) from exc
    if not isinstance(data, dict):
        raise ReportError(f"{path}: expected a JSON object")
    return data


def _cell(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(escape(str(value)))


def table(header: Sequence[str], rows: Sequence[Sequence[Any]], marked: int | None = None) -> str:
    """A table; a header of empty names is left out (a two-column key/value table)."""
    head = "".join(f"<th>{escape(h)}</th>" for h in header) if any(header) else ""
    body = []
    for k, row in enumerate(rows):
        css = ' class="worst"' if k == marked else ""
        body.append(f"<tr{css}>" + "".join(f"<td>{_cell(v)}</td>" for v in row) + "</tr>")
    top = f"<tr>{head}</tr>" if head else ""
    return f"<table>{top}{''.join(body)}</table>"


def figure(uri: str, caption: str) -> str:
    """An embedded figure with its caption (alt text is the caption)."""
    image = f'<img src="{escape(uri)}" alt="{escape(caption)}">'
    return f"<figure>{image}<figcaption>{escape(caption)}</figcaption></figure>"


def _study_section(run: RunView) -> Section:
    s = run.study
    selected = run.summary.get("selected") or {}
    rows = [
        ("study", s.get("name")),
        ("study hash (sha256)", run.summary.get("study_hash")),
        ("task", s.get("task", {}).get("id") if isinstance(s.get("task"), dict) else s.get("task")),
        ("strategy", s.get("strategy", {}).get("name")),
        ("rounds done / planned", f"{run.summary.get('rounds_done')} / {s.get('rounds')}"),
        ("selection", f"{run.metric} ({s.get('selection', {}).get('direction')})"),
        ("selected round", selected.get("round")),
        ("its value", selected.get("value")),
    ]
    html = table(["", ""], rows)
    if run.plan is not None:
        plan = run.plan
        keys = ("spacing", "patch_size", "batch_size", "median_shape", "num_cases")
        found = [(k, json.dumps(plan.get(k))) for k in keys if k in plan]
        html += "<h3>Plan</h3>" + table(["", ""], found)
    return Section("Study", html)


def _curves(run: RunView) -> Section:
    loss: dict[str, list[tuple[int, float | None]]] = {}
    validation: dict[str, list[tuple[int, float | None]]] = {"all sites": []}
    for record in run.rounds:
        k = int(record["round"])
        for site, numbers in sorted(record.get("train", {}).items()):
            loss.setdefault(site, []).append((k, numbers.get("train_loss")))
        validation["all sites"].append((k, record.get("validation", {}).get(run.metric)))
        for site, numbers in sorted(record.get("validation_per_site", {}).items()):
            validation.setdefault(site, []).append((k, numbers.get(run.metric)))
    uri = figures.round_curves(loss, validation, run.metric, run.selected)
    caption = (
        f"Training loss per site (left) and {run.metric} of the global model on each site's "
        "validation cases and over all sites (right), per round; the dashed line is the "
        "selected round. A site that withheld a metric (too few cases) has no point there."
    )
    return Section("Training over rounds", figure(uri, caption))


def _sites(run: RunView) -> Section:
    record = next(
        (r for r in run.rounds if int(r["round"]) == run.selected),
        run.rounds[-1] if run.rounds else None,
    )
    if record is None:
        return Section("Sites", "<p>No round finished yet.</p>")
    per_site = record.get("validation_per_site", {})
    metrics = [run.metric, *(m for m in _headline(run) if m != run.metric)]
    rows = [
        [site] + [values.get(m) for m in metrics] + [values.get("num_examples")]
        for site, values in sorted(per_site.items())
    ]
    merged = record.get("validation", {})
    known = [(k, row[1]) for k, row in enumerate(rows) if isinstance(row[1], float)]
    lower_is_better = run.study.get("selection", {}).get("direction") == "min"
    worst = None
    if known:
        worst = (max if lower_is_better else min)(known, key=lambda kv: kv[1])[0]
    rows.append(["all sites"] + [merged.get(m) for m in metrics] + [merged.get("num_examples")])
    html = table(["site", *metrics, "cases"], rows, worst)
    if worst is not None:
        html += (
            f"<p>Worst site on {escape(run.metric)}: <b>{escape(rows[worst][0])}</b> "
            f"({_cell(rows[worst][1])}), round {record['round']}.</p>"
        )
    withheld = record.get("withheld", {})
    if withheld:
        lines = "".join(
            f"<li>{escape(s)}: {escape('; '.join(v))}</li>" for s, v in withheld.items()
        )
        html += (
            f"<p class='note'>Withheld by sites (too few cases behind a value):</p><ul>{lines}</ul>"
        )
    return Section(f"Sites at round {record['round']}", html)


def _headline(run: RunView) -> tuple[str, ...]:
    """The task's headline metrics (what the training log shows)."""
    from neurofed.keys import TaskId
    from neurofed.training.records import HEADLINE_METRICS

    task = run.study.get("task", {})
    try:
        return HEADLINE_METRICS[TaskId(str(task.get("id") if isinstance(task, dict) else task))]
    except (KeyError, ValueError):
        return ()


def _participation(run: RunView) -> Section:
    rows = []
    for r in run.rounds:
        rows.append(
            [
                r["round"],
                ", ".join(r.get("accepted", [])) or "none",
                len(r.get("rejected", {})),
                len(r.get("failed", {})),
                len(r.get("refused", {})),
                len(r.get("dropped", [])),
                "yes" if r.get("aggregated") else "no",
                r.get("seconds"),
            ]
        )
    header = [
        "round",
        "aggregated from",
        "rejected",
        "failed",
        "refused",
        "dropped",
        "model changed",
        "seconds",
    ]
    reasons = []
    for r in run.rounds:
        for kind in ("rejected", "failed", "refused"):
            for site, why in r.get(kind, {}).items():
                reasons.append(
                    f"<li>round {r['round']}: {escape(site)} {kind} — {escape(why)}</li>"
                )
    html = table(header, rows)
    if reasons:
        html += f"<ul>{''.join(reasons)}</ul>"
    return Section("Who took part", html)


def _privacy(run: RunView) -> Section:
    size = run.weights_bytes
    rows = []
    sites = sorted(
        {s for r in run.rounds for s in (*r.get("train", {}), *r.get("validation_per_site", {}))}
    )
    for site in sites:
        trained = [r for r in run.rounds if site in r.get("train", {})]
        validated = [r for r in run.rounds if site in r.get("validation_per_site", {})]
        numbers = sorted({k for r in trained for k in r["train"][site]})
        aggregates = max((len(r["validation_per_site"][site]) for r in validated), default=0)
        clipped = MetricName.SECAGG_CLIPPED.value  # reported by every secure training round
        masked = [r for r in trained if clipped in r["train"][site]]
        update = (  # secure aggregation: the server saw only the masked vector and the sum
            f"model update masked by secure aggregation in {len(masked)} rounds (the server "
            "saw only the sum of the sites' updates)"
            if masked
            else f"model update (weights) in {len(trained)} rounds"
        )
        sent = [
            update,
            f"training numbers ({', '.join(numbers)})",
            f"validation aggregates ({aggregates} numbers) in {len(validated)} rounds",
        ]
        eps, noise = MetricName.EPSILON.value, MetricName.NOISE_MULTIPLIER.value
        private = [r["train"][site] for r in trained if eps in r["train"][site]]
        if private:  # DP-SGD ([privacy]): the ε its dataset has spent at the site so far
            last = private[-1]
            sent.append(
                f"weights trained with DP-SGD in {len(private)} rounds: ε = {last[eps]:.3g} "
                "spent on the dataset at this site after the last (noise multiplier "
                f"{last.get(noise, float('nan')):.3g})"
            )
        cased = [r for r in run.rounds if site in r.get("cases_per_site", {})]
        if cased:  # its custodian allows per-case values for the study's dataset
            kinds = sorted({k for r in cased for k in r["cases_per_site"][site]})
            sent.append(
                f"per-case values without identifiers ({', '.join(kinds)}) in {len(cased)} rounds"
            )
        total = None if size is None else size * len(trained) / 1e6
        per_round = None if size is None else size / 1e6
        rows.append([site, "; ".join(sent), per_round, total])
    html = (
        "<p>What each site sent the server, as the run recorded it. A model update has the size "
        "of the model's weights (safetensors, never pickled); validation values are aggregates "
        "over the site's cases, withheld below the minimum count. Per-case values leave only a "
        "site whose custodian allows them for the study's dataset, listed here, in an order the "
        "site keeps secret. No subject identifier, file name or path leaves a site.</p>"
    )
    listing = table(["site", "sent", "MB per update", "MB of updates in all"], rows)
    return Section("What left each site", html + listing)


def _compare(runs: Sequence[RunView]) -> Section:
    metric = runs[0].metric
    series = {
        f"{run.name} ({run.folder.name})": [
            (int(r["round"]), r.get("validation", {}).get(metric)) for r in run.rounds
        ]
        for run in runs
    }
    uri = figures.compare_curves(series, metric)
    rows = [
        [
            f"{run.name} ({run.folder.name})",
            run.summary.get("rounds_done"),
            (run.summary.get("selected") or {}).get("value"),
        ]
        for run in runs
    ]
    caption = f"{metric} over all sites' validation cases, per round, for each run compared."
    html = figure(uri, caption) + table(["run", "rounds", f"selected {metric}"], rows)
    return Section("Runs compared", html)


def site_sections(model: Path, sites: Sequence[Path]) -> list[Section]:
    """Per-case sections from scoring ``model`` on every case of local ``sites`` (data this
    machine holds: a hospital's own cases, or phantom sites): the distribution of each per-case
    metric by site and, for the glioma markers, ROC curves with DeLong intervals; for a
    regression (brain-age), its agreement with the truth per site (:func:`_agreement`).

    Raises
    ------
    ReportError
        A site cannot serve the model or the model folder is unusable.
    """
    import numpy as np

    from neurofed.evaluate.site import evaluate_model
    from neurofed.tasks.brain_age import regression_pairs
    from neurofed.tasks.glioma_multitask import marker_scores
    from neurofed.training import ModelFolderError, SiteDataError

    per_case: dict[str, dict[str, list[float]]] = {}
    markers: dict[str, dict[str, tuple[Sequence[int], Sequence[float]]]] = {}
    regression: dict[str, dict[str, tuple[Sequence[float], Sequence[float]]]] = {}
    for site in sites:
        try:
            state, dataset, _ = evaluate_model(model, site, None)
        except (SiteDataError, ModelFolderError) as exc:
            raise ReportError(str(exc)) from exc
        name = f"{Path(site).name} (n={len(dataset)})"
        for key, values in state.cases.items():
            if key.endswith("/dice") or key == "dice":
                kept = [float(v) for v in values if math.isfinite(float(v))]
                per_case.setdefault(key, {})[name] = kept
        for marker, (labels, scores) in marker_scores(state.cases).items():
            markers.setdefault(str(marker), {})[name] = (labels.tolist(), scores.tolist())
        for clinical, (predicted, truth) in regression_pairs(state.cases).items():
            known = np.isfinite(predicted) & np.isfinite(truth)
            pair = (predicted[known].tolist(), truth[known].tolist())
            regression.setdefault(str(clinical), {})[name] = pair
    what = f"every case of {len(sites)} local site(s)"
    sections = []
    if per_case or markers:
        title = f"The model {Path(model).name} on {what}"
        sections.append(Section(title, _distributions(per_case, markers)))
    for target, by_site in regression.items():
        title = f"The model {Path(model).name}: predicted against true {target} on {what}"
        sections.append(Section(title, _agreement(target, by_site)))
    if not sections:
        title = f"The model {Path(model).name} on {what}"
        sections.append(Section(title, "<p>No per-case values for this task.</p>"))
    return sections


def _interval(value: float, ci: tuple[float, float], digits: int = 3) -> str:
    """``value [low, high]``; the value alone without an interval (one case), ``–`` without
    a value."""
    if not math.isfinite(value):
        return "–"
    if not all(math.isfinite(bound) for bound in ci):
        return f"{value:.{digits}f}"
    return f"{value:.{digits}f} [{ci[0]:.{digits}f}, {ci[1]:.{digits}f}]"


def _distributions(
    per_case: Mapping[str, Mapping[str, Sequence[float]]],
    markers: Mapping[str, Mapping[str, tuple[Sequence[int], Sequence[float]]]],
) -> str:
    """Per site, each per-case metric's mean and each marker's AUC with their intervals, then
    the distributions and the ROC curves."""
    from neurofed.evaluate.roc import auc_delong
    from neurofed.evaluate.statistics import mean_with_ci

    names = list(next(iter(per_case.values()), {})) or list(next(iter(markers.values()), {}))
    rows: list[list[Any]] = []
    for name in names:
        row: list[Any] = [name]
        for site_values in per_case.values():
            estimate = mean_with_ci(site_values.get(name, []))
            row.append(_interval(estimate.mean, estimate.ci))
        for marker_sites in markers.values():
            pair = marker_sites.get(name)
            auc = auc_delong(list(pair[1]), list(pair[0])) if pair else None
            row.append("–" if auc is None else _interval(auc.auc, auc.ci))
        rows.append(row)
    header = [
        "site",
        *(f"{k} (mean, 95% CI)" for k in per_case),
        *(f"{m} AUC (DeLong)" for m in markers),
    ]
    html = table(header, rows)
    for key, by_site in sorted(per_case.items()):
        caption = f"{key} per case at each site (every case of the site, scored here)."
        html += figure(figures.case_distributions(by_site, key), caption)
    if markers:
        caption = (
            "ROC curve of each marker at each site (grade: IV against II–III); the legend "
            "gives the AUC with its 95% DeLong interval."
        )
        html += figure(figures.roc_curves(markers), caption)
    return html


def _agreement(target: str, by_site: Mapping[str, tuple[Sequence[float], Sequence[float]]]) -> str:
    """A regression's agreement with the truth: per site (and over all sites, when several) the
    cases, MAE and Pearson's r with their 95 % intervals, r's p-value, Bland–Altman's bias and
    limits of agreement; then predicted against true and the Bland–Altman plot."""
    from neurofed.evaluate.statistics import bland_altman, correlation, mae_with_ci

    rows: list[list[Any]] = []
    everything = (
        [p for predicted, _ in by_site.values() for p in predicted],
        [t for _, truth in by_site.values() for t in truth],
    )
    pooled = [("all sites", everything)] if len(by_site) > 1 else []
    for name, (predicted, truth) in [*by_site.items(), *pooled]:
        mae, r = mae_with_ci(predicted, truth), correlation(predicted, truth)
        bias, limits = None, "–"
        if len(predicted) >= 2:
            agreement = bland_altman(predicted, truth)
            bias, limits = agreement.bias, f"[{agreement.lower:.2f}, {agreement.upper:.2f}]"
        p = "–" if not math.isfinite(r.p_value) else f"{r.p_value:.2g}"
        mae_cell, r_cell = _interval(mae.mean, mae.ci, 2), _interval(r.r, r.ci)
        rows.append([name, len(predicted), mae_cell, r_cell, p, bias, limits])
    header = [
        "site",
        "cases",
        "MAE (95% CI)",
        "Pearson r (95% CI)",
        "p (r = 0)",
        "bias (predicted − true)",
        "95% limits of agreement",
    ]
    caption = (
        f"Predicted against true {target}, every case of each site scored here (left; dashed: "
        "identity), and Bland–Altman: predicted − true against their mean (right), with the "
        "bias over all cases (solid) and its 95% limits of agreement, bias ± 1.96 SD (dashed)."
    )
    uri = figures.bland_altman_plot(by_site, target)
    return table(header, rows) + figure(uri, caption)


def run_report(
    run: Path,
    compare: Sequence[Path] = (),
    extra: Sequence[Section] = (),
    sites: Sequence[Path] = (),
) -> tuple[str, RunView]:
    """The HTML of ``run``'s report (and the run as read), with other runs, the selected model
    scored on local ``sites``, and extra sections."""
    view = RunView.read(run)
    others = [RunView.read(p) for p in compare]
    sections = [_study_section(view), _curves(view), _sites(view), _participation(view)]
    if others:
        sections.append(_compare([view, *others]))
    if sites:
        from neurofed.federated.server.run_folder import MODEL

        sections += site_sections(view.folder / MODEL, sites)
    sections += list(extra)
    sections.append(_privacy(view))
    return render_html(f"neurofed report: {view.name}", sections), view


def render_html(title: str, sections: Sequence[Section]) -> str:
    """The page: ``sections`` in order, the figure-count script at the end."""
    from jinja2 import Environment

    template = Environment(autoescape=True).from_string(_PAGE)
    return template.render(
        title=title,
        version=__version__,
        written=datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        sections=[{"title": s.title, "html": Markup(s.html)} for s in sections],
    )
