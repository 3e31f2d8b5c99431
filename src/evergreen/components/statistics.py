"""Per-span statistics as mergeable sketches (Apache DataSketches).

numeric columns: KLL quantiles, HLL distinct count, sum and sum of squares;
categorical columns: frequent items and HLL;
text columns: KLL of lengths in characters and in words, frequent words, HLL of whole values.
Every column counts present and missing values; the label keeps exact class counts.

:class:`SpanStatistics` follows the combiner contract (``add_batch`` / ``merge`` / ``to_dict``)
so it runs unchanged inside a Beam ``CombineFn``; dataset-level statistics are the merge of span
statistics and never re-read a span.
"""

from __future__ import annotations

import base64
import collections
import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasketches as ds
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evergreen import examples
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext

KLL_K = 200
# Ingest writes the span's statistics into its examples artifact under this name.
STATISTICS_FILE = "statistics.json"
HLL_LG_K = 12
FREQ_LG_MAX_K = 10  # up to 768 items tracked exactly before the sketch starts evicting
# Words of a text column: up to 6,144 tracked exactly, so that drift and the unknown-token rate
# see a span's real vocabulary (a few hundred KiB per text column and span).
TEXT_FREQ_LG_MAX_K = 13
# What Keras' TextVectorization(standardize="lower_and_strip_punctuation", split="whitespace")
# strips, so that counted words are the featurizer's tokens ("don't" -> "dont").
_PUNCTUATION = re.compile(r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']')


def words(text: str) -> list[str]:
    """The tokens of ``text`` as the text featurizer makes them: lower case, no punctuation."""
    return _PUNCTUATION.sub("", text.lower()).split()


def batch_words(texts: list[str]) -> tuple[dict[str, int], np.ndarray]:
    """The :func:`words` of many texts: their counts together, and each text's word count.

    Returns:
        word -> count, in order of first appearance (the order the frequent-words sketch is
        fed, which matters once it evicts), and the texts' word counts as an int64 array.

    Vectorized: the batch is joined into one UTF-8 buffer (texts between NULs), which
    ``bytes.translate`` lower-cases and strips of punctuation in one C pass (whitespace
    becomes SOH); numpy finds where the words start (:func:`_split_words`, 2,048 texts at a
    time), Arrow counts them. On ASCII text this is exactly Python's
    ``str.lower`` and ``str.split`` except for four separators (``\x1c``-``\x1f``) that
    only Python splits on; a text holding one, or any non-ASCII text (Python lower-cases
    some letters differently, e.g. a final sigma), is tokenized by :func:`words` first and
    passed on as its words joined by spaces, which the split gives back unchanged. A batch
    whose texts hold NUL, SOH or lone surrogates is counted in Python.
    """
    parts = [_words(texts[i : i + _SLICE]) for i in range(0, len(texts), _SLICE)]
    if any(part is None for part in parts) or not parts:
        return _python_batch_words(texts)
    counted = pc.value_counts(pa.chunked_array([words for words, _ in parts], pa.large_binary()))
    return _strip_counts(counted), np.concatenate([lengths for _, lengths in parts])


# Texts tokenized together: small enough that numpy's temporaries are reused from the heap
# rather than mapped afresh (and faulted in page by page) for every batch.
_SLICE = 2048


def _words(texts: list[str]) -> tuple[pa.LargeBinaryArray, np.ndarray] | None:
    """The words of ``texts`` in order, each with the separators that follow it, and each
    text's word count (None: count in Python)."""
    texts = _tokenized(texts, str.isascii)  # str.isascii reads a flag of the string: no scan
    raw = _joined(texts)
    if raw is not None and any(c in raw for c in _RARE_BYTES):
        texts = _tokenized(texts, _plain)
        raw = _joined(texts)
    if raw is None or raw.count(_NUL) != len(texts) + 1 or _SPACE_BYTE in raw:
        return None
    return _split_words(raw.translate(_LOWER, _DELETE))


def _joined(texts: list[str]) -> bytes | None:
    """The texts' UTF-8 bytes between NULs (one before the first, one after the last), or
    None when one cannot be encoded (a lone surrogate).

    Each text is encoded on its own: an ASCII one is copied as it is, where one text with a
    wider character would make a joined ``str`` (and its encoding) wide all along.
    """
    try:
        return _NUL.join([b"", *[text.encode("utf-8") for text in texts], b""])
    except UnicodeEncodeError:
        return None


def _tokenized(texts: list[str], plain: Any) -> list[str]:
    """``texts``, each one that is not ``plain`` replaced by its :func:`words` joined by
    spaces (which the byte-wise split gives back unchanged)."""
    odd = np.flatnonzero(~np.fromiter(map(plain, texts), np.bool_, len(texts))).tolist()
    if not odd:
        return texts
    texts = list(texts)
    for i in odd:
        texts[i] = " ".join(words(texts[i]))
    return texts


