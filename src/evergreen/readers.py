"""Streaming readers: one record at a time, in bounded memory, whatever the file size.

Each reader yields :class:`RawRecord` objects. A record that cannot be parsed is still yielded,
with ``error`` set, so that the caller can quarantine it with its file and line instead of
losing it. A file that cannot be read as its format at all (compressed, binary, UTF-16, a
header with repeated or undecodable column names) is a :class:`DataError` naming the file.

CSV is parsed strictly, line by line: a quote that is never closed (or closed in the wrong
place) would otherwise swallow every following row into one field. When a record spanning
several lines fails, its first line is quarantined and the lines after it are read again, one
row per line, so the rows a stray quote would have eaten are kept.
"""

from __future__ import annotations

import csv
import functools
import io
import itertools
import json
import operator
import re
import sys
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from evergreen.errors import DataError

# Python's csv module refuses fields over 128 KiB by default; our own size check gives the
# better message (with the configured limit), so let the parser accept anything.
csv.field_size_limit(sys.maxsize)

# Invalid bytes read with surrogateescape become \udc80-\udcff; a JSON "\ud800" escape
# gives a lone surrogate directly. Neither can be written as UTF-8.
_SURROGATE = re.compile("[\ud800-\udfff]")
_LONE_SURROGATE = re.compile("[\ud800-\udc7f\udd00-\udfff]")
_RAW_PREVIEW = 500
IMAGE_COLUMN, IMAGE_LABEL = "image", "label"  # the two columns of format "images"
# One record (a CSV row, however many lines it spans, or a JSONL line) may not exceed this:
# past it the record is quarantined, so a runaway quote or a file without newlines cannot
# make the reader hold the whole file in memory.
MAX_RECORD_BYTES = 64 * 1024 * 1024
_SNIFF_BYTES = 8192
_MAGIC = (
    (b"\x1f\x8b", "a gzip-compressed file", "decompress it (gunzip)"),
    (b"PK\x03\x04", "a zip archive", "unzip it"),
    (b"BZh", "a bzip2-compressed file", "decompress it (bunzip2)"),
    (b"\xfd7zXZ\x00", "an xz-compressed file", "decompress it (unxz)"),
    (b"\x28\xb5\x2f\xfd", "a zstd-compressed file", "decompress it (unzstd)"),
    (b"7z\xbc\xaf\x27\x1c", "a 7z archive", "extract it"),
    (b"PAR1", "a parquet file", "set data.format = 'parquet'"),
    (b"\x89PNG", "a PNG image", ""),
    (b"\xff\xd8\xff", "a JPEG image", ""),
    (b"GIF8", "a GIF image", ""),
    (b"%PDF", "a PDF document", ""),
)
_WIDE_BOMS = (
    (b"\xff\xfe\x00\x00", "UTF-32"),
    (b"\x00\x00\xfe\xff", "UTF-32"),
    (b"\xff\xfe", "UTF-16"),
    (b"\xfe\xff", "UTF-16"),
)
_UTF8_BOM = b"\xef\xbb\xbf"
# The fast CSV path parses blocks of whole lines of about this size with the C csv reader.
_CSV_BLOCK_BYTES = 4 * 1024 * 1024


class RawRecord(NamedTuple):
    """One record as read: its values, or why it could not be parsed.

    A named tuple rather than a dataclass: one is built per input row, and a tuple is built
    about three times faster.
    """

    source: str  # "path:line" (CSV/JSONL) or "path:#index" (parquet/tfrecord)
    values: dict[str, Any] | None
    error: str | None = None
    raw: str = ""


class RecordBlock(NamedTuple):
    """Consecutive CSV records, one per line, every one with all the header's fields: the
    usual block of a clean file, kept as parsed field lists (no dict, no
    :class:`RawRecord` per row). Record ``i`` is line ``first_line + i`` of ``path``."""

    path: Path
    first_line: int
    columns: list[str]
    rows: Sequence[list[str]]  # a list, or the columns Arrow parsed (csv_arrow.TableRows)

    def records(self) -> list[RawRecord]:
        """The same records as :class:`RawRecord` objects (what :func:`read` yields)."""
        number, columns = self.first_line, self.columns
        sources = map(f"{self.path}:".__add__, map(str, range(number, number + len(self.rows))))
        values = map(dict, map(zip, itertools.repeat(columns), self.rows))
        return list(
            map(_new_record, zip(sources, values, itertools.repeat(None), itertools.repeat("")))
        )


