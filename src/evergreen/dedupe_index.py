"""The dedupe index: every span's row hashes in one sorted parquet file beside its examples.

Ingest asks, for each batch of rows, "which earlier rows have these inputs?" (duplicates and
label conflicts). The answer used to be one SQL row per data row; now each span's examples
artifact holds ``index.parquet``::

    input_hash  fixed_size_binary(16)   the row's inputs (blake2b-128, as in ``__row_hash__``)
    row_hash    fixed_size_binary(16)   inputs + label
    label       string
    position    int64                   the row's order among the span's kept rows

sorted by (input_hash, position). Checking a batch reads the earlier spans' hash columns and
joins them with the batch's hashes in Arrow (``pc.is_in``): no SQL row per data row, and the
memory of one parquet batch per file at a time.

Atomic with the data by construction: the file is written into the examples artifact's
temporary folder, renamed into place with it and registered with the span in the run's
transaction, so a crash can leave the index neither ahead of nor behind the shards. The
pipeline's index is the files of the *current* version of every span (the ``spans`` table),
so a changed span's new version replaces its rows.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from evergreen.metadata import MetadataStore

INDEX_FILE = "index.parquet"
SCHEMA = pa.schema(
    [
        ("input_hash", pa.binary(16)),
        ("row_hash", pa.binary(16)),
        ("label", pa.string()),
        ("position", pa.int64()),
    ]
)
_READ_ROWS = 1 << 18  # rows per parquet batch read while joining: bounds the join's memory
_ROW_GROUP = 1 << 17
# Dictionary-encode the labels only: a dictionary of unique hashes is built (in memory about
# ten times the column's size: measured 40 MiB for a 187,000-row row group) and then dropped.
_DICT = ["label"]
# A span's own entries held in memory before they spill to disk (about 14 MiB of them).
_SPILL_ROWS = 1 << 16
# Hash ranges a spilled run is cut into (a row group each): the final merge holds one at a time.
_PARTS = 16
# A spilled run's input hashes are also kept sorted in a file of 16-byte records; memory keeps
# every _FENCE-th of them (to read one block of the file per key looked up) ...
_FENCE = 1024
# ... and a filter of this many bits over all of them, with three bits set per hash: a key
# that misses one of its bits was never spilled, so only the rare key that passes (a
# duplicate, or about 1 in 10,000 others at a million spilled rows) reads the files.
_FILTER_BITS = 1 << 26  # 8 MiB, whatever the span's size


class IndexedRow(NamedTuple):
    """One entry of the dedupe index (a named tuple: ingest builds one per kept row)."""

    row_hash: str
    input_hash: str
    label: str
    span: int


@dataclass(frozen=True)
class IndexSource:
    """One span's index file; ``order`` is its examples artifact id (ingest order)."""

    span: int
    order: int
    path: Path


def hashes_array(hex_hashes: Sequence[str]) -> pa.FixedSizeBinaryArray:
    """32-hex-digit hashes as a ``fixed_size_binary(16)`` Arrow array (one C conversion)."""
    data = bytes.fromhex("".join(hex_hashes))
    return pa.Array.from_buffers(pa.binary(16), len(hex_hashes), [None, pa.py_buffer(data)])


