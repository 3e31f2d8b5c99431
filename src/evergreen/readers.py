"""Streaming readers: one record at a time, in bounded memory, whatever the file size.

Each reader yields :class:`RawRecord` objects. A record that cannot be parsed is still yielded,
with ``error`` set, so that the caller can quarantine it with its file and line instead of
losing it.
"""

from __future__ import annotations

import csv
import io
import json
import re
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evergreen.errors import DataError

# Python's csv module refuses fields over 128 KiB by default; our own size check gives the
# better message (with the configured limit), so let the parser accept anything.
csv.field_size_limit(sys.maxsize)

_SURROGATE = re.compile("[\udc80-\udcff]")
_RAW_PREVIEW = 500
IMAGE_COLUMN, IMAGE_LABEL = "image", "label"  # the two columns of format "images"


@dataclass(frozen=True)
class RawRecord:
    """One record as read: its values, or why it could not be parsed."""

    source: str  # "path:line" (CSV/JSONL) or "path:#index" (parquet/tfrecord)
    values: dict[str, Any] | None
    error: str | None = None
    raw: str = ""


@dataclass
class ReadProgress:
    """Bytes consumed so far, for progress bars."""

    bytes_done: int = 0


def read(path: Path, fmt: str, progress: ReadProgress | None = None) -> Iterator[RawRecord]:
    """Stream the records of one file in the given format.

    Raises:
        DataError: the file cannot be opened at all (the span is then left untouched).
    """
    readers: dict[str, Callable[[Path, ReadProgress], Iterator[RawRecord]]] = {
        "csv": _read_csv,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "tfrecord": _read_tfrecord,
        "images": _read_image_file,
    }
    try:
        yield from readers[fmt](path, progress or ReadProgress())
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}") from None


def header(path: Path, fmt: str) -> list[str]:
    """The column names of a file (for CSV the header; otherwise those of the first record)."""
    if fmt == "csv":
        with open(path, encoding="utf-8", errors="surrogateescape", newline="") as f:
            return next(csv.reader(f), [])
    for record in read(path, fmt):
        if record.values is not None:
            return list(record.values)
    return []


def _read_image_file(path: Path, progress: ReadProgress) -> Iterator[RawRecord]:
    # Folders per label: .../span-3/cat/0001.png is one row, image = the file, label = "cat".
    # The value is the file name, resolved against the file's own folder by ingest.
    progress.bytes_done += path.stat().st_size
    yield RawRecord(f"{path}:1", {IMAGE_COLUMN: path.name, IMAGE_LABEL: path.parent.name})


def invalid_utf8(text: str) -> bool:
    return _SURROGATE.search(text) is not None


def _read_csv(path: Path, progress: ReadProgress) -> Iterator[RawRecord]:
    # surrogateescape keeps invalid bytes visible per field instead of failing the whole file.
    with open(path, "rb") as binary:
        text = io.TextIOWrapper(binary, encoding="utf-8", errors="surrogateescape", newline="")
        reader = csv.reader(text)
        try:
            columns = next(reader)
        except StopIteration:
            return
        except csv.Error as e:
            raise DataError(
                f"{path}: the CSV header cannot be parsed ({e}); fix the first line"
            ) from None
        start = 2
        while True:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as e:
                yield RawRecord(f"{path}:{start}", None, f"unparseable CSV ({e})")
                start = reader.line_num + 1
                continue
            source = f"{path}:{start}"
            start = reader.line_num + 1
            progress.bytes_done = binary.tell()
            if not fields:
                continue  # a blank line is not a record
            if len(fields) != len(columns):
                yield RawRecord(
                    source,
                    None,
                    f"expected {len(columns)} fields, found {len(fields)}",
                    ",".join(fields)[:_RAW_PREVIEW],
                )
                continue
            yield RawRecord(source, dict(zip(columns, fields, strict=True)))


def _read_jsonl(path: Path, progress: ReadProgress) -> Iterator[RawRecord]:
    with open(path, "rb") as f:
        for number, line in enumerate(f, start=1):
            progress.bytes_done += len(line)
            if not line.strip():
                continue
            source = f"{path}:{number}"
            text = line.decode("utf-8", errors="surrogateescape")
            try:
                values = json.loads(text)
            except json.JSONDecodeError as e:
                yield RawRecord(
                    source,
                    None,
                    f"unparseable JSON ({e.msg} at column {e.colno})",
                    text[:_RAW_PREVIEW],
                )
                continue
            if not isinstance(values, dict):
                yield RawRecord(
                    source,
                    None,
                    f"expected a JSON object, found {type(values).__name__}",
                    text[:_RAW_PREVIEW],
                )
                continue
            yield RawRecord(source, values)


def _read_parquet(path: Path, progress: ReadProgress) -> Iterator[RawRecord]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as e:  # pyarrow raises its own ArrowInvalid for corrupt files
        raise DataError(f"{path} is not a readable parquet file ({e})") from None
    index = 0
    for batch in parquet.iter_batches(batch_size=10_000):
        for values in batch.to_pylist():
            yield RawRecord(f"{path}:#{index}", values)
            index += 1
        progress.bytes_done = path.stat().st_size * index // max(parquet.metadata.num_rows, 1)


def _read_tfrecord(path: Path, progress: ReadProgress) -> Iterator[RawRecord]:
    from evergreen.tf import tensorflow

    tf = tensorflow()
    dataset = tf.data.TFRecordDataset(str(path))
    iterator = iter(dataset)
    index = 0
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            break
        except tf.errors.DataLossError as e:
            yield RawRecord(
                f"{path}:#{index}",
                None,
                f"corrupt TFRecord ({e.message}); the rest of the file is unreadable",
            )
            break
        example = tf.train.Example.FromString(serialized.numpy())
        values: dict[str, Any] = {}
        for name, feature in example.features.feature.items():
            kind = feature.WhichOneof("kind")
            items = list(getattr(feature, kind).value) if kind else []
            value = items[0] if len(items) == 1 else (None if not items else items)
            values[name] = (
                value.decode("utf-8", errors="surrogateescape")
                if isinstance(value, bytes)
                else value
            )
        progress.bytes_done += len(serialized.numpy())
        yield RawRecord(f"{path}:#{index}", values)
        index += 1