def _split_words(data: bytes) -> tuple[pa.LargeBinaryArray, np.ndarray]:
    """The words, and words per text, of lower-cased texts without punctuation, given as
    their UTF-8 bytes between NULs (one before the first text, one after the last),
    whitespace translated to SOH.

    A word is a run of bytes above SOH. numpy finds where each starts; the Arrow array's
    values run from one word's start to the next's, so each keeps the separators after it
    (no copy of the buffer): :func:`_strip_counts` takes them off the counted values.
    """
    buffer = np.frombuffer(data, dtype=np.uint8)
    inside = buffer > 1
    starts = np.flatnonzero(inside[1:] > inside[:-1]) + 1  # the buffer starts with a NUL
    offsets = np.empty(len(starts) + 1, dtype=np.int64)
    offsets[:-1] = starts
    offsets[-1] = len(data)
    found = pa.Array.from_buffers(
        pa.large_binary(), len(starts), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )
    # Words before each text's start (the NUL before it), and before the final NUL.
    before = np.searchsorted(starts, np.flatnonzero(buffer == 0), side="left")
    return found, np.diff(before).astype(np.int64)


def _strip_counts(counted: pa.StructArray) -> dict[str, int]:
    """Arrow's counts of words with their trailing separators, as word -> count.

    A word is counted under each of its separator tails; the tails come off here, on the
    distinct values only. Arrow lists values in order of first appearance, so the first
    tail met is the word's first appearance: the order is that of the words themselves.
    """
    counts: dict[str, int] = {}
    values = counted.field("values").to_pylist()
    for value, n in zip(values, counted.field("counts").to_pylist(), strict=True):
        word = value.rstrip(b"\x00\x01").decode("utf-8")
        counts[word] = counts.get(word, 0) + n
    return counts


def _plain(text: str) -> bool:
    """Whether byte-wise lower-casing and Arrow's split tokenize ``text`` as :func:`words`."""
    return text.isascii() and not any(c in text for c in _RARE)


_SEPARATOR = "\x00"
# ASCII characters that Python's str.split() treats as whitespace and Arrow's does not.
_RARE = "\x1c\x1d\x1e\x1f"
_SPACE = "\x01"  # what ASCII whitespace becomes: a text holding one is counted in Python
# The same, as bytes (UTF-8 writes each of them as that one byte, and no other character
# has a byte below 0x80 in its encoding).
_NUL = _SEPARATOR.encode()
_RARE_BYTES = [c.encode() for c in _RARE]
_SPACE_BYTE = _SPACE.encode()
_LOWER = bytes.maketrans(
    b"ABCDEFGHIJKLMNOPQRSTUVWXYZ\t\n\x0b\x0c\r ",
    b"abcdefghijklmnopqrstuvwxyz\x01\x01\x01\x01\x01\x01",
)
_DELETE = b"!\"#$%&()*+,-./:;<=>?@[\\]^_`{|}~'"  # what _PUNCTUATION removes


def _python_batch_words(texts: list[str]) -> tuple[dict[str, int], np.ndarray]:
    """:func:`batch_words` in Python, for texts Arrow cannot hold."""
    counts: Counter[str] = Counter()
    lengths = []
    for text in texts:
        tokens = words(text)
        counts.update(tokens)
        lengths.append(len(tokens))
    return dict(counts), np.asarray(lengths, dtype=np.int64)


def _b64(sketch: Any) -> str:
    data = sketch.serialize_compact() if isinstance(sketch, ds.hll_sketch) else sketch.serialize()
    return base64.b64encode(data).decode("ascii")


def _unb64(kind: Any, text: str) -> Any:
    return kind.deserialize(base64.b64decode(text))


