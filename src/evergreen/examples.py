"""Rows as ``tf.train.Example`` records, and TFRecord shards on disk (the TFX convention).

Every feature is stored under its column name: text and categorical columns as a
``bytes_list`` of one UTF-8 value, image columns as a ``bytes_list`` of the encoded image file
(PNG, JPEG, GIF or BMP bytes, decoded in-graph by the model), numeric columns as a ``float_list`` of one value; a missing
value is an empty list. The label is a ``bytes_list``; ``__row_hash__`` identifies the row.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROW_HASH = "__row_hash__"


def _tf() -> Any:
    from evergreen.tf import tensorflow

    return tensorflow()


def encode(
    values: Mapping[str, Any],
    types: Mapping[str, str],
    label: str,
    label_value: str,
    row_hash: str,
    train: Any = None,
) -> bytes:
    """Serialize one coerced row (``train``: ``tf.train`` or a wire-compatible stand-in)."""
    tf = SimpleNamespace(train=train) if train is not None else _tf()
    feature = {}
    for column, kind in types.items():
        value = values.get(column)
        if kind == "numeric":
            feature[column] = tf.train.Feature(
                float_list=tf.train.FloatList(value=[] if value is None else [value])
            )
        else:
            data = (
                []
                if value is None
                else [value if isinstance(value, bytes) else value.encode("utf-8")]
            )
            feature[column] = tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
    feature[label] = tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[label_value.encode("utf-8")])
    )
    feature[ROW_HASH] = tf.train.Feature(
        bytes_list=tf.train.BytesList(value=[row_hash.encode("ascii")])
    )
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()


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
        directory.mkdir(parents=True, exist_ok=True)

    def write(self, record: bytes) -> None:
        if self._writer is None or self.rows % self.shard_rows == 0 and self.rows:
            self._roll()
        self._writer.write(record)
        self.rows += 1

    def _roll(self) -> None:
        if self._writer is not None:
            self._writer.close()
        self._writer = _tf().io.TFRecordWriter(
            str(self.directory / f"part-{self.shards:05d}.tfrecord")
        )
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
