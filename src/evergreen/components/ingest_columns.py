"""Ingest's column-wise path: a batch of clean CSV records, a column at a time.

:class:`~evergreen.components.ingest.RowProcessor` decides a batch row by row (its fast path
column by column, but still with a row object, a hash input string and three digests made in
Python per row). Most batches of a CSV file are simpler: records of one line each, every value
text, no undecodable byte, nothing near the size limit. For such a batch (:class:`ColumnBatch`,
built from the reader's :class:`~evergreen.readers.RecordBlock` objects) this module computes
the same answers with the rows kept as columns:

* the checks (placeholder labels, numbers) as the row code makes them; a quarantined row is
  built by the row code itself, so its reason and preview are the same;
* each row's hash input, ``json.dumps`` of its values, built by Arrow from the columns'
  UTF-8 bytes (JSON's escapes applied column-wise), then hashed (blake2b, SHA-256) one
  digest per row in C: the same input hash, row hash and split;
* the dedupe check for the whole batch at once (:meth:`SpanIndex.seen`); a batch with a
  duplicate or a label conflict in it is decided by the row code instead;
* the ``tf.train.Example`` bytes built column-wise (:meth:`ExampleEncoder.encode_columns`).

Anything else (an image column, a non-UTF-8 value, a long value, records from several files
with different headers, a record that is not a clean line) goes to the row code, which stays
the reference: ``tests/test_ingest_columns.py`` checks that both give the same shards, index,
statistics, quarantine and report.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
import json
import operator
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from evergreen import byte_scan, csv_arrow, examples, readers
from evergreen.dedupe_index import SpanIndex, digests_array

if TYPE_CHECKING:
    from evergreen.components.statistics import SpanStatistics

# ingest imports this module, so its classes cannot be imported here (not even for the type
# checker: tests/test_structure.py forbids the cycle): these names stand for them.
RowProcessor = Any  # evergreen.components.ingest.RowProcessor
IngestReport = Any  # evergreen.components.ingest.IngestReport
SpanOutput = Any  # evergreen.components.ingest._SpanOutput

_BINARY = pa.binary()
_NOTHING = pa.scalar(b"", _BINARY)
# A batch's values in bytes, at most, for the column-wise path: its arrays have 32-bit offsets,
# and JSON's escapes can make a value six times longer (a control character -> \u00XX).
_MAX_BATCH_BYTES = 1 << 28
_digest = operator.methodcaller("digest")
_blake2b_16 = functools.partial(hashlib.blake2b, digest_size=16)
_HEX = np.frombuffer(b"0123456789abcdef", dtype=np.uint8)
# How json.dumps(..., ensure_ascii=False) writes each control character (it escapes only
# those, '"' and '\\').
_CONTROL_ESCAPES = {code: json.dumps(chr(code))[1:-1] for code in range(0x20)}


class ColumnBatch:
    """Records from :class:`~evergreen.readers.RecordBlock` objects of one header, in order:
    their fields row by row, and where each came from (``file:line``, computed on demand)."""

    def __init__(self, blocks: Sequence[readers.RecordBlock]) -> None:
        self.blocks = list(blocks)
        self.columns = self.blocks[0].columns
        sizes = [len(b.rows) for b in self.blocks]
        self._size = sum(sizes)
        self._starts = list(np.cumsum([0, *sizes[:-1]]).tolist())
        # The batch as Arrow string columns, when Arrow parsed every block of it.
        self.table: pa.Table | None = None
        if all(isinstance(b.rows, csv_arrow.TableRows) for b in self.blocks):
            tables = [b.rows.table for b in self.blocks]  # type: ignore[attr-defined]
            self.table = pa.concat_tables(tables).combine_chunks()

    @functools.cached_property
    def rows(self) -> list[list[str]]:
        """The records' fields, row by row."""
        return [row for block in self.blocks for row in block.rows]

    def __len__(self) -> int:
        return self._size

    def source(self, i: int) -> str:
        """Row ``i``'s ``file:line``, as its :class:`~evergreen.readers.RawRecord` has it."""
        b = bisect.bisect_right(self._starts, i) - 1
        block = self.blocks[b]
        return f"{block.path}:{block.first_line + i - self._starts[b]}"

    def records(self) -> list[readers.RawRecord]:
        return [record for block in self.blocks for record in block.records()]


