"""One self-contained HTML file per span: what came in, how it drifted, what was decided, why.

:func:`write_report` reads only metadata and small artifacts (span statistics-derived drift
report, anomalies, ingest report) plus the training loop's record for the span (kept in the
metadata store by :class:`~evergreen.decision_log.DecisionLog`), and writes a single file
with inline CSS and inline SVG charts: viewing it fetches nothing.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping
from html import escape
from pathlib import Path
from typing import Any

from evergreen.components.drift import Comparison, DriftResult, FeatureDrift
from evergreen.components.drift import find_report as find_drift_report
from evergreen.decision_log import DecisionLog
from evergreen.errors import NotFound
from evergreen.report import svg

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,sans-serif;margin:2rem auto;max-width:1100px;
 color:#1d2430;padding:0 1rem;line-height:1.4}
h1{font-size:1.5rem;margin-bottom:.2rem} h2{font-size:1.15rem;margin-top:2rem;
 border-bottom:1px solid #dde2ea;padding-bottom:.2rem} h3{font-size:1rem;margin:.2rem 0}
.muted{color:#667085} table{border-collapse:collapse;margin:.5rem 0;font-size:.9rem}
th,td{border:1px solid #dde2ea;padding:.25rem .5rem;text-align:left;vertical-align:top}
th{background:#f4f6f9} td.num{text-align:right;font-variant-numeric:tabular-nums}
.badge{display:inline-block;padding:0 .45rem;border-radius:.6rem;font-size:.8rem;color:#fff}
.none{background:#3c9d5d} .minor{background:#d99a1e} .major{background:#c9372c}
.error{background:#c9372c} .warning{background:#d99a1e}
.incremental{background:#3c9d5d} .full{background:#2f7ed8} .block{background:#c9372c}
.decision{font-size:1.2rem;border:1px solid #dde2ea;border-radius:.5rem;padding:.8rem 1rem;
 background:#fafbfc} .cards{display:flex;flex-wrap:wrap;gap:1rem}
.card{border:1px solid #dde2ea;border-radius:.5rem;padding:.6rem;background:#fff}
ul{margin:.3rem 0} code{font-size:.85rem}
"""


def record_path(project: Any, span: int, *, challenger: bool = False) -> Path:
    """Where the loop's record for ``span`` is written for people: ``<root>/reports/span-N.json``
    (the quality debt's challenger: ``span-N-challenger.json``, beside its increment's)."""
    return project.reports_dir / f"span-{span}{'-challenger' if challenger else ''}.json"


def load_record(project: Any, span: int) -> dict[str, Any] | None:
    """The training loop's last record for ``span``, from the metadata store (None: none)."""
    return DecisionLog(project.store).latest(span)


def save_run_report(project: Any, record: Mapping[str, Any]) -> Path:
    """Record a loop record in the metadata store, save it as ``span-N.json`` and write
    ``span-N.html`` beside it; returns the HTML report's path."""
    if hasattr(record, "to_dict"):  # a typed run record: its dict is what is kept
        record = record.to_dict()
    data = DecisionLog(project.store).save(record)
    path = record_path(project, int(data["span"]), challenger=bool(data.get("challenger")))
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    tmp.replace(path)
    return write_report(project, int(data["span"]), record, path.with_suffix(".html"))


def write_report(project: Any, span: int, record: dict[str, Any] | None, path: Path) -> Path:
    """Write the HTML report of ``span`` to ``path`` (atomically) and return the path.

    Args:
        project: an open :class:`~evergreen.project.Project`.
        span: the span number.
        record: the training loop's record for the span (mode, reason, cost, metrics, verdict),
            or None when the span was only ingested: the report then shows what the policy
            would decide.
        path: the file to write.

    Raises:
        NotFound: the span has not been ingested.
    """
    from evergreen import skew

    status = project.span_status(span)
    drift = find_drift_report(project.store, span)
    try:
        serving = skew.project_skew(project)
    except OSError as e:  # an unreadable request log must not cost the report
        serving = DriftResult(span=None, comparisons=[], notes=[f"request log unreadable: {e}"])
    body = [
        _title(project, span, status),
        _decision(project, span, record, drift),
        _drift_section(drift, project.config.data.label),
        _skew_section(serving),
        _anomalies(status),
        _cost(record, status),
        _metrics(record),
        _slices(record),
        f'<p class="muted">written by Evergreen at {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M:%S} UTC'
        f" · pipeline root <code>{escape(str(project.config.root))}</code></p>",
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Evergreen · {escape(project.config.name)} · span {span}</title>"
        f"<style>{_CSS}</style></head><body>{''.join(body)}</body></html>\n"
    )
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(page, encoding="utf-8")
    tmp.replace(path)
    return path