@dataclass
class ReadProgress:
    """Bytes consumed so far, for progress bars."""

    bytes_done: int = 0


def read(
    path: Path,
    fmt: str,
    progress: ReadProgress | None = None,
    *,
    max_record_bytes: int = MAX_RECORD_BYTES,
) -> Iterator[RawRecord]:
    """Stream the records of one file in the given format.

    Args:
        path: the file.
        fmt: ``csv``, ``jsonl``, ``parquet``, ``tfrecord`` or ``images``.
        progress: updated with the bytes consumed.
        max_record_bytes: a longer record is yielded as unparseable (default 64 MiB).

    Raises:
        DataError: the file cannot be read as ``fmt`` at all (the span is then left untouched).
    """
    readers: dict[str, Callable[[Path, ReadProgress, int], Iterator[RawRecord]]] = {
        "csv": _read_csv,
        "jsonl": _read_jsonl,
        "parquet": _read_parquet,
        "tfrecord": _read_tfrecord,
        "images": _read_image_file,
    }
    try:
        yield from readers[fmt](path, progress or ReadProgress(), max_record_bytes)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the file") from None


def read_items(
    path: Path, fmt: str, progress: ReadProgress | None = None
) -> Iterator[RawRecord | RecordBlock]:
    """:func:`read`, with a clean CSV file's records grouped in :class:`RecordBlock` objects
    (each block's records in order, between the records :func:`read` yields alone)."""
    progress = progress or ReadProgress()
    if fmt != "csv":
        yield from read(path, fmt, progress)
        return
    try:
        with open(path, "rb") as binary:
            columns = _CsvFile(path, binary, MAX_RECORD_BYTES).columns
        if columns:
            yield from _FastCsv(path, columns, MAX_RECORD_BYTES).items(progress)
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the file") from None


def header(path: Path, fmt: str) -> list[str]:
    """The column names of a file (CSV: the header; parquet: the schema; else the first record).

    Raises:
        DataError: the file cannot be read, or its column names are repeated or not UTF-8.
    """
    try:
        if fmt == "csv":
            with open(path, "rb") as binary:
                return _CsvFile(path, binary, MAX_RECORD_BYTES).columns
        if fmt == "parquet":
            return _parquet_file(path).schema_arrow.names
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the file") from None
    for record in read(path, fmt):
        if record.values is not None:
            return list(record.values)
    return []


def _read_image_file(path: Path, progress: ReadProgress, limit: int) -> Iterator[RawRecord]:
    # Folders per label: .../span-3/cat/0001.png is one row, image = the file, label = "cat".
    # The value is the file name, resolved against the file's own folder by ingest.
    progress.bytes_done += path.stat().st_size
    yield RawRecord(f"{path}:1", {IMAGE_COLUMN: path.name, IMAGE_LABEL: path.parent.name})


def invalid_utf8(text: str) -> bool:
    """Whether ``text`` holds undecodable bytes or lone surrogates (not writable as UTF-8)."""
    # str.isascii() reads a flag of the string object: no scan for the usual ASCII text.
    return not text.isascii() and _SURROGATE.search(text) is not None


def printable(text: str) -> str:
    """Invalid bytes (kept as surrogates while reading) as ``\xe9``, lone surrogates as ``\ud800``."""
    text = _LONE_SURROGATE.sub(lambda m: f"\\u{ord(m.group()):04x}", text)
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _sniff_text(path: Path, binary: io.BufferedIOBase, fmt: str) -> None:
    """Refuse a file that is not UTF-8 text before parsing it as CSV or JSON Lines.

    Raises:
        DataError: compressed, an archive, an image, UTF-16/32, or binary (NUL bytes).
    """
    head = binary.read(_SNIFF_BYTES)
    binary.seek(0)
    name = fmt.upper() if fmt == "csv" else "JSON Lines"
    for magic, what, fix in _MAGIC:
        if head.startswith(magic):
            fix = f"{fix}, or move it" if fix else "move it"
            raise DataError(f"{path} is {what}, not {name} text; {fix} out of data.pattern")
    for bom, encoding in _WIDE_BOMS:
        if head.startswith(bom):
            raise DataError(f"{path} is {encoding} text, not UTF-8; save it as UTF-8")
    if b"\x00" in head:
        raise DataError(
            f"{path} is binary data (NUL bytes in its first {len(head)} bytes), not {name} "
            "text; move it out of data.pattern, or save it as UTF-8 text"
        )