def batches(
    items: Iterable[readers.RawRecord | readers.RecordBlock], size: int
) -> Iterator[ColumnBatch | list[readers.RawRecord]]:
    """The records of ``items`` in batches of ``size`` (the last one shorter): the same
    batches as ``itertools.islice`` over the records, a batch made only of blocks with one
    header as a :class:`ColumnBatch`, any other as a list of records."""
    pending: list[readers.RawRecord | readers.RecordBlock] = []
    count = 0
    for item in items:
        if not isinstance(item, readers.RecordBlock):
            pending.append(item)
            count += 1
        else:
            while item.rows:
                take = size - count
                head = item._replace(rows=item.rows[:take])
                item = item._replace(rows=item.rows[take:], first_line=item.first_line + take)
                pending.append(head)
                count += len(head.rows)
                if count == size:
                    yield _batch(pending)
                    pending, count = [], 0
            continue
        if count == size:
            yield _batch(pending)
            pending, count = [], 0
    if pending:
        yield _batch(pending)


def _batch(
    items: list[readers.RawRecord | readers.RecordBlock],
) -> ColumnBatch | list[readers.RawRecord]:
    blocks = [item for item in items if isinstance(item, readers.RecordBlock)]
    if len(blocks) == len(items) and all(b.columns == blocks[0].columns for b in blocks):
        return ColumnBatch(blocks)
    out: list[readers.RawRecord] = []
    for item in items:
        if isinstance(item, readers.RecordBlock):
            out += item.records()
        else:
            out.append(item)
    return out


@dataclass
class KeptColumns:
    """A batch's kept rows, column-wise, in input order."""

    values: dict[str, Any]  # feature column -> coerced values (None = missing)
    encoded: dict[str, Any]  # text and categorical columns -> binary Arrow array (null = missing)
    labels: list[str]
    input_hashes: bytes  # 16-byte blake2b digests, concatenated
    row_hashes: bytes
    splits: np.ndarray  # index into split_names, per row
    split_names: list[str]


def process(
    processor: RowProcessor, index: SpanIndex, batch: ColumnBatch, report: IngestReport
) -> tuple[list[Any], KeptColumns | None] | None:
    """Check, hash, split and dedupe a batch column-wise, updating ``report`` as
    :meth:`RowProcessor.process_batch` does.

    Returns:
        None when the batch needs the row code (nothing done, nothing counted); else the
        quarantined records (in order) and the kept rows (None when there are none) — or,
        for a batch with a duplicate or a label conflict, ``(items, None)`` where ``items``
        is what :meth:`RowProcessor.process_batch` returns.
    """
    checked = _check(processor, batch, report)
    if checked is None:
        return None
    report.rows_read += len(batch)
    quarantined, kept, good = checked
    if kept is None:
        return quarantined, None
    keys = digests_array(kept.input_hashes)
    repeats = _repeats(kept.input_hashes)
    if repeats or index.seen(keys):
        # Seen before or repeated in the batch: the row code decides, row by row.
        items = _as_items(processor, batch, quarantined, kept, good)
        return processor._dedupe(items, report), None
    index.remember_hashes(kept.input_hashes, kept.row_hashes, pa.array(kept.labels, pa.string()))
    return quarantined, kept


def _repeats(digests: bytes) -> bool:
    """Whether a 16-byte digest occurs twice among ``digests`` (concatenated). Their first
    eight bytes as integers are sorted first (several times faster than 16-byte strings);
    only when two of those are equal are the whole digests compared."""
    n = len(digests) // 16
    if np.unique(np.frombuffer(digests, dtype=np.uint64)[0::2]).size == n:
        return False
    return bool(np.unique(np.frombuffer(digests, dtype="S16")).size < n)


def _check(
    processor: RowProcessor, batch: ColumnBatch, report: IngestReport
) -> tuple[list[Any], KeptColumns | None, list[int]] | None:
    """The checks of ``RowProcessor._fast_batch`` on columns; None when the batch needs the
    row code. Returns the quarantined records, the kept rows' columns, their positions."""
    fit = _fitting_columns(processor, batch)
    if fit is None:
        return None
    columns, utf8 = fit
    n = len(batch)
    labels = columns[processor.label]
    wrong: dict[int, tuple[str, Any]] = {}
    coerced: dict[str, list[Any]] = {}
    for column, kind in processor.types.items():
        raw = columns.get(column)
        if raw is None:
            coerced[column] = [None] * n
        elif kind == "numeric":
            coerced[column] = processor.coerce_numbers(raw, column, wrong)
        else:
            coerced[column] = [None if v == "" else v for v in raw]
    quarantined, good = _quarantine(processor, batch, labels, wrong, report)
    if not good:
        return quarantined, None, good
    pick = (lambda items: items) if len(good) == n else (lambda items: [items[j] for j in good])
    values = {column: pick(v) for column, v in coerced.items()}
    # The kept rows' raw strings of every feature column present, and of the split key.
    wanted = [*processor.types, processor.split_key] if processor.split_key else processor.types
    texts = {c: pick(columns[c]) for c in wanted if c in columns}
    # The whole batch's bytes are reusable when every row is kept.
    whole = utf8 if len(good) == n else None
    return quarantined, _kept(processor, values, texts, whole, pick(labels)), good


