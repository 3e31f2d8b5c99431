"""Featurize: fit a family's featurizer on a full run, then featurize each span once.

``FitFeaturizer`` fits the family's featurizer (text vocabulary, normalization statistics and
category vocabularies, image settings) on the train split of the given spans and freezes it.
``FeaturizeSpan`` writes a span's rows as featurized records (TFRecord shards per split, plus a
``replay`` copy of the train split in a hash-random order, so that any prefix is a uniform sample
for later incremental runs): one run per span and
featurizer, reused by every later run. ``GrowFeaturizer`` grows the champion's featurizer with a
new span's values; the text family keeps the tokens of that pass beside the grown featurizer, so
featurizing the span does not tokenize its train texts again (:mod:`evergreen.models.kept_tokens`).
The run summary is the ledger.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evergreen import examples
from evergreen.components.ingest import split_bucket
from evergreen.metadata import Artifact
from evergreen.models import kept_tokens
from evergreen.models.contract import Featurizer, ModelFamily
from evergreen.models.featurized import encode_featurized
from evergreen.models.registry import load_featurizer
from evergreen.pipeline import ExecutionContext, Inputs, per_span

# Each span keeps its train rows, up to this many, in a hash-random order as its replay sample:
# any prefix of it is a uniform sample of the span, so an incremental run reads only the rows
# it replays (bottom-k by hash: a reservoir that needs no random state).
REPLAY_KEEP_ROWS = 50_000
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


@dataclass(frozen=True)
class FitInputs(Inputs):
    """What a featurizer is fitted on: the examples of every span so far, by span."""

    spans: dict[int, Artifact] = per_span("span")


class FitFeaturizer:
    """Pipeline component: train rows of every span → a frozen ``Featurizer`` artifact.

    Inputs: :class:`FitInputs`. The summary's ``tokens_computed`` is the tokens the fit
    tokenized (text: every train text, uncut; see :meth:`TextFeaturizer.fit`).

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
            # In the order of the runner's link names (span-1, span-10, span-2, ...): the order
            # the fit has always read, kept so that a refit gives the same vocabulary.
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
        return {
            "rows": seen,
            "tokens_computed": tokens_counted(featurizer),
            **{k: v for k, v in props.items() if k not in ("labels",)},
        }


@dataclass(frozen=True)
class GrowInputs(Inputs):
    """What growing reads: the champion's featurizer and the new span's examples."""

    featurizer: Artifact
    examples: Artifact


class GrowFeaturizer:
    """Pipeline component: the champion's featurizer + a new span → the featurizer, grown.

    Vocabularies grow append-only (text tokens, tabular categories) with the values of the new
    span's train split seen at least ``min_count`` times and not yet known, at most ``limit``
    per column; ids already given never move, so every span featurized by an ancestor stays
    valid and is reused as is. The artifact records the growth (its parent, what was added,
    and ``compatible``: the fingerprints whose featurized spans it can read). Families that
    cannot grow (image, custom, adopted) are not given to this component. The summary's
    ``tokens_computed`` is the tokens the growth pass tokenized (the new span's train texts).

    Args:
        min_count: occurrences in the new span's train split a value needs to get an id.
        limit: the most values added per column in one growth.
    """

    name: ClassVar[str] = "grow-featurizer"
    version: ClassVar[str] = "1"

    def __init__(self, min_count: int, limit: int) -> None:
        self.min_count = min_count
        self.limit = limit

    def parameters(self) -> dict[str, Any]:
        return {"min_count": self.min_count, "limit": self.limit}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        parent, source = ctx.inputs["featurizer"], ctx.inputs["examples"]
        featurizer = load_featurizer(parent.uri)
        added = featurizer.grow(span_rows(source, "train"), self.min_count, self.limit)
        writer = ctx.output("featurizer", "Featurizer")
        featurizer.save(writer.path)
        kept = getattr(featurizer, "kept_tokens", None)
        if kept is not None:  # featurize of this span looks them up instead of tokenizing
            kept_tokens.write(writer.path, *kept)
        props = {
            "fingerprint": featurizer.fingerprint(),
            "labels": parent.properties["labels"],
            "family": parent.properties["family"],
            "grown_from": parent.id,
            "added": {column: len(values) for column, values in added.items()},
            # A sample for people reading the lineage; the full list is in the vocabulary files.
            "added_sample": {column: values[:20] for column, values in added.items()},
            "compatible": [
                *parent.properties.get("compatible", []),
                parent.properties["fingerprint"],
            ],
            "growth_tokens_of": source.id if kept is not None else None,
        }
        extra = getattr(featurizer, "properties", None)
        props.update(extra() if extra else {})
        ctx.set_properties("featurizer", props)
        return {
            "grown_from": parent.id,
            "added": props["added"],
            "tokens_computed": tokens_counted(featurizer),
        }


