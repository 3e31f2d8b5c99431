"""The read side of a pipeline: status, one span's status, lineage, the schema and statistics.

Nothing here writes: every answer is read from the metadata store and small artifacts, so
`evergreen status`, `lineage` and `report` can run while a writer holds the pipeline's lock.
The answers are typed (:class:`SpanStatus`, :class:`ArtifactLineage`, :class:`RunLineage`);
their ``to_dict()`` is the ``--json`` output.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from evergreen import skew
from evergreen.components import drift as drift_mod
from evergreen.components import ingest as ingest_mod
from evergreen.components import schema as schema_mod
from evergreen.components import statistics as stats_mod
from evergreen.components import validate as validate_mod
from evergreen.config import Config
from evergreen.decision_log import DecisionLog
from evergreen.errors import NotFound
from evergreen.lineage import ArtifactLineage, RunLineage, lineage_of
from evergreen.metadata import Artifact, MetadataStore, SpanRecord
from evergreen.span_status import Decision, DriftSummary, IngestCounts, SpanStatus

__all__ = ["ArtifactLineage", "Decision", "Queries", "RunLineage", "SpanStatus"]


class Queries:
    """Read-only questions about one pipeline, answered from its metadata store.

    Args:
        config: the pipeline's config.
        store: its metadata store.
        champion_featurizer: returns the champion's text featurizer artifact, or None (the
            serving skew check compares under its vocabulary).
    """

    def __init__(
        self,
        config: Config,
        store: MetadataStore,
        champion_featurizer: Callable[[], Artifact | None],
    ) -> None:
        self.config = config
        self.store = store
        self.champion_featurizer = champion_featurizer

    @property
    def reports_dir(self) -> Path:
        """Where run records (``span-N.json``) and HTML reports (``span-N.html``) live."""
        return self.config.root / "reports"

    def current_schema(self) -> schema_mod.Schema | None:
        existing = self.store.artifacts(type="Schema")
        return schema_mod.load(existing[-1]) if existing else None

    def dataset_statistics(self) -> stats_mod.SpanStatistics | None:
        """Statistics of every usable span: a merge of span sketches (no span is re-read)."""
        parts = [
            stats_mod.load(self.store.artifact(r.statistics_id))
            for r in self.store.spans()
            if r.statistics_id is not None and r.status == "validated"
        ]
        return stats_mod.merge_all(parts)

    def status(self) -> dict[str, Any]:
        """Everything `evergreen status` shows, as JSON-ready data."""
        decided = DecisionLog(self.store).all_latest()
        span_rows = [
            self._span_status(record, decided.get(record.span)).to_dict()
            for record in self.store.spans()
        ]
        runs = self.store.runs(limit=10_000)
        schema = self.store.artifacts(type="Schema")
        latest = next((s for s in reversed(span_rows) if "drift" in s), None)
        return {
            "pipeline": self.config.name,
            "root": str(self.config.root),
            "drift_enabled": self.config.drift.enabled,
            "latest_drift": latest["drift"] | {"span": latest["span"]} if latest else None,
            "skew": self._skew(),
            "metadata": self.store.url.split("://", 1)[0],
            "schema": {"artifact": f"a{schema[-1].id}", "uri": schema[-1].uri} if schema else None,
            "spans": span_rows,
            "totals": _totals(span_rows),
            "runs": {
                status: sum(1 for r in runs if r.status == status)
                for status in sorted({r.status for r in runs})
            },
        }

    def _skew(self) -> dict[str, Any] | None:
        """The serving skew summary (None while drift detection is off or nothing was logged)."""
        if not self.config.drift.enabled:
            return None
        serving = skew.project_skew(self)
        if serving is None:
            return None
        return {
            "severity": serving.severity,
            "features": serving.features_at("minor"),
            "alarms": [a.describe() for a in serving.alarms],
            "rows": serving.comparisons[0].rows_new if serving.comparisons else 0,
            "notes": serving.notes,
        }

    def span_status(self, span: int) -> SpanStatus:
        """The status of the current version of ``span`` (one row of :meth:`status`).

        Raises:
            NotFound: the span has not been ingested.
        """
        record = next((r for r in self.store.spans() if r.span == span), None)
        if record is None:
            raise NotFound(f"span {span} has not been ingested; run `evergreen ingest` first")
        return self._span_status(record, DecisionLog(self.store).latest(span))

    def _span_status(self, record: SpanRecord, decided: dict[str, Any] | None) -> SpanStatus:
        anomalies = None
        if record.anomalies_id is not None:
            found = validate_mod.load(self.store.artifact(record.anomalies_id))
            anomalies = [vars(a) for a in found]
        return SpanStatus(
            span=record.span,
            version=record.version,
            status=record.status,
            files=record.files,
            ingest=self._ingest_counts(record),
            statistics=None if record.statistics_id is None else f"a{record.statistics_id}",
            anomalies=anomalies,
            drift=self._drift_summary(record.span),
            decision=None if decided is None else self._decision(decided),
        )

    def _ingest_counts(self, record: SpanRecord) -> IngestCounts | None:
        if record.examples_id is None:
            return None
        examples = self.store.artifact(record.examples_id)
        return IngestCounts.from_report(
            f"a{examples.id}",
            ingest_mod.read_report(examples),
            str(Path(examples.uri) / "quarantine.jsonl"),
        )

    def _drift_summary(self, span: int) -> DriftSummary | None:
        artifact = drift_mod.find_artifact(self.store, span)
        if artifact is None:
            return None
        result = drift_mod.load(artifact)
        return DriftSummary(
            artifact=f"a{artifact.id}",
            severity=result.severity,
            features=result.features_at("minor"),
            alarms=[a.describe() for a in result.alarms],
            unknown_rate=result.unknown_rate,
        )

    def _decision(self, record: dict[str, Any]) -> Decision:
        """The decision in a training loop record, with where its HTML report is."""
        return Decision(
            mode=record.get("mode"),
            reason=record.get("reason"),
            blessed=record.get("blessed"),
            version=record.get("version"),
            report=str(self.reports_dir / f"span-{record['span']}.html"),
        )

    def lineage(self, ident: str) -> ArtifactLineage | RunLineage:
        """Where an artifact (``a12``) or run (``r5``) came from and what used it.

        Raises:
            NotFound: ``ident`` is not an id, or names nothing in the store.
        """
        return lineage_of(self.store, ident)


def _totals(span_rows: list[dict[str, Any]]) -> dict[str, int]:
    """The status table's bottom line, summed over the spans' rows."""
    return {
        "spans": len(span_rows),
        "blocked": sum(1 for s in span_rows if s["status"] == "blocked"),
        "rows_read": sum(s.get("rows_read", 0) for s in span_rows),
        "rows_kept": sum(s.get("rows_kept", 0) for s in span_rows),
        "quarantined": sum(s.get("quarantined_total", 0) for s in span_rows),
        "duplicates": sum(
            s.get("duplicates_within_span", 0) + s.get("duplicates_of_earlier_spans", 0)
            for s in span_rows
        ),
        "label_conflicts": sum(len(s.get("label_conflicts", [])) for s in span_rows),
    }