class _RecordTooLong(Exception):
    """A record grew past the limit; ``overlong`` is the number of a single overlong line."""

    def __init__(self, overlong: int | None) -> None:
        self.overlong = overlong


class _CsvFile:
    """An open CSV file: its validated header, then its records.

    ``csv.reader`` reads from :meth:`_lines`, which remembers the physical lines of the record
    being parsed (``taken``). Knowing them is what makes recovery possible: when a record
    fails, its first line is quarantined and the others are parsed again one by one.
    """

    def __init__(
        self,
        path: Path,
        binary: io.BufferedIOBase,
        limit: int,
        *,
        resume: tuple[list[str], int] | None = None,
    ) -> None:
        """Open at the start (sniff, header) or, with ``resume=(columns, lines before)``,
        at a line boundary in the middle of the file (the fast path's fallback)."""
        self.path = path
        self.binary = binary
        self.limit = limit
        if resume is None:
            _sniff_text(path, binary, "csv")
        # utf-8-sig drops a byte-order mark, which would otherwise start the first column's
        # name; surrogateescape keeps invalid bytes visible per field instead of failing.
        self.text = io.TextIOWrapper(
            binary,
            encoding="utf-8-sig" if resume is None else "utf-8",
            errors="surrogateescape",
            newline="",
        )
        self.taken: list[str] = []
        self.lines_read = 0 if resume is None else resume[1]
        self.source = self._lines()
        self.reader = csv.reader(self.source, strict=True)
        self.columns = self._header() if resume is None else resume[0]

    def _lines(self) -> Iterator[str]:
        # A generator (not a class with __next__): this runs once per line of every file.
        readline, limit, taken = self.text.readline, self.limit, self.taken
        while line := readline(limit + 1):
            self.lines_read += 1
            if len(line) > limit:
                while line and line[-1] not in "\r\n":  # skip the rest of the overlong line
                    line = readline(limit)
                raise _RecordTooLong(self.lines_read)
            taken.append(line)
            if len(taken) > 1 and sum(map(len, taken)) > limit:
                raise _RecordTooLong(None)
            yield line

    def _header(self) -> list[str]:
        try:
            columns = next(self.reader)
        except StopIteration:
            return []
        except (csv.Error, _RecordTooLong) as e:
            why = "it is too long" if isinstance(e, _RecordTooLong) else str(e)
            raise DataError(
                f"{self.path}:1: the CSV header cannot be parsed ({why}); fix the first line"
            ) from None
        if not columns:
            raise DataError(
                f"{self.path}:1: the first line is blank; the CSV header (the column names) "
                "must be the first line: remove the blank line"
            )
        check_columns(self.path, columns, "header")
        return columns

    def records(self, progress: ReadProgress) -> Iterator[RawRecord]:
        taken, reader = self.taken, self.reader
        while True:
            taken.clear()
            try:
                fields = next(reader)
            except StopIteration:
                return
            except (csv.Error, _RecordTooLong) as e:
                yield from self._recover(e)
                # A generator that raised is finished: a fresh one continues after the failure.
                if isinstance(e, _RecordTooLong):
                    self.source = self._lines()
                reader = self.reader = csv.reader(self.source, strict=True)
                continue
            progress.bytes_done = self.binary.tell()
            record = self._record(self.lines_read - len(taken) + 1, fields)
            if record is not None:
                yield record

    def _record(self, number: int, fields: list[str]) -> RawRecord | None:
        if not fields:
            return None  # a blank line is not a record
        if len(fields) != len(self.columns):
            raw = ",".join(fields)[:_RAW_PREVIEW]
            error = f"expected {len(self.columns)} fields, found {len(fields)}"
            return RawRecord(f"{self.path}:{number}", None, error, raw)
        return RawRecord(f"{self.path}:{number}", dict(zip(self.columns, fields, strict=True)))

    def _recover(self, error: Exception) -> Iterator[RawRecord]:
        taken = list(self.taken)
        overlong = error.overlong if isinstance(error, _RecordTooLong) else None
        first = self.lines_read - len(taken) + (0 if overlong is not None else 1)
        too_long = (
            f"line longer than {self.limit} characters (a binary file or a missing line break?)"
        )
        if overlong is not None and not taken:
            yield RawRecord(f"{self.path}:{overlong}", None, too_long)
            return
        last = overlong or self.lines_read
        why = "too long" if isinstance(error, _RecordTooLong) else str(error)
        if len(taken) == 1 and overlong is None:
            yield RawRecord(f"{self.path}:{first}", None, f"unparseable CSV ({why})", taken[0])
            return
        yield RawRecord(
            f"{self.path}:{first}",
            None,
            f"unparseable CSV (a quoted field opened on line {first} is not closed properly: "
            f"{why} at line {last}; lines {first + 1}-{last} are read again as rows)",
            taken[0][:_RAW_PREVIEW],
        )
        for number, line in enumerate(taken[1:], start=first + 1):
            yield self._single_line(number, line)
        if overlong is not None:
            yield RawRecord(f"{self.path}:{overlong}", None, too_long)

    def _single_line(self, number: int, line: str) -> RawRecord:
        # Re-reading after a failed quote: a row may not span lines any more, which keeps the
        # recovery linear however many lines the broken quote took.
        try:
            fields = next(csv.reader([line], strict=True), [])
        except csv.Error as e:
            return RawRecord(f"{self.path}:{number}", None, f"unparseable CSV ({e})", line)
        record = self._record(number, fields)
        return record or RawRecord(f"{self.path}:{number}", None, "blank line", line)


