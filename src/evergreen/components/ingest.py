"""Ingest one span: stream its files, quarantine bad rows, dedupe, split, write TFRecord shards.

The core, :class:`RowProcessor`, turns batches of raw records into kept rows and quarantined
rows (:meth:`RowProcessor.process_batch`: check → coerce → hash → split → dedupe); it never
holds the span in memory, and it runs unchanged inside a Beam ``DoFn``. Dedupe and
label-conflict checks go through two callables, ``lookup`` and ``remember``: embedded, they are
:class:`evergreen.dedupe_index.SpanIndex`, which joins each batch's hashes with the earlier
spans' sorted parquet index files (earlier spans' data is never re-read) and writes this span's
file into the examples artifact — so the index commits with the span, or not at all.
:class:`IngestSpan` is the thin adapter: files in, shards, quarantine and index out.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import gc
import hashlib
import itertools
import json
import math
import stat
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from itertools import repeat
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from evergreen import dedupe_index, examples, readers
from evergreen.components import ingest_columns
from evergreen.components.statistics import STATISTICS_FILE, SpanStatistics
from evergreen.config import DEFAULT_MISSING_LABELS, Config
from evergreen.dedupe_index import IndexedRow
from evergreen.errors import DataError
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext
from evergreen.spans import SpanFiles

MISSING_MARKERS = frozenset({"", "NA", "N/A", "NaN", "nan", "null", "NULL", "None"})
# Rows checked and deduped together: one index lookup per batch (the index may be files).
_CHUNK = 20_000
_IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".gif", ".bmp")


@dataclass(frozen=True)
class Quarantined:
    source: str
    reason: str
    column: str | None = None
    raw: str = ""


@dataclass
class IngestReport:
    """What happened to every row of a span. Stored in the examples artifact as report.json."""

    span: int
    version: int
    files: list[str]
    rows_read: int = 0
    rows_written: dict[str, int] = field(default_factory=dict)
    duplicates_within_span: int = 0
    duplicates_of_earlier_spans: int = 0
    label_conflicts: list[dict[str, Any]] = field(default_factory=list)
    quarantined: dict[str, int] = field(default_factory=dict)  # reason kind -> count
    type_errors: dict[str, int] = field(default_factory=dict)  # column -> rows with a wrong type
    columns_seen: list[str] = field(default_factory=list)
    index_rows_replaced: int = 0

    @property
    def rows_kept(self) -> int:
        return sum(self.rows_written.values())

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> IngestReport:
        return cls(**data)


def infer_types(
    records: Iterable[readers.RawRecord], label: str, sample: int = 1000
) -> dict[str, str]:
    """Guess each column's feature type from the first ``sample`` parseable records.

    numeric: every present value parses as a number; image: values are image file names;
    categorical: codes (one or two words) or short, often repeated phrases; text: the rest.
    """
    values: dict[str, list[str]] = {}
    seen = 0
    for record in records:
        if record.values is None:
            continue
        for column, value in record.values.items():
            if column != label:
                values.setdefault(column, [])
                if value is not None and str(value) not in MISSING_MARKERS:
                    values[column].append(str(value))
        seen += 1
        if seen >= sample:
            break
    types = {}
    for column, present in values.items():
        types[column] = _guess(present)
    return types


def _guess(present: list[str]) -> str:
    if not present:
        return "categorical"
    if all(_is_number(v) for v in present):
        return "numeric"
    if all(v.lower().endswith(_IMAGE_SUFFIXES) for v in present):
        return "image"
    distinct = len(set(present))
    mean_words = sum(v.count(" ") + 1 for v in present) / len(present)
    # Codes and ids (one or two words) are categorical at any cardinality; short phrases only
    # when they repeat a lot; anything longer is free text.
    if mean_words <= 2 or (mean_words <= 4 and distinct <= max(50, len(present) // 5)):
        return "categorical"
    return "text"


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


def short_hash(text: str) -> str:
    return hashlib.blake2b(text.encode("utf-8", errors="surrogatepass"), digest_size=16).hexdigest()


def split_buckets(keys: Sequence[bytes]) -> np.ndarray:
    """:func:`split_bucket` of many UTF-8 keys, as a float64 array (the same numbers: a
    uint64 converted to the nearest double, then scaled by 2**-64, which is exact)."""
    prefixes = b"".join([hashlib.sha256(key).digest()[:8] for key in keys])
    return np.frombuffer(prefixes, dtype=">u8").astype(np.float64) / 2**64


def split_bucket(key: str) -> float:
    """A number in [0, 1) from the key's hash: the same key gets the same split everywhere."""
    return (
        int.from_bytes(
            hashlib.sha256(key.encode("utf-8", errors="surrogatepass")).digest()[:8], "big"
        )
        / 2**64
    )