@dataclass
class ColumnStatistics:
    """Sketches of one column. ``kind`` is the feature type."""

    kind: str
    present: int = 0
    missing: int = 0
    distinct: Any = field(default_factory=lambda: ds.hll_sketch(HLL_LG_K))
    quantiles: Any = field(default_factory=lambda: ds.kll_floats_sketch(KLL_K))  # values or lengths
    word_counts: Any = field(default_factory=lambda: ds.kll_floats_sketch(KLL_K))  # text only
    frequent: Any = None  # items (categorical) or words (text)
    total: float = 0.0
    total_squares: float = 0.0

    def __post_init__(self) -> None:
        if self.frequent is None:
            lg = TEXT_FREQ_LG_MAX_K if self.kind == "text" else FREQ_LG_MAX_K
            self.frequent = ds.frequent_strings_sketch(lg)

    def add_many(self, values: list[Any]) -> None:
        """Add a batch of values (None = missing). Items are counted per batch, then sketched.

        The sketches take arrays (KLL) or each distinct value once (HLL: a repeated value
        changes nothing), so a batch costs little more than one pass over its values.
        """
        present = [v for v in values if v is not None]
        self.missing += len(values) - len(present)
        self.present += len(present)
        if not present:
            return
        if self.kind == "numeric":
            self.quantiles.update(np.asarray(present, dtype=np.float32))
            for value in set(present):
                self.distinct.update(value)
            self.total += math.fsum(present)
            self.total_squares += math.fsum(v * v for v in present)
            return
        if self.kind == "image":  # encoded bytes: their sizes and distinct contents
            for value in present:
                self.distinct.update(hashlib.blake2b(value, digest_size=16).hexdigest())
            self.quantiles.update(np.fromiter(map(len, present), np.float32, len(present)))
            return
        # In input order: the HLL's estimate (HIP) depends on the order of the new items, and
        # a set's order of strings changes with each process's hash seed. A repeat changes
        # nothing, so texts (mostly distinct) go as they come; categories, which repeat,
        # once each (dict.fromkeys keeps their first appearances' order).
        distinct = present if self.kind == "text" else dict.fromkeys(present)
        collections.deque(map(self.distinct.update, distinct), maxlen=0)
        if self.kind == "text":
            counts, lengths = batch_words(present)
            self.quantiles.update(np.fromiter(map(len, present), np.float32, len(present)))
            self.word_counts.update(lengths.astype(np.float32))
        else:
            counts = Counter(present)
        collections.deque(map(self.frequent.update, counts, counts.values()), maxlen=0)

    def merge(self, other: ColumnStatistics) -> None:
        self.present += other.present
        self.missing += other.missing
        union = ds.hll_union(HLL_LG_K)
        union.update(self.distinct)
        union.update(other.distinct)
        self.distinct = union.get_result()
        self.quantiles.merge(other.quantiles)
        self.word_counts.merge(other.word_counts)
        self.frequent.merge(other.frequent)
        self.total += other.total
        self.total_squares += other.total_squares

    @property
    def presence(self) -> float:
        n = self.present + self.missing
        return self.present / n if n else 0.0

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        items = self.frequent.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
        return [(item, int(estimate)) for item, estimate, _lb, _ub in items[:n]]

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind,
            "present": self.present,
            "missing": self.missing,
            "presence": round(self.presence, 4),
            "distinct": round(self.distinct.get_estimate()),
        }
        if self.present and self.kind == "numeric":
            mean = self.total / self.present
            out.update(
                min=self.quantiles.get_min_value(),
                max=self.quantiles.get_max_value(),
                mean=mean,
                std=max(self.total_squares / self.present - mean * mean, 0.0) ** 0.5,
                quantiles={
                    str(q): self.quantiles.get_quantile(q) for q in (0.01, 0.25, 0.5, 0.75, 0.99)
                },
            )
        elif self.present and self.kind == "text":
            out.update(
                length_chars={str(q): self.quantiles.get_quantile(q) for q in (0.5, 0.99)},
                length_words={str(q): self.word_counts.get_quantile(q) for q in (0.5, 0.99)},
                top_words=self.top(10),
            )
        elif self.present and self.kind == "image":
            out["size_bytes"] = {str(q): self.quantiles.get_quantile(q) for q in (0.01, 0.5, 0.99)}
        elif self.present:
            out["top_values"] = self.top(10)
        return out

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "present": self.present,
            "missing": self.missing,
            "distinct": _b64(self.distinct),
            "quantiles": _b64(self.quantiles),
            "word_counts": _b64(self.word_counts),
            "frequent": _b64(self.frequent),
            "total": self.total,
            "total_squares": self.total_squares,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ColumnStatistics:
        return cls(
            kind=data["kind"],
            present=data["present"],
            missing=data["missing"],
            distinct=_unb64(ds.hll_sketch, data["distinct"]),
            quantiles=_unb64(ds.kll_floats_sketch, data["quantiles"]),
            word_counts=_unb64(ds.kll_floats_sketch, data["word_counts"]),
            frequent=_unb64(ds.frequent_strings_sketch, data["frequent"]),
            total=data["total"],
            total_squares=data["total_squares"],
        )


