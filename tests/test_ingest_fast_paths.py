"""Ingest's fast paths give exactly the answers of the row-by-row code they stand in for.

* CSV: blocks parsed by the C reader vs the line-by-line strict reader with quote recovery —
  on every CSV of the bad-input corpus and the real datasets, with blocks small enough that
  files span many blocks and a broken quote falls back in the middle of a file.
* Checks: :meth:`RowProcessor.check_batch` (column-wise for text batches) vs
  :meth:`RowProcessor._check` one record at a time, on real rows mixed with bad ones.
* Examples: the hand-written wire format parses to the message TensorFlow's classes build.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Iterable
from pathlib import Path

import pytest

from evergreen import csv_arrow, examples, readers
from evergreen.components.ingest import (
    IngestReport,
    Quarantined,
    RowProcessor,
    _Row,
    split_bucket,
    split_buckets,
)
from evergreen.dedupe_index import IndexedRow
from tests.conftest import dataset, read_csv

FILES = Path(__file__).parent / "bad_inputs" / "files"


def slow_csv(path: Path) -> list[readers.RawRecord]:
    with open(path, "rb") as binary:
        return list(
            readers._CsvFile(path, binary, readers.MAX_RECORD_BYTES).records(readers.ReadProgress())
        )


def fast_csv(path: Path) -> list[readers.RawRecord]:
    with open(path, "rb") as binary:
        columns = readers._CsvFile(path, binary, readers.MAX_RECORD_BYTES).columns
    fast = readers._FastCsv(path, columns, readers.MAX_RECORD_BYTES)
    return list(fast.records(readers.ReadProgress())) if columns else []


def readable_csvs() -> list[Path]:
    out = []
    for path in sorted(FILES.glob("*.csv")):
        try:
            slow_csv(path)
        except Exception:  # a file refused as a whole: not the fast path's business
            continue
        out.append(path)
    return out


@pytest.mark.parametrize("block", [64, 4096, 4 * 1024 * 1024], ids=["64B", "4KiB", "4MiB"])
def test_fast_csv_reads_as_the_strict_reader(monkeypatch: pytest.MonkeyPatch, block: int) -> None:
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", block)
    paths = readable_csvs() + [dataset("mlc_churn.csv")]
    assert len(paths) > 10
    for path in paths:
        assert fast_csv(path) == slow_csv(path), path.name


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"], ids=["LF", "CRLF", "CR"])
@pytest.mark.parametrize("block", [48, 200, 4096], ids=["48B", "200B", "4KiB"])
def test_fast_csv_keeps_line_breaks_inside_quotes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, newline: str, block: int
) -> None:
    """Records over several lines, blank lines, escaped quotes and a last line without a
    break read as the strict reader reads them (the fast path splits blocks at line breaks
    without keeping them: a record over two lines must not lose its quoted break)."""
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", block)
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    lines = ["product,review,score"]
    for n, (product, review, score) in enumerate(rows[:60]):
        if n % 7 == 3:
            review = review[:40] + newline + review[40:80]  # a quoted line break
        if n % 11 == 5:
            lines.append("")  # a blank line
        if n % 13 == 6:
            review = review[:30] + "\r" + review[30:]  # a lone CR inside quotes: a break
        quoted = '"' + review.replace('"', '""') + '"'
        lines.append(f"{product},{quoted},{score}")
    path = tmp_path / "multiline.csv"
    path.write_bytes(newline.join(lines).encode("utf-8"))  # no break after the last line
    fast, slow = fast_csv(path), slow_csv(path)
    assert fast == slow
    breaks = sum(newline in (r.values or {}).get("review", "") for r in fast)
    assert breaks == (9 if newline != "\r" else 13)


ODD_LINES = {
    "strict_quote": '"x"y,b,1',  # text after a closing quote: the strict reader refuses it
    "inner_quote": 'x"y,b,1',  # a quote inside an unquoted field is a character
    "space_quote": ' "x",b,1',  # not a quoted field: the space comes first
    "lone_cr": '"x\ry",b,1',  # a lone CR is a line break to the stream
    "bom": "\ufeffx,b,1",  # a BOM at a line's start (not the file's) is part of the value
    "blank": "",  # no record
    "nul": "x\x00y,b,1",
    "short": "x,b",
    "long": "x" * 140_000 + ",b,1",  # over csv's default field limit (readers lifts it)
    "doubled": '"x""y""",""",""",1',  # doubled quotes, and a value made of quotes and commas
    "empty_quoted": '"","",""',
    "quoted_break": '"x\ny",b,1',
    "bad_utf8": "x\udcffy,b,1",  # written with surrogatepass: bytes that are not UTF-8
}