# -- sections --------------------------------------------------------------------------------


def _badge(text: str, cls: str | None = None) -> str:
    return f'<span class="badge {escape(cls or text)}">{escape(text)}</span>'


def _title(project: Any, span: int, status: dict[str, Any]) -> str:
    rows = status.get("rows_written", {})
    split = ", ".join(f"{k} {v}" for k, v in rows.items())
    return (
        f"<h1>{escape(project.config.name)} · span {span}</h1>"
        f'<p class="muted">version {status["version"]} · {escape(status["status"])} · '
        f"{status.get('rows_kept', 0)} rows kept of {status.get('rows_read', 0)} read"
        f"{f' ({escape(split)})' if split else ''}</p>"
    )


def _decision(
    project: Any, span: int, record: dict[str, Any] | None, drift: DriftResult | None
) -> str:
    out = ['<h2 id="decision">Decision</h2>']
    if record is not None:
        mode = str(record.get("mode", "?"))
        out.append(
            f'<div class="decision" data-mode="{escape(mode)}">{_badge(mode)} '
            f"{escape(_mode_words(mode))} — {escape(str(record.get('reason', '')))}</div>"
        )
        blessed = record.get("blessed")
        if blessed is not None:
            version = record.get("version")
            out.append(
                f"<p>Candidate {'<b>blessed</b>' if blessed else '<b>not blessed</b>'}"
                + (f", pushed as version {version}" if version else ", not pushed")
                + ".</p>"
            )
        verdict = record.get("verdict") or []
        if verdict:
            out.append("<ul>" + "".join(f"<li>{escape(str(v))}</li>" for v in verdict) + "</ul>")
        return "".join(out)
    from evergreen.policy import decide, hard_rule

    cfg = project.config
    decision = hard_rule(has_champion=project.champion_featurizer() is not None) or decide(
        drift, cfg=cfg.drift, max_unknown_rate=cfg.train.max_unknown_rate
    )
    out.append(
        f'<div class="decision" data-mode="{escape(decision.mode)}">{_badge(decision.mode)} '
        f"{escape(_mode_words(decision.mode))} (not trained yet: what the policy would decide "
        f"from drift alone) — {escape(decision.reason)}</div>"
    )
    return "".join(out)


def _mode_words(mode: str) -> str:
    return {"incremental": "incremental update", "full": "full retrain", "block": "blocked"}.get(
        mode, mode
    )


def _drift_section(drift: DriftResult | None, label: str) -> str:
    out = ['<h2 id="drift">Drift</h2>']
    if drift is None:
        out.append('<p class="muted">No drift report for this span (drift.enabled = false?).</p>')
        return "".join(out)
    summary = [f"Overall {_badge(drift.severity)}"]
    if drift.unknown_rate is not None:
        summary.append(
            f"unknown-token rate under the champion's vocabulary {drift.unknown_rate:.1%}"
        )
    summary += [
        f"vs {escape(c.reference)}: span(s) {escape(_spans(c.spans))}, {c.rows_reference} rows"
        for c in drift.comparisons
    ]
    out.append(f"<p>{' · '.join(summary)}</p>")
    for note in drift.notes:
        out.append(f'<p class="muted">{escape(note)}</p>')
    alarms = drift.alarms
    if alarms:
        out.append(
            "<p><b>Alarms:</b></p><ul>"
            + "".join(f"<li>{_badge(a.severity)} {escape(a.describe())}</li>" for a in alarms)
            + "</ul>"
        )
    out.append(_scores_table(drift.comparisons))
    chart_source = drift.comparison("window") or (drift.comparisons or [None])[0]
    if chart_source is not None:
        out.append(
            f'<h2 id="features">Distributions: new span vs {escape(chart_source.reference)}</h2>'
        )
        out.append(_feature_cards(chart_source, "span", chart_source.reference))
    return "".join(out)


def _spans(spans: list[int]) -> str:
    if len(spans) > 4:
        return f"{spans[0]}–{spans[-1]}"
    return ", ".join(map(str, spans)) or "-"