def check_columns(path: Path, columns: list[str], where: str) -> None:
    """Refuse column names that are not UTF-8, or repeated (the last would silently win).

    Raises:
        DataError: naming the file, the column and what to do.
    """
    seen: dict[str, int] = {}
    for position, name in enumerate(columns, start=1):
        if invalid_utf8(name):
            raise DataError(
                f"{path}:1: column {position} of the {where} ({printable(name)!r}) is not "
                "valid UTF-8; save the file as UTF-8"
            )
        if name in seen:
            raise DataError(
                f"{path}:1: column {name!r} appears twice in the {where} (columns "
                f"{seen[name]} and {position}), so one would overwrite the other in every "
                "row; rename or remove one of them"
            )
        seen[name] = position


def _read_csv(path: Path, progress: ReadProgress, limit: int) -> Iterator[RawRecord]:
    with open(path, "rb") as binary:
        columns = _CsvFile(path, binary, limit).columns  # sniffs and checks the header
    if columns:
        yield from _FastCsv(path, columns, limit).records(progress)


class _FastCsv:
    """CSV records at C speed, with exactly the answers of :class:`_CsvFile`.

    The file is read in blocks of whole lines (cut after a newline). A block whose bytes
    prove that Arrow's CSV reader gives the C reader's answers (:mod:`evergreen.csv_arrow`:
    simple quoting, one record per line) is parsed by Arrow into columns; any other by one C
    ``csv.reader`` over the block; ``line_num`` gives every record's first line. A block that
    the strict reader refuses (a broken quote, a record running past the block, NUL bytes),
    or one that could hold a record over the length limit, is not trusted: from that block's
    first line on, the file is read by the line-by-line :class:`_CsvFile`, whose recovery
    decides what is quarantined. A clean file never leaves the fast path.
    """

    def __init__(self, path: Path, columns: list[str], limit: int) -> None:
        self.path = path
        self.columns = columns
        self.limit = limit

    def records(self, progress: ReadProgress) -> Iterator[RawRecord]:
        for item in self.items(progress):
            if isinstance(item, RecordBlock):
                yield from item.records()
            else:
                yield item

    def items(self, progress: ReadProgress) -> Iterator[RawRecord | RecordBlock]:
        """The file's records: clean blocks as :class:`RecordBlock`, the rest one by one."""
        with open(self.path, "rb") as binary:
            offset, lines_before, first, pending = 0, 0, True, b""
            while True:
                data = binary.read(_CSV_BLOCK_BYTES)
                if not data and not pending:
                    return
                cut = data.rfind(b"\n") + 1  # pending holds no line break
                if not data or cut == 0:
                    buffer = pending + data
                    if data and len(buffer) <= self.limit:
                        pending = buffer  # no line break yet: read on
                        continue
                    block, pending = buffer, b""
                else:  # up to the last line break, copied once
                    block = b"".join((pending, memoryview(data)[:cut]))
                    pending = data[cut:]
                parsed = self._parse(block, first, lines_before) if block else ([], 0)
                if parsed is None:  # not trusted: the exact reader takes over from here
                    binary.seek(offset)
                    resume = None if first else (self.columns, lines_before)
                    slow = _CsvFile(self.path, binary, self.limit, resume=resume)
                    yield from slow.records(progress)
                    return
                records, lines = parsed
                offset += len(block)
                lines_before += lines
                first = False
                progress.bytes_done = offset
                if isinstance(records, RecordBlock):
                    yield records
                else:
                    yield from records
                if not data:
                    return

    def _parse(
        self, block: bytes, first: bool, lines_before: int
    ) -> tuple[list[RawRecord] | RecordBlock, int] | None:
        """The records of one block and its line count, or None when the block is not trusted."""
        if len(block) > self.limit:
            return None  # a record in it could be over the limit: let the exact reader judge
        if first and block.startswith(_UTF8_BOM):
            block = block[len(_UTF8_BOM) :]  # as the text's "\ufeff" below
        from evergreen import csv_arrow  # pyarrow, imported when a CSV file is read

        columns = csv_arrow.parse(block, len(self.columns), header=first)
        if columns is not None:  # the C reader's answers, provably: as Arrow columns
            table, lines = columns
            return RecordBlock(self.path, lines_before + first + 1, self.columns, table), lines
        text = block.decode("utf-8", errors="surrogateescape")
        if first and text.startswith("\ufeff"):
            text = text[1:]
        reader = csv.reader(_lines(text), strict=True)
        try:
            if first:
                next(reader, None)  # the header, already checked
            start = reader.line_num
            rows = list(reader)
        except csv.Error:
            return None
        widths = set(map(len, rows))  # in C: a set of one width for the usual block
        if reader.line_num - start == len(rows) and widths <= {len(self.columns)}:
            # One record per line, every one complete (the usual block): kept as parsed.
            number = lines_before + start + 1
            return RecordBlock(self.path, number, self.columns, rows), reader.line_num
        return self._parse_lines(text, first, lines_before)

    def _parse_lines(
        self, text: str, first: bool, lines_before: int
    ) -> tuple[list[RawRecord], int] | None:
        """:meth:`_parse` record by record, for a block with multi-line, blank or short rows."""
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        path, columns, width = self.path, self.columns, len(self.columns)
        out: list[RawRecord] = []
        try:
            if first:
                next(reader, None)  # the header, already checked
            previous = reader.line_num
            for fields in reader:
                number = lines_before + previous + 1
                previous = reader.line_num
                if len(fields) == width:
                    out.append(
                        RawRecord(f"{path}:{number}", dict(zip(columns, fields, strict=False)))
                    )
                elif fields:  # a blank line is not a record
                    raw = ",".join(fields)[:_RAW_PREVIEW]
                    error = f"expected {width} fields, found {len(fields)}"
                    out.append(RawRecord(f"{path}:{number}", None, error, raw))
        except csv.Error:
            return None
        return out, reader.line_num


