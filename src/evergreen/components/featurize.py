"""Featurize: fit the text featurizer on a full run, then turn each span into token ids once.

``FitFeaturizer`` learns the vocabulary from the train split of the given spans and freezes it.
``FeaturizeSpan`` writes a span's rows as token ids (TFRecord shards per split, plus a
``replay`` sample of the train split for later incremental runs). Every text goes through a
content-addressed cache (text hash + featurizer fingerprint) in the metadata store, so a text is
tokenized once across all runs; the run summary is the token ledger.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evergreen import examples
from evergreen.components.ingest import short_hash, split_bucket
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext

REPLAY_FRACTION = 0.25  # share of each span's train rows kept as its replay sample
_CHUNK = 1024


def span_texts(examples_artifact: Artifact, split: str, text_feature: str) -> tuple[list[str], list[str], list[str]]:
    """Texts, labels and row hashes of one split of an examples artifact, in file order."""
    types, label = examples_artifact.properties["types"], examples_artifact.properties["label"]
    texts, labels, hashes = [], [], []
    for record in examples.iter_records(Path(examples_artifact.uri) / split):
        row = examples.decode(record, types, label)
        texts.append(row[text_feature] or "")
        labels.append(row[label])
        hashes.append(row[examples.ROW_HASH])
    return texts, labels, hashes


class FitFeaturizer:
    """Pipeline component: train texts of every span → a frozen ``Featurizer`` artifact."""

    name: ClassVar[str] = "fit-featurizer"
    version: ClassVar[str] = "1"

    def __init__(self, text_feature: str, max_tokens: int, sequence_length: int, labels: list[str]) -> None:
        self.text_feature = text_feature
        self.max_tokens = max_tokens
        self.sequence_length = sequence_length
        self.labels = labels

    def parameters(self) -> dict[str, Any]:
        return {"text_feature": self.text_feature, "max_tokens": self.max_tokens, "sequence_length": self.sequence_length, "labels": self.labels}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        from evergreen.models.text import TextFeaturizer

        def texts() -> Any:
            for _, artifact in sorted(ctx.inputs.items()):
                yield from span_texts(artifact, "train", self.text_feature)[0]

        featurizer = TextFeaturizer(max_tokens=self.max_tokens, sequence_length=self.sequence_length).fit(texts())
        writer = ctx.output("featurizer", "Featurizer")
        featurizer.save(writer.path)
        ctx.set_properties(
            "featurizer",
            {"fingerprint": featurizer.fingerprint(), "labels": self.labels, "text_feature": self.text_feature, "vocabulary_size": featurizer.vocabulary_size(), "sequence_length": self.sequence_length},
        )
        return {"vocabulary_size": featurizer.vocabulary_size(), "texts": featurizer.texts_seen_}

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass


class FeaturizeSpan:
    """Pipeline component: ``examples`` + ``featurizer`` → ``FeaturizedExamples`` of one span."""

    name: ClassVar[str] = "featurize"
    version: ClassVar[str] = "1"

    def __init__(self, span: int, version: int, shard_rows: int = 100_000) -> None:
        self.span = span
        self.span_version = version
        self.shard_rows = shard_rows

    def parameters(self) -> dict[str, Any]:
        return {"replay_fraction": REPLAY_FRACTION}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        from evergreen.models.text import TextFeaturizer
        from evergreen.tf import tensorflow

        tf = tensorflow()
        source, fitted = ctx.inputs["examples"], ctx.inputs["featurizer"]
        featurizer = TextFeaturizer.load(fitted.uri)
        fingerprint = fitted.properties["fingerprint"]
        text_feature = fitted.properties["text_feature"]
        ledger = {"rows_featurized": 0, "rows_reused": 0, "tokens_computed": 0, "tokens_reused": 0, "unknown_tokens": 0}
        writer = ctx.output("featurized", "FeaturizedExamples", span=self.span, version=self.span_version)
        rows_by_split = {}
        for split_dir in sorted(p for p in Path(source.uri).iterdir() if p.is_dir()):
            texts, labels, hashes = span_texts(source, split_dir.name, text_feature)
            shards = examples.ShardWriter(writer.path / split_dir.name, self.shard_rows)
            replay = examples.ShardWriter(writer.path / "replay", self.shard_rows) if split_dir.name == "train" else None
            for start in range(0, len(texts), _CHUNK):
                chunk = texts[start : start + _CHUNK]
                ids = self._token_ids(ctx, featurizer, fingerprint, chunk, ledger)
                for row_ids, label, row_hash in zip(ids, labels[start : start + _CHUNK], hashes[start : start + _CHUNK], strict=True):
                    record = tf.train.Example(
                        features=tf.train.Features(
                            feature={
                                "ids": tf.train.Feature(int64_list=tf.train.Int64List(value=row_ids)),
                                "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[label.encode("utf-8")])),
                                examples.ROW_HASH: tf.train.Feature(bytes_list=tf.train.BytesList(value=[row_hash.encode()])),
                            }
                        )
                    ).SerializeToString()
                    shards.write(record)
                    if replay is not None and split_bucket("replay" + row_hash) < REPLAY_FRACTION:
                        replay.write(record)
                ledger["unknown_tokens"] += int(np.sum(ids == 1))
            shards.close()
            rows_by_split[split_dir.name] = shards.rows
            if replay is not None:
                replay.close()
                rows_by_split["replay"] = replay.rows
        tokens = ledger["tokens_computed"] + ledger["tokens_reused"]
        ledger["unknown_rate"] = round(ledger.pop("unknown_tokens") / tokens, 4) if tokens else 0.0
        ctx.set_properties("featurized", {"rows": rows_by_split, "featurizer": fingerprint, "sequence_length": featurizer.sequence_length, **ledger})
        return ledger

    def _token_ids(self, ctx: ExecutionContext, featurizer: Any, fingerprint: str, texts: list[str], ledger: dict[str, int]) -> np.ndarray:
        """Token ids of ``texts``: from the cache where known, computed (and cached) otherwise."""
        length = featurizer.sequence_length
        keys = [short_hash(t) for t in texts]
        cached = ctx.store.cached_tokens(ctx.conn, fingerprint, keys)
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cached}
        computed: dict[str, bytes] = {}
        if missing:
            ids = featurizer.transform(list(missing.values()))
            for key, row in zip(missing, ids, strict=True):
                computed[key] = np.trim_zeros(row.astype("<i4"), "b").tobytes()
            ctx.store.store_tokens(ctx.conn, fingerprint, computed)
        out = np.zeros((len(texts), length), dtype=np.int64)
        for i, key in enumerate(keys):
            stored = np.frombuffer(cached.get(key) or computed[key], dtype="<i4")
            out[i, : len(stored)] = stored
            if key in computed:
                ledger["rows_featurized"] += 1
                ledger["tokens_computed"] += len(stored)
                computed_once = computed.pop(key)  # a repeat inside the chunk counts as reuse
                cached[key] = computed_once
            else:
                ledger["rows_reused"] += 1
                ledger["tokens_reused"] += len(stored)
        return out

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