def tokens_counted(featurizer: Any) -> int:
    """Tokens a featurizer's last fit or grow tokenized (text; 0 for families without
    tokens): the fit and growth passes' work, booked in the run's ledger."""
    return int(getattr(featurizer, "tokens_counted", 0))


def can_grow(featurizer_artifact: Artifact) -> bool:
    """Whether the family of a featurizer artifact grows its vocabularies (text, tabular)."""
    return featurizer_artifact.properties["family"] in ("text", "tabular")


class ReplaySample:
    """The ``keep`` train rows with the smallest hash keys, written in key order.

    The key of a row is a hash of its row hash, uniform in [0, 1) and independent of the file
    order, so the kept rows are a uniform sample of the span (all of them when it has fewer
    than ``keep``), and their first k are a uniform sample of size k. Memory: ``keep`` records.
    """

    def __init__(self, keep: int) -> None:
        self.keep = keep
        self._heap: list[tuple[float, str, bytes]] = []  # (-key, row hash, record): a max-heap

    def offer(self, row_hash: str, record: bytes) -> None:
        item = (-split_bucket("replay" + row_hash), row_hash, record)
        if len(self._heap) < self.keep:
            heapq.heappush(self._heap, item)
        elif item > self._heap[0]:  # a smaller key than the largest kept
            heapq.heapreplace(self._heap, item)

    def write(self, folder: Path, shard_rows: int) -> int:
        """Write the kept records, smallest key first; returns how many."""
        writer = examples.ShardWriter(folder, shard_rows)
        for _, _, record in sorted(self._heap, reverse=True):
            writer.write(record)
        writer.close()
        return writer.rows


@dataclass(frozen=True)
class FeaturizeInputs(Inputs):
    """What featurizing one span reads: its examples and the fitted featurizer, and for an
    increment's new span the growth made on it (whose kept tokens featurize looks up, whether
    or not the growth added anything; see :mod:`evergreen.models.kept_tokens`).

    Featurize components read them by link name (the field names), so that the Beam variant
    and callers passing ``{"examples": ..., "featurizer": ...}`` run the same component.
    """

    examples: Artifact
    featurizer: Artifact
    growth: Artifact | None = None


