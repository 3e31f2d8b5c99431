"""CSV blocks parsed by Arrow, only where Arrow's answers are provably the C reader's.

:class:`~evergreen.readers._FastCsv` parses a file in blocks of whole lines with Python's C
``csv.reader`` (strict, the excel dialect). Arrow's CSV reader parses such a block several
times faster and yields columns, but it is not the same parser: it skips blank lines, has no
strict mode (``"a"b`` is accepted) and treats a lone ``\\r`` as a line break. So a block is
given to Arrow only when a scan of its bytes proves that the two parsers cannot differ:

* no NUL byte (the C reader refuses a line with one), and every ``\\r`` is followed by ``\\n``;
* quotes pair up as the strict reader reads them: read in order, the quotes alternate
  opening and closing; an opening quote starts a field (at the start of a line or after a
  comma) or directly follows a closing one (a doubled quote, inside a field), and a closing
  quote is followed by a comma, a line break, the end of the block or a doubled quote;
* no line break between an opening and a closing quote: every record is one line;
* Arrow returns one record per line, each with every column (so there is no blank line),
  each value valid UTF-8 and no longer than the C reader's field limit.

Under these conditions both parsers cut the same fields at the same places and unquote them
the same way; any other block is parsed by the C reader as before.
``tests/test_ingest_fast_paths.py`` compares both paths on the bad-input corpus.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from evergreen import byte_scan

_QUOTE, _COMMA, _LF, _CR = ord('"'), ord(","), ord("\n"), ord("\r")
_UTF8_BOM = b"\xef\xbb\xbf"


class TableRows:
    """A block's records held as Arrow string columns, read as a list of field lists
    (:attr:`~evergreen.readers.RecordBlock.rows`): its length, slices (zero-copy) and, on
    demand, the rows themselves."""

    __slots__ = ("table",)

    def __init__(self, table: pa.Table) -> None:
        self.table = table

    def __len__(self) -> int:
        return self.table.num_rows

    def __getitem__(self, key: Any) -> Any:
        if isinstance(key, slice):
            start, stop, step = key.indices(len(self))
            if step != 1:
                raise ValueError("TableRows slices have a step of 1")
            return TableRows(self.table.slice(start, max(stop - start, 0)))
        row = self.table.slice(range(len(self))[key], 1)  # one row, without the others
        return [column[0].as_py() for column in row.columns]

    def __iter__(self) -> Iterator[list[str]]:
        return iter(self.to_lists())

    def to_lists(self) -> list[list[str]]:
        """The rows as field lists, as the C reader gives them."""
        columns = [column.to_pylist() for column in self.table.columns]
        return list(map(list, zip(*columns, strict=True)))


def parse(block: bytes, width: int, header: bool) -> tuple[TableRows, int] | None:
    """The records of ``block`` (whole lines, a UTF-8 BOM already removed) as Arrow columns,
    and its line count; None when Arrow's answers might differ from the C reader's.

    Args:
        block: the block's bytes, cut after a line break (or at the end of the file).
        width: the header's number of columns; every record must have as many fields.
        header: the block's first line is the header (skipped, as the C path skips it).
    """
    if not block or b"\x00" in block:
        return None
    data = np.frombuffer(block, dtype=np.uint8)
    if not _provably_simple(data):
        return None
    lines = block.count(b"\n") + (not block.endswith(b"\n"))
    start = 0
    if header:
        start = block.index(b"\n") + 1 if lines > 1 else len(block)
    if block.startswith(_UTF8_BOM, start):
        return None  # Arrow would drop it; to the C reader it is part of the first value
    body = pa.py_buffer(block)[start:]
    expected = lines - header
    if expected == 0:
        return TableRows(_empty(width)), lines
    try:
        table = pacsv.read_csv(
            body,
            read_options=pacsv.ReadOptions(
                column_names=[f"f{i}" for i in range(width)],
                use_threads=False,
                block_size=max(len(body), 1 << 20),
            ),
            parse_options=pacsv.ParseOptions(newlines_in_values=False),
            convert_options=pacsv.ConvertOptions(
                column_types=dict.fromkeys([f"f{i}" for i in range(width)], pa.string()),
                null_values=[],
                strings_can_be_null=False,
                quoted_strings_can_be_null=False,
                check_utf8=True,
            ),
        )
    except pa.ArrowException:
        return None  # a row of another width, an undecodable byte: the C reader decides
    if table.num_rows != expected or not _within_field_limit(table):
        return None
    return TableRows(table.combine_chunks()), lines


def _provably_simple(data: np.ndarray) -> bool:
    """Whether the quotes and line breaks of ``data`` are as the module docstring asks."""
    n = len(data)
    # One scan for the three bytes that matter, split by value after (a pass over the block
    # per byte would read it three times).
    marks = byte_scan.positions(data, (_CR, _QUOTE, _LF))
    kinds = data[marks]
    crs = marks[kinds == _CR]
    if len(crs) and (crs[-1] == n - 1 or (data[crs + 1] != _LF).any()):
        return False  # a lone \r: a line break to the C reader's stream, not always to Arrow
    quotes = marks[kinds == _QUOTE]
    if len(quotes) % 2:
        return False
    if len(quotes):
        opens, closes = quotes[0::2], quotes[1::2]
        before = data[np.maximum(opens - 1, 0)]
        opening = (before == _COMMA) | (before == _LF) | (opens == 0)
        opening[1:] |= opens[1:] - 1 == closes[:-1]
        after = data[np.minimum(closes + 1, n - 1)]
        closing = (after == _COMMA) | (after == _LF) | (after == _CR) | (closes + 1 == n)
        closing[:-1] |= closes[:-1] + 1 == opens[1:]
        if not (opening.all() and closing.all()):
            return False
    breaks = marks[kinds == _LF]
    # A line break is outside quotes when an even number of quotes comes before it.
    return not (np.searchsorted(quotes, breaks) % 2).any()


def _within_field_limit(table: pa.Table) -> bool:
    """No value longer than the C reader's field limit (in bytes: at least its characters)."""
    import pyarrow.compute as pc

    limit = csv.field_size_limit()
    for column in table.columns:
        longest = pc.max(pc.binary_length(column)).as_py() or 0
        if longest > limit:
            return False
    return True


def _empty(width: int) -> pa.Table:
    return pa.table({f"f{i}": pa.array([], pa.string()) for i in range(width)})