def _scores_table(comparisons: list[Comparison]) -> str:
    if not comparisons:
        return ""
    refs = [c.reference for c in comparisons]
    head = "".join(f"<th>vs {escape(r)}</th>" for r in refs)
    rows = []
    names: list[tuple[str, str, str]] = []
    for c in comparisons:
        for f in c.features:
            for s in f.scores:
                key = (f.feature, f.kind, s.metric)
                if key not in names:
                    names.append(key)
    for feature, kind, metric in names:
        cells = []
        thresholds = ""
        for c in comparisons:
            f = c.feature(feature)
            score = next((s for s in f.scores if s.metric == metric), None) if f else None
            if score is None:
                cells.append("<td>-</td>")
                continue
            thresholds = f"{score.minor:g} / {score.major:g}"
            cells.append(
                f'<td class="num">{score.value:.3f} {_badge(score.severity)}</td>'
                if score.severity != "none"
                else f'<td class="num">{score.value:.3f}</td>'
            )
        rows.append(
            f"<tr><td>{escape(feature)}</td><td>{escape(kind)}</td><td>{escape(metric)}</td>"
            f'{"".join(cells)}<td class="num">{thresholds}</td></tr>'
        )
    return (
        '<table class="scores"><tr><th>feature</th><th>kind</th><th>metric</th>'
        f"{head}<th>minor / major</th></tr>{''.join(rows)}</table>"
    )


def _feature_cards(comparison: Comparison, new_name: str, reference_name: str) -> str:
    cards = []
    for f in comparison.features:
        charts = "".join(_chart(f, c, new_name, reference_name) for c in f.charts)
        notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in f.notes)
        cards.append(
            f'<div class="card" data-feature="{escape(f.feature)}"><h3>{escape(f.feature)} '
            f'<span class="muted">({escape(f.kind)})</span> {_badge(f.severity)}</h3>'
            f"{charts}{notes}</div>"
        )
    return f'<div class="cards">{"".join(cards)}</div>'


def _chart(f: FeatureDrift, chart: dict[str, Any], new_name: str, reference_name: str) -> str:
    # A histogram's x axis is its bin edges; a bar chart's, its category labels.
    draw, axis = (
        (svg.histogram, "edges") if chart["type"] == "histogram" else (svg.paired_bars, "labels")
    )
    return draw(
        chart[axis],
        chart["new"],
        chart["reference"],
        title=f"{f.feature}: {chart.get('title', '')}",
        new_name=new_name,
        reference_name=reference_name,
    )


def _skew_section(serving: DriftResult | None) -> str:
    out = ['<h2 id="skew">Training/serving skew</h2>']
    if serving is None:
        out.append(
            '<p class="muted">No request log under <code>serving/requests/</code>: nothing to '
            "compare.</p>"
        )
        return "".join(out)
    for note in serving.notes:
        out.append(f'<p class="muted">{escape(note)}</p>')
    if not serving.comparisons:
        return "".join(out)
    c = serving.comparisons[0]
    out.append(
        f"<p>{c.rows_new} sampled requests vs {c.rows_reference} training rows · "
        f"overall {_badge(serving.severity)}</p>"
    )
    if serving.alarms:
        out.append(
            "<ul>"
            + "".join(
                f"<li>{_badge(a.severity)} {escape(a.describe())}</li>" for a in serving.alarms
            )
            + "</ul>"
        )
    out.append(_scores_table(serving.comparisons))
    out.append(_feature_cards(c, "serving", "training"))
    return "".join(out)


def _anomalies(status: dict[str, Any]) -> str:
    anomalies = status.get("anomalies", [])
    out = ['<h2 id="anomalies">Schema anomalies</h2>']
    if not anomalies:
        out.append("<p>None: the span matches the schema.</p>")
        return "".join(out)
    rows = "".join(
        f"<tr><td>{_badge(a['severity'])}</td><td>{escape(a['kind'])}</td>"
        f"<td>{escape(str(a.get('column') or ''))}</td><td>{escape(a['message'])}</td></tr>"
        for a in anomalies
    )
    out.append(
        f"<table><tr><th>severity</th><th>kind</th><th>column</th><th>message</th></tr>{rows}</table>"
    )
    return "".join(out)


def _cost(record: dict[str, Any] | None, status: dict[str, Any]) -> str:
    out = ['<h2 id="cost">Cost</h2>']
    quarantined = status.get("quarantined", {})
    out.append(
        "<table><tr><th>rows read</th><th>kept</th><th>duplicates</th><th>label conflicts</th>"
        "<th>quarantined</th></tr>"
        f'<tr><td class="num">{status.get("rows_read", 0)}</td>'
        f'<td class="num">{status.get("rows_kept", 0)}</td>'
        f'<td class="num">{status.get("duplicates_within_span", 0) + status.get("duplicates_of_earlier_spans", 0)}</td>'
        f'<td class="num">{len(status.get("label_conflicts", []))}</td>'
        f'<td class="num">{sum(quarantined.values())}</td></tr></table>'
    )
    if record is None:
        out.append('<p class="muted">Not trained yet: no token ledger or stage times.</p>')
        return "".join(out)
    keys = (
        "rows_new",
        "rows_total",
        "tokens_computed",
        "tokens_reused",
        "rows_featurized",
        "rows_reused",
    )
    out.append(
        '<table class="ledger"><tr>'
        + "".join(f"<th>{k.replace('_', ' ')}</th>" for k in keys)
        + "</tr><tr>"
        + "".join(f'<td class="num">{escape(str(record.get(k, "-")))}</td>' for k in keys)
        + "</tr></table>"
    )
    seconds = record.get("seconds") or {}
    if seconds:
        out.append(
            svg.bars(
                list(seconds),
                [float(v) for v in seconds.values()],
                title=f"seconds per stage (total {sum(float(v) for v in seconds.values()):.1f} s)",
                unit=" s",
            )
        )
    return "".join(out)


