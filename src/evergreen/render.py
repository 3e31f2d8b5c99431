"""What the command line prints: tables and trees rendered from the library's JSON-ready data.

Every function takes the data that ``--json`` prints (status, lineage, run records, history:
plain mappings) and a rich :class:`~rich.console.Console`, so the text output is a rendering of
the JSON output and can be tested without the command line. Nothing here parses arguments or
exits.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from rich.console import Console
from rich.markup import escape
from rich.table import Table

Data = Mapping[str, Any]

_SEVERITY_STYLES = {"none": "green", "minor": "yellow", "major": "red"}


# -- ingest and status -------------------------------------------------------------------------
def print_outcomes(console: Console, outcomes: Iterable[Any]) -> None:
    """The table of what one ``evergreen ingest`` did per span, then each span's anomalies."""
    outcomes = list(outcomes)
    table = Table(
        "span", "v", "status", "read", "kept", "dups", "conflicts", "quarantined", "anomalies"
    )
    for o in outcomes:
        if not o.ingested and o.status == "unchanged":
            table.add_row(
                str(o.span), str(o.version), "unchanged (skipped)", "", "", "", "", "", ""
            )
            continue
        r = o.report
        table.add_row(
            str(o.span),
            str(o.version),
            o.status,
            str(r.get("rows_read", "")),
            str(sum(r.get("rows_written", {}).values())),
            str(_duplicates(r)),
            str(len(r.get("label_conflicts", []))),
            str(sum(r.get("quarantined", {}).values())),
            str(len(o.anomalies)),
        )
    console.print(table)
    for o in outcomes:
        for a in o.anomalies:
            style = "red" if a["severity"] == "error" else "yellow"
            console.print(f"[{style}]{a['severity']}[/]: {escape(a['message'])}")


def print_status(console: Console, data: Data) -> None:
    """``evergreen status``: the pipeline line, the span table, the latest news, the totals."""
    console.print(
        f"pipeline [bold]{data['pipeline']}[/] · root {data['root']} · metadata {data['metadata']}"
    )
    console.print(_status_table(data["spans"]))
    _print_latest(console, data)
    t = data["totals"]
    console.print(
        f"{t['spans']} spans, {t['blocked']} blocked · {t['rows_kept']} rows kept of {t['rows_read']} read · "
        f"{t['duplicates']} duplicates · {t['label_conflicts']} label conflicts · {t['quarantined']} quarantined"
    )


def _status_table(spans: Sequence[Data]) -> Table:
    table = Table(
        "span",
        "v",
        "status",
        "read",
        "kept",
        "train/eval",
        "dups",
        "conflicts",
        "quarant.",
        "anomalies",
        "drift",
        "decision",
    )
    for s in spans:
        splits = s.get("rows_written", {})
        decision = s.get("decision") or {}
        table.add_row(
            str(s["span"]),
            str(s["version"]),
            s["status"],
            str(s.get("rows_read", "")),
            str(s.get("rows_kept", "")),
            f"{splits.get('train', 0)}/{splits.get('eval', 0)}",
            str(_duplicates(s)),
            str(len(s.get("label_conflicts", []))),
            str(s.get("quarantined_total", 0)),
            _count_anomalies(s.get("anomalies", [])),
            drift_cell(s.get("drift")),
            escape(str(decision.get("mode") or "-")),
        )
    return table


def _duplicates(row: Data) -> int:
    return row.get("duplicates_within_span", 0) + row.get("duplicates_of_earlier_spans", 0)


def drift_cell(drift: Data | None) -> str:
    """A drift summary as one cell: the severity in colour, then the drifted features."""
    if drift is None:
        return "-"
    style = _SEVERITY_STYLES[drift["severity"]]
    features = f" ({escape(', '.join(drift['features']))})" if drift["features"] else ""
    return f"[{style}]{drift['severity']}[/]{features}"


def _print_latest(console: Console, data: Data) -> None:
    """The latest span's drift alarms and decision, and the serving skew, under the table."""
    if not data.get("drift_enabled", True):
        console.print("drift detection is off (drift.enabled = false)")
    latest = data.get("latest_drift")
    if latest is not None:
        head = f"latest drift (span {latest['span']}): {drift_cell(latest)}"
        if latest.get("unknown_rate") is not None:
            head += f" · unknown-token rate {latest['unknown_rate']:.1%}"
        console.print(head)
        _print_alarms(console, latest["alarms"])
    decided = [s for s in data["spans"] if s.get("decision")]
    if decided:
        s = decided[-1]
        d = s["decision"]
        console.print(
            f"latest decision (span {s['span']}): {escape(str(d['mode']))} ({escape(str(d['reason']))})"
            f" · report {escape(d['report'])}"
        )
    skew = data.get("skew")
    if skew:
        console.print(f"serving skew: {drift_cell(skew)} over {skew['rows']} sampled requests")
        _print_alarms(console, skew["alarms"])


def _print_alarms(console: Console, alarms: Sequence[str]) -> None:
    for alarm in alarms[:8]:
        console.print(f"  {escape(alarm)}")


def _count_anomalies(anomalies: Sequence[Data]) -> str:
    errors = sum(1 for a in anomalies if a["severity"] == "error")
    return f"{errors} errors, {len(anomalies) - errors} warnings" if anomalies else "-"