class _Row(NamedTuple):
    """A kept row (a named tuple: one is built per row, and in C by :data:`_new_row`)."""

    source: str
    values: dict[str, Any]
    label: str
    input_hash: str
    row_hash: str
    split: str


class RowProcessor:
    """Checks and coerces one raw record at a time; decides dedupe in chunks against the index.

    Args:
        types: feature column -> type, in a fixed order (the order matters for hashing).
        label: the label column.
        split_ratios: split name -> fraction (summing to 1).
        split_key: a column whose value decides the split; empty means the row's inputs.
        max_field_bytes: larger values are quarantined as oversized.
        label_conflicts: "quarantine" keeps the first label seen; "keep" keeps both rows.
        missing_labels: label values that mean "no label" (``NA``, ``null`` ...), compared
            case-insensitively after stripping spaces; an empty label is always missing.
        lookup: input hashes -> earlier index rows (the metadata store, in the run's transaction).
        remember: adds kept rows to the index.
    """

    def __init__(
        self,
        *,
        span: int,
        types: Mapping[str, str],
        label: str,
        split_ratios: Mapping[str, float],
        split_key: str,
        max_field_bytes: int,
        label_conflicts: str,
        lookup: Callable[[Iterable[str]], dict[str, list[IndexedRow]]],
        remember: Callable[[list[IndexedRow]], None],
        missing_labels: Iterable[str] = DEFAULT_MISSING_LABELS,
    ) -> None:
        self.span = span
        self.types = dict(types)
        self.label = label
        self.boundaries = _boundaries(split_ratios)
        self.split_key = split_key
        self.max_field_bytes = max_field_bytes
        self.label_conflicts = label_conflicts
        self.lookup = lookup
        self.remember = remember
        self.missing_labels = {m.strip().lower() for m in missing_labels} | {""}

    # The row code's pieces the column-wise path (ingest_columns) reuses, handed over through
    # the processor because that module cannot import this one (it is imported by it).
    def coerce_numbers(
        self, raw: list[Any], column: str, wrong: dict[int, tuple[str, Any]]
    ) -> list[Any]:
        """A numeric column of a batch, coerced as the row code coerces it."""
        return _coerce_numbers(raw, column, wrong)

    @property
    def row_factory(self) -> Callable[[tuple[Any, ...]], _Row]:
        """Builds a kept row from its 6-tuple (in C, see :data:`_new_row`)."""
        return _new_row

    def process(
        self, records: Iterable[readers.RawRecord], report: IngestReport
    ) -> Iterator[_Row | Quarantined]:
        """Yield kept rows and quarantined records, in input order, updating ``report``."""
        records = iter(records)
        while chunk := list(itertools.islice(records, _CHUNK)):
            yield from self.process_batch(chunk, report)

    def process_batch(
        self, records: Sequence[readers.RawRecord], report: IngestReport
    ) -> list[_Row | Quarantined]:
        """Check, hash, split and dedupe one batch of records, in input order.

        The pure core, callable from any runner (embedded, or a Beam ``DoFn``): the only
        state it touches is ``report`` and, through ``lookup``/``remember``, the row index.

        Args:
            records: raw records in input order (parsed or not).
            report: counts are added to it (rows read, type errors, duplicates, conflicts).

        Returns:
            One item per record that is not a duplicate: a :class:`_Row` to keep (with its
            coerced values, label, input and row hashes and split) or a :class:`Quarantined`.
        """
        report.rows_read += len(records)
        return self._dedupe(self.check_batch(records, report), report)

    def check_batch(
        self, records: Sequence[readers.RawRecord], report: IngestReport
    ) -> list[_Row | Quarantined]:
        """Check, coerce, hash and split each record (no dedupe): one item per record.

        Decides exactly as :meth:`_check` does one record at a time; a batch of text-only
        values (CSV, most JSON Lines) is decided column by column, anything else row by row.
        """
        fast = self._fast_batch(records, report)
        return fast if fast is not None else [self._check(r, report) for r in records]

    def _check(self, record: readers.RawRecord, report: IngestReport) -> _Row | Quarantined:
        if record.values is None:
            return Quarantined(
                record.source, f"unparseable: {record.error}", raw=printable(record.raw)
            )
        raw_values = record.values
        problem = self._field_problem(raw_values)
        if problem is not None:
            reason, column = problem
            return Quarantined(record.source, reason, column, _preview(raw_values))
        label = raw_values.get(self.label)
        if isinstance(label, bytes):  # a parquet binary column
            label = label.decode("utf-8", errors="surrogateescape")
            if readers.invalid_utf8(label):
                return Quarantined(record.source, "invalid UTF-8", self.label, _preview(raw_values))
        missing = self._missing_label(label)
        if missing is not None:
            return Quarantined(record.source, missing, self.label, _preview(raw_values))
        values: dict[str, Any] = {}
        for column, kind in self.types.items():
            value = raw_values.get(column)
            try:
                values[column] = (
                    _image_bytes(value, record.source) if kind == "image" else _coerce(value, kind)
                )
            except OSError as e:
                return Quarantined(
                    record.source,
                    f"unreadable image: {e.strerror or e}: {str(value)[:200]!r}",
                    column,
                    _preview(raw_values),
                )
            except ValueError:
                report.type_errors[column] = report.type_errors.get(column, 0) + 1
                return Quarantined(
                    record.source,
                    f"wrong type: expected {kind}, found {_describe(value)}",
                    column,
                    _preview(raw_values),
                )
        inputs = json.dumps([_hashable(values[c]) for c in self.types], ensure_ascii=False)
        return _Row(record.source, *self._hashed(inputs, raw_values, values, str(label)))

    def _fast_batch(
        self, records: Sequence[readers.RawRecord], report: IngestReport
    ) -> list[_Row | Quarantined] | None:
        """:meth:`_check` for a batch whose values are all text, or None when it is not.

        Whole-batch tests stand in for per-value ones: no undecodable character in the
        batch's values or column names, no value near the size limit, no image column. Then
        only labels and numbers can be wrong, and the hash input is built per column with
        JSON's own string encoder (the same text as ``json.dumps`` of the row's values).
        """
        if "image" in self.types.values():
            return None
        parsed = [r.values for r in records if r.values is not None]
        try:
            flat = [value for values in parsed for value in values.values()]
            # str.isascii raises a TypeError unless every value is a str; an ASCII text
            # (a flag of the string) cannot hold an undecodable byte: only others are searched.
            wide = "".join([value for value in flat if not str.isascii(value)])
            names = "".join(name for values in parsed for name in values)
        except TypeError:
            return None
        if readers.invalid_utf8(wide) or readers.invalid_utf8(names):
            return None
        if max(map(len, flat), default=0) * 4 > self.max_field_bytes:
            return None  # a value may be over the limit: let _check measure it
        sources = [r.source for r in records if r.values is not None]
        checked = self._fast_columns(parsed, sources, report)
        if len(checked) == len(records):
            return checked
        in_order = iter(checked)  # unparseable records go between the parsed ones
        return [next(in_order) if r.values is not None else self._check(r, report) for r in records]

    def _fast_columns(
        self, parsed: list[dict[str, Any]], sources: list[str], report: IngestReport
    ) -> list[_Row | Quarantined]:
        """Per parsed row (``sources`` are theirs): a Quarantined or a _Row."""
        label = self.label
        labels = [values.get(label) for values in parsed]
        label_problem = {value: self._missing_label(value) for value in set(labels)}
        wrong: dict[int, tuple[str, Any]] = {}  # row -> its first column of a wrong type
        coerced, encoded = self._encode_columns(parsed, wrong)
        out: list[Any] = [None] * len(parsed)
        good: list[int] = []  # rows with no quarantine reason
        if wrong or any(problem is not None for problem in label_problem.values()):
            for j, (values, label_value) in enumerate(zip(parsed, labels, strict=True)):
                problem = self._row_problem(
                    j, values, label_problem[label_value], wrong, report, sources[j]
                )
                if problem is None:
                    good.append(j)
                else:
                    out[j] = problem
        else:
            good = list(range(len(parsed)))
        if len(good) < len(parsed):
            pick = _picker(good)
            parsed, labels, sources = pick(parsed), pick(labels), pick(sources)
            coerced, encoded = [pick(c) for c in coerced], [pick(e) for e in encoded]
        # json.dumps of the row's values, built for all rows at once: "[v1, v2, ...]".
        template = "[" + ", ".join(["{}"] * len(encoded)) + "]"
        inputs = list(map(template.format, *encoded)) if encoded else ["[]"] * len(parsed)
        names = list(self.types)
        row_values = [dict(zip(names, row, strict=True)) for row in zip(*coerced, strict=True)]
        if not coerced:
            row_values = [{} for _ in parsed]
        labels = [str(v) for v in labels]
        rows = self._hashed_batch(sources, inputs, parsed, row_values, labels)
        if len(good) == len(out):
            return rows
        for j, row in zip(good, rows, strict=True):
            out[j] = row
        return out

    def _encode_columns(
        self, parsed: list[dict[str, Any]], wrong: dict[int, tuple[str, Any]]
    ) -> tuple[list[list[Any]], list[list[str]]]:
        """Each feature column coerced, and JSON-encoded as ``json.dumps`` writes it."""
        coerced: list[list[Any]] = []
        encoded: list[list[str]] = []
        for column, kind in self.types.items():
            raw = [values.get(column) for values in parsed]
            if kind == "numeric":
                values = _coerce_numbers(raw, column, wrong)
                encoded.append(["null" if v is None else repr(v) for v in values])
            else:
                values = [None if v is None or v == "" else v for v in raw]
                encoded.append(["null" if v is None else _json_string(v) for v in values])
            coerced.append(values)
        return coerced, encoded

    def _row_problem(
        self,
        j: int,
        values: dict[str, Any],
        label_problem: str | None,
        wrong: dict[int, tuple[str, Any]],
        report: IngestReport,
        source: str,
    ) -> Quarantined | None:
        """Row ``j``'s quarantine (a placeholder label, then a wrong type), or None."""
        if label_problem is not None:
            return Quarantined(source, label_problem, self.label, _preview(values))
        if j not in wrong:
            return None
        column, value = wrong[j]
        report.type_errors[column] = report.type_errors.get(column, 0) + 1
        reason = f"wrong type: expected numeric, found {_describe(value)}"
        return Quarantined(source, reason, column, _preview(values))

    def _hashed_batch(
        self,
        sources: list[str],
        inputs: list[str],
        raw_values: list[Mapping[str, Any]],
        values: list[dict[str, Any]],
        labels: list[str],
    ) -> list[_Row]:
        """:meth:`_hashed` of many rows, as rows: the same hashes and splits, the hashing in
        one pass per hash and the split buckets compared as one array."""
        encoded = [text.encode("utf-8", errors="surrogatepass") for text in inputs]
        input_hashes = [_blake2b(data, digest_size=16).hexdigest() for data in encoded]
        row_hashes = [
            _blake2b(
                (h + "\x00" + label).encode("utf-8", errors="surrogatepass"), digest_size=16
            ).hexdigest()
            for h, label in zip(input_hashes, labels, strict=True)
        ]
        if self.split_key:
            key = self.split_key
            encoded = [
                str(raw.get(key, "")).encode("utf-8", errors="surrogatepass") for raw in raw_values
            ]
        splits = _pick_many(self.boundaries, split_buckets(encoded))
        fields = zip(sources, values, labels, input_hashes, row_hashes, splits, strict=True)
        return list(map(_new_row, fields))

    def _hashed(
        self, inputs: str, raw_values: Mapping[str, Any], values: dict[str, Any], label: str
    ) -> tuple[dict[str, Any], str, str, str, str]:
        """A row's fields after its source: values, label, input hash, row hash, split."""
        input_hash = short_hash(inputs)
        row_hash = short_hash(input_hash + "\x00" + label)
        key = inputs if not self.split_key else str(raw_values.get(self.split_key, ""))
        return values, label, input_hash, row_hash, _pick(self.boundaries, split_bucket(key))

    def _field_problem(self, raw_values: Mapping[str, Any]) -> tuple[str, str] | None:
        """Why a row cannot be kept whatever its columns' types: (reason, column), or None."""
        for column, value in raw_values.items():
            if isinstance(column, str) and readers.invalid_utf8(column):
                return "invalid UTF-8 (in a column name)", printable(column)
            if isinstance(value, bytes) and self.types.get(column) != "image":
                try:
                    value = value.decode("utf-8")  # a parquet binary column of text
                except UnicodeDecodeError:
                    return "invalid UTF-8", column
            if isinstance(value, str):
                if readers.invalid_utf8(value):
                    return "invalid UTF-8", column
                if (
                    len(value) * 4 > self.max_field_bytes
                    and len(value.encode("utf-8")) > self.max_field_bytes
                ):
                    size = len(value.encode("utf-8"))
                    limit = self.max_field_bytes
                    return f"oversized: {size} bytes, over data.max_field_bytes={limit}", column
        return None

    def _missing_label(self, label: Any) -> str | None:
        """Why ``label`` is no label (the quarantine reason), or None for a usable label."""
        if label is None:
            return "missing label"
        if isinstance(label, dict | list) or (isinstance(label, float) and math.isinf(label)):
            return f"wrong type: a label is one text or number, found {_describe(label)}"
        text = str(label).strip()
        if text == "":
            return "missing label"
        if text.lower() in self.missing_labels:
            # NA, null, NaN ... are placeholders, not classes: a class named "NA" would be
            # learned, and break every later run that does not see it.
            return f"missing label: {text!r} is a placeholder (data.missing_labels)"
        return None

    def _dedupe(
        self, chunk: list[_Row | Quarantined], report: IngestReport
    ) -> list[_Row | Quarantined]:
        """Drop duplicates and decide label conflicts, in input order; remember kept rows."""
        rows = [r for r in chunk if isinstance(r, _Row)]
        hashes = [r.input_hash for r in rows]
        earlier = self.lookup(hashes)
        # Only rows whose inputs were seen before, or repeat within the batch, need the
        # row-by-row decision below; any other row is kept as it is (the usual case).
        contested = set(earlier)
        if len(set(hashes)) < len(hashes):
            contested |= {h for h, n in Counter(hashes).items() if n > 1}
        if not contested:  # every row is new: all kept, their index entries built in C
            entries = zip(
                [r.row_hash for r in rows], hashes, [r.label for r in rows], repeat(self.span)
            )
            self.remember(list(map(_new_indexed_row, entries)))
            return list(chunk)
        out: list[_Row | Quarantined] = []
        fresh: list[IndexedRow] = []
        span = self.span
        for item in chunk:
            if isinstance(item, Quarantined):
                out.append(item)
            elif item.input_hash not in contested:
                fresh.append(IndexedRow(item.row_hash, item.input_hash, item.label, span))
                out.append(item)
            else:
                decided = self._decide(item, earlier.setdefault(item.input_hash, []), report)
                if decided is not None:
                    out.append(decided)
                    if isinstance(decided, _Row):
                        fresh.append(earlier[item.input_hash][-1])
        self.remember(fresh)
        return out

    def _decide(
        self, item: _Row, known: list[IndexedRow], report: IngestReport
    ) -> _Row | Quarantined | None:
        """One row against the index entries for its inputs (``known``, updated when it is
        kept): None for a duplicate, a Quarantined for a conflict, else the row."""
        same = next((k for k in known if k.row_hash == item.row_hash), None)
        if same is not None:
            if same.span == self.span:
                report.duplicates_within_span += 1
            else:
                report.duplicates_of_earlier_spans += 1
            return None
        if known:
            first = known[0]
            report.label_conflicts.append(
                {
                    "source": item.source,
                    "label": item.label,
                    "earlier_label": first.label,
                    "earlier_span": first.span,
                }
            )
            if self.label_conflicts == "quarantine":
                return Quarantined(
                    item.source,
                    f"label conflict: the same inputs are labelled {first.label!r} in span {first.span}",
                    self.label,
                    _preview(item.values),
                )
        known.append(IndexedRow(item.row_hash, item.input_hash, item.label, self.span))
        return item