@pytest.mark.parametrize("odd", sorted(ODD_LINES), ids=sorted(ODD_LINES))
@pytest.mark.parametrize("block", [256, 4096], ids=["256B", "4KiB"])
def test_arrow_blocks_read_as_the_strict_reader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, odd: str, block: int
) -> None:
    """Blocks Arrow parses give the C reader's records; a block with anything Arrow might
    read otherwise is left to the C reader (and the file still reads as the strict one)."""
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", block)
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    lines = ["\ufeffproduct,review,score"]
    for n, (product, review, score) in enumerate(rows[:80]):
        lines.append(
            ODD_LINES[odd]
            if n == 60
            else f'{product},"{review.replace(chr(34), 2 * chr(34))}",{score}'
        )
    path = tmp_path / f"{odd}.csv"
    path.write_bytes("\r\n".join(lines).encode("utf-8", errors="surrogatepass"))
    assert fast_csv(path) == slow_csv(path)
    with open(path, "rb") as binary:
        columns = readers._CsvFile(path, binary, readers.MAX_RECORD_BYTES).columns
    items = list(
        readers._FastCsv(path, columns, readers.MAX_RECORD_BYTES).items(readers.ReadProgress())
    )
    by_arrow = [
        i
        for i in items
        if isinstance(i, readers.RecordBlock) and isinstance(i.rows, csv_arrow.TableRows)
    ]
    assert by_arrow  # the clean blocks around the odd line went to Arrow


@pytest.mark.parametrize("odd", sorted(ODD_LINES), ids=sorted(ODD_LINES))
def test_arrow_parse_gives_the_c_readers_rows_or_nothing(odd: str) -> None:
    """:func:`csv_arrow.parse` of a block, the odd line first, last or alone: the C reader's
    rows, or None (then the C reader parses the block); the odd ones Arrow could misread
    are refused."""
    clean = '"a ""quoted"" value",plain,3'
    for text in (f"{ODD_LINES[odd]}\r\n{clean}", f"{clean}\n{ODD_LINES[odd]}\n", ODD_LINES[odd]):
        block = text.encode("utf-8", errors="surrogatepass")
        got = csv_arrow.parse(block, 3, header=False)
        if got is None:
            continue
        text = block.decode("utf-8", errors="surrogateescape")  # as readers decodes
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        expected = list(reader)
        assert got[0].to_lists() == expected
        assert got[1] == reader.line_num == len(expected)
    refused = {
        "strict_quote",
        "lone_cr",
        "bom",
        "blank",
        "nul",
        "short",
        "quoted_break",
        "bad_utf8",
    }
    if odd in refused:
        block = ODD_LINES[odd].encode("utf-8", errors="surrogatepass")
        assert csv_arrow.parse(block, 3, header=False) is None


def test_arrow_parses_clean_blocks_of_a_real_file(monkeypatch: pytest.MonkeyPatch) -> None:
    """A clean real file is read by Arrow block after block, with the strict reader's records."""
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", 4096)
    path = dataset("mlc_churn.csv")
    assert fast_csv(path) == slow_csv(path)
    with open(path, "rb") as binary:
        columns = readers._CsvFile(path, binary, readers.MAX_RECORD_BYTES).columns
    items = list(
        readers._FastCsv(path, columns, readers.MAX_RECORD_BYTES).items(readers.ReadProgress())
    )
    assert items and all(isinstance(i.rows, csv_arrow.TableRows) for i in items)


