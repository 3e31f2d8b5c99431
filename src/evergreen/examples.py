"""Rows as ``tf.train.Example`` records, and TFRecord shards on disk (the TFX convention).

Every feature is stored under its column name: text and categorical columns as a
``bytes_list`` of one UTF-8 value, image columns as a ``bytes_list`` of the encoded image file
(PNG, JPEG, GIF or BMP bytes, decoded in-graph by the model), numeric columns as a ``float_list`` of one value; a missing
value is an empty list. The label is a ``bytes_list``; ``__row_hash__`` identifies the row.
"""

from __future__ import annotations

import collections
import itertools
import math
import struct
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

ROW_HASH = "__row_hash__"


def _tf() -> Any:
    from evergreen.tf import tensorflow

    return tensorflow()


def encode(
    values: Mapping[str, Any], types: Mapping[str, str], label: str, label_value: str, row_hash: str
) -> bytes:
    """Serialize one coerced row (see :class:`ExampleEncoder` for many rows)."""
    return ExampleEncoder(types, label).encode(values, label_value, row_hash)


def _varint(n: int) -> bytes:
    if n < 0x80:
        return _SMALL[n]
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


_SMALL = [bytes((n,)) for n in range(0x80)]
_EMPTY_BYTES_FEATURE = b"\x0a\x00"  # Feature{bytes_list: {}}
_EMPTY_FLOAT_FEATURE = b"\x12\x00"  # Feature{float_list: {}}


