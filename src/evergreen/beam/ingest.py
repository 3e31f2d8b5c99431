"""Ingest of a span on Beam: read, quarantine, dedupe against the stored index, split, write.

The pipeline runs the embedded core, :class:`RowProcessor`, per record (``_check``) and per
input hash (``_dedupe``): the new span's checked rows are joined with the stored row index by
input hash (``CoGroupByKey``), and each group is decided in input order, exactly as the
embedded path decides it chunk by chunk. Kept rows are written per split with
``WriteToTFRecord`` inside the artifact's temporary folder (committed once by the runner);
quarantined rows, label conflicts, counts and the new index entries come back through a
scratch folder and are recorded by the driver in the run's transaction.

Files are the unit of parallelism for reading (a CSV with quoted newlines cannot be split at
an arbitrary byte); everything after the read is spread over the workers.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import apache_beam as beam
import sqlalchemy as sa

from evergreen import examples, readers
from evergreen.beam import Scratch, check_conservation, pipeline_options, to_json, wire
from evergreen.components.ingest import (
    IngestReport,
    IngestSpan,
    Quarantined,
    _reason_kind,
    _Row,
)
from evergreen.metadata import IndexedRow, row_index_table
from evergreen.pipeline import ExecutionContext

Seq = tuple[int, int]  # (file number, record number): the embedded path's input order
_ADD_CHUNK = 10_000


class _ReadFile(beam.DoFn):
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def process(self, item: tuple[int, str]) -> Iterator[tuple[Seq, readers.RawRecord]]:
        number, path = item
        for n, record in enumerate(readers.read(Path(path), self.fmt)):
            yield (number, n), record


class _Check(beam.DoFn):
    """One raw record → ``(input hash, (seq, row))``, or a quarantined record (tagged)."""

    def __init__(self, component: IngestSpan) -> None:
        self.component = component

    def setup(self) -> None:
        self.processor = self.component.row_processor(lambda _: {}, lambda rows: None)
        # Type errors are counted from the quarantine reasons by the driver.
        self.report = IngestReport(0, 0, [])

    def process(self, item: tuple[Seq, readers.RawRecord]) -> Iterator[Any]:
        seq, record = item
        checked = self.processor._check(record, self.report)
        if isinstance(checked, Quarantined):
            yield beam.pvalue.TaggedOutput("events", _quarantine_event(seq, checked))
        else:
            yield checked.input_hash, (seq, checked)


class _Decide(beam.DoFn):
    """One input hash's new rows (in input order) against its stored index entries."""

    def __init__(self, component: IngestSpan) -> None:
        self.component = component

    def setup(self) -> None:
        self.known: dict[str, list[IndexedRow]] = {}
        self.fresh: list[IndexedRow] = []
        self.processor = self.component.row_processor(lambda _: self.known, self.fresh.extend)

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
        input_hash, grouped = element
        new = sorted(grouped["new"], key=lambda item: item[0])
        if not new:
            return
        seqs = {row.source: seq for seq, row in new}
        stored = sorted((IndexedRow(*r) for r in grouped["index"]), key=lambda r: r.span)
        self.known = {input_hash: stored}
        self.fresh.clear()
        report = IngestReport(0, 0, [])
        for item in self.processor._dedupe([row for _, row in new], report):
            if isinstance(item, Quarantined):
                yield beam.pvalue.TaggedOutput("events", _quarantine_event(seqs[item.source], item))
            else:
                yield item
        for conflict in report.label_conflicts:
            event = {"seq": seqs[conflict["source"]], "conflict": conflict}
            yield beam.pvalue.TaggedOutput("events", to_json(event))
        for key, n in (
            ("duplicates_within_span", report.duplicates_within_span),
            ("duplicates_of_earlier_spans", report.duplicates_of_earlier_spans),
        ):
            if n:
                yield beam.pvalue.TaggedOutput("counts", (key, n))
        for entry in self.fresh:
            yield beam.pvalue.TaggedOutput("index", to_json(dataclasses.astuple(entry)))


class _Encode(beam.DoFn):
    def __init__(self, component: IngestSpan) -> None:
        self.types = component.types
        self.label = component.config.data.label

    def process(self, row: _Row) -> Iterator[bytes]:
        yield examples.encode(
            row.values, self.types, self.label, row.label, row.row_hash, train=wire.train
        )


def _quarantine_event(seq: Seq, item: Quarantined) -> str:
    return to_json({"seq": seq, "quarantined": dataclasses.asdict(item)})