def _coerce(value: Any, kind: str) -> Any:
    """One value as its feature type (None when missing).

    Raises:
        ValueError: the value is not of that type: not a finite number for numeric; a list,
            an object, or bytes that are not UTF-8 (a feature takes one value).
    """
    if value is None:
        return None
    if isinstance(value, dict | list) or (kind == "numeric" and isinstance(value, bool)):
        raise ValueError(value)
    if isinstance(value, bytes):
        value = value.decode("utf-8")  # UnicodeDecodeError is a ValueError
    if kind == "numeric":
        if isinstance(value, int | float):
            number = float(value)
        else:
            text = str(value).strip()
            if text in MISSING_MARKERS:
                return None
            number = float(text)
        if math.isnan(number):
            return None
        if not math.isfinite(number):
            raise ValueError(value)  # an infinity breaks statistics and normalization
        return number
    text = value if isinstance(value, str) else str(value)
    return None if text == "" else text


def _coerce_numbers(raw: list[Any], column: str, wrong: dict[int, tuple[str, Any]]) -> list[Any]:
    """A numeric column of a batch, coerced; a wrong value is None, its row noted in ``wrong``
    (only the first wrong column of a row is kept: columns come in the row's check order)."""
    out: list[Any] = []
    for j, value in enumerate(raw):
        try:
            out.append(_coerce(value, "numeric"))
        except ValueError:
            out.append(None)
            wrong.setdefault(j, (column, value))
    return out