def _fitting_columns(
    processor: RowProcessor, batch: ColumnBatch
) -> tuple[dict[str, list[str]], dict[str, bytes]] | None:
    """The batch's columns and their UTF-8 bytes, or None when the column code cannot take
    it (an image column, an undecodable byte, too many bytes, a value that may be over the
    field limit, no label column): the row code decides those."""
    if "image" in processor.types.values():
        return None
    if batch.table is not None:
        columns, utf8 = _table_columns(batch)
    else:
        columns = dict(zip(batch.columns, map(list, zip(*batch.rows, strict=True)), strict=True))
        utf8 = {}
        for name, values in columns.items():
            try:  # an undecodable byte (kept as a surrogate) cannot be encoded
                utf8[name] = "".join(values).encode("utf-8")
            except UnicodeEncodeError:
                return None
    if sum(map(len, utf8.values())) > _MAX_BATCH_BYTES:
        return None  # Arrow's binary arrays (32-bit offsets) could overflow: row by row
    if batch.table is not None:  # counted by Arrow: bytes first (no more than characters)
        longest = max(pc.max(pc.binary_length(c)).as_py() or 0 for c in batch.table.columns)
        if longest * 4 > processor.max_field_bytes:
            longest = max(pc.max(pc.utf8_length(c)).as_py() or 0 for c in batch.table.columns)
    else:
        longest = max((max(map(len, v), default=0) for v in columns.values()), default=0)
    if longest * 4 > processor.max_field_bytes:
        return None  # a value may be over the limit: let the row code measure it
    if processor.label not in columns:
        return None
    return columns, utf8


def _table_columns(batch: ColumnBatch) -> tuple[dict[str, list[str]], dict[str, Any]]:
    """:func:`_fitting_columns`' columns and UTF-8 bytes of a batch Arrow parsed: the
    values as Python strings, the bytes straight from the Arrow columns (valid UTF-8)."""
    assert batch.table is not None
    columns: dict[str, list[str]] = {}
    utf8: dict[str, Any] = {}
    for name, column in zip(batch.columns, batch.table.columns, strict=True):
        array = column.chunk(0) if column.num_chunks == 1 else column.combine_chunks()
        columns[name] = array.to_pylist()
        offsets = np.frombuffer(array.buffers()[1], dtype=np.int32)
        start, end = offsets[array.offset], offsets[array.offset + len(array)]
        utf8[name] = memoryview(array.buffers()[2])[start:end] if end > start else b""
    return columns, utf8


def _quarantine(
    processor: RowProcessor,
    batch: ColumnBatch,
    labels: list[str],
    wrong: dict[int, tuple[str, Any]],
    report: IngestReport,
) -> tuple[list[Any], list[int]]:
    """The rows with a missing label or a wrong numeric value, quarantined by the row code's
    own reasons; and the positions of the rows kept."""
    label_problem = {value: processor._missing_label(value) for value in set(labels)}
    if not wrong and all(problem is None for problem in label_problem.values()):
        return [], list(range(len(batch)))
    quarantined: list[Any] = []
    good = []
    for j, label_value in enumerate(labels):
        problem = label_problem[label_value]
        if problem is None and j not in wrong:
            good.append(j)
            continue
        values = dict(zip(batch.columns, batch.rows[j], strict=True))
        quarantined.append(
            processor._row_problem(j, values, problem, wrong, report, batch.source(j))
        )
    return quarantined, good