def digests_array(digests: bytes) -> pa.FixedSizeBinaryArray:
    """16-byte digests, concatenated, as a ``fixed_size_binary(16)`` Arrow array (no copy)."""
    return pa.Array.from_buffers(pa.binary(16), len(digests) // 16, [None, pa.py_buffer(digests)])


def entries_table(rows: Sequence[IndexedRow], first_position: int) -> pa.Table:
    """Index entries (of one span, in row order) as a table of :data:`SCHEMA`."""
    return pa.table(
        [
            hashes_array([r.input_hash for r in rows]),
            hashes_array([r.row_hash for r in rows]),
            pa.array([r.label for r in rows], pa.string()),
            pa.array(range(first_position, first_position + len(rows)), pa.int64()),
        ],
        schema=SCHEMA,
    )


def match(table: pa.Table, keys: pa.Array) -> pa.Table:
    """The rows of an index table whose input hash is one of ``keys`` (the join, in Arrow)."""
    return table.filter(pc.is_in(table["input_hash"], value_set=keys))


def to_rows(table: pa.Table, span: int) -> list[IndexedRow]:
    """Matched entries as :class:`IndexedRow` (hex hashes), in position order."""
    table = table.sort_by("position")
    return [
        IndexedRow(r.hex(), i.hex(), label, span)
        for i, r, label in zip(
            table["input_hash"].to_pylist(),
            table["row_hash"].to_pylist(),
            table["label"].to_pylist(),
            strict=True,
        )
    ]


def sources(store: MetadataStore, conn: Any, exclude_span: int | None = None) -> list[IndexSource]:
    """The index files of every span's current version, in ingest order (``exclude_span``'s
    left out: a span being ingested again replaces its rows)."""
    return [
        IndexSource(span, order, Path(uri) / INDEX_FILE)
        for span, order, uri in store.current_examples(conn)
        if span != exclude_span
    ]


def size(store: MetadataStore) -> int:
    """Rows in the pipeline's index (from the files' footers)."""
    with store.engine.connect() as conn:
        return sum(rows_in(s.path) for s in sources(store, conn))


def rows_in(path: Path) -> int:
    return pq.ParquetFile(path).metadata.num_rows if path.exists() else 0


class SpanIndex:
    """The ``lookup``/``remember`` pair :class:`~evergreen.components.ingest.RowProcessor`
    dedupes against, for one span being ingested.

    ``lookup`` answers from the earlier spans' files (joined batch by batch) and from the rows
    this span has kept so far; :meth:`write` then stores this span's file, sorted.

    This span's entries are held in memory as Arrow tables (40 bytes and the label per kept
    row) until :data:`_SPILL_ROWS` of them are; with a ``spill`` folder they then go to disk
    as a sorted run cut into :data:`_PARTS` row groups by hash range, its input hashes also
    sorted in a file of their own. Memory keeps a fixed-size filter over the spilled hashes
    and one hash in :data:`_FENCE` of each run: a key the filter rules out is answered
    without reading anything; the others read one block of each run's hashes (a hit reads
    its run back: duplicates are rare). :meth:`write` merges the runs one hash range at a
    time. So the memory of a span's index does not grow with the span past the first spill
    but by 16 bytes per :data:`_FENCE` rows.

    Args:
        span: the span being ingested.
        earlier: the other spans' index files (:func:`sources`).
        spill: an empty folder for the runs (deleted by :meth:`write`); None keeps every
            entry in memory.
    """

    def __init__(
        self, span: int, earlier: Iterable[IndexSource], spill: Path | None = None
    ) -> None:
        self.span = span
        # A span ingested before index files existed has none: nothing to dedupe against.
        self.files = sorted((s for s in earlier if s.path.exists()), key=lambda s: s.order)
        self.kept: list[pa.Table] = []
        self.rows = 0
        self.spill = spill
        self.runs: list[_SpilledHashes] = []  # each spilled run's sorted input hashes, on disk
        self.filter: np.ndarray | None = None  # over every spilled input hash

    def lookup(self, input_hashes: Iterable[str]) -> dict[str, list[IndexedRow]]:
        """Earlier entries (other spans', then this span's) for each of ``input_hashes``."""
        hashes = sorted(set(input_hashes))
        found: dict[str, list[IndexedRow]] = {}
        if not hashes:
            return found
        keys = hashes_array(hashes)
        for source in self.files:
            for batch in pq.ParquetFile(source.path).iter_batches(batch_size=_READ_ROWS):
                _add(found, match(pa.Table.from_batches([batch]), keys), source.span)
        spilled = self._spilled(keys)
        own = [self._run(n) for n, run in enumerate(self.runs) if run.holds_any(spilled)]
        for table in own + self.kept:
            _add(found, match(table, keys), self.span)
        return found

    def seen(self, keys: pa.FixedSizeBinaryArray) -> bool:
        """Whether any of ``keys`` (input hashes) has an entry: another span's or this span's
        (what :meth:`lookup` would find for them, without building the entries)."""
        for source in self.files:
            parquet = pq.ParquetFile(source.path)
            for batch in parquet.iter_batches(batch_size=_READ_ROWS, columns=["input_hash"]):
                if pc.any(pc.is_in(batch.column(0), value_set=keys)).as_py():
                    return True
        spilled = self._spilled(keys)
        if len(spilled) and any(run.holds_any(spilled) for run in self.runs):
            return True
        own = [table["input_hash"] for table in self.kept]
        return any(pc.any(pc.is_in(hashes, value_set=keys)).as_py() for hashes in own)

    def _spilled(self, keys: pa.FixedSizeBinaryArray) -> np.ndarray:
        """The keys (as sorted ``S16``) that may be among the spilled runs' input hashes."""
        if self.filter is None or not len(keys):
            return np.empty(0, dtype="S16")
        digests = _digests(keys)
        return np.sort(digests[_filter_has(self.filter, digests)])

    def remember_hashes(self, input_hashes: bytes, row_hashes: bytes, labels: pa.Array) -> None:
        """:meth:`remember` of rows given as their hashes' 16-byte digests, concatenated (in
        row order), and their labels: the same entries, built column-wise."""
        n = len(labels)
        if n:
            table = pa.table(
                [
                    digests_array(input_hashes),
                    digests_array(row_hashes),
                    labels.cast(pa.string()),
                    pa.array(np.arange(self.rows, self.rows + n, dtype=np.int64)),
                ],
                schema=SCHEMA,
            )
            self.kept.append(table)
            self.rows += n
            if self.spill is not None and sum(t.num_rows for t in self.kept) >= _SPILL_ROWS:
                self._spill()

    def remember(self, rows: Sequence[IndexedRow]) -> None:
        """Add this span's newly kept rows (in row order)."""
        if rows:
            self.kept.append(entries_table(rows, self.rows))
            self.rows += len(rows)
            if self.spill is not None and sum(t.num_rows for t in self.kept) >= _SPILL_ROWS:
                self._spill()

    def write(self, path: Path) -> int:
        """Write this span's entries to ``path``, sorted by (input hash, position)."""
        if not self.runs:
            table = pa.concat_tables(self.kept) if self.kept else SCHEMA.empty_table()
            pq.write_table(_sorted(table), path, row_group_size=_ROW_GROUP, use_dictionary=_DICT)
            return table.num_rows
        if self.kept:
            self._spill()
        assert self.spill is not None
        with pq.ParquetWriter(path, SCHEMA, use_dictionary=_DICT) as out:
            for part in range(_PARTS):
                tables = [
                    _read_row_group(run.table, run.groups[part])
                    for run in self.runs
                    if part in run.groups
                ]
                if tables:
                    out.write_table(_sorted(pa.concat_tables(tables)), row_group_size=_ROW_GROUP)
                del tables
                # Hand the part's buffers back now: kept by the allocator, the parts' leftovers
                # added up to a peak that grew with the span (measured: 99 vs 74 MiB at 3M rows).
                pa.default_memory_pool().release_unused()
        shutil.rmtree(self.spill)
        return self.rows

    def _spill(self) -> None:
        """The in-memory entries to disk: one sorted run, a row group per hash range."""
        assert self.spill is not None
        table = _sorted(pa.concat_tables(self.kept))
        self.kept = []
        self.spill.mkdir(parents=True, exist_ok=True)
        hashes = table["input_hash"].combine_chunks()
        data = np.frombuffer(hashes.buffers()[1], dtype=np.uint8)
        first_bytes = data[hashes.offset * 16 : (hashes.offset + len(hashes)) * 16 : 16]
        bounds = np.searchsorted(first_bytes, np.arange(0, 257, 256 // _PARTS), side="left")
        n = len(self.runs)
        path = self.spill / f"run-{n:05d}.parquet"
        groups: dict[int, int] = {}
        with pq.ParquetWriter(path, SCHEMA, use_dictionary=_DICT) as out:
            for part in range(_PARTS):
                start, stop = int(bounds[part]), int(bounds[part + 1])
                if stop > start:
                    out.write_table(table.slice(start, stop - start), row_group_size=stop - start)
                    groups[part] = len(groups)
        digests = _digests(hashes)
        del table, hashes
        if self.filter is None:
            self.filter = np.zeros(_FILTER_BITS // 8, dtype=np.uint8)
        _filter_add(self.filter, digests)
        run = _SpilledHashes.write(self.spill / f"run-{n:05d}.hashes", digests)
        run.table, run.groups = path, groups
        self.runs.append(run)

    def _run(self, n: int) -> pa.Table:
        return pq.read_table(self.runs[n].table)


class _SpilledHashes:
    """One spilled run's input hashes: sorted 16-byte records in a file, every
    :data:`_FENCE`-th in memory (the first of each block of the file)."""

    def __init__(self, path: Path, fences: np.ndarray, rows: int) -> None:
        self.path = path
        self.fences = fences
        self.rows = rows
        self.table = path  # the run's entries (parquet), set by the spill
        self.groups: dict[int, int] = {}  # hash range -> its row group in ``table``

    @classmethod
    def write(cls, path: Path, digests: np.ndarray) -> _SpilledHashes:
        ordered = np.sort(digests)  # numpy's own order of S16, the one searchsorted uses
        ordered.tofile(path)
        return cls(path, ordered[::_FENCE].copy(), len(ordered))

    def holds_any(self, keys: np.ndarray) -> bool:
        """Whether any of ``keys`` (sorted ``S16``) is among these hashes: one block of the
        file read per block the keys fall in."""
        if not len(keys):
            return False
        blocks = np.searchsorted(self.fences, keys, side="right") - 1
        with open(self.path, "rb") as f:
            for block in np.unique(blocks[blocks >= 0]).tolist():
                f.seek(block * _FENCE * 16)
                stored = np.frombuffer(f.read(_FENCE * 16), dtype="S16")
                wanted = keys[blocks == block]
                found = np.minimum(np.searchsorted(stored, wanted), len(stored) - 1)
                if (stored[found] == wanted).any():
                    return True
        return False


def _digests(hashes: pa.FixedSizeBinaryArray) -> np.ndarray:
    """A ``fixed_size_binary(16)`` array's values as a numpy ``S16`` array (copied)."""
    hashes = hashes.combine_chunks() if isinstance(hashes, pa.ChunkedArray) else hashes
    data = hashes.buffers()[1]
    raw = np.frombuffer(data, dtype="S16")
    return raw[hashes.offset : hashes.offset + len(hashes)].copy()


def _filter_bits(digests: np.ndarray) -> list[np.ndarray]:
    """Three bit positions per hash (its first three 32-bit words, cut to the filter's size:
    the hashes are uniform already)."""
    words = np.frombuffer(digests.tobytes(), dtype="<u4").reshape(-1, 4)
    return [words[:, k] & np.uint32(_FILTER_BITS - 1) for k in range(3)]


def _filter_add(bits: np.ndarray, digests: np.ndarray) -> None:
    for position in _filter_bits(digests):
        np.bitwise_or.at(bits, position >> 3, (1 << (position & 7)).astype(np.uint8))


def _filter_has(bits: np.ndarray, digests: np.ndarray) -> np.ndarray:
    found = np.ones(len(digests), dtype=np.bool_)
    for position in _filter_bits(digests):
        found &= (bits[position >> 3] >> (position & 7)) & 1 == 1
    return found


def _read_row_group(path: Path, group: int) -> pa.Table:
    with pq.ParquetFile(path) as file:
        return file.read_row_group(group)


def _sorted(table: pa.Table) -> pa.Table:
    return table.sort_by([("input_hash", "ascending"), ("position", "ascending")])


def _add(found: dict[str, list[IndexedRow]], matched: pa.Table, span: int) -> None:
    if matched.num_rows:
        for row in to_rows(matched, span):
            found.setdefault(row.input_hash, []).append(row)
