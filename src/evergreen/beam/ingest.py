"""Ingest of a span on Beam: read, quarantine, dedupe against the stored index, split, write.

The pipeline runs the embedded core, :class:`RowProcessor`, per record (``_check``) and per
input hash (``_dedupe``): the new span's checked rows are joined by input hash
(``CoGroupByKey``) with the earlier spans' dedupe index (their ``index.parquet`` files, read
with ``ReadAllFromParquet``), and each group is decided in input order against the entries in the order the
embedded ``SpanIndex`` gives them. Kept rows are written per split with ``WriteToTFRecord``
inside the artifact's temporary folder (committed once by the runner) and summed into the
span's statistics by a ``CombineFn``; quarantined rows, label conflicts, counts and the new
index entries come back through a scratch folder, and the driver writes ``quarantine.jsonl``
and ``index.parquet`` (in input order) into the artifact.

Files are the unit of parallelism for reading (a CSV with quoted newlines cannot be split at
an arbitrary byte); everything after the read is spread over the workers.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam

from evergreen import dedupe_index, examples, readers
from evergreen.beam import Scratch, check_conservation, pipeline_options, to_json
from evergreen.beam.statistics import StatisticsCombineFn
from evergreen.components.ingest import (
    IngestReport,
    IngestSpan,
    Quarantined,
    _reason_kind,
    _Row,
    stored_columns,
)
from evergreen.components.statistics import STATISTICS_FILE
from evergreen.dedupe_index import IndexedRow
from evergreen.errors import BeamError
from evergreen.pipeline import ExecutionContext

Seq = tuple[int, int]  # (file number, record number): the embedded path's input order
# Beam metrics namespace of the per-stage row counters: where a runner loses rows, they say
# at which stage (a short count after the join, or between the kept rows and the shards).
STAGE_COUNTERS = "evergreen.ingest"


class _ReadFile(beam.DoFn):
    def __init__(self, fmt: str) -> None:
        self.fmt = fmt

    def setup(self) -> None:
        self.read = _counter("read")

    def process(self, item: tuple[int, str]) -> Iterator[tuple[Seq, readers.RawRecord]]:
        number, path = item
        for n, record in enumerate(readers.read(Path(path), self.fmt)):
            self.read.inc()
            yield (number, n), record


class _Check(beam.DoFn):
    """A batch of raw records → per record ``(input hash, (seq, row))``, or a quarantined
    record (tagged): ``RowProcessor.check_batch``, column-wise where the batch allows."""

    def __init__(self, component: IngestSpan) -> None:
        self.component = component

    def setup(self) -> None:
        self.processor = self.component.row_processor(lambda _: {}, lambda rows: None)
        # Type errors are counted from the quarantine reasons by the driver.
        self.report = IngestReport(0, 0, [])
        self.checked, self.to_join = _counter("checked"), _counter("into_join")

    def process(self, batch: list[tuple[Seq, readers.RawRecord]]) -> Iterator[Any]:
        checked = self.processor.check_batch([record for _, record in batch], self.report)
        self.checked.inc(len(batch))
        for (seq, _), item in zip(batch, checked, strict=True):
            if isinstance(item, Quarantined):
                yield beam.pvalue.TaggedOutput("events", _quarantine_event(seq, item))
            else:
                self.to_join.inc()
                yield item.input_hash, (seq, item)


class _Decide(beam.DoFn):
    """One input hash's new rows (in input order) against the index entries it matches."""

    def __init__(self, component: IngestSpan) -> None:
        self.component = component

    def setup(self) -> None:
        self.known: dict[str, list[IndexedRow]] = {}
        # Kept rows are this span's new index entries: the driver writes them in input order.
        self.processor = self.component.row_processor(lambda _: self.known, lambda rows: None)
        self.joined, self.kept = _counter("out_of_join"), _counter("kept")

    def process(self, element: tuple[str, dict[str, list[Any]]]) -> Iterator[Any]:
        input_hash, grouped = element
        new = sorted(grouped["new"], key=lambda item: item[0])
        if not new:
            return
        self.joined.inc(len(new))
        seqs = {row.source: seq for seq, row in new}
        # The embedded SpanIndex's order: files in ingest order, positions within a file.
        entries = sorted(grouped["index"], key=lambda e: (e[4], e[5]))
        self.known = {input_hash: [IndexedRow(*e[:4]) for e in entries]}
        report = IngestReport(0, 0, [])
        for item in self.processor._dedupe([row for _, row in new], report):
            seq = seqs[item.source]
            if isinstance(item, Quarantined):
                yield beam.pvalue.TaggedOutput("events", _quarantine_event(seq, item))
                continue
            entry = [seq, item.row_hash, item.input_hash, item.label]
            self.kept.inc()
            yield beam.pvalue.TaggedOutput("index", to_json(entry))
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