def _lines(text: str) -> Any:
    """The lines of ``text`` as ``io.StringIO(text, newline="")`` gives them to the C reader,
    but without their ``\n`` when every ``\r`` is followed by one (then ``\n`` ends every
    line): the reader ends a record at the end of a line as at its ``\n`` (a ``\r``
    before it, kept, ends it as in the stream), and the list costs a third less than the
    stream's lines. Only a record running over a line break parses otherwise (its quoted
    ``\n`` is lost), and a block with one is not kept as parsed (:meth:`_FastCsv._parse`
    counts one record per line), so the answers are the same.
    """
    lines = text.split("\n")  # each but the last was followed by a \n
    if "\r" in text and text.count("\r") != sum(map(_ends_with_cr, lines[:-1])):
        return io.StringIO(text, newline="")  # a lone \r ends a line too
    if lines[-1] == "":  # after the last line break: no line
        lines.pop()
    return lines


_ends_with_cr = operator.methodcaller("endswith", "\r")


# A RawRecord from a 4-tuple without the named tuple's Python-level __new__.
_new_record = functools.partial(tuple.__new__, RawRecord)


class _DuplicateKey(ValueError):
    pass


def _unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # json.loads keeps the last of repeated keys; a repeated column is refused instead.
    values = dict(pairs)
    if len(values) != len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise _DuplicateKey(key)
            seen.add(key)
    return values


# Built once: json.loads(..., object_pairs_hook=...) would build a decoder per line.
_DECODER = json.JSONDecoder(object_pairs_hook=_unique_keys)


def _read_jsonl(path: Path, progress: ReadProgress, limit: int) -> Iterator[RawRecord]:
    with open(path, "rb") as f:
        _sniff_text(path, f, "jsonl")
        number = 0
        while line := f.readline(limit + 1):
            number += 1
            progress.bytes_done += len(line)
            source = f"{path}:{number}"
            if len(line) > limit:
                while line and not line.endswith(b"\n"):
                    line = f.readline(limit)
                    progress.bytes_done += len(line)
                yield RawRecord(source, None, f"line longer than {limit} bytes")
                continue
            if number == 1 and line.startswith(_UTF8_BOM):
                line = line[len(_UTF8_BOM) :]
            if line.strip():
                yield _json_record(source, line.decode("utf-8", errors="surrogateescape"))