def _build(p: Any, component: IngestSpan, out: Path, scratch: Scratch, index: str) -> None:
    """The ingest pipeline: span files → split shards under ``out``, side outputs in scratch."""
    files = [(n, str(path)) for n, path in enumerate(component.span.files)]
    records = (
        p
        | "Files" >> beam.Create(files)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(_ReadFile(component.config.data.format))
    )
    checked = records | "Check" >> beam.ParDo(_Check(component)).with_outputs("events", main="rows")
    stored = (
        p
        | "Index" >> beam.io.ReadFromText(index)
        | "IndexRows" >> beam.Map(json.loads)
        | "ByInput" >> beam.Map(lambda r: (r[1], r))
    )
    decided = (
        {"new": checked.rows, "index": stored}
        | "Join" >> beam.CoGroupByKey()
        | "Decide"
        >> beam.ParDo(_Decide(component)).with_outputs("events", "counts", "index", main="kept")
    )
    splits = list(component.config.split.ratios)
    parts = decided.kept | "BySplit" >> beam.Partition(
        lambda row, n: splits.index(row.split), len(splits)
    )
    for name, part in zip(splits, parts, strict=True):
        (out / name).mkdir(parents=True, exist_ok=True)
        _ = (
            part
            | f"Encode {name}" >> beam.ParDo(_Encode(component))
            | f"Write {name}"
            >> beam.io.WriteToTFRecord(str(out / name / "part"), file_name_suffix=".tfrecord")
        )
    counts = (
        (
            records | "CountRead" >> beam.Map(lambda _: ("rows_read", 1)),
            decided.kept | "CountKept" >> beam.Map(lambda row: ("split:" + row.split, 1)),
            decided.counts,
        )
        | "AllCounts" >> beam.Flatten()
        | "Sum" >> beam.CombinePerKey(sum)
        | "CountJson" >> beam.Map(to_json)
    )
    _ = (
        (checked.events, decided.events, counts)
        | "AllEvents" >> beam.Flatten()
        | "WriteEvents" >> beam.io.WriteToText(scratch.prefix("events"))
    )
    _ = decided.index | "WriteIndex" >> beam.io.WriteToText(scratch.prefix("index"))


def _export_index(ctx: ExecutionContext, path: Path) -> None:
    """The stored row index (after this span's old entries were dropped) as JSON lines."""
    t = row_index_table
    query = sa.select(t.c.row_hash, t.c.input_hash, t.c.label, t.c.span).where(
        t.c.pipeline == ctx.store.pipeline
    )
    with open(path, "w", encoding="utf-8") as f:
        for r in ctx.conn.execute(query):
            f.write(to_json([r.row_hash, r.input_hash, r.label, r.span]) + "\n")


def _report_from_events(report: IngestReport, events: Iterable[Any], quarantine: Path) -> None:
    """Fill ``report`` from the pipeline's events and counts; write ``quarantine.jsonl``."""
    quarantined, conflicts = [], []
    for event in events:
        if isinstance(event, list):  # a [key, count] pair
            key, n = event
            if key.startswith("split:"):
                report.rows_written[key.removeprefix("split:")] = n
            else:
                setattr(report, key, n)
        elif "conflict" in event:
            conflicts.append((event["seq"], event["conflict"]))
        else:
            quarantined.append((event["seq"], event["quarantined"]))
    report.label_conflicts = [c for _, c in sorted(conflicts, key=lambda e: e[0])]
    with open(quarantine, "w", encoding="utf-8") as f:
        for _, item in sorted(quarantined, key=lambda e: e[0]):
            kind = _reason_kind(item["reason"])
            report.quarantined[kind] = report.quarantined.get(kind, 0) + 1
            if item["reason"].startswith("wrong type: expected") and item["column"]:
                column = item["column"]
                report.type_errors[column] = report.type_errors.get(column, 0) + 1
            f.write(json.dumps(item, ensure_ascii=False, default=str) + "\n")


def _check_report(report: IngestReport) -> None:
    """Every row read is kept, quarantined or a duplicate (see :func:`check_conservation`)."""
    check_conservation(
        f"ingest of span {report.span}",
        report.rows_read,
        {
            "kept": report.rows_kept,
            "quarantined": sum(report.quarantined.values()),
            "duplicates": report.duplicates_within_span + report.duplicates_of_earlier_spans,
        },
    )


class BeamIngestSpan(IngestSpan):
    """:class:`IngestSpan` as a Beam pipeline; the same ``examples`` artifact and index rows."""

    def parameters(self) -> dict[str, Any]:
        # The engine is recorded; the runner's options are not part of the result.
        return {**super().parameters(), "engine": "beam"}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        assert self.config.beam is not None
        store, conn = ctx.store, ctx.conn
        report = IngestReport(self.span.span, self.span_version, [str(f) for f in self.span.files])
        report.index_rows_replaced = store.drop_index_span(conn, self.span.span)
        columns_seen = {c for path in self.span.files for c in self.file_columns(path)}
        writer = ctx.output("examples", "Examples", span=self.span.span, version=self.span_version)
        worker_copy = _without_progress(self)
        with Scratch(writer.path, f"ingest-{self.span.span}") as scratch:
            index = scratch.path / "stored-index.jsonl"
            _export_index(ctx, index)
            with beam.Pipeline(options=pipeline_options(self.config.beam)) as p:
                _build(p, worker_copy, writer.path, scratch, str(index))
            report.rows_written = {name: 0 for name in self.config.split.ratios}
            _report_from_events(
                report, scratch.json_lines("events"), writer.path / "quarantine.jsonl"
            )
            fresh = (IndexedRow(*r) for r in scratch.json_lines("index"))
            while chunk := list(itertools.islice(fresh, _ADD_CHUNK)):
                store.add_index_rows(conn, chunk, self.span_version)
        report.columns_seen = sorted(columns_seen)
        _check_report(report)
        if self.progress:
            self.progress(1, 1)
        return self.finish(ctx, writer, report)


def _without_progress(component: IngestSpan) -> IngestSpan:
    """A copy for the workers: the progress callback is a closure of this process."""
    return IngestSpan(
        component.config,
        component.span,
        version=component.span_version,
        fingerprint=component.fingerprint,
        types=component.types,
    )