def _kept(
    processor: RowProcessor,
    values: dict[str, list[Any]],
    texts: dict[str, list[str]],
    whole: dict[str, bytes] | None,
    labels: list[str],
) -> KeptColumns:
    """The kept rows' encoded columns, input and row hashes and splits, computed a column at
    a time (``texts``: the kept rows' raw strings per column present, the split key's too;
    ``whole``: the columns' bytes when every row of the batch is kept)."""
    n = len(labels)
    encoded: dict[str, Any] = {}
    json_parts: list[Any] = []
    for column, kind in processor.types.items():
        if kind == "numeric":
            text = ["null" if v is None else repr(v) for v in values[column]]
            json_parts.append([pa.array(text, pa.string()).cast(_BINARY)])
            continue
        if column in texts:
            kept = texts[column]  # a missing value is "" here, None in values
            data = whole[column] if whole is not None else "".join(kept).encode("utf-8")
            encoded[column] = _binary(kept, data)
        else:
            encoded[column] = pa.nulls(n, _BINARY)
        json_parts.append(_json_pieces(encoded[column]))
    input_data = _json_lists(json_parts, n)
    input_hashes = b"".join(map(_digest, map(_blake2b_16, examples.binary_views(input_data))))
    label_array = pa.array(labels, pa.string()).cast(_BINARY)
    row_inputs = pc.binary_join_element_wise(
        hex_array(input_hashes), pa.scalar(b"\x00", _BINARY), label_array, _NOTHING
    )
    row_hashes = b"".join(map(_digest, map(_blake2b_16, examples.binary_views(row_inputs))))
    if processor.split_key:
        key = texts.get(processor.split_key)
        keys: Iterable[Any] = [b""] * n if key is None else [k.encode("utf-8") for k in key]
    else:
        keys = examples.binary_views(input_data)
    splits = _split_indexes(processor.boundaries, keys)
    split_names = [name for _, name in processor.boundaries]
    return KeptColumns(values, encoded, labels, input_hashes, row_hashes, splits, split_names)