_blake2b = hashlib.blake2b
# A _Row from a 6-tuple without the named tuple's Python-level __new__.
_new_row = functools.partial(tuple.__new__, _Row)
# An IndexedRow from a 4-tuple without the named tuple's Python-level __new__.
_new_indexed_row = functools.partial(tuple.__new__, IndexedRow)
# json.dumps(..., ensure_ascii=False) encodes each string with this (C) function.
_json_string = json.encoder.encode_basestring


def _describe(value: Any) -> str:
    """A value, briefly, for a quarantine reason."""
    if isinstance(value, dict):
        return "an object"
    if isinstance(value, list):
        return f"a list of {len(value)} values"
    if isinstance(value, bytes):
        return f"{len(value)} bytes"
    return repr(str(value)[:60])


IMAGE_MAGIC = (b"\x89PNG", b"\xff\xd8\xff", b"GIF8", b"BM")


def _image_bytes(value: Any, source: str) -> bytes | None:
    """The encoded bytes of an image column's value: a path (relative to the span file) or bytes.

    Raises:
        OSError: the file cannot be read.
        ValueError: the bytes are not a PNG, JPEG, GIF or BMP image.
    """
    if value is None:
        return None
    if isinstance(value, bytes):
        data = value
    else:
        text = str(value).strip()
        if text in MISSING_MARKERS:
            return None
        path = Path(text).expanduser()
        if not path.is_absolute():
            path = Path(source.rsplit(":", 1)[0]).parent / path
        data = _read_image_file(path)
    if not data.startswith(IMAGE_MAGIC):
        raise ValueError("not a PNG, JPEG, GIF or BMP image")
    return data


