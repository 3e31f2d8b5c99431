"""What `evergreen status` says about one span, typed: :class:`SpanStatus` and its parts.

``SpanStatus.to_dict()`` is one row of ``evergreen status --json`` (keys in that order; the
parts a span does not have yet are absent, not null) and ``from_dict`` reads it back.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from evergreen.components.ingest import IngestReport


@dataclass(frozen=True)
class IngestCounts:
    """What ingest did to the span's rows (from its examples artifact's report)."""

    examples: str  # the examples artifact, "a12"
    rows_read: int
    rows_kept: int
    rows_written: dict[str, int]  # per split
    duplicates_within_span: int
    duplicates_of_earlier_spans: int
    label_conflicts: list[dict[str, Any]]
    quarantined: dict[str, int]  # per reason kind
    quarantined_total: int
    quarantine_file: str

    @classmethod
    def from_report(cls, examples: str, report: IngestReport, quarantine_file: str) -> IngestCounts:
        return cls(
            examples=examples,
            rows_read=report.rows_read,
            rows_kept=report.rows_kept,
            rows_written=report.rows_written,
            duplicates_within_span=report.duplicates_within_span,
            duplicates_of_earlier_spans=report.duplicates_of_earlier_spans,
            label_conflicts=report.label_conflicts,
            quarantined=report.quarantined,
            quarantined_total=sum(report.quarantined.values()),
            quarantine_file=quarantine_file,
        )


@dataclass(frozen=True)
class DriftSummary:
    """The span's drift report in short: overall severity, drifted features, alarms."""

    artifact: str
    severity: str  # none, minor or major
    features: list[str]  # features at minor or worse
    alarms: list[str]
    unknown_rate: float | None  # under the champion's vocabulary (text), else None


@dataclass(frozen=True)
class Decision:
    """What the training loop decided for the span, and where its report is."""

    mode: str | None  # incremental, full, block or adopted
    reason: str | None
    blessed: bool | None
    version: int | None  # the registry version pushed, None when none
    report: str  # the HTML report's path


@dataclass(frozen=True)
class SpanStatus:
    """The current version of one span: its files, ingest counts, anomalies, drift, decision.

    The optional parts are None until the stage that makes them has run.
    """

    span: int
    version: int
    status: str  # ingested, validated, blocked
    files: list[str]
    ingest: IngestCounts | None = None
    statistics: str | None = None  # the statistics artifact, "a13"
    anomalies: list[dict[str, Any]] | None = None
    drift: DriftSummary | None = None
    decision: Decision | None = None

    def to_dict(self) -> dict[str, Any]:
        """One row of ``evergreen status --json``."""
        row: dict[str, Any] = {
            "span": self.span,
            "version": self.version,
            "status": self.status,
            "files": self.files,
        }
        if self.ingest is not None:
            row.update(dataclasses.asdict(self.ingest))
        if self.statistics is not None:
            row["statistics"] = self.statistics
        if self.anomalies is not None:
            row["anomalies"] = self.anomalies
        if self.drift is not None:
            row["drift"] = dataclasses.asdict(self.drift)
        if self.decision is not None:
            row["decision"] = dataclasses.asdict(self.decision)
        return row

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> SpanStatus:
        """The inverse of :meth:`to_dict`."""
        counts = [f.name for f in dataclasses.fields(IngestCounts)]
        return cls(
            span=data["span"],
            version=data["version"],
            status=data["status"],
            files=data["files"],
            ingest=IngestCounts(**{k: data[k] for k in counts}) if "examples" in data else None,
            statistics=data.get("statistics"),
            anomalies=data.get("anomalies"),
            drift=DriftSummary(**data["drift"]) if "drift" in data else None,
            decision=Decision(**data["decision"]) if "decision" in data else None,
        )