class ExampleEncoder:
    """Writes ``tf.train.Example`` bytes directly in the protobuf wire format.

    Building an Example message per row costs more than everything else ingest does to the
    row; the wire format of a map of one-value features is simple enough to write by hand
    (``tests/test_examples.py`` checks it parses back to the message :func:`decode` reads).

    Args:
        types: feature column -> type (numeric values are float32, the rest bytes).
        label: the label column (written as bytes, like text).
    """

    def __init__(self, types: Mapping[str, str], label: str) -> None:
        self.columns = [(_entry_key(c), kind == "numeric", c) for c, kind in types.items()]
        self.label_key = _entry_key(label)
        self.hash_key = _entry_key(ROW_HASH)
        self._labels: dict[str, bytes] = {}
        # An entry's bytes before its value depend only on its key and the value's length:
        # kept per (key, length), so that a row costs a few lookups and one join.
        self._headers: dict[tuple[bytes, int], bytes] = {}
        self._empty = {
            key: _entry(key, _EMPTY_FLOAT_FEATURE if numeric else _EMPTY_BYTES_FEATURE)
            for key, numeric, _ in self.columns
        }
        self._float_headers = {
            key: _entry(key, b"\x12\x06\x0a\x04" + bytes(4))[:-4] for key, _, _ in self.columns
        }
        self._example_headers: dict[int, bytes] = {}

    def encode(self, values: Mapping[str, Any], label_value: str, row_hash: str) -> bytes:
        """One row as a serialized ``tf.train.Example``."""
        parts = []
        headers = self._headers
        for key, numeric, column in self.columns:
            value = values.get(column)
            if value is None:
                parts.append(self._empty[key])
            elif numeric:
                parts += (self._float_headers[key], _float32(value))
            else:
                data = value if isinstance(value, bytes) else value.encode()
                parts += (headers.get((key, len(data))) or self._header(key, data), data)
        label = self._labels.get(label_value)
        if label is None:  # labels are few: each one's entry is built once
            label = self._labels[label_value] = _bytes_entry(self.label_key, label_value.encode())
        parts.append(label)
        data = row_hash.encode("ascii")
        parts += (
            headers.get((self.hash_key, len(data))) or self._header(self.hash_key, data),
            data,
        )
        features = b"".join(parts)
        head = self._example_headers.get(len(features))
        if head is None:
            head = self._example_headers[len(features)] = b"\x0a" + _varint(len(features))
        return head + features

    def encode_columns(
        self, columns: Mapping[str, Any], labels: Sequence[str], row_hashes: Any
    ) -> Any:
        """Many rows at once, column-wise: what :meth:`encode` gives for each, as one Arrow
        ``binary`` array (one serialized Example per row).

        Args:
            columns: feature column -> its values: a ``binary`` Arrow array (null where
                missing) for text and categorical columns, a list of floats (None where
                missing) for numeric ones; a column left out is missing in every row.
            labels: each row's label.
            row_hashes: each row's ``__row_hash__`` (32 hex digits), as a binary Arrow array.

        The wire format is built by Arrow: each entry's lengths are computed as arrays, their
        varints written by numpy, and all the pieces of a row (a text column's value among
        them, copied once) joined in one C++ call (``binary_join_element_wise``), so no
        Python object is made per row.
        """
        import pyarrow as pa
        import pyarrow.compute as pc

        n = len(labels)
        if n == 0:
            return pa.array([], pa.binary())
        parts: list[Any] = []  # the pieces of every row, joined once at the end
        lengths = np.zeros(n, dtype=np.int64)  # each row's Features message, in bytes
        for key, numeric, column in self.columns:
            values = columns.get(column)
            empty = self._empty[key]
            if values is None:
                parts.append(pa.scalar(empty, pa.binary()))
                lengths += len(empty)
                continue
            if not numeric and values.null_count == 0:  # the usual text column: its pieces
                pieces, sizes = _bytes_entry_pieces(key, values)
                parts += pieces
                lengths += sizes
                continue
            entries = self._float_entries(key, values) if numeric else _bytes_entries(key, values)
            entries = pc.fill_null(entries, pa.scalar(empty, pa.binary()))
            parts.append(entries)
            lengths += pc.binary_length(entries).to_numpy(zero_copy_only=False)
        distinct = list(dict.fromkeys(labels))
        for label_value in distinct:
            if label_value not in self._labels:
                self._labels[label_value] = _bytes_entry(self.label_key, label_value.encode())
        position = {label_value: i for i, label_value in enumerate(distinct)}
        codes = np.fromiter(map(position.__getitem__, labels), np.int32, n)
        entries = [self._labels[v] for v in distinct]
        parts.append(pa.array(entries, pa.binary()).take(codes))
        lengths += np.array([len(e) for e in entries], dtype=np.int64)[codes]
        hash_header = _bytes_entry(self.hash_key, bytes(32))[:-32]
        parts += (pa.scalar(hash_header, pa.binary()), row_hashes.cast(pa.binary()))
        lengths += len(hash_header) + 32
        head = pa.scalar(b"\x0a", pa.binary())
        return pc.binary_join_element_wise(
            head, varints(lengths), *parts, pa.scalar(b"", pa.binary())
        )

    def _float_entries(self, key: bytes, values: Sequence[float | None]) -> Any:
        """A numeric column's entries (null where missing): its header and float32 bytes."""
        import pyarrow as pa
        import pyarrow.compute as pc

        present = np.fromiter((v is not None for v in values), np.bool_, len(values))
        with np.errstate(over="ignore"):  # beyond float32, as protobuf stores it: an infinity
            floats = np.array([0.0 if v is None else v for v in values], np.float64).astype("<f4")
        data = pa.Array.from_buffers(
            pa.binary(4),
            len(values),
            [pa.py_buffer(np.packbits(present, bitorder="little")), pa.py_buffer(floats)],
        )
        header = pa.scalar(self._float_headers[key], pa.binary())
        return pc.binary_join_element_wise(
            header, data.cast(pa.binary()), pa.scalar(b"", pa.binary())
        )

    def _header(self, key: bytes, data: bytes) -> bytes:
        """The bytes of ``data``'s entry before ``data`` itself, remembered by length."""
        if len(self._headers) >= _MAX_HEADERS:  # lengths are bounded, but keep it so
            self._headers.clear()
        header = _bytes_entry(key, data)[: len(data) and -len(data) or None]
        self._headers[key, len(data)] = header
        return header


_MAX_HEADERS = 1 << 16


def _bytes_entry(key: bytes, data: bytes) -> bytes:
    """A map entry whose Feature is a bytes_list of one value: four lengths, one join
    (this runs once per value of every row, so the varints are inlined for short lengths)."""
    n = len(data)
    v1 = _SMALL[n] if n < 0x80 else _varint(n)
    n2 = 1 + len(v1) + n  # BytesList
    v2 = _SMALL[n2] if n2 < 0x80 else _varint(n2)
    n3 = 1 + len(v2) + n2  # Feature
    v3 = _SMALL[n3] if n3 < 0x80 else _varint(n3)
    n4 = len(key) + len(v3) + n3  # the map entry
    v4 = _SMALL[n4] if n4 < 0x80 else _varint(n4)
    return b"".join((b"\x0a", v4, key, v3, b"\x0a", v2, b"\x0a", v1, data))


