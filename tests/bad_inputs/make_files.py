"""Writes the bad-input corpus in ``files/`` (committed; rerun only to change it).

Every file holds a few good review rows (columns product, review, score; label score) and one
kind of trouble, named by the file. ``tests/test_bad_files.py`` says what each must produce.

    python tests/bad_inputs/make_files.py
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import random
from pathlib import Path

HERE = Path(__file__).resolve().parent / "files"
COLUMNS = ["product", "review", "score"]
GOOD = [
    ["B001", "Great coffee, rich and smooth", "great"],
    ["B002", "Stale beans, would not buy again", "other"],
    ["B003", "My dog loves these treats", "great"],
    ["B004", "The box arrived crushed", "other"],
    ["B005", "Best tea I have had in years", "great"],
    ["B006", "Too sweet for my taste", "other"],
]


def csv_text(rows: list[list[str]], header: list[str] = COLUMNS, newline: str = "\r\n") -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator=newline)
    writer.writerow(header)
    writer.writerows(rows)
    return out.getvalue()


def write(name: str, data: bytes | str) -> None:
    (HERE / name).write_bytes(data.encode("utf-8") if isinstance(data, str) else data)


def csv_files() -> None:
    good = csv_text(GOOD)
    write("dup_header.csv", csv_text([r[:2] + r[1:] for r in GOOD], COLUMNS[:2] + COLUMNS[1:]))
    placeholders = ["NA", "null", "None", "NaN", "nan", "NULL", "n/a", "", " na "]
    write(
        "placeholder_labels.csv",
        csv_text(
            GOOD + [[f"B1{i:02d}", f"placeholder {p!r}", p] for i, p in enumerate(placeholders)]
        ),
    )
    write("bad_utf8_header.csv", b"product,revi\xe9w,score\r\n" + good.split("\r\n", 1)[1].encode())
    write("gzip_named.csv", gzip.compress(good.encode(), mtime=0))
    write("binary_named.csv", random.Random(0).randbytes(2048))
    write("png_named.csv", b"\x89PNG\r\n\x1a\n" + random.Random(1).randbytes(200))
    write("utf16.csv", good.encode("utf-16"))
    write("bom.csv", b"\xef\xbb\xbf" + good.encode())
    lines = good.split("\r\n")
    # Line 5 opens a quote that never closes; a later quoted field would close it wrongly.
    write(
        "unclosed_quote.csv",
        "\r\n".join(lines[:4] + ['B0X1,"this review never closes its quote,great'] + lines[4:]),
    )
    write(
        "unclosed_quote_at_end.csv",
        good + 'B0X2,"the quote runs to the end of the file,other\r\nB007,plain row,great\r\n',
    )
    write("stray_quote.csv", good + 'B0X3,"half"quoted,great\r\n')
    write("ragged.csv", good + "B0X4,two fields\r\nB0X5,four,fields,great\r\n")
    write("empty.csv", b"")
    write("header_only.csv", "product,review,score\r\n")
    write("semicolon.csv", good.replace(",", ";"))
    write("invalid_utf8_row.csv", good.encode() + b"B0X6,caf\xe9 au lait,great\r\n")
    write("oversized_field.csv", good + f"B0X7,{'very long review ' * 120},great\r\n")
    write("cr_only.csv", csv_text(GOOD, newline="\r"))
    write("blank_header_line.csv", "\r\n" + good)


def jsonl(rows: list[list[str]]) -> str:
    return "".join(json.dumps(dict(zip(COLUMNS, r, strict=True))) + "\n" for r in rows)


def jsonl_files() -> None:
    good = jsonl(GOOD)
    write("deep_nesting.jsonl", good + "[" * 100_000 + "]" * 100_000 + "\n" + jsonl(GOOD[:1]))
    write(
        "nested_value.jsonl",
        good
        + '{"product": "B0J1", "review": {"text": "nested"}, "score": "great"}\n'
        + '{"product": "B0J2", "review": "a list label", "score": ["great", "other"]}\n',
    )
    write(
        "duplicate_key.jsonl",
        good + '{"product": "B0J3", "review": "first", "review": "second", "score": "great"}\n',
    )
    write("truncated.jsonl", good + '{"product": "B0J4", "review": "cut off he')
    write("not_object.jsonl", good + '[1, 2, 3]\n"just a string"\n')
    write("bom.jsonl", b"\xef\xbb\xbf" + good.encode())
    write(
        "null_labels.jsonl",
        good
        + '{"product": "B0J5", "review": "null label", "score": null}\n'
        + '{"product": "B0J6", "review": "NA label", "score": "NA"}\n'
        + '{"product": "B0J7", "review": "bare NaN label", "score": NaN}\n',
    )
    write("gzip.jsonl", gzip.compress(good.encode(), mtime=0))
    write(
        "huge_integer.jsonl",
        good + '{"product": "B0J10", "review": "x", "score": ' + "9" * 5000 + "}\n",
    )
    write(
        "lone_surrogate.jsonl",
        good
        + '{"product": "B0J11", "review": "\\ud800 escape", "score": "great"}\n'
        + '{"product": "B0J12", "rev\\udfffiew": "in a key", "score": "great"}\n'
        + '{"product": "B0J13", "review": "in the label", "score": "gr\\ud83deat"}\n',
    )
    write(
        "invalid_utf8.jsonl",
        good.encode()
        + b'{"product": "B0J8", "review": "caf\xe9", "score": "great"}\n'
        + b'{"product": "B0J9", "revi\xe9w": "key", "score": "great"}\n',
    )


def example(values: dict[str, list[bytes]]) -> bytes:
    import tensorflow as tf

    feature = {
        k: tf.train.Feature(bytes_list=tf.train.BytesList(value=v)) for k, v in values.items()
    }
    return tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString(
        deterministic=True
    )


def tfrecord_bytes(records: list[bytes], compression: str = "") -> bytes:
    import tensorflow as tf

    path = HERE / "_tmp.tfrecord"
    with tf.io.TFRecordWriter(str(path), options=compression or None) as writer:
        for record in records:
            writer.write(record)
    data = path.read_bytes()
    path.unlink()
    return data


def tfrecord_files() -> None:
    import tensorflow as tf

    good = [example({c: [v.encode()] for c, v in zip(COLUMNS, row, strict=True)}) for row in GOOD]
    sequence = tf.train.SequenceExample()
    sequence.context.feature["product"].bytes_list.value.append(b"B0T1")
    sequence.feature_lists.feature_list["review"].feature.add().bytes_list.value.append(b"x")
    write(
        "not_example.tfrecord",
        tfrecord_bytes(good + [b"\xff\xff\xff", sequence.SerializeToString()]),
    )
    write("csv_named.tfrecord", csv_text(GOOD))
    whole = tfrecord_bytes(good)
    write("truncated.tfrecord", whole[: len(whole) - 7])
    multi = example({"product": [b"B0T2"], "review": [b"one", b"two"], "score": [b"great"]})
    write("multi_value.tfrecord", tfrecord_bytes(good + [multi]))
    gz = tfrecord_bytes(good, "GZIP")
    write("gzip.tfrecord", gz[:4] + b"\x00\x00\x00\x00" + gz[8:])  # gzip mtime zeroed: stable bytes


def parquet_files() -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    def parquet(table: pa.Table) -> bytes:
        out = io.BytesIO()
        pq.write_table(table, out)
        return out.getvalue()

    columns = list(zip(*GOOD, strict=True))
    good = pa.table({c: list(v) for c, v in zip(COLUMNS, columns, strict=True)})
    write("csv_named.parquet", csv_text(GOOD))
    whole = parquet(good)
    write("truncated.parquet", whole[: len(whole) // 2])
    dup = pa.Table.from_arrays(
        [pa.array(columns[0]), pa.array(columns[1]), pa.array(columns[1]), pa.array(columns[2])],
        names=["product", "review", "review", "score"],
    )
    write("dup_columns.parquet", parquet(dup))
    nested = pa.table(
        {
            "product": list(columns[0]) + ["B0P1"],
            "review": [{"text": r} for r in columns[1]] + [{"text": "nested"}],
            "score": list(columns[2]) + ["great"],
        }
    )
    write("nested.parquet", parquet(nested))
    labels = pa.table(
        {
            "product": list(columns[0]) + ["B0P2", "B0P3"],
            "review": list(columns[1]) + ["none label", "NA label"],
            "score": list(columns[2]) + [None, "NA"],
        }
    )
    write("null_labels.parquet", parquet(labels))
    binary = pa.table(
        {
            "product": [v.encode() for v in columns[0]] + [b"B0P4", b"B0P5"],
            "review": [v.encode() for v in columns[1]] + [b"caf\xe9", b"label not UTF-8"],
            "score": [v.encode() for v in columns[2]] + [b"great", b"gr\xe9at"],
        }
    )
    write("binary_text_columns.parquet", parquet(binary))


if __name__ == "__main__":
    HERE.mkdir(exist_ok=True)
    csv_files()
    jsonl_files()
    tfrecord_files()
    parquet_files()
    print(
        f"{len(list(HERE.iterdir()))} files, {sum(f.stat().st_size for f in HERE.iterdir())} bytes"
    )