class _Encode(beam.DoFn):
    def __init__(self, component: IngestSpan) -> None:
        self.types = component.types
        self.label = component.config.data.label

    def setup(self) -> None:
        self.encoder = examples.ExampleEncoder(self.types, self.label)
        self.encoded = _counter("encoded")

    def process(self, row: _Row) -> Iterator[bytes]:
        self.encoded.inc()
        yield self.encoder.encode(row.values, row.label, row.row_hash)


class _Columns(beam.DoFn):
    """A batch of kept rows → (columns as the shards store them, labels) for statistics."""

    def __init__(self, types: dict[str, str]) -> None:
        self.types = types

    def process(self, rows: list[_Row]) -> Iterator[tuple[dict[str, list[Any]], list[str]]]:
        yield stored_columns(rows, self.types), [row.label for row in rows]


def _counter(name: str) -> Any:
    """A row counter of one stage (summed over workers and bundles by the runner)."""
    return beam.metrics.Metrics.counter(STAGE_COUNTERS, name)


def stage_counts(result: Any) -> dict[str, int]:
    """Rows counted at each stage of a finished ingest pipeline; empty where the runner
    reports no metrics. Names: ``read``, ``checked``, ``into_join``, ``out_of_join``,
    ``kept``, ``encoded`` (a name counted by several steps, ``encoded`` per split, is summed)."""
    counts: dict[str, int] = {}
    for c in result.metrics().query(beam.metrics.MetricsFilter())["counters"]:
        if c.key.metric.namespace == STAGE_COUNTERS:
            value = c.committed if c.committed is not None else c.attempted
            counts[c.key.metric.name] = counts.get(c.key.metric.name, 0) + int(value or 0)
    return counts


def _quarantine_event(seq: Seq, item: Quarantined) -> str:
    return to_json({"seq": seq, "quarantined": dataclasses.asdict(item)})


def _index_entries(p: Any, files: dict[str, tuple[int, int]]) -> Any:
    """Earlier spans' index entries keyed by input hash:
    ``[row hash, input hash, label, span, order, position]`` (hex hashes)."""

    def from_file(item: tuple[str, dict[str, Any]]) -> tuple[str, list[Any]]:
        path, r = item
        span, order = files[path]
        input_hash = r["input_hash"].hex()
        return input_hash, [r["row_hash"].hex(), input_hash, r["label"], span, order, r["position"]]

    return (
        p
        | "IndexFiles" >> beam.Create(sorted(files))
        | "ReadIndex" >> beam.io.ReadAllFromParquet(with_filename=True)
        | "IndexEntries" >> beam.Map(from_file)
    )


