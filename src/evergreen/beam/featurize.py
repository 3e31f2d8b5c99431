"""Featurize a span on Beam: the family's frozen featurizer over batches of rows, once per row.

Every split's shards are read (``ReadFromTFRecord``), decoded, batched and featurized by the
same featurizer as the embedded path; featurized records are written per split with
``WriteToTFRecord`` inside the artifact's temporary folder; the replay sample is the same
bottom-k by hash (``Top`` pre-reduces it on every worker, then the embedded ``ReplaySample``
writes it). The ledger and the label counts come back to the driver through a scratch folder.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam

from evergreen import examples
from evergreen.beam import Scratch, check_conservation, pipeline_options, to_json, wire
from evergreen.components.featurize import REPLAY_KEEP_ROWS, FeaturizeSpan, ReplaySample
from evergreen.components.ingest import split_bucket
from evergreen.config import BeamConfig
from evergreen.models.featurized import encode_featurized
from evergreen.models.registry import load_featurizer
from evergreen.pipeline import ExecutionContext

_LEDGER = ("rows_featurized", "rows_reused", "tokens_computed", "tokens_reused", "unknown_tokens")


@dataclass(frozen=True)
class _Job:
    """What the workers need to featurize one span (picklable)."""

    source: Path  # the examples artifact
    out: Path  # the featurized artifact's temporary folder
    splits: list[str]
    types: dict[str, str]
    label: str
    featurizer: str  # the featurizer artifact's folder
    shard_rows: int


class _Decode(beam.DoFn):
    """A serialized example → ``(split, row)``."""

    def __init__(self, split: str, types: Mapping[str, str], label: str) -> None:
        self.split, self.types, self.label = split, dict(types), label

    def process(self, record: bytes) -> Iterator[tuple[str, dict[str, Any]]]:
        yield self.split, examples.decode(record, self.types, self.label, train=wire.train)


class _Featurize(beam.DoFn):
    """A batch of ``(split, row)`` → ``(split, row hash, featurized record)``; counts tagged."""

    def __init__(self, featurizer_uri: str, label: str) -> None:
        self.featurizer_uri = featurizer_uri
        self.label = label

    def setup(self) -> None:
        self.featurizer = load_featurizer(self.featurizer_uri)
        self.spec = self.featurizer.feature_spec()

    def process(self, items: list[tuple[str, dict[str, Any]]]) -> Iterator[Any]:
        by_split: dict[str, list[dict[str, Any]]] = {}
        for split, row in items:
            by_split.setdefault(split, []).append(row)
        # Split by split, so the train texts' untruncated tokens (FeaturizeSpan's fit_tokens)
        # are told apart from the other splits'.
        for split, rows in by_split.items():
            arrays, counts = self.featurizer.featurize(rows, None)
            hashes = [row[examples.ROW_HASH] for row in rows]
            labels = [row[self.label] for row in rows]
            records = encode_featurized(arrays, self.spec, labels, hashes)
            for record, row_hash, value in zip(records, hashes, labels, strict=True):
                yield split, row_hash, record
                yield beam.pvalue.TaggedOutput("counts", (f"labels\t{split}\t{value}", 1))
            untruncated = counts.pop("tokens_untruncated", 0)
            if split == "train" and untruncated:
                yield beam.pvalue.TaggedOutput("counts", ("ledger\tfit_tokens", untruncated))
            for key, n in counts.items():
                yield beam.pvalue.TaggedOutput("counts", (f"ledger\t{key}", n))


def _write_replay(records: list[tuple[str, bytes]], folder: str, shard_rows: int) -> int:
    sample = ReplaySample(REPLAY_KEEP_ROWS)
    for row_hash, record in records:
        sample.offer(row_hash, record)
    return sample.write(Path(folder), shard_rows)


def _replay_key(item: tuple[str, bytes]) -> tuple[float, str]:
    return split_bucket("replay" + item[0]), item[0]


def _build(p: Any, job: _Job, scratch: Scratch) -> None:
    """The featurize pipeline: split shards → featurized shards and replay under ``job.out``."""
    reads = []
    for split in job.splits:
        if examples.shard_paths(job.source / split):
            reads.append(
                p
                | f"Read {split}" >> beam.io.ReadFromTFRecord(str(job.source / split / "part-*"))
                | f"Decode {split}" >> beam.ParDo(_Decode(split, job.types, job.label))
            )
    featurized = (
        tuple(reads)
        | "Rows" >> beam.Flatten()
        | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=1024)
        | "Featurize"
        >> beam.ParDo(_Featurize(job.featurizer, job.label)).with_outputs("counts", main="records")
    )
    parts = featurized.records | "BySplit" >> beam.Partition(
        lambda item, n: job.splits.index(item[0]), len(job.splits)
    )
    for split, part in zip(job.splits, parts, strict=True):
        _ = (
            part
            | f"Record {split}" >> beam.Map(lambda item: item[2])
            | f"Write {split}"
            >> beam.io.WriteToTFRecord(str(job.out / split / "part"), file_name_suffix=".tfrecord")
        )
    if "train" in job.splits:
        train = parts[job.splits.index("train")]
        replay = (
            train
            | "ReplayItems" >> beam.Map(lambda item: (item[1], item[2]))
            | "BottomK" >> beam.combiners.Top.Of(REPLAY_KEEP_ROWS, key=_replay_key, reverse=True)
            | "WriteReplay" >> beam.Map(_write_replay, str(job.out / "replay"), job.shard_rows)
            | "ReplayCount" >> beam.Map(lambda n: ("rows\treplay", n))
        )
    else:
        replay = p | "NoReplay" >> beam.Create([])
    _ = (
        (
            featurized.counts,
            replay,
            featurized.records | "RowCounts" >> beam.Map(lambda item: (f"rows\t{item[0]}", 1)),
        )
        | "AllCounts" >> beam.Flatten()
        | "Sum" >> beam.CombinePerKey(sum)
        | "CountJson" >> beam.Map(to_json)
        | "WriteCounts" >> beam.io.WriteToText(scratch.prefix("counts"))
    )


class BeamFeaturizeSpan(FeaturizeSpan):
    """:class:`FeaturizeSpan` as a Beam pipeline; the same ``featurized`` artifact."""

    def __init__(self, span: int, version: int, shard_rows: int, config: BeamConfig) -> None:
        super().__init__(span, version, shard_rows)
        self.beam_config = config

    def parameters(self) -> dict[str, Any]:
        # The engine is recorded; the runner's options are not part of the result.
        return {**super().parameters(), "engine": "beam"}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        source, fitted = ctx.inputs["examples"], ctx.inputs["featurizer"]
        writer = ctx.output(
            "featurized", "FeaturizedExamples", span=self.span, version=self.span_version
        )
        job = _Job(
            source=Path(source.uri),
            out=writer.path,
            splits=sorted(p.name for p in Path(source.uri).iterdir() if p.is_dir()),
            types=dict(source.properties["types"]),
            label=source.properties["label"],
            featurizer=fitted.uri,
            shard_rows=self.shard_rows,
        )
        for split in job.splits + (["replay"] if "train" in job.splits else []):
            (writer.path / split).mkdir(parents=True, exist_ok=True)
        with Scratch(writer.path, f"featurize-{self.span}") as scratch:
            with beam.Pipeline(options=pipeline_options(self.beam_config)) as p:
                _build(p, job, scratch)
            counts = {tuple(key.split("\t")): n for key, n in scratch.json_lines("counts")}
        ledger: dict[str, Any] = {k: 0 for k in (*_LEDGER[:4], "fit_tokens")}
        ledger.update({key[1]: n for key, n in counts.items() if key[0] == "ledger"})
        unknown = ledger.pop("unknown_tokens", 0)
        rows_by_split = {s: counts.get(("rows", s), 0) for s in job.splits}
        if "train" in job.splits:
            rows_by_split["replay"] = counts.get(("rows", "replay"), 0)
        for split in job.splits:
            expected = source.properties["splits"].get(split, 0)
            check_conservation(
                f"featurize of span {self.span} ({split})",
                expected,
                {"featurized": rows_by_split[split]},
            )
        label_counts: dict[str, dict[str, int]] = {s: {} for s in job.splits}
        for key, n in counts.items():
            if key[0] == "labels":
                label_counts[key[1]][key[2]] = n
        return self.finish(ctx, ledger, unknown, rows_by_split, label_counts)