# -- lineage ------------------------------------------------------------------------------------
def print_lineage(console: Console, data: Data) -> None:
    """``evergreen lineage``: a run with its inputs and outputs, or an artifact's tree."""
    if "run" in data and "artifact" not in data:
        r = data["run"]
        console.print(
            f"run {r['id']} {r['component']} span={r['span']} {r['status']} ({r['seconds'] or 0:.2f}s)"
        )
        for label, group in (("in ", data["inputs"]), ("out", data["outputs"])):
            for name, a in group.items():
                console.print(f"  {label} {name}: {describe_artifact(a)}")
        return
    console.print(describe_artifact(data["artifact"]))
    _print_upstream(console, data["upstream"], indent=1)
    for r in data["consumers"]:
        console.print(f"  used by run {r['id']} {r['component']} span={r['span']} {r['status']}")


def describe_artifact(a: Data) -> str:
    span = f" span {a['span']} v{a['version']}" if a["span"] is not None else ""
    return f"{a['id']} {a['type']}{span} {a['uri']}"


def _print_upstream(console: Console, node: Data | None, indent: int) -> None:
    if node is None:
        return
    pad = "  " * indent
    r = node["run"]
    console.print(f"{pad}← produced by run {r['id']} {r['component']} ({r['status']})")
    for name, child in node["inputs"].items():
        console.print(f"{pad}  {name}: {describe_artifact(child['artifact'])}")
        _print_upstream(console, child["upstream"], indent + 2)


# -- training -----------------------------------------------------------------------------------
def print_run_table(console: Console, records: Sequence[Data]) -> None:
    """The training loop's records (``RunRecord.to_dict()``): one row per span, then why."""
    if not records:
        console.print("nothing new to train on")
        return
    table = Table(
        "span",
        "mode",
        "rows new/total",
        "rows featurized/reused",
        "tokens computed/reused",
        "seconds",
        "cand. acc new/hist",
        "champ. acc new/hist",
        "blessed",
        "version",
    )
    for r in records:
        cand, champ = r["metrics"]["candidate"], r["metrics"]["champion"]
        table.add_row(
            str(r["span"]),
            r["mode"],
            f"{r['rows_new']}/{r['rows_total']}",
            f"{r['rows_featurized']}/{r['rows_reused']}",
            f"{r['tokens_computed']}/{r['tokens_reused']}",
            f"{sum(r['seconds'].values()):.1f}",
            _accuracies(cand),
            _accuracies(champ),
            "yes" if r["blessed"] else "no",
            str(r["version"] or "-"),
        )
    console.print(table)
    for r in records:
        console.print(
            f"span {r['span']}: {r['mode']} ({escape(r['reason'])}); "
            + escape("; ".join(r["verdict"]))
        )


def _accuracies(side: Data) -> str:
    if not side:
        return "-"
    return "/".join(f"{side[k]['accuracy']:.3f}" if k in side else "-" for k in ("new", "historic"))


# -- registry -----------------------------------------------------------------------------------
def print_history(console: Console, versions: Sequence[Data]) -> None:
    """``evergreen history``: registry versions with mode, spans, accuracy and cost."""
    table = Table(
        "version",
        "champion",
        "mode",
        "spans",
        "acc new",
        "acc historic",
        "tokens computed/reused",
        "created",
    )
    for v in versions:
        metrics = v["metrics"] or {}
        cost = v["cost"] or {}
        table.add_row(
            str(v["version"]),
            "★" if v["champion"] else "",
            str(v["mode"]),
            ",".join(map(str, v["spans"] or [])),
            f"{metrics['new']['accuracy']:.3f}" if "new" in metrics else "-",
            f"{metrics['historic']['accuracy']:.3f}" if "historic" in metrics else "-",
            f"{cost.get('tokens_computed', 0)}/{cost.get('tokens_reused', 0)}",
            str(v["created_at"])[:19],
        )
    console.print(table)
    for v in versions:
        if v.get("reason"):
            console.print(f"version {v['version']}: {v['mode']} because {escape(str(v['reason']))}")


def print_predictions(
    console: Console, inputs: Sequence[str], predictions: Sequence[Data], version: int
) -> None:
    """One line per input: label, score, the input as given, the version that answered."""
    for text, r in zip(inputs, predictions, strict=True):
        console.print(f"{r['label']}\t{r['score']:.3f}\t{escape(text)}  (version {version})")


def print_tflite_export(console: Console, result: Any, quantize: str) -> None:
    """What ``evergreen export tflite`` wrote, and how the LiteRT model matches the SavedModel."""
    p = result.parity
    console.print(f"wrote {result.folder} (version {result.version}, {result.family}, {quantize})")
    console.print(
        f"parity on {p.rows} eval rows: accuracy {p.tflite_accuracy:.4f} (TFLite) vs "
        f"{p.saved_model_accuracy:.4f} (SavedModel), drop {p.accuracy_drop:+.4f}, max |score| "
        f"difference {p.max_abs_score_diff:.2e}, same class on {p.agreement:.1%}"
    )
    for name, size in result.files.items():
        console.print(f"  {name}: {size:,} bytes")
    if not result.flex.get("written"):
        console.print(f"  model_flex.tflite not written: {escape(str(result.flex.get('why')))}")