def _build(p: Any, job: _Job, scratch: Scratch) -> None:
    """The ingest pipeline: span files → split shards under ``job.out``, side outputs in scratch."""
    component = job.component
    files = [(n, str(path)) for n, path in enumerate(component.span.files)]
    records = (
        p
        | "Files" >> beam.Create(files)
        | "Spread" >> beam.Reshuffle()
        | "Read" >> beam.ParDo(_ReadFile(component.config.data.format))
    )
    checked = (
        records
        | "CheckBatch" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
        | "Check" >> beam.ParDo(_Check(component)).with_outputs("events", main="rows")
    )
    stored = _index_entries(p, job.index_files)
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
        (job.out / name).mkdir(parents=True, exist_ok=True)
        _ = (
            part
            | f"Encode {name}" >> beam.ParDo(_Encode(component))
            | f"Write {name}"
            >> beam.io.WriteToTFRecord(str(job.out / name / "part"), file_name_suffix=".tfrecord")
        )
    types, span = component.types, component.span.span
    _ = (
        decided.kept
        | "StatsBatch" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
        | "StatsColumns" >> beam.ParDo(_Columns(types))
        | "Sketch" >> beam.CombineGlobally(StatisticsCombineFn(types, span))
        | "StatsJson" >> beam.Map(to_json)
        | "WriteStats" >> beam.io.WriteToText(scratch.prefix("statistics"))
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


@dataclass(frozen=True)
class _Job:
    """What the pipeline needs (picklable): the component, where to write, the index to join."""

    component: IngestSpan
    out: Path
    index_files: dict[str, tuple[int, int]]  # parquet path -> (span, ingest order)


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


def _write_index(span: int, entries: Iterable[list[Any]], path: Path) -> None:
    """This span's ``index.parquet`` from the kept rows' entries, positions in input order."""
    ordered = sorted(entries, key=lambda e: e[0])
    index = dedupe_index.SpanIndex(span, [])
    index.remember(
        [
            IndexedRow(row_hash, input_hash, label, span)
            for _, row_hash, input_hash, label in ordered
        ]
    )
    index.write(path)


_STAGES = ("read", "checked", "into_join", "out_of_join", "kept", "encoded")


def _check_report(report: IngestReport, stages: dict[str, int]) -> None:
    """Every row read is kept, quarantined or a duplicate (see :func:`check_conservation`), and,
    where the runner reports metrics (``stages``), the join gave back every row it was given
    and the shards got every kept row: a loss is named by the stage where it happened.

    Raises:
        BeamError: rows were lost (or invented) somewhere.
    """
    detail = (
        "per stage: " + ", ".join(f"{name} {stages.get(name, 0):,}" for name in _STAGES)
        if stages
        else ""
    )
    check_conservation(
        f"ingest of span {report.span}",
        report.rows_read,
        {
            "kept": report.rows_kept,
            "quarantined": sum(report.quarantined.values()),
            "duplicates": report.duplicates_within_span + report.duplicates_of_earlier_spans,
        },
        detail,
    )
    if not stages:
        return
    for what, given, got in (
        ("the join", stages.get("into_join", 0), stages.get("out_of_join", 0)),
        ("the shards", report.rows_kept, stages.get("encoded", 0)),
    ):
        if given != got:
            raise BeamError(
                f"ingest of span {report.span} on Beam: {what} got {given:,} rows and gave "
                f"{got:,} ({detail}): the runner lost or duplicated data, so nothing was "
                "committed. Run again; if it repeats, run with one worker "
                "(--direct_num_workers=1) or without [beam], and report the runner and its options"
            )


class BeamIngestSpan(IngestSpan):
    """:class:`IngestSpan` as a Beam pipeline; the same ``examples`` artifact (shards,
    quarantine, report, statistics and dedupe index)."""

    def parameters(self) -> dict[str, Any]:
        # The engine is recorded; the runner's options are not part of the result.
        return {**super().parameters(), "engine": "beam"}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        assert self.config.beam is not None
        report = IngestReport(self.span.span, self.span_version, [str(f) for f in self.span.files])
        index = self._open_index(ctx, report)
        columns_seen = {c for path in self.span.files for c in self.file_columns(path)}
        writer = ctx.output("examples", "Examples", span=self.span.span, version=self.span_version)
        with Scratch(writer.path, f"ingest-{self.span.span}") as scratch:
            job = _Job(
                component=_without_progress(self),
                out=writer.path,
                index_files={str(s.path): (s.span, s.order) for s in index.files},
            )
            with beam.Pipeline(options=pipeline_options(self.config.beam)) as p:
                _build(p, job, scratch)
            stages = stage_counts(p.result)
            report.rows_written = {name: 0 for name in self.config.split.ratios}
            _report_from_events(
                report, scratch.json_lines("events"), writer.path / "quarantine.jsonl"
            )
            (stats,) = list(scratch.json_lines("statistics"))
            _write_index(
                self.span.span, scratch.json_lines("index"), writer.path / dedupe_index.INDEX_FILE
            )
        writer.write_json(STATISTICS_FILE, stats)
        report.columns_seen = sorted(columns_seen)
        _check_report(report, stages)
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