def _metrics(record: dict[str, Any] | None) -> str:
    out = ['<h2 id="metrics">Candidate vs champion</h2>']
    metrics = (record or {}).get("metrics") or {}
    candidate, champion = metrics.get("candidate") or {}, metrics.get("champion") or {}
    if not candidate:
        out.append('<p class="muted">No evaluation for this span.</p>')
        return "".join(out)
    names: list[str] = []
    for side in (candidate, champion):
        for data in side.values():
            for k, v in data.items():
                if isinstance(v, int | float) and k not in names:
                    names.append(k)
    head = "".join(f"<th>{escape(n)}</th>" for n in names)
    rows = []
    labels, cand_values, champ_values = [], [], []
    for data_set in ("new", "historic"):
        for who, side in (("candidate", candidate), ("champion", champion)):
            values = side.get(data_set)
            if not values:
                continue
            cells = "".join(_metric_cell(values.get(n)) for n in names)
            rows.append(f"<tr><td>{who}</td><td>{data_set}</td>{cells}</tr>")
        if "accuracy" in (candidate.get(data_set) or {}):
            labels.append(f"accuracy, {data_set}")
            cand_values.append(float(candidate[data_set]["accuracy"]))
            champ_values.append(float((champion.get(data_set) or {}).get("accuracy", 0.0)))
    out.append(
        f"<table><tr><th>model</th><th>data</th>{head}</tr>{''.join(rows)}</table>"
        '<p class="muted">new: the span\'s eval split · historic: the holdout of earlier spans '
        "(the forgetting guard)</p>"
    )
    if labels:
        out.append(
            svg.paired_bars(
                labels,
                cand_values,
                champ_values,
                title="accuracy",
                new_name="candidate",
                reference_name="champion",
            )
        )
    return "".join(out)


def _slices(record: dict[str, Any] | None) -> str:
    """Candidate vs champion per slice value ([evaluate] slices), small slices flagged."""
    slices = (record or {}).get("slices") or {}
    if not slices:
        return ""
    out = ['<h2 id="slices">Slices</h2>']
    for column, values in slices.items():
        rows = []
        for value, sets in values.items():
            for data_set, entry in sets.items():
                metric = next(iter(entry.get("guards", {}).values()), {}).get("metric", "accuracy")
                cand = (entry.get("candidate") or {}).get(metric)
                champ = (entry.get("champion") or {}).get(metric)
                regressed = any(g["regressed"] for g in entry.get("guards", {}).values())
                flag = (
                    "small: not judged"
                    if entry["small"]
                    else ("regressed" if regressed else "holds")
                )
                rows.append(
                    f"<tr><td>{escape(value)}</td><td>{data_set}</td>"
                    f'<td class="num">{entry["rows"]}</td><td>{escape(metric)}</td>'
                    f"{_metric_cell(cand)}{_metric_cell(champ)}<td>{flag}</td></tr>"
                )
        out.append(
            f"<h3>{escape(column)}</h3><table><tr><th>value</th><th>data</th><th>rows</th>"
            "<th>metric</th><th>candidate</th><th>champion</th><th>guard</th></tr>"
            + "".join(rows)
            + "</table>"
        )
    return "".join(out)


def _metric_cell(value: Any) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "<td>-</td>"
    if isinstance(value, int) or float(value).is_integer():
        return f'<td class="num">{int(value)}</td>'
    return f'<td class="num">{value:.4f}</td>'


def report_for(project: Any, span: int, output: Path | None = None) -> Path:
    """What ``evergreen report SPAN`` does: the loop's record when there is one, else none."""
    if not any(r.span == span for r in project.store.spans()):
        raise NotFound(f"span {span} has not been ingested; run `evergreen ingest` first")
    record = load_record(project, span)  # the last word on the span: a challenger's, if any
    challenger = bool(record and record.get("challenger"))
    path = output or record_path(project, span, challenger=challenger).with_suffix(".html")
    return write_report(project, span, record, path)