@dataclass
class SpanStatistics:
    """Statistics of one or more spans: a mergeable accumulator."""

    types: dict[str, str]
    rows: int = 0
    labels: dict[str, int] = field(default_factory=dict)
    columns: dict[str, ColumnStatistics] = field(default_factory=dict)
    spans: list[int] = field(default_factory=list)

    def __post_init__(self) -> None:
        for column, kind in self.types.items():
            self.columns.setdefault(column, ColumnStatistics(kind))

    def add_batch(self, rows: Iterable[Mapping[str, Any]], label: str) -> None:
        rows = list(rows)
        self.add_columns(
            {column: [row.get(column) for row in rows] for column in self.columns},
            [row[label] for row in rows],
        )

    def add_columns(self, columns: Mapping[str, list[Any]], labels: list[str]) -> None:
        """Add a batch given column-wise: column -> values (None = missing), and the labels.

        Numeric values are counted as stored (float32), so statistics computed while
        ingesting equal those computed from the written shards.
        """
        self.rows += len(labels)
        for value, n in Counter(labels).items():
            self.labels[value] = self.labels.get(value, 0) + n
        for column, stats in self.columns.items():
            stats.add_many(columns.get(column) or [None] * len(labels))

    def merge(self, other: SpanStatistics) -> SpanStatistics:
        for column, kind in other.types.items():
            if column not in self.columns:
                self.types[column] = kind
                self.columns[column] = ColumnStatistics(kind)
            self.columns[column].merge(other.columns[column])
        self.rows += other.rows
        for value, n in other.labels.items():
            self.labels[value] = self.labels.get(value, 0) + n
        self.spans = sorted(set(self.spans) | set(other.spans))
        return self

    def summary(self) -> dict[str, Any]:
        return {
            "spans": self.spans,
            "rows": self.rows,
            "labels": dict(sorted(self.labels.items())),
            "columns": {c: s.summary() for c, s in self.columns.items()},
        }

    def to_dict(self) -> dict[str, Any]:
        return {
            "types": self.types,
            "rows": self.rows,
            "labels": self.labels,
            "spans": self.spans,
            "columns": {c: s.to_dict() for c, s in self.columns.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> SpanStatistics:
        return cls(
            types=dict(data["types"]),
            rows=data["rows"],
            labels=dict(data["labels"]),
            spans=list(data["spans"]),
            columns={c: ColumnStatistics.from_dict(s) for c, s in data["columns"].items()},
        )


def merge_all(parts: Iterable[SpanStatistics]) -> SpanStatistics | None:
    merged: SpanStatistics | None = None
    for part in parts:
        merged = SpanStatistics.from_dict(part.to_dict()) if merged is None else merged.merge(part)
    return merged


def load(artifact: Artifact) -> SpanStatistics:
    return SpanStatistics.from_dict(
        json.loads((Path(artifact.uri) / "statistics.json").read_text(encoding="utf-8"))
    )


def precomputed(examples_artifact: Artifact) -> SpanStatistics | None:
    """The statistics ingest computed while the rows were in memory, if it did."""
    path = Path(examples_artifact.uri) / STATISTICS_FILE
    if not path.exists():  # ingested before ingest computed them
        return None
    return SpanStatistics.from_dict(json.loads(path.read_text(encoding="utf-8")))


class ComputeStatistics:
    """Pipeline component: an ``examples`` artifact → a ``statistics`` artifact (all splits)."""

    name: ClassVar[str] = "statistics"
    version: ClassVar[str] = "2"  # 2: words as the featurizer tokenizes them; more words kept

    def __init__(self, span: int, version: int) -> None:
        self.span = span
        self.span_version = version

    def parameters(self) -> dict[str, Any]:
        return {
            "kll_k": KLL_K,
            "hll_lg_k": HLL_LG_K,
            "frequent_lg_max_k": FREQ_LG_MAX_K,
            "text_frequent_lg_max_k": TEXT_FREQ_LG_MAX_K,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        source = ctx.inputs["examples"]
        types, label = source.properties["types"], source.properties["label"]
        stats = precomputed(source) or self._from_shards(source, types, label)
        return self.write(ctx, stats)

    def write(self, ctx: ExecutionContext, stats: SpanStatistics) -> dict[str, Any]:
        """Write the ``statistics`` artifact (sketches and summary); the run summary."""
        writer = ctx.output(
            "statistics", "ExampleStatistics", span=self.span, version=self.span_version
        )
        writer.write_json("statistics.json", stats.to_dict())
        writer.write_json("summary.json", stats.summary())
        return {"rows": stats.rows, "labels": stats.labels}

    def _from_shards(self, source: Artifact, types: dict[str, str], label: str) -> SpanStatistics:
        stats = SpanStatistics(types=dict(types), spans=[self.span])
        for split_dir in sorted(p for p in Path(source.uri).iterdir() if p.is_dir()):
            batch: list[dict[str, Any]] = []
            for record in examples.iter_records(split_dir):
                batch.append(examples.decode(record, types, label))
                if len(batch) >= 1024:
                    stats.add_batch(batch, label)
                    batch = []
            stats.add_batch(batch, label)
        return stats

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        ctx.store.update_span(
            ctx.conn, self.span, self.span_version, statistics_id=outputs["statistics"].id
        )
