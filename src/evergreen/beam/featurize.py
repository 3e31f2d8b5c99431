"""Featurize a span on Beam: the family's frozen featurizer over batches of rows, once per row.

Rows are grouped by their text's hash (text family) and joined with the token cache entries
of this featurizer (``CoGroupByKey``), so a text seen in an earlier run is not tokenized again
and the repeats of a text inside the span land in one batch, where the featurizer counts them
as reused, as the embedded path does. Featurized records are written per split with
``WriteToTFRecord`` inside the artifact's temporary folder; the replay sample is the same
bottom-k by hash (``Top`` pre-reduces it on every worker). New cache entries, the ledger and
the label counts come back to the driver, which records them in the run's transaction.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import apache_beam as beam
import sqlalchemy as sa

from evergreen import examples
from evergreen.beam import Scratch, check_conservation, pipeline_options, to_json
from evergreen.components.featurize import REPLAY_KEEP_ROWS, FeaturizeSpan, ReplaySample
from evergreen.components.ingest import short_hash, split_bucket
from evergreen.config import BeamConfig
from evergreen.metadata import token_cache_table
from evergreen.models.family import encode_featurized, load_featurizer
from evergreen.pipeline import ExecutionContext

_STORE_CHUNK = 5000
_LEDGER = ("rows_featurized", "rows_reused", "tokens_computed", "tokens_reused", "unknown_tokens")


@dataclass(frozen=True)
class _Job:
    """What the workers need to featurize one span (picklable)."""

    source: Path  # the examples artifact
    out: Path  # the featurized artifact's temporary folder
    splits: list[str]
    types: dict[str, str]
    label: str
    text: str | None  # the text column whose tokens are cached, or None
    featurizer: str  # the featurizer artifact's folder
    shard_rows: int


class _BatchCache:
    """The cache entries joined to one batch; entries the featurizer computes are collected."""

    def __init__(self, known: Mapping[str, bytes]) -> None:
        self.known = dict(known)
        self.computed: dict[str, bytes] = {}

    def get(self, keys: Sequence[str]) -> dict[str, bytes]:
        return {k: self.known[k] for k in keys if k in self.known}

    def put(self, values: Mapping[str, bytes]) -> None:
        self.computed.update(values)


class _Decode(beam.DoFn):
    """A serialized example → ``(cache key, (split, row))``: text hash for text, else row hash."""

    def __init__(self, split: str, types: Mapping[str, str], label: str, text: str | None):
        self.split, self.types, self.label, self.text = split, dict(types), label, text

    def process(self, record: bytes) -> Iterator[tuple[str, tuple[str, dict[str, Any]]]]:
        row = examples.decode(record, self.types, self.label)
        key = short_hash(row.get(self.text) or "") if self.text else row[examples.ROW_HASH]
        yield key, (self.split, row)


class _Featurize(beam.DoFn):
    """A batch of groups (rows sharing a text, and its cached ids) → featurized records."""

    def __init__(self, featurizer_uri: str, label: str) -> None:
        self.featurizer_uri = featurizer_uri
        self.label = label

    def setup(self) -> None:
        self.featurizer = load_featurizer(self.featurizer_uri)
        self.spec = self.featurizer.feature_spec()

    def process(self, groups: list[tuple[str, dict[str, list[Any]]]]) -> Iterator[Any]:
        known = {k: base64.b64decode(g["cache"][0]) for k, g in groups if g["cache"]}
        items = [item for _, g in groups for item in g["rows"]]
        if not items:
            return
        rows = [row for _, row in items]
        cache = _BatchCache(known)
        arrays, counts = self.featurizer.featurize(rows, cache)
        hashes = [row[examples.ROW_HASH] for row in rows]
        labels = [row[self.label] for row in rows]
        records = encode_featurized(arrays, self.spec, labels, hashes)
        for (split, _), record, row_hash, value in zip(items, records, hashes, labels, strict=True):
            yield split, row_hash, record
            yield beam.pvalue.TaggedOutput("counts", (f"labels\t{split}\t{value}", 1))
        for key, n in counts.items():
            yield beam.pvalue.TaggedOutput("counts", (f"ledger\t{key}", n))
        for key, ids in cache.computed.items():
            yield beam.pvalue.TaggedOutput(
                "cache", to_json([key, base64.b64encode(ids).decode("ascii")])
            )


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
                | f"Decode {split}" >> beam.ParDo(_Decode(split, job.types, job.label, job.text))
            )
    rows = tuple(reads) | "Rows" >> beam.Flatten()
    cached = (
        p
        | "Cache" >> beam.io.ReadFromText(str(scratch.path / "cache.jsonl"))
        | "CacheJson" >> beam.Map(lambda line: tuple(json.loads(line)))
    )
    featurized = (
        {"rows": rows, "cache": cached}
        | "Join" >> beam.CoGroupByKey()
        | "Batch" >> beam.BatchElements(min_batch_size=64, max_batch_size=1024)
        | "Featurize"
        >> beam.ParDo(_Featurize(job.featurizer, job.label)).with_outputs(
            "counts", "cache", main="records"
        )
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
    _ = featurized.cache | "WriteCache" >> beam.io.WriteToText(scratch.prefix("cache-new"))


def _export_cache(ctx: ExecutionContext, fingerprint: str, path: Path) -> None:
    """This featurizer's token cache entries as JSON lines ``[text hash, base64 ids]``."""
    t = token_cache_table
    query = sa.select(t.c.text_hash, t.c.ids).where(t.c.featurizer == fingerprint)
    with open(path, "w", encoding="utf-8") as f:
        for r in ctx.conn.execute(query):
            f.write(to_json([r.text_hash, base64.b64encode(bytes(r.ids)).decode("ascii")]) + "\n")


def _store_cache(ctx: ExecutionContext, fingerprint: str, entries: Iterator[list[str]]) -> None:
    """Record the tokens the workers computed, in chunks (each text once)."""
    seen: set[str] = set()
    chunk: dict[str, bytes] = {}
    for key, ids in entries:
        if key not in seen:
            seen.add(key)
            chunk[key] = base64.b64decode(ids)
        if len(chunk) >= _STORE_CHUNK:
            ctx.store.store_tokens(ctx.conn, fingerprint, chunk)
            chunk = {}
    ctx.store.store_tokens(ctx.conn, fingerprint, chunk)


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
        fingerprint = fitted.properties["fingerprint"]
        writer = ctx.output(
            "featurized", "FeaturizedExamples", span=self.span, version=self.span_version
        )
        job = _Job(
            source=Path(source.uri),
            out=writer.path,
            splits=sorted(p.name for p in Path(source.uri).iterdir() if p.is_dir()),
            types=dict(source.properties["types"]),
            label=source.properties["label"],
            text=getattr(load_featurizer(fitted.uri), "text_feature", None),
            featurizer=fitted.uri,
            shard_rows=self.shard_rows,
        )
        for split in job.splits + (["replay"] if "train" in job.splits else []):
            (writer.path / split).mkdir(parents=True, exist_ok=True)
        with Scratch(writer.path, f"featurize-{self.span}") as scratch:
            if job.text:
                _export_cache(ctx, fingerprint, scratch.path / "cache.jsonl")
            else:
                (scratch.path / "cache.jsonl").touch()
            with beam.Pipeline(options=pipeline_options(self.beam_config)) as p:
                _build(p, job, scratch)
            counts = {tuple(key.split("\t")): n for key, n in scratch.json_lines("counts")}
            _store_cache(ctx, fingerprint, scratch.json_lines("cache-new"))
        ledger: dict[str, Any] = {k: 0 for k in _LEDGER[:4]}
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