def binary_views(values: Any, rows: np.ndarray | None = None) -> Iterator[memoryview]:
    """The values of a binary Arrow array without nulls (those at ``rows``, default all),
    as memoryviews of its buffer made one at a time: hashed or copied as they come, they
    never pile up as a list of bytes objects (megabytes of fresh memory per batch, faulted
    in page by page)."""
    offsets = np.frombuffer(values.buffers()[1], dtype=np.int32)
    offsets = offsets[values.offset : values.offset + len(values) + 1]
    if rows is None:
        starts, ends = offsets[:-1], offsets[1:]
    else:
        starts, ends = offsets[rows], offsets[rows + 1]
    data = memoryview(values.buffers()[2] or b"")
    return map(data.__getitem__, map(slice, starts.tolist(), ends.tolist()))


def varints(numbers: np.ndarray) -> Any:
    """Each number's protobuf varint, as a binary Arrow array (numbers below 2**35).

    Each varint's k-th byte is written for the numbers that have one, at its start plus k
    (most lengths take one or two bytes: a pass or two over the numbers).
    """
    import pyarrow as pa

    numbers = np.asarray(numbers, dtype=np.uint64)
    sizes = _varint_sizes(numbers)
    offsets = np.zeros(len(numbers) + 1, dtype=np.int32)
    np.cumsum(sizes, out=offsets[1:])
    if not len(numbers) or int(sizes.max()) == 1:
        data = numbers.astype(np.uint8)
    else:
        data = np.empty(int(offsets[-1]), dtype=np.uint8)
        starts = offsets[:-1]
        for k in range(int(sizes.max())):
            chosen = np.flatnonzero(sizes > k) if k else slice(None)
            more = (sizes[chosen] > k + 1).astype(np.uint8) << 7
            low = (numbers[chosen] >> np.uint64(7 * k)) & np.uint64(0x7F)
            data[starts[chosen] + k] = low.astype(np.uint8) | more
    return pa.Array.from_buffers(
        pa.binary(), len(numbers), [None, pa.py_buffer(offsets), pa.py_buffer(data)]
    )


def _varint_sizes(numbers: np.ndarray) -> np.ndarray:
    sizes = np.ones(len(numbers), dtype=np.int64)
    top = int(numbers.max()) if len(numbers) else 0
    for bits in (7, 14, 21, 28):
        if top < 1 << bits:
            break
        sizes += numbers >= (1 << bits)
    return sizes