def _read_image_file(path: Path) -> bytes:
    # A pipe would block ingest forever and /dev/zero would fill memory: regular files only.
    info = path.stat()
    if not stat.S_ISREG(info.st_mode):
        raise OSError(errno.EINVAL, "not a regular file")
    if info.st_size > readers.MAX_RECORD_BYTES:
        raise OSError(errno.EFBIG, f"larger than {readers.MAX_RECORD_BYTES} bytes")
    return path.read_bytes()


def _hashable(value: Any) -> Any:
    # Images hash by content, so the same picture under two file names is a duplicate.
    return "sha256:" + hashlib.sha256(value).hexdigest() if isinstance(value, bytes) else value


def _preview(values: Mapping[str, Any]) -> str:
    return printable(json.dumps(values, ensure_ascii=False, default=str)[:500])


printable = readers.printable


def _boundaries(ratios: Mapping[str, float]) -> list[tuple[float, str]]:
    total, out = 0.0, []
    for name, ratio in ratios.items():
        total += ratio
        out.append((total, name))
    return out


def _pick_many(boundaries: list[tuple[float, str]], buckets: np.ndarray) -> list[str]:
    """:func:`_pick` of many buckets: the first split whose upper bound is above the bucket."""
    uppers = np.array([upper for upper, _ in boundaries], dtype=np.float64)
    names = [name for _, name in boundaries]
    chosen = np.minimum(np.searchsorted(uppers, buckets, side="right"), len(names) - 1)
    return [names[i] for i in chosen.tolist()]


