"""Validate a span against the schema: anomalies with a severity, a message and a fix.

:func:`validate` is the pure core (statistics + ingest report + schema → anomalies);
:class:`ValidateSpan` is the pipeline component that stores them and blocks the span when any
anomaly has severity ``error``. :func:`accept` updates a schema so that a span's deliberate
changes stop being anomalies.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from evergreen.components.ingest import IngestReport, read_report
from evergreen.components.schema import ColumnSchema, Schema, presence_floor
from evergreen.components.statistics import SpanStatistics
from evergreen.config import ValidationConfig
from evergreen.errors import SchemaError
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext


@dataclass(frozen=True)
class Anomaly:
    kind: str
    column: str | None
    severity: str
    message: str


_Found = tuple[str, str | None, str]  # kind, column, message: an anomaly before its severity


def validate(
    stats: SpanStatistics, report: IngestReport, schema: Schema, cfg: ValidationConfig
) -> list[Anomaly]:
    """Every way the span departs from the schema, most severe first (``ignore``-d kinds dropped)."""
    span = f"span {report.span}"
    missing = _missing_columns(report, schema)
    found = [
        *_empty_span(span, report),
        *_column_changes(span, report, schema, missing),
        *_type_changes(span, report, schema, cfg),
    ]
    for name, column in schema.columns.items():
        col = stats.columns.get(name)
        if col is None or name in missing or stats.rows == 0:
            continue
        low = _low_presence(span, name, col, column, cfg.presence_noise_sigmas)
        if low:
            found.append(("low_presence", name, low))
        found += _out_of_domain(span, name, col, column)
        found += _out_of_range(span, name, col, column)
    found += _new_labels(span, stats, schema)
    anomalies = [
        Anomaly(kind, column, cfg.severity[kind], message) for kind, column, message in found
    ]
    order = {"error": 0, "warning": 1}
    return sorted((a for a in anomalies if a.severity != "ignore"), key=lambda a: order[a.severity])


def _missing_columns(report: IngestReport, schema: Schema) -> set[str]:
    """Schema columns the span's files lack (none when no file could be read at all)."""
    seen = set(report.columns_seen)
    return {name for name in schema.columns if seen and name not in seen}


def _empty_span(span: str, report: IngestReport) -> list[_Found]:
    if report.rows_kept > 0:
        return []
    quarantined = sum(report.quarantined.values())
    return [
        (
            "empty_span",
            None,
            f"{span} has no usable rows (read {report.rows_read}, quarantined {quarantined}); "
            "check its files and quarantine.jsonl",
        )
    ]


def _column_changes(
    span: str, report: IngestReport, schema: Schema, missing: set[str]
) -> list[_Found]:
    """Required columns gone from the files, and columns the schema does not know."""
    found: list[_Found] = []
    for name, column in schema.columns.items():
        if name in missing and column.min_presence > 0:
            found.append(
                (
                    "missing_column",
                    name,
                    f"{span}: column '{name}' is missing from its files. Restore it in the source, or run "
                    f"`evergreen ingest --accept {report.span}` if it is deliberately gone",
                )
            )
    known = set(schema.columns) | {schema.label} | set(schema.ignored_columns)
    for name in sorted(set(report.columns_seen) - known):
        found.append(
            (
                "new_column",
                name,
                f"{span}: column '{name}' is not in the schema; add it to data.features to use it, or accept the span to ignore it",
            )
        )
    return found


def _type_changes(
    span: str, report: IngestReport, schema: Schema, cfg: ValidationConfig
) -> list[_Found]:
    """Columns where more than ``max_type_error_fraction`` of the rows had another type."""
    found: list[_Found] = []
    for name, errors in sorted(report.type_errors.items()):
        fraction = errors / max(report.rows_read, 1)
        if fraction > cfg.max_type_error_fraction:
            expected = schema.columns[name].type if name in schema.columns else "?"
            found.append(
                (
                    "type_change",
                    name,
                    f"{span}: column '{name}' should be {expected} but {errors} of {report.rows_read} rows "
                    f"({fraction:.0%}) had values of another type (see quarantine.jsonl). Fix the source, or if the "
                    f"column really changed, set data.features.{name} and re-ingest",
                )
            )
    return found


def _out_of_domain(span: str, name: str, col: Any, column: ColumnSchema) -> list[_Found]:
    if column.domain is None or not col.present:
        return []
    unseen = [(v, n) for v, n in col.top(50) if v not in set(column.domain)]
    if not unseen:
        return []
    share = sum(n for _, n in unseen) / col.present
    examples = ", ".join(repr(v) for v, _ in unseen[:5])
    return [
        (
            "out_of_domain",
            name,
            f"{span}: column '{name}' has values outside the schema's domain ({share:.0%} of rows: {examples}); accept the span to add them",
        )
    ]


def _out_of_range(span: str, name: str, col: Any, column: ColumnSchema) -> list[_Found]:
    if column.type != "numeric" or not col.present or column.min is None or column.max is None:
        return []
    low, high = col.quantiles.get_min_value(), col.quantiles.get_max_value()
    if not (low < column.min or high > column.max):  # (nan compares False either way)
        return []
    return [
        (
            "out_of_range",
            name,
            f"{span}: column '{name}' ranges over [{low:g}, {high:g}], outside the schema's [{column.min:g}, {column.max:g}]",
        )
    ]