def _binary(texts: list[str], data: bytes) -> pa.Array:
    """A text column as a binary Arrow array of its UTF-8 bytes, null where the text is
    empty (a missing value); ``data`` is the texts' UTF-8 bytes, concatenated."""
    lengths = np.fromiter(map(len, texts), np.int64, len(texts))
    if int(lengths.sum()) != len(data):  # not all ASCII: a character is not always a byte
        ascii = np.fromiter(map(str.isascii, texts), np.bool_, len(texts))
        for i in np.flatnonzero(~ascii).tolist():
            lengths[i] = len(texts[i].encode("utf-8"))
    offsets = np.zeros(len(texts) + 1, dtype=np.int32)
    np.cumsum(lengths, out=offsets[1:])
    present = lengths > 0
    validity = None if present.all() else pa.py_buffer(np.packbits(present, bitorder="little"))
    return pa.Array.from_buffers(
        _BINARY, len(texts), [validity, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _json_strings(values: pa.Array) -> pa.Array:
    """Each value as ``json.dumps(value, ensure_ascii=False)`` writes it ("null" if missing)."""
    quote = pa.scalar(b'"', _BINARY)
    quoted = pc.binary_join_element_wise(quote, _escaped(values), quote, _NOTHING)
    return pc.fill_null(quoted, pa.scalar(b"null", _BINARY))


def _json_pieces(values: pa.Array) -> list[Any]:
    """:func:`_json_strings` of a column as pieces of the row's JSON (arrays and constant
    bytes, joined by :func:`_json_lists`): a column with no missing value is its escaped
    values between two quote constants, so that its bytes are copied once, by that join."""
    if values.null_count:
        return [_json_strings(values)]
    return [b'"', _escaped(values), b'"']


def _escaped(values: pa.Array) -> pa.Array:
    """The values with JSON's escapes (null stays null).

    A value with nothing to escape is left as it is; the few holding a quote, a backslash
    or a control character (found by numpy in the column's bytes) get JSON's escapes,
    applied by Arrow to those values alone.
    """
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    offsets = offsets[values.offset : values.offset + len(values) + 1]
    # Only the bytes the offsets cover: a buffer may be longer (pa.nulls allocates one of
    # uninitialised bytes, all its offsets 0), and those bytes belong to no value.
    start = int(offsets[0]) if len(offsets) else 0
    end = int(offsets[-1]) if len(offsets) else 0
    data = np.frombuffer(values.buffers()[2] or b"", dtype=np.uint8)[start:end]
    special = byte_scan.positions(data, (ord('"'), ord("\\")), below=0x20) + start
    if not len(special):
        return values
    rows = np.unique(np.searchsorted(offsets, special, side="right") - 1)
    fixed = values.take(pa.array(rows))
    # The backslash first, so that the backslashes the others add are not doubled.
    fixed = pc.replace_substring(fixed, "\\", "\\\\")
    fixed = pc.replace_substring(fixed, '"', '\\"')
    found = data[special - start]
    for code in np.unique(found[found < 0x20]).tolist():
        fixed = pc.replace_substring(fixed, chr(code), _CONTROL_ESCAPES[code])
    mask = np.zeros(len(values), dtype=np.bool_)
    mask[rows] = True
    return pc.replace_with_mask(values, pa.array(mask), fixed)


def _json_lists(parts: list[list[Any]], n: int) -> pa.Array:
    """``json.dumps`` of each row's values: "[v1, v2, ...]" from each column's JSON pieces
    (:func:`_json_pieces`), in one join; neighbouring constants are merged first."""
    if not parts:
        return pa.array([b"[]"] * n, _BINARY)
    flat: list[Any] = [b"["]
    for i, part in enumerate(parts):
        flat += [b", ", *part] if i else part
    flat.append(b"]")
    pieces: list[Any] = []
    for piece in flat:
        if isinstance(piece, bytes) and pieces and isinstance(pieces[-1], bytes):
            pieces[-1] += piece
        else:
            pieces.append(piece)
    scalars = [pa.scalar(p, _BINARY) if isinstance(p, bytes) else p for p in pieces]
    return pc.binary_join_element_wise(*scalars, _NOTHING)


def hex_array(digests: bytes) -> pa.Array:
    """16-byte digests, concatenated, as their 32-hex-digit ASCII forms (a binary array)."""
    raw = np.frombuffer(digests, dtype=np.uint8)
    text = np.empty(raw.size * 2, dtype=np.uint8)
    text[0::2] = _HEX[raw >> 4]
    text[1::2] = _HEX[raw & 0x0F]
    fixed = pa.Array.from_buffers(pa.binary(32), raw.size // 16, [None, pa.py_buffer(text)])
    return fixed.cast(_BINARY)


def _split_indexes(boundaries: list[tuple[float, str]], keys: Iterable[Any]) -> np.ndarray:
    """:func:`ingest._pick_many` of the keys' SHA-256 buckets, as indexes into the names."""
    digests = np.frombuffer(
        b"".join(map(_digest, map(hashlib.sha256, keys))), dtype=np.uint8
    ).reshape(-1, 32)
    buckets = np.ascontiguousarray(digests[:, :8]).view(">u8").ravel().astype(np.float64) / 2**64
    uppers = np.array([upper for upper, _ in boundaries], dtype=np.float64)
    return np.minimum(np.searchsorted(uppers, buckets, side="right"), len(boundaries) - 1)


def _as_items(
    processor: RowProcessor,
    batch: ColumnBatch,
    quarantined: list[Any],
    kept: KeptColumns,
    good: list[int],
) -> list[Any]:
    """The batch as ``RowProcessor.check_batch`` returns it: rows and quarantined, in order."""
    new_row = processor.row_factory
    names = list(processor.types)
    rows_values = [
        dict(zip(names, row, strict=True)) for row in zip(*kept.values.values(), strict=True)
    ]
    if not names:
        rows_values = [{} for _ in good]
    split_names = kept.split_names
    input_hex = kept.input_hashes.hex()
    row_hex = kept.row_hashes.hex()
    rows = [
        new_row(
            (
                batch.source(j),
                rows_values[i],
                kept.labels[i],
                input_hex[32 * i : 32 * i + 32],
                row_hex[32 * i : 32 * i + 32],
                split_names[kept.splits[i]],
            )
        )
        for i, j in enumerate(good)
    ]
    if not quarantined:
        return rows
    out: list[Any] = [None] * len(batch)
    for j, row in zip(good, rows, strict=True):
        out[j] = row
    extra = iter(quarantined)
    return [item if item is not None else next(extra) for item in out]


def write(output: SpanOutput, kept: KeptColumns, stats: SpanStatistics) -> None:
    """The kept rows of a column-wise batch to the shards (as ``_SpanOutput.write`` writes
    them: each split's rows in order) and to the statistics."""
    numeric = [c for c, kind in output.types.items() if kind == "numeric"]
    records = output.encoder.encode_columns(
        {**kept.encoded, **{c: kept.values[c] for c in numeric}},
        kept.labels,
        hex_array(kept.row_hashes),
    )
    for s, name in enumerate(kept.split_names):
        chosen = np.flatnonzero(kept.splits == s)
        if len(chosen):
            serialized = map(bytes, examples.binary_views(records, chosen))
            output.shards[name].write_many(serialized, len(chosen))
    columns = dict(kept.values)
    for column in numeric:
        columns[column] = [None if v is None else examples.as_float32(v) for v in columns[column]]
    stats.add_columns(columns, kept.labels)