def _picker(indexes: list[int]) -> Callable[[list[Any]], list[Any]]:
    """A function taking the items at ``indexes`` from a list."""
    return lambda items: [items[i] for i in indexes]


def _pick(boundaries: list[tuple[float, str]], bucket: float) -> str:
    for upper, name in boundaries:
        if bucket < upper:
            return name
    return boundaries[-1][1]


def _reason_kind(reason: str) -> str:
    return reason.split(":", 1)[0]


class _SpanOutput:
    """The files one span's batches go to: shards per split, ``quarantine.jsonl``; and the
    span's statistics, fed while the rows are in memory."""

    def __init__(self, folder: Path, types: Mapping[str, str], config: Config) -> None:
        self.types = dict(types)
        self.shards = {
            name: examples.ShardWriter(folder / name, config.data.shard_rows)
            for name in config.split.ratios
        }
        self.quarantine = open(folder / "quarantine.jsonl", "w", encoding="utf-8")
        self.encoder = examples.ExampleEncoder(types, config.data.label)

    def __enter__(self) -> _SpanOutput:
        return self

    def __exit__(self, *exc: object) -> None:
        self.quarantine.close()
        for shard in self.shards.values():
            shard.close()

    def write(
        self, items: list[_Row | Quarantined], report: IngestReport, stats: SpanStatistics
    ) -> None:
        """Write one processed batch (in order) and add its kept rows to ``stats``."""
        kept: list[_Row] = [item for item in items if not isinstance(item, Quarantined)]
        if len(kept) < len(items):
            self.write_quarantined(items, report)
        encode = self.encoder.encode
        for name, shard in self.shards.items():
            shard.write_many(
                [encode(r.values, r.label, r.row_hash) for r in kept if r.split == name]
            )
        stats.add_columns(stored_columns(kept, self.types), [row.label for row in kept])

    def write_quarantined(self, items: Iterable[_Row | Quarantined], report: IngestReport) -> None:
        """The quarantined records among ``items`` to ``quarantine.jsonl``, counted by reason."""
        for item in items:
            if isinstance(item, Quarantined):
                kind = _reason_kind(item.reason)
                report.quarantined[kind] = report.quarantined.get(kind, 0) + 1
                self.quarantine.write(
                    json.dumps(asdict(item), ensure_ascii=False, default=str) + "\n"
                )

    def rows_written(self) -> dict[str, int]:
        return {name: shard.rows for name, shard in self.shards.items()}