def test_a_broken_quote_mid_file_falls_back_from_that_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", 256)
    header, rows = read_csv(dataset("mlc_churn.csv"))
    text = io.StringIO()
    text.write(",".join(header) + "\n")
    for n, row in enumerate(rows[:200]):
        line = ",".join(row)
        text.write(('"' + line + "\n") if n == 120 else (line + "\n"))  # an unclosed quote
    path = tmp_path / "broken.csv"
    path.write_text(text.getvalue(), encoding="utf-8")
    fast, slow = fast_csv(path), slow_csv(path)
    assert fast == slow
    bad = [r for r in fast if r.values is None]
    assert bad and bad[0].source.endswith(":122")  # line 1 is the header: row 0 is line 2


def test_check_batch_decides_as_one_record_at_a_time() -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    values = [dict(zip(header, row, strict=True)) for row in rows[:3000]]
    values += [
        {"product": "B1", "review": "fine", "score": "NA"},
        {"product": "B1", "review": "fine", "score": ""},
        {"product": "B1", "review": "fine"},
        {"product": "", "review": "", "score": "positive"},
        {"product": "B2", "review": "x" * 300, "score": "positive"},
    ]
    records = [readers.RawRecord(f"f.csv:{i}", v) for i, v in enumerate(values)]
    records.append(readers.RawRecord("f.csv:9999", None, "expected 3 fields, found 2", "a,b"))
    for types in (
        {"review": "text", "product": "categorical"},
        {"review": "text", "product": "numeric"},
    ):
        fast_report, slow_report = IngestReport(1, 1, []), IngestReport(1, 1, [])
        proc = processor(types)
        fast = proc.check_batch(records, fast_report)
        slow = [proc._check(r, slow_report) for r in records]
        assert fast == slow
        assert fast_report == slow_report
    assert slow_report.type_errors["product"] > 2000  # the numeric case really quarantined


def processor(
    types: dict[str, str],
    lookup: Callable[[Iterable[str]], dict[str, list[IndexedRow]]] = lambda hashes: {},
    remember: Callable[[list[IndexedRow]], None] = lambda rows: None,
) -> RowProcessor:
    return RowProcessor(
        span=1,
        types=types,
        label="score",
        split_ratios={"train": 0.8, "eval": 0.2},
        split_key="",
        max_field_bytes=1000,
        label_conflicts="quarantine",
        lookup=lookup,
        remember=remember,
    )


def test_example_encoder_writes_what_tensorflow_builds() -> None:
    from evergreen.tf import tensorflow

    tf = tensorflow()
    types = {"review": "text", "product": "categorical", "x": "numeric", "img": "image"}
    rows = [
        {"review": "héllo ✓ " * 40, "product": "B1", "x": 1.5, "img": b"\x89PNG" + bytes(300)},
        {"review": None, "product": "", "x": None, "img": None},
        {"review": "a" * 20000, "product": "B2", "x": 1e300, "img": None},  # float32: inf
    ]
    encoder = examples.ExampleEncoder(types, "score")
    for values in rows + rows:  # the second time from the encoder's remembered headers
        feature = {}
        for column, kind in types.items():
            value = values[column]
            if kind == "numeric":
                feature[column] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=[] if value is None else [value])
                )
            else:
                data = (
                    [] if value is None else [value if isinstance(value, bytes) else value.encode()]
                )
                feature[column] = tf.train.Feature(bytes_list=tf.train.BytesList(value=data))
        feature["score"] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"good"]))
        feature[examples.ROW_HASH] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[b"ab12"])
        )
        expected = tf.train.Example(features=tf.train.Features(feature=feature))
        assert tf.train.Example.FromString(encoder.encode(values, "good", "ab12")) == expected


def test_split_buckets_equal_split_bucket_one_key_at_a_time() -> None:
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    keys = [row[1] for row in rows[:2000]] + ["", "é", "\udc80 lone surrogate", "x" * 10_000]
    encoded = [key.encode("utf-8", errors="surrogatepass") for key in keys]
    assert split_buckets(encoded).tolist() == [split_bucket(key) for key in keys]