def _new_labels(span: str, stats: SpanStatistics, schema: Schema) -> list[_Found]:
    new_labels = sorted(set(stats.labels) - set(schema.label_domain))
    if not (new_labels and schema.label_domain):
        return []
    return [
        (
            "out_of_domain",
            schema.label,
            f"{span}: label '{schema.label}' has new classes {new_labels}; accept the span if they are intended",
        )
    ]


def presence_allowance(floor: float, rows: int, sigmas: float) -> float:
    """How far below ``floor`` a span of ``rows`` rows may fall by sampling noise alone.

    If each row has the column with probability ``floor``, the observed share of a span has
    the binomial standard error ``sqrt(floor * (1 - floor) / rows)``; ``sigmas`` of them are
    allowed (3: about 1 false alarm in 740 spans). A floor of 1 (always present) allows none.
    """
    if rows <= 0 or sigmas <= 0:
        return 0.0
    return sigmas * math.sqrt(floor * (1.0 - floor) / rows)


def _low_presence(
    span: str, name: str, col: Any, column: ColumnSchema, sigmas: float
) -> str | None:
    """The low_presence message, or None when the column's presence is within the noise."""
    rows = col.present + col.missing
    allowance = presence_allowance(column.min_presence, rows, sigmas)
    if col.presence >= column.min_presence - allowance:
        return None
    seen, floor = _distinct_percents(col.presence, column.min_presence)
    noise = (
        f" by more than sampling noise allows ({allowance:.2%} at {rows} rows)" if allowance else ""
    )
    return (
        f"{span}: column '{name}' is present in {seen} of rows ({col.present} of {rows}), below "
        f"the schema's floor of {floor}{noise}; fix the source, or accept the span to lower the floor"
    )


def _distinct_percents(value: float, floor: float) -> tuple[str, str]:
    """Both as percentages with the fewest decimals (up to 4) that tell them apart."""
    for digits in range(5):
        shown = f"{value:.{digits}%}", f"{floor:.{digits}%}"
        if shown[0] != shown[1]:
            return shown
    return shown


def accept(
    schema: Schema, stats: SpanStatistics, report: IngestReport, anomalies: list[Anomaly]
) -> Schema:
    """A copy of ``schema`` relaxed so that the span's anomalies become expected.

    Raises:
        SchemaError: a type change, which cannot be accepted in place (the rows were quarantined).
    """
    updated = copy.deepcopy(schema)
    # A type change also empties the span; name the cause, not the symptom.
    for anomaly in sorted(anomalies, key=lambda a: a.kind != "type_change"):
        name = anomaly.column
        if anomaly.kind == "type_change":
            raise SchemaError(
                f"span {report.span}: the type change of column '{name}' cannot be accepted in place; set "
                f"data.features.{name} in the config and re-ingest the span"
            )
        if anomaly.kind == "empty_span":
            raise SchemaError(
                f"span {report.span} is empty; there is nothing to accept. Fix its files instead"
            )
        if anomaly.kind == "new_column" and name:
            updated.ignored_columns = sorted(set(updated.ignored_columns) | {name})
        elif anomaly.kind == "missing_column" and name:
            updated.columns[name].min_presence = 0.0
        elif anomaly.kind == "low_presence" and name:
            updated.columns[name].min_presence = presence_floor(stats.columns[name].presence)
        elif anomaly.kind == "out_of_domain" and name == schema.label:
            updated.label_domain = sorted(set(updated.label_domain) | set(stats.labels))
        elif anomaly.kind == "out_of_domain" and name:
            column = updated.columns[name]
            column.domain = sorted(
                set(column.domain or []) | {v for v, _ in stats.columns[name].top(500)}
            )
        elif anomaly.kind == "out_of_range" and name:
            column, col = updated.columns[name], stats.columns[name]
            column.min = min(column.min or 0.0, col.quantiles.get_min_value())
            column.max = max(column.max or 0.0, col.quantiles.get_max_value())
    return updated


def load(artifact: Artifact) -> list[Anomaly]:
    data = json.loads((Path(artifact.uri) / "anomalies.json").read_text(encoding="utf-8"))
    return [Anomaly(**a) for a in data["anomalies"]]


class ValidateSpan:
    """Pipeline component: statistics + examples + schema → an ``anomalies`` artifact."""

    name: ClassVar[str] = "validate"
    version: ClassVar[str] = "1"

    def __init__(self, span: int, version: int, cfg: ValidationConfig) -> None:
        self.span = span
        self.span_version = version
        self.cfg = cfg

    def parameters(self) -> dict[str, Any]:
        return asdict(self.cfg)

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        from evergreen.components import schema as schema_mod
        from evergreen.components import statistics

        stats = statistics.load(ctx.inputs["statistics"])
        report = read_report(ctx.inputs["examples"])
        self.anomalies = validate(stats, report, schema_mod.load(ctx.inputs["schema"]), self.cfg)
        self.blocked = any(a.severity == "error" for a in self.anomalies)
        writer = ctx.output(
            "anomalies", "ExampleAnomalies", span=self.span, version=self.span_version
        )
        writer.write_json(
            "anomalies.json",
            {"blocked": self.blocked, "anomalies": [asdict(a) for a in self.anomalies]},
        )
        ctx.set_properties("anomalies", {"blocked": self.blocked, "count": len(self.anomalies)})
        return {"blocked": self.blocked, "anomalies": len(self.anomalies)}

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        ctx.store.update_span(
            ctx.conn,
            self.span,
            self.span_version,
            anomalies_id=outputs["anomalies"].id,
            status="blocked" if self.blocked else "validated",
        )