class FeaturizeSpan:
    """Pipeline component: ``examples`` + ``featurizer`` → ``FeaturizedExamples`` of one span.

    Besides the ledger's counters, the artifact records ``fit_tokens``: the tokens of the
    span's train texts before the cut to the sequence length (text; 0 otherwise), which is
    what a featurizer fit over them counts, read off the same tokenizer call (no second pass).
    """

    name: ClassVar[str] = "featurize"
    version: ClassVar[str] = "3"

    def __init__(self, span: int, version: int, shard_rows: int = 100_000) -> None:
        self.span = span
        self.span_version = version
        self.shard_rows = shard_rows

    def parameters(self) -> dict[str, Any]:
        return {"replay_keep_rows": REPLAY_KEEP_ROWS, "replay_order": "hash"}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        source, fitted = ctx.inputs["examples"], ctx.inputs["featurizer"]
        featurizer = load_featurizer(fitted.uri)
        spec = featurizer.feature_spec()
        label = source.properties["label"]
        ledger = {
            "rows_featurized": 0,
            "rows_reused": 0,
            "tokens_computed": 0,
            "tokens_reused": 0,
            "fit_tokens": 0,
        }
        unknown = 0
        writer = ctx.output(
            "featurized", "FeaturizedExamples", span=self.span, version=self.span_version
        )
        rows_by_split: dict[str, int] = {}
        label_counts: dict[str, dict[str, int]] = {}
        for split_dir in sorted(p for p in Path(source.uri).iterdir() if p.is_dir()):
            split = split_dir.name
            shards = examples.ShardWriter(writer.path / split, self.shard_rows)
            replay = ReplaySample(REPLAY_KEEP_ROWS) if split == "train" else None
            counts_here = label_counts.setdefault(split, {})
            rows = span_rows(source, split)
            kept = (
                growth_tokens(ctx.inputs.get("growth"), fitted, source)
                if split == "train"
                else None
            )
            done = 0
            while chunk := list(itertools.islice(rows, _CHUNK)):
                if kept is None:
                    arrays, counts = featurizer.featurize(chunk, None)
                else:
                    arrays, counts = featurizer.featurize(chunk, None, kept=kept, start=done)
                done += len(chunk)
                unknown += counts.pop("unknown_tokens", 0)
                untruncated = counts.pop("tokens_untruncated", 0)
                if split == "train":  # what a fit over the span's train rows would count
                    ledger["fit_tokens"] += untruncated
                for key, n in counts.items():
                    ledger[key] = ledger.get(key, 0) + n
                hashes = [row[examples.ROW_HASH] for row in chunk]
                labels = [row[label] for row in chunk]
                records = encode_featurized(arrays, spec, labels, hashes)
                for record, row_hash, value in zip(records, hashes, labels, strict=True):
                    shards.write(record)
                    counts_here[str(value)] = counts_here.get(str(value), 0) + 1
                    if replay is not None:
                        replay.offer(row_hash, record)
            shards.close()
            rows_by_split[split] = shards.rows
            if replay is not None:
                rows_by_split["replay"] = replay.write(writer.path / "replay", self.shard_rows)
        return self.finish(ctx, ledger, unknown, rows_by_split, label_counts)

    def finish(
        self,
        ctx: ExecutionContext,
        ledger: dict[str, Any],
        unknown: int,
        rows_by_split: dict[str, int],
        label_counts: dict[str, dict[str, int]],
    ) -> dict[str, Any]:
        """Set the ``featurized`` artifact's properties (both engines); returns the ledger."""
        fitted = ctx.inputs["featurizer"]
        tokens = ledger["tokens_computed"] + ledger["tokens_reused"]
        ledger["unknown_rate"] = round(unknown / tokens, 4) if tokens else 0.0
        props = {
            "rows": rows_by_split,
            "labels": label_counts,
            "featurizer": fitted.properties["fingerprint"],
            **ledger,
        }
        if "sequence_length" in fitted.properties:
            props["sequence_length"] = fitted.properties["sequence_length"]
        ctx.set_properties("featurized", props)
        return ledger


def growth_tokens(
    growth: Artifact | None, featurizer: Artifact, source: Artifact
) -> kept_tokens.KeptTokens | None:
    """The train texts' tokens ``growth`` (default: ``featurizer`` itself) kept, when it grew
    on ``source`` and ``featurizer`` is that growth or its parent (the same tokenizer); None
    otherwise: the texts are tokenized.
    """
    growth = growth or featurizer
    if growth.properties.get("growth_tokens_of") != source.id:
        return None
    if featurizer.id not in (growth.id, growth.properties.get("grown_from")):
        return None
    return kept_tokens.read(Path(growth.uri))