def stored_columns(rows: Sequence[_Row], types: Mapping[str, str]) -> dict[str, list[Any]]:
    """Kept rows column-wise, as the shards store them (numbers as float32), for statistics."""
    columns: dict[str, list[Any]] = {}
    for column, kind in types.items():
        values = [row.values.get(column) for row in rows]
        if kind == "numeric":
            values = [None if v is None else examples.as_float32(v) for v in values]
        columns[column] = values
    return columns


class IngestSpan:
    """Pipeline component: one span version → an ``examples`` artifact.

    The artifact holds ``<split>/part-*.tfrecord``, ``quarantine.jsonl`` (every rejected row
    with file, line, reason and column) and ``report.json`` (an :class:`IngestReport`).
    """

    name: ClassVar[str] = "ingest"
    # 2: strict CSV with quote recovery, BOM stripped, placeholder labels quarantined.
    # 3: the dedupe index is the artifact's index.parquet (no SQL row per data row).
    version: ClassVar[str] = "3"

    def __init__(
        self,
        config: Config,
        span: SpanFiles,
        *,
        version: int,
        fingerprint: str,
        types: Mapping[str, str],
        progress: Callable[[int, int], None] | None = None,
    ) -> None:
        self.config = config
        self.span = span
        self.span_version = version
        self.fingerprint = fingerprint
        self.types = dict(types)
        self.progress = progress

    def parameters(self) -> dict[str, Any]:
        return {
            "span": self.span.span,
            "version": self.span_version,
            "fingerprint": self.fingerprint,
            "format": self.config.data.format,
            "label": self.config.data.label,
            "types": self.types,
            "split": {"ratios": self.config.split.ratios, "key": self.config.split.key},
            "max_field_bytes": self.config.data.max_field_bytes,
            "shard_rows": self.config.data.shard_rows,
            "label_conflicts": self.config.dedupe.label_conflicts,
            "missing_labels": list(self.config.data.missing_labels),
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        report = IngestReport(self.span.span, self.span_version, [str(f) for f in self.span.files])
        writer = ctx.output("examples", "Examples", span=self.span.span, version=self.span_version)
        index = self._open_index(ctx, report, writer.path / "index-spill")
        processor = self.row_processor(index.lookup, index.remember)
        stats = SpanStatistics(types=dict(self.types), spans=[self.span.span])
        columns_seen: set[str] = set()
        with _SpanOutput(writer.path, self.types, self.config) as out, _collector_paused():
            for batch in ingest_columns.batches(self._items(columns_seen), _CHUNK):
                done = None
                if isinstance(batch, ingest_columns.ColumnBatch):
                    done = ingest_columns.process(processor, index, batch, report)
                    if done is None:  # not a batch for the column-wise path
                        batch = batch.records()
                if done is None:
                    out.write(processor.process_batch(batch, report), report, stats)
                elif done[1] is None:  # nothing kept, or decided row by row
                    out.write(done[0], report, stats)
                else:
                    out.write_quarantined(done[0], report)
                    ingest_columns.write(out, done[1], stats)
        index.write(writer.path / dedupe_index.INDEX_FILE)
        writer.write_json(STATISTICS_FILE, stats.to_dict())
        report.rows_written = out.rows_written()
        report.columns_seen = sorted(columns_seen)
        return self.finish(ctx, writer, report)

    def row_processor(
        self,
        lookup: Callable[[Iterable[str]], dict[str, list[IndexedRow]]],
        remember: Callable[[list[IndexedRow]], None],
    ) -> RowProcessor:
        """This span's :class:`RowProcessor` over a row index (``lookup`` and ``remember``)."""
        return RowProcessor(
            span=self.span.span,
            types=self.types,
            label=self.config.data.label,
            split_ratios=self.config.split.ratios,
            split_key=self.config.split.key,
            max_field_bytes=self.config.data.max_field_bytes,
            label_conflicts=self.config.dedupe.label_conflicts,
            lookup=lookup,
            remember=remember,
            missing_labels=self.config.data.missing_labels,
        )

    def finish(self, ctx: ExecutionContext, writer: Any, report: IngestReport) -> dict[str, Any]:
        """Write ``report.json``, set the artifact's properties; the run summary (both engines)."""
        writer.write_json("report.json", report.to_dict())
        ctx.set_properties(
            "examples",
            {
                "rows": report.rows_kept,
                "splits": report.rows_written,
                "types": self.types,
                "label": self.config.data.label,
                "fingerprint_of_source": self.fingerprint,
            },
        )
        return {
            "rows_read": report.rows_read,
            "rows_written": report.rows_written,
            "quarantined": sum(report.quarantined.values()),
            "duplicates": report.duplicates_within_span + report.duplicates_of_earlier_spans,
            "label_conflicts": len(report.label_conflicts),
        }

    def _open_index(
        self, ctx: ExecutionContext, report: IngestReport, spill: Path | None = None
    ) -> dedupe_index.SpanIndex:
        """The dedupe index of every other span's current version (this span's old version,
        if any, is replaced: its rows are left out, so they are not seen as duplicates);
        this span's entries spill to ``spill`` (inside the artifact being written), if any."""
        current = dedupe_index.sources(ctx.store, ctx.conn)
        replaced = [s for s in current if s.span == self.span.span]
        report.index_rows_replaced = sum(dedupe_index.rows_in(s.path) for s in replaced)
        return dedupe_index.SpanIndex(
            self.span.span, [s for s in current if s.span != self.span.span], spill
        )

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        ctx.store.add_span_version(
            ctx.conn,
            self.span.span,
            self.span_version,
            self.fingerprint,
            [str(f) for f in self.span.files],
            outputs["examples"].id,
        )

    def _items(self, columns_seen: set[str]) -> Iterator[readers.RawRecord | readers.RecordBlock]:
        """The span's records, file after file (clean CSV blocks as
        :class:`~evergreen.readers.RecordBlock`), reporting progress every 5,000 records."""
        fmt = self.config.data.format
        total = sum(_size(f) for f in self.span.files)
        done = 0
        for path in self.span.files:
            columns_seen.update(self.file_columns(path))
            progress = readers.ReadProgress()
            count = 0
            for item in readers.read_items(path, fmt, progress):
                yield item
                first = count  # the item's first record, then one past its last
                count += len(item.rows) if isinstance(item, readers.RecordBlock) else 1
                if self.progress and (first % 5000 == 0 or first // 5000 != (count - 1) // 5000):
                    self.progress(done + progress.bytes_done, total)
            done += _size(path)
        if self.progress:
            self.progress(total, total)

    def file_columns(self, path: Path) -> list[str]:
        """The columns a span file declares.

        Raises:
            DataError: a headed file (CSV, parquet) lacks the label column.
        """
        fmt = self.config.data.format
        columns = readers.header(path, fmt)
        if fmt in _HEADED_FORMATS and columns and self.config.data.label not in columns:
            raise DataError(
                f"{path}: data.label={self.config.data.label!r} is not a column of this "
                f"file of span {self.span.span}. Columns: {', '.join(columns)}. Fix the "
                "file (its header or delimiter), or move it out of the span"
            )
        return columns


_HEADED_FORMATS = ("csv", "parquet")  # formats whose files declare their columns up front


@contextlib.contextmanager
def _collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while the batches stream through.

    A batch allocates several container objects per row (records, value dicts, rows, index
    entries), so the collector would run hundreds of times per 100,000 rows, its older
    generations walking every object left by TensorFlow's import: measured, 0.7 of 3.2 CPU
    seconds of ingest's per-row work at 100,000 rows. The rows hold no reference cycles:
    reference counting frees each batch as the next comes, so nothing piles up meanwhile.
    """
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as e:
        raise DataError(f"cannot read {path}: {e.strerror or e}; check the file") from None


def read_report(examples_artifact: Artifact) -> IngestReport:
    return IngestReport.from_dict(
        json.loads((Path(examples_artifact.uri) / "report.json").read_text(encoding="utf-8"))
    )


def quarantine_rows(examples_artifact: Artifact) -> list[dict[str, Any]]:
    path = Path(examples_artifact.uri) / "quarantine.jsonl"
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]
