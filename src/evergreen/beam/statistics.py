"""Statistics of a span on Beam: the sketches of :class:`SpanStatistics` merged in a CombineFn.

Each worker adds its batches of rows to a partial :class:`SpanStatistics`; partials travel
between workers as the statistics artifact's own JSON (sketches serialized by DataSketches),
and the final merge is the same statistics as the embedded path's. Beam ingest runs the
``CombineFn`` over the kept rows (and stores the result in the examples artifact, as embedded
ingest does); :class:`BeamComputeStatistics` re-reads the shards only for spans ingested before
ingest computed statistics.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import apache_beam as beam

from evergreen import examples
from evergreen.beam import Scratch, check_conservation, pipeline_options, to_json, wire
from evergreen.components.statistics import ComputeStatistics, SpanStatistics, precomputed
from evergreen.config import BeamConfig
from evergreen.pipeline import ExecutionContext


class StatisticsCoder(beam.coders.Coder):
    """A partial :class:`SpanStatistics` as bytes: its JSON (base64 sketches)."""

    def encode(self, value: SpanStatistics) -> bytes:
        return json.dumps(value.to_dict()).encode("utf-8")

    def decode(self, encoded: bytes) -> SpanStatistics:
        return SpanStatistics.from_dict(json.loads(encoded))

    def is_deterministic(self) -> bool:
        return False


class StatisticsCombineFn(beam.CombineFn):
    """Batches ``(columns, labels)`` → the span's statistics as a dict (``to_dict``).

    A batch is given column-wise, as :meth:`SpanStatistics.add_columns` takes it: column →
    values (None = missing), and the labels.

    Args:
        types: feature column → type.
        span: the span number recorded in the statistics.
    """

    def __init__(self, types: Mapping[str, str], span: int) -> None:
        self.types = dict(types)
        self.span = span

    def create_accumulator(self) -> SpanStatistics:
        return SpanStatistics(types=dict(self.types), spans=[self.span])

    def add_input(
        self, acc: SpanStatistics, batch: tuple[dict[str, list[Any]], list[str]]
    ) -> SpanStatistics:
        columns, labels = batch
        acc.add_columns(columns, labels)
        return acc

    def merge_accumulators(self, accumulators: Iterable[SpanStatistics]) -> SpanStatistics:
        parts = iter(accumulators)
        merged = next(parts)
        for part in parts:
            merged.merge(part)
        return merged

    def extract_output(self, acc: SpanStatistics) -> dict[str, Any]:
        return acc.to_dict()

    def get_accumulator_coder(self) -> beam.coders.Coder:
        return StatisticsCoder()


class _Decode(beam.DoFn):
    """A batch of serialized examples → (columns, labels)."""

    def __init__(self, types: Mapping[str, str], label: str) -> None:
        self.types = dict(types)
        self.label = label

    def process(self, records: list[bytes]) -> Iterable[tuple[dict[str, list[Any]], list[str]]]:
        rows = [examples.decode(r, self.types, self.label, train=wire.train) for r in records]
        yield {c: [row[c] for row in rows] for c in self.types}, [row[self.label] for row in rows]


def compute(
    uri: Path, types: Mapping[str, str], label: str, span: int, config: BeamConfig, scratch: Scratch
) -> SpanStatistics:
    """Run the statistics pipeline over every split's shards of an examples artifact."""
    stats = SpanStatistics(types=dict(types), spans=[span])
    if not any(uri.glob("*/part-*.tfrecord")):
        return stats  # an empty span: no shard to read
    with beam.Pipeline(options=pipeline_options(config)) as p:
        _ = (
            p
            | "Read" >> beam.io.ReadFromTFRecord(str(uri / "*" / "part-*.tfrecord"))
            | "Batch" >> beam.BatchElements(min_batch_size=256, max_batch_size=4096)
            | "Decode" >> beam.ParDo(_Decode(types, label))
            | "Sketch" >> beam.CombineGlobally(StatisticsCombineFn(types, span))
            | "Json" >> beam.Map(to_json)
            | "Write" >> beam.io.WriteToText(scratch.prefix("statistics"))
        )
    (result,) = list(scratch.json_lines("statistics"))
    return SpanStatistics.from_dict(result)


class BeamComputeStatistics(ComputeStatistics):
    """:class:`ComputeStatistics` as a Beam pipeline; the same ``statistics`` artifact."""

    def __init__(self, span: int, version: int, config: BeamConfig) -> None:
        super().__init__(span, version)
        self.beam_config = config

    def parameters(self) -> dict[str, Any]:
        # The engine is recorded; the runner's options are not part of the result.
        return {**super().parameters(), "engine": "beam"}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        source = ctx.inputs["examples"]
        types, label = source.properties["types"], source.properties["label"]
        uri = Path(source.uri)
        stats = precomputed(source)
        if stats is not None:
            return self.write(ctx, stats)
        with Scratch(uri, f"statistics-{self.span}") as scratch:
            stats = compute(uri, types, label, self.span, self.beam_config, scratch)
        check_conservation(
            f"statistics of span {self.span}", source.properties["rows"], {"counted": stats.rows}
        )
        return self.write(ctx, stats)