@pytest.mark.parametrize("policy", ["quarantine", "keep"])
def test_dedupe_decides_as_row_by_row(policy: str) -> None:
    """The batch dedupe (row-by-row only for contested inputs) = deciding every row in turn."""
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    values = [dict(zip(header, row, strict=True)) for row in rows[:1500]]
    values += values[100:140]  # exact duplicates within the batch
    values += [
        {**v, "score": "other" if v["score"] != "other" else "positive"} for v in values[:30]
    ]
    records = [readers.RawRecord(f"f.csv:{i}", v) for i, v in enumerate(values)]
    checked = processor({"review": "text", "product": "categorical"}).check_batch(
        records, IngestReport(1, 1, [])
    )
    # An earlier span holds rows 500-519 (the same labels) and 520-529 (other labels).
    earlier_rows = [item for item in checked[500:530] if not isinstance(item, Quarantined)]
    earlier = {
        row.input_hash: [
            IndexedRow(row.row_hash if n < 20 else "0" * 32, row.input_hash, "other", 0)
        ]
        for n, row in enumerate(earlier_rows)
    }

    def lookup(hashes: Iterable[str]) -> dict[str, list[IndexedRow]]:
        return {h: list(earlier[h]) for h in hashes if h in earlier}

    fast_report = _dedupe_both_ways(checked, lookup, policy)
    assert fast_report.duplicates_within_span >= 30 and fast_report.duplicates_of_earlier_spans
    assert len(fast_report.label_conflicts) >= 30
    clean = [item for item in checked[:400] if not isinstance(item, Quarantined)]
    assert len({row.input_hash for row in clean}) == len(clean)  # no row contested
    assert _dedupe_both_ways(clean, lambda hashes: {}, policy) == IngestReport(1, 1, [])


def _dedupe_both_ways(
    checked: list, lookup: Callable[[Iterable[str]], dict[str, list[IndexedRow]]], policy: str
) -> IngestReport:
    """Dedupe ``checked`` as a batch and row by row; assert the same answers; the report."""
    remembered: list[IndexedRow] = []
    proc = processor({"review": "text", "product": "categorical"}, lookup, remembered.extend)
    proc.label_conflicts = policy
    fast_report, slow_report = IngestReport(1, 1, []), IngestReport(1, 1, [])
    fast = proc._dedupe(list(checked), fast_report)
    known = lookup(item.input_hash for item in checked if not isinstance(item, Quarantined))
    slow = []
    for item in checked:
        decided = (
            item
            if isinstance(item, Quarantined)
            else proc._decide(item, known.setdefault(item.input_hash, []), slow_report)
        )
        if decided is not None:
            slow.append(decided)
    assert fast == slow
    assert fast_report == slow_report
    assert remembered == [
        IndexedRow(r.row_hash, r.input_hash, r.label, 1) for r in slow if isinstance(r, _Row)
    ]
    return fast_report


def test_write_many_rolls_shards_as_write_does(tmp_path: Path) -> None:
    records = [f"record {n}".encode() for n in range(57)]
    one, many = (
        examples.ShardWriter(tmp_path / "one", 10),
        examples.ShardWriter(tmp_path / "many", 10),
    )
    for record in records:
        one.write(record)
    many.write(records[0])  # then batches that straddle shard boundaries, and an empty one
    for part in (records[1:9], records[9:33], [], records[33:40], records[40:]):
        many.write_many(part)
    one.close()
    many.close()
    assert one.rows == many.rows == 57
    shards = [examples.shard_paths(tmp_path / name) for name in ("one", "many")]
    assert [p.name for p in shards[0]] == [p.name for p in shards[1]]
    assert len(shards[1]) == 6
    for a, b in zip(*shards, strict=True):
        assert a.read_bytes() == b.read_bytes()
    assert list(examples.iter_records(tmp_path / "many")) == records


def test_table_rows_read_as_a_list_of_field_lists() -> None:
    """:class:`csv_arrow.TableRows` answers as the list of rows it stands for."""
    import pyarrow as pa

    rows = [["a", "1"], ["b", ""], ["é", "3"], ["d", "4"]]
    table = pa.table({"f0": [r[0] for r in rows], "f1": [r[1] for r in rows]})
    held = csv_arrow.TableRows(table)
    assert len(held) == 4 and bool(held) and list(held) == rows
    assert [held[i] for i in range(-4, 4)] == rows + rows
    for start, stop in [(0, 2), (1, 4), (3, 9), (2, 2), (None, -1)]:
        assert list(held[start:stop]) == rows[start:stop]
        assert len(held[start:stop]) == len(rows[start:stop])
    with pytest.raises(IndexError):
        held[4]
