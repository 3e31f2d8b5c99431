"""Featurize: fit a family's featurizer on a full run, then featurize each span once.

``FitFeaturizer`` fits the family's featurizer (text vocabulary, normalization statistics and
category vocabularies, image settings) on the train split of the given spans and freezes it.
``FeaturizeSpan`` writes a span's rows as featurized records (TFRecord shards per split, plus a
``replay`` sample of the train split for later incremental runs): one run per span and
featurizer, reused by every later run. The text family also sends every text through a
content-addressed cache (text hash + featurizer fingerprint) in the metadata store, so a text is
tokenized once across all runs; the run summary is the ledger.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from evergreen import examples
from evergreen.components.ingest import split_bucket
from evergreen.metadata import Artifact
from evergreen.models.family import Featurizer, ModelFamily, encode_featurized, load_featurizer
from evergreen.pipeline import ExecutionContext

REPLAY_FRACTION = 0.25  # share of each span's train rows kept as its replay sample
_CHUNK = 1024


def span_rows(examples_artifact: Artifact, split: str) -> Iterator[dict[str, Any]]:
    """Decoded rows (column → value, plus label and row hash) of one split, in file order."""
    types, label = examples_artifact.properties["types"], examples_artifact.properties["label"]
    for record in examples.iter_records(Path(examples_artifact.uri) / split):
        yield examples.decode(record, types, label)


def span_texts(
    examples_artifact: Artifact, split: str, text_feature: str
) -> tuple[list[str], list[str], list[str]]:
    """Texts, labels and row hashes of one split of an examples artifact, in file order."""
    label = examples_artifact.properties["label"]
    texts, labels, hashes = [], [], []
    for row in span_rows(examples_artifact, split):
        texts.append(row[text_feature] or "")
        labels.append(row[label])
        hashes.append(row[examples.ROW_HASH])
    return texts, labels, hashes


class StoreCache:
    """The metadata store's content-addressed cache, inside one run's transaction."""

    def __init__(self, ctx: ExecutionContext, fingerprint: str) -> None:
        self.ctx = ctx
        self.fingerprint = fingerprint

    def get(self, keys: Sequence[str]) -> dict[str, bytes]:
        return self.ctx.store.cached_tokens(self.ctx.conn, self.fingerprint, list(keys))

    def put(self, values: Mapping[str, bytes]) -> None:
        self.ctx.store.store_tokens(self.ctx.conn, self.fingerprint, dict(values))


class FitFeaturizer:
    """Pipeline component: train rows of every span → a frozen ``Featurizer`` artifact.

    Args:
        family: the model family (its name is recorded in the artifact's properties).
        featurizer: an unfitted featurizer from ``family.new_featurizer`` (construction does no work).
        labels: the label classes, in model output order.
    """

    name: ClassVar[str] = "fit-featurizer"
    version: ClassVar[str] = "2"

    def __init__(self, family: ModelFamily, featurizer: Featurizer, labels: list[str]) -> None:
        self.family = family
        self.featurizer = featurizer
        self.labels = labels

    def parameters(self) -> dict[str, Any]:
        return {
            "family": self.family.name,
            "featurizer": self.featurizer.to_dict(),
            "labels": self.labels,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        seen = 0

        def rows() -> Iterator[dict[str, Any]]:
            nonlocal seen
            for _, artifact in sorted(ctx.inputs.items()):
                for row in span_rows(artifact, "train"):
                    seen += 1
                    yield row

        featurizer = self.featurizer.fit(rows())
        writer = ctx.output("featurizer", "Featurizer")
        featurizer.save(writer.path)
        props = {
            "fingerprint": featurizer.fingerprint(),
            "labels": self.labels,
            "family": self.family.name,
        }
        extra = getattr(featurizer, "properties", None)
        props.update(extra() if extra else {})
        ctx.set_properties("featurizer", props)
        return {"rows": seen, **{k: v for k, v in props.items() if k not in ("labels",)}}

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass


class FeaturizeSpan:
    """Pipeline component: ``examples`` + ``featurizer`` → ``FeaturizedExamples`` of one span."""

    name: ClassVar[str] = "featurize"
    version: ClassVar[str] = "2"

    def __init__(self, span: int, version: int, shard_rows: int = 100_000) -> None:
        self.span = span
        self.span_version = version
        self.shard_rows = shard_rows

    def parameters(self) -> dict[str, Any]:
        return {"replay_fraction": REPLAY_FRACTION}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        source, fitted = ctx.inputs["examples"], ctx.inputs["featurizer"]
        featurizer = load_featurizer(fitted.uri)
        fingerprint = fitted.properties["fingerprint"]
        cache = StoreCache(ctx, fingerprint)
        spec = featurizer.feature_spec()
        label = source.properties["label"]
        ledger = {"rows_featurized": 0, "rows_reused": 0, "tokens_computed": 0, "tokens_reused": 0}
        unknown = 0
        writer = ctx.output(
            "featurized", "FeaturizedExamples", span=self.span, version=self.span_version
        )
        rows_by_split = {}
        for split_dir in sorted(p for p in Path(source.uri).iterdir() if p.is_dir()):
            shards = examples.ShardWriter(writer.path / split_dir.name, self.shard_rows)
            replay = (
                examples.ShardWriter(writer.path / "replay", self.shard_rows)
                if split_dir.name == "train"
                else None
            )
            rows = span_rows(source, split_dir.name)
            while chunk := list(itertools.islice(rows, _CHUNK)):
                arrays, counts = featurizer.featurize(chunk, cache)
                unknown += counts.pop("unknown_tokens", 0)
                for key, n in counts.items():
                    ledger[key] = ledger.get(key, 0) + n
                hashes = [row[examples.ROW_HASH] for row in chunk]
                records = encode_featurized(arrays, spec, [row[label] for row in chunk], hashes)
                for record, row_hash in zip(records, hashes, strict=True):
                    shards.write(record)
                    if replay is not None and split_bucket("replay" + row_hash) < REPLAY_FRACTION:
                        replay.write(record)
            shards.close()
            rows_by_split[split_dir.name] = shards.rows
            if replay is not None:
                replay.close()
                rows_by_split["replay"] = replay.rows
        tokens = ledger["tokens_computed"] + ledger["tokens_reused"]
        ledger["unknown_rate"] = round(unknown / tokens, 4) if tokens else 0.0
        props = {"rows": rows_by_split, "featurizer": fingerprint, **ledger}
        if "sequence_length" in fitted.properties:
            props["sequence_length"] = fitted.properties["sequence_length"]
        ctx.set_properties("featurized", props)
        return ledger

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