def _bytes_entry_pieces(key: bytes, values: Any) -> tuple[list[Any], np.ndarray]:
    """:func:`_bytes_entry` of every value of a binary Arrow array without nulls, as the
    pieces to join (arrays and scalars) and each entry's length."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n1 = pc.binary_length(values).to_numpy(zero_copy_only=False).astype(np.int64)
    n2 = 1 + _varint_sizes(n1) + n1  # BytesList
    n3 = 1 + _varint_sizes(n2) + n2  # Feature
    n4 = len(key) + _varint_sizes(n3) + n3  # the map entry
    tag = pa.scalar(b"\x0a", pa.binary())
    pieces = [tag, varints(n4), pa.scalar(key, pa.binary()), varints(n3), tag, varints(n2)]
    pieces += (tag, varints(n1), values.cast(pa.binary()))
    return pieces, 1 + _varint_sizes(n4) + n4


def _bytes_entries(key: bytes, values: Any) -> Any:
    """:func:`_bytes_entry` of every value of a binary Arrow array (null where it is null)."""
    import pyarrow as pa
    import pyarrow.compute as pc

    n1 = pc.binary_length(values).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    n2 = 1 + _varint_sizes(n1) + n1  # BytesList
    n3 = 1 + _varint_sizes(n2) + n2  # Feature
    n4 = len(key) + _varint_sizes(n3) + n3  # the map entry
    tag = pa.scalar(b"\x0a", pa.binary())
    return pc.binary_join_element_wise(
        tag,
        varints(n4),
        pa.scalar(key, pa.binary()),
        varints(n3),
        tag,
        varints(n2),
        tag,
        varints(n1),
        values.cast(pa.binary()),
        pa.scalar(b"", pa.binary()),
    )


_FLOAT = struct.Struct("<f")


def as_float32(value: float) -> float:
    """``value`` as a float32 field stores it (and reads it back)."""
    return float(_FLOAT.unpack(_float32(value))[0])


def _float32(value: float) -> bytes:
    try:
        return _FLOAT.pack(value)
    except OverflowError:  # beyond float32, as protobuf stores it: an infinity
        return _FLOAT.pack(math.copysign(math.inf, value))


def _entry_key(name: str) -> bytes:
    # A map entry of Features.feature (field 1): key (field 1, string), value (field 2).
    data = name.encode("utf-8")
    return b"\x0a" + _varint(len(data)) + data + b"\x12"


def _entry(key: bytes, feature: bytes) -> bytes:
    entry_len = len(key) + len(_varint(len(feature))) + len(feature)
    return b"\x0a" + _varint(entry_len) + key + _varint(len(feature)) + feature


def decode(
    serialized: bytes, types: Mapping[str, str], label: str, train: Any = None
) -> dict[str, Any]:
    """The inverse of :func:`encode`: a dict of column -> value (None when missing)."""
    tf = SimpleNamespace(train=train) if train is not None else _tf()
    feature = tf.train.Example.FromString(serialized).features.feature
    row: dict[str, Any] = {}
    for column, kind in types.items():
        if kind == "numeric":
            values = list(feature[column].float_list.value)
            row[column] = values[0] if values else None
        elif kind == "image":
            values = list(feature[column].bytes_list.value)
            row[column] = values[0] if values else None
        else:
            values = list(feature[column].bytes_list.value)
            row[column] = values[0].decode("utf-8") if values else None
    row[label] = feature[label].bytes_list.value[0].decode("utf-8")
    row[ROW_HASH] = feature[ROW_HASH].bytes_list.value[0].decode("ascii")
    return row


class ShardWriter:
    """Writes records to ``<dir>/part-00000.tfrecord``, ``part-00001`` …, ``shard_rows`` each."""

    def __init__(self, directory: Path, shard_rows: int) -> None:
        self.directory = directory
        self.shard_rows = shard_rows
        self.rows = 0
        self.shards = 0
        self._writer: Any = None
        self._write: Any = None  # the open writer's C++ write method
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, record: bytes) -> None:
        if self._writer is None or self.rows % self.shard_rows == 0 and self.rows:
            self._roll()
        self._writer.write(record)
        self.rows += 1

    def write_many(self, records: Iterable[bytes], count: int | None = None) -> None:
        """Write records in order, rolling shards as :meth:`write` does, a shard's share at
        a time through the writer's C++ method (no Python call per record).

        Args:
            records: the records (any iterable: consumed once, as they are written).
            count: how many there are (default ``len(records)``).
        """
        remaining = len(records) if count is None else count  # type: ignore[arg-type]
        records = iter(records)
        while remaining > 0:
            if self._writer is None or self.rows % self.shard_rows == 0 and self.rows:
                self._roll()
            take = min(remaining, self.shard_rows - self.rows % self.shard_rows)
            collections.deque(map(self._write, itertools.islice(records, take)), maxlen=0)
            self.rows += take
            remaining -= take

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = _tf().io.TFRecordWriter(
            str(self.directory / f"part-{self.shards:05d}.tfrecord")
        )
        # TFRecordWriter.write only forwards to its (C++) base class: call that directly.
        self._write = super(type(self._writer), self._writer).write
        self.shards += 1

    def close(self) -> None:
        if self._writer is not None:
            self._writer.close()
            self._writer = None


def shard_paths(directory: Path) -> list[Path]:
    return sorted(directory.glob("part-*.tfrecord"))


def iter_records(directory: Path) -> Iterator[bytes]:
    """Serialized records of every shard in a split folder, in order, streamed."""
    tf = _tf()
    paths = [str(p) for p in shard_paths(directory)]
    if not paths:
        return
    # Batched: one eager iterator step per 1024 records instead of one per record (~50x fewer).
    for batch in tf.data.TFRecordDataset(paths).batch(1024).as_numpy_iterator():
        yield from batch