def _json_record(source: str, text: str) -> RawRecord:
    preview = text[:_RAW_PREVIEW]
    try:
        values = _DECODER.decode(text)
    except _DuplicateKey as e:
        return RawRecord(
            source, None, f"duplicate key {printable(str(e))!r} in one JSON object", preview
        )
    except json.JSONDecodeError as e:
        return RawRecord(source, None, f"unparseable JSON ({e.msg} at column {e.colno})", preview)
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        return RawRecord(source, None, f"unparseable JSON ({str(e)[:200]})", preview)
    except RecursionError:
        return RawRecord(source, None, "unparseable JSON (nested too deeply)", preview)
    if not isinstance(values, dict):
        return RawRecord(
            source, None, f"expected a JSON object, found {type(values).__name__}", preview
        )
    return RawRecord(source, values)


def _parquet_file(path: Path) -> Any:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except OSError:
        raise
    except Exception as e:  # pyarrow raises its own ArrowInvalid for corrupt files
        raise DataError(f"{path} is not a readable parquet file ({e}); check the file") from None
    check_columns(path, parquet.schema_arrow.names, "parquet schema")
    return parquet


def _read_parquet(path: Path, progress: ReadProgress, limit: int) -> Iterator[RawRecord]:
    import pyarrow as pa

    parquet = _parquet_file(path)
    index = 0
    batches = parquet.iter_batches(batch_size=10_000)
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as e:
            raise DataError(
                f"{path}: parquet data after row {index} cannot be read ({e}); the file is "
                "damaged: write it again"
            ) from None
        if batch is None:
            return
        for values in batch.to_pylist():
            yield RawRecord(f"{path}:#{index}", values)
            index += 1
        progress.bytes_done = path.stat().st_size * index // max(parquet.metadata.num_rows, 1)


def _read_tfrecord(path: Path, progress: ReadProgress, limit: int) -> Iterator[RawRecord]:
    from evergreen.tf import tensorflow

    tf = tensorflow()
    with open(path, "rb") as f:
        gzipped = f.read(2) == b"\x1f\x8b"  # TFX writes GZIP TFRecords: read them as such
    dataset = tf.data.TFRecordDataset(str(path), compression_type="GZIP" if gzipped else "")
    iterator = iter(dataset)
    index = 0
    while True:
        try:
            serialized = next(iterator)
        except StopIteration:
            break
        except tf.errors.OpError as e:
            message = _tf_message(e.message)
            if index == 0:
                raise DataError(
                    f"{path} is not a TFRecord file ({message}); write it with "
                    "tf.io.TFRecordWriter, or move it out of data.pattern"
                ) from None
            yield RawRecord(
                f"{path}:#{index}",
                None,
                f"corrupt TFRecord ({message}); the rest of the file is unreadable",
            )
            break
        data = serialized.numpy()
        progress.bytes_done += len(data)
        yield _example_record(f"{path}:#{index}", data)
        index += 1


def _tf_message(message: str) -> str:
    # TensorFlow wraps its messages in "{{function_node ...}} ... [Op:IteratorGetNext]".
    message = re.sub(r"\{\{function_node [^}]*\}\}\s*", "", message)
    return re.sub(r"\s*\[Op:[^\]]*\].*$", "", message, flags=re.S).strip()


def _example_record(source: str, data: bytes) -> RawRecord:
    from google.protobuf.message import DecodeError
    from google.protobuf.unknown_fields import UnknownFieldSet

    from evergreen.tf import tensorflow

    try:
        example = tensorflow().train.Example.FromString(data)
    except DecodeError:
        return RawRecord(source, None, "not a tf.train.Example (its bytes do not parse as one)")
    if len(UnknownFieldSet(example)):
        return RawRecord(
            source,
            None,
            "not a tf.train.Example (it has fields an Example does not have: a "
            "SequenceExample or another message?)",
        )
    values: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        items = list(getattr(feature, kind).value) if kind else []
        value = items[0] if len(items) == 1 else (None if not items else items)
        values[name] = (
            value.decode("utf-8", errors="surrogateescape") if isinstance(value, bytes) else value
        )
    return RawRecord(source, values)
