"""Ingest's column-wise path gives exactly the answers of the row code it stands in for.

The same spans are ingested twice: once with :func:`ingest_columns.process` (clean CSV batches
decided a column at a time) and once with it refused, so that every batch goes through
:meth:`RowProcessor.process_batch`. Shards, dedupe index, quarantine, reports and statistics
must be equal, on real reviews with duplicates, label conflicts, placeholder labels, JSON
escapes, non-ASCII text and broken rows, and on a numeric table.
"""

from __future__ import annotations

import itertools
import json
import shutil
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from evergreen import config as config_mod
from evergreen import dedupe_index, examples, readers
from evergreen.components import ingest, ingest_columns
from evergreen.project import Project
from tests.conftest import dataset, read_csv, write_config, write_csv

PROCESS = ingest_columns.process  # before any test replaces it


def ingest_outputs(project: Path, column_wise: bool, monkeypatch: pytest.MonkeyPatch) -> dict:
    """Ingest every span of ``project`` afresh; its outputs, and the batches taken column-wise."""
    shutil.rmtree(project / ".evergreen", ignore_errors=True)
    taken = []

    def counted(*args: Any) -> Any:
        done = PROCESS(*args) if column_wise else None
        taken.append(done is not None and done[1] is not None)  # kept rows, column-wise
        return done

    monkeypatch.setattr(ingest_columns, "process", counted)
    proj = Project(config_mod.load(project / "evergreen.toml"))
    try:
        proj.ingest()
        out: dict[str, Any] = {"column_batches": sum(taken), "batches": len(taken)}
        for record in proj.store.spans():
            folder = Path(proj.store.artifact(record.examples_id).uri)
            for path in sorted(folder.rglob("*.tfrecord")):
                out[f"{record.span}/{path.relative_to(folder)}"] = path.read_bytes()
            index = pq.read_table(folder / "index.parquet")
            out[f"{record.span}/index"] = index.to_pydict()
            out[f"{record.span}/quarantine"] = (folder / "quarantine.jsonl").read_text()
            out[f"{record.span}/report"] = json.loads((folder / "report.json").read_text())
            stats = json.loads((folder / "statistics.json").read_text())
            out[f"{record.span}/statistics"] = comparable(stats)
    finally:
        proj.close()
    return out


def comparable(stats: dict) -> dict:
    """The parts of a span's statistics that do not depend on sketch randomness or on the
    order a set hands values to the distinct-count sketch (which differs run to run)."""
    from evergreen.components.statistics import SpanStatistics

    span = SpanStatistics.from_dict(stats)
    out: dict[str, Any] = {"rows": span.rows, "labels": span.labels}
    for name, column in span.columns.items():
        out[name] = {
            "present": column.present,
            "missing": column.missing,
            "frequent": column.top(10_000),
            "total": column.total,
            "quantiles_n": column.quantiles.n,
            "word_counts_n": column.word_counts.n,
        }
        for sketch in ("quantiles", "word_counts"):
            kll = getattr(column, sketch)
            if kll.n:
                out[name][sketch + "_range"] = (kll.get_min_value(), kll.get_max_value())
        out[name]["distinct_near"] = round(column.distinct.get_estimate(), -1)
    return out


@pytest.fixture
def small_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    # Batches of 300 records from 16 KiB blocks: batches span blocks and files.
    monkeypatch.setattr(ingest, "_CHUNK", 300)
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", 16 * 1024)


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
def test_reviews_column_wise_equal_row_by_row(
    fine_foods_project: dict, monkeypatch: pytest.MonkeyPatch, small_batches: None, spill: bool
) -> None:
    if spill:  # the span's own hashes spill every 200 rows, read back 8 at a time
        monkeypatch.setattr(dedupe_index, "_SPILL_ROWS", 200)
        monkeypatch.setattr(dedupe_index, "_FENCE", 8)
    project = fine_foods_project["project"]
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    odd = [
        ["B0ESC", 'a "quoted" word, a back\\slash and a\ttab', "great"],
        ["B0ESC", "control \x01 and \x1f characters", "other"],
        ["B0UNI", "Ünïcode café ΣΑΣ naïve", "great"],
        ["", "", "other"],  # both features missing
        ["B0NA", "a placeholder label", "NA"],
        ["B0NA2", "another placeholder", "null"],
    ]
    spans = [rows[:300] + odd, rows[300:600], rows[600:700] + rows[3950:4000]]
    for number, span_rows in enumerate(spans, start=6):
        folder = project / "data" / f"span-{number}"
        write_csv(folder / "a.csv", header, span_rows[: len(span_rows) // 2])
        write_csv(folder / "b.csv", header, span_rows[len(span_rows) // 2 :])

    by_rows = ingest_outputs(project, False, monkeypatch)
    by_columns = ingest_outputs(project, True, monkeypatch)

    assert by_rows.pop("column_batches") == 0
    taken = by_columns.pop("column_batches")
    # Most batches went column-wise; some (duplicates, conflicts, broken rows) row by row.
    assert by_rows.pop("batches") == by_columns.pop("batches") > taken > 10
    assert by_columns.keys() == by_rows.keys()
    for key in by_rows:
        assert by_columns[key] == by_rows[key], key
    # The cases above really occurred: quarantined placeholders, conflicts, duplicates.
    report = by_columns["6/report"]
    assert report["quarantined"]["missing label"] == 2
    assert by_columns["8/report"]["duplicates_of_earlier_spans"] == 150  # of spans 1 and 5
    assert by_columns["5/report"]["label_conflicts"]
    assert by_columns["5/report"]["duplicates_within_span"] == 3  # rows 1-3, 800 rows later


def test_numeric_table_column_wise_equal_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None
) -> None:
    header, rows = read_csv(dataset("mlc_churn.csv"))
    label = header[-1]
    numeric = header.index("total_day_minutes")
    rows = [list(r) for r in rows[:1500]]
    rows[10][numeric] = "not a number"  # quarantined: wrong type
    rows[11][numeric] = ""  # missing
    rows[12][numeric] = "1e39"  # beyond float32: stored as an infinity
    write_csv(tmp_path / "data" / "span-1" / "churn.csv", header, rows)
    features = {c: "numeric" for c in header if c.startswith("total_")}
    features["state"] = "categorical"
    write_config(tmp_path, label=label, features=features)

    by_rows = ingest_outputs(tmp_path, False, monkeypatch)
    by_columns = ingest_outputs(tmp_path, True, monkeypatch)

    by_rows.pop("column_batches")
    assert by_columns.pop("column_batches") >= 4
    by_rows.pop("batches"), by_columns.pop("batches")
    for key in by_rows:
        assert by_columns[key] == by_rows[key], key
    assert by_columns["1/report"]["type_errors"] == {"total_day_minutes": 1}


def test_split_key_outside_the_features_column_wise_equal_row_by_row(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, small_batches: None
) -> None:
    """``split.key`` may name a column that is not a feature (an id): the column code must
    split by its values, not by nothing (every row would land in one split)."""
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:1200])
    write_config(
        tmp_path,
        label="score",
        features={"review": "text"},
        extra='[split]\nkey = "product"\n',
    )

    by_rows = ingest_outputs(tmp_path, False, monkeypatch)
    by_columns = ingest_outputs(tmp_path, True, monkeypatch)

    by_rows.pop("column_batches"), by_rows.pop("batches"), by_columns.pop("batches")
    assert by_columns.pop("column_batches") >= 1  # others hold duplicates: row by row
    for key in by_rows:
        assert by_columns[key] == by_rows[key], key
    splits = by_columns["1/report"]["rows_written"]
    assert splits["train"] > 0 and splits["eval"] > 0, splits


def test_batches_are_the_record_batches(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readers, "_CSV_BLOCK_BYTES", 4096)
    path = dataset("fine_foods_train.csv")
    records = list(readers.read(path, "csv"))
    items = list(readers.read_items(path, "csv"))
    assert any(isinstance(item, readers.RecordBlock) for item in items)
    for size in (1, 7, 1000):
        expected = [
            list(itertools.islice(records, i, i + size)) for i in range(0, len(records), size)
        ]
        got = [
            b.records() if isinstance(b, ingest_columns.ColumnBatch) else b
            for b in ingest_columns.batches(iter(items), size)
        ]
        assert got == expected
        column_batch = next(
            b
            for b in ingest_columns.batches(iter(items), size)
            if len(b) and not isinstance(b, list)
        )
        assert [column_batch.source(i) for i in range(len(column_batch))] == [
            r.source for r in column_batch.records()
        ]


def test_json_strings_are_what_json_dumps_writes() -> None:
    import pyarrow as pa

    texts = [
        "plain",
        'with "quotes" and \\ backslashes',
        "all controls: " + "".join(chr(c) for c in range(32)),
        "ünïcödé \u2028 and \x7f \x85 \u00a0",
        None,
        "",
    ]
    array = pa.array([None if t is None else t.encode() for t in texts], pa.binary())
    got = ingest_columns._json_strings(array).to_pylist()
    assert got == [json.dumps(t, ensure_ascii=False).encode() for t in texts]


def test_json_strings_read_only_the_bytes_the_offsets_cover() -> None:
    """A column the span lacks is ``pa.nulls``, whose data buffer holds uninitialised bytes
    that belong to no value (a quote or a control byte there once pointed past the last row:
    a span missing its product column crashed ingest instead of being blocked by validation);
    a slice's values start past its buffer's start."""
    import pyarrow as pa

    missing = pa.nulls(150, pa.binary())
    assert ingest_columns._json_strings(missing).to_pylist() == [b"null"] * 150
    texts = ['a "first"', "plain", 'b "second"', "tab\there", "last"]
    array = pa.array([t.encode() for t in texts], pa.binary()).slice(1, 3)
    got = ingest_columns._json_strings(array).to_pylist()
    assert got == [json.dumps(t, ensure_ascii=False).encode() for t in texts[1:4]]


@pytest.mark.parametrize("missing", [True, False], ids=["missing", "complete"])
def test_encode_columns_writes_what_encode_writes(missing: bool) -> None:
    """Byte for byte :meth:`ExampleEncoder.encode`, row by row (text columns with missing
    values, or complete ones, whose entries are joined as pieces; values up to ~140 KB)."""
    import pyarrow as pa

    from evergreen.tf import tensorflow

    header, rows = read_csv(dataset("fine_foods_train.csv"))
    types = {"review": "text", "product": "categorical", "stars": "numeric", "gone": "text"}
    encoder = examples.ExampleEncoder(types, "score")
    values = []
    for n, (product, review, _score) in enumerate(rows[:500]):
        values.append(
            {
                "review": review * (1 + n % 40 + (n == 7) * 400) if n % 9 or not missing else None,
                "product": product if n % 5 or not missing else None,
                "stars": [1.5, None, 1e39, -3.0, 0.1][n % 5],
            }
        )
    labels = [row[2] for row in rows[:500]]
    hashes = [f"{n:032x}" for n in range(500)]
    columns: dict[str, Any] = {
        c: pa.array([None if v[c] is None else v[c].encode() for v in values], pa.binary())
        for c in ("review", "product")
    }
    columns["stars"] = [v["stars"] for v in values]
    got = encoder.encode_columns(
        columns, labels, pa.array([h.encode() for h in hashes], pa.binary())
    ).to_pylist()
    want = [encoder.encode(v, label, h) for v, label, h in zip(values, labels, hashes, strict=True)]
    assert got == want
    train = tensorflow().train
    assert train.Example.FromString(got[1]).features.feature["review"].bytes_list.value[0] == (
        values[1]["review"].encode()
    )


def test_span_index_sees_spilled_and_held_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib

    import pyarrow as pa

    monkeypatch.setattr(dedupe_index, "_SPILL_ROWS", 100)
    monkeypatch.setattr(dedupe_index, "_FENCE", 4)
    index = dedupe_index.SpanIndex(1, [], tmp_path / "spill")
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    digests = [hashlib.blake2b(r[1].encode(), digest_size=16).digest() for r in rows[:1100]]
    for start in range(0, 1100, 75):
        part = digests[start : start + 75]
        index.remember_hashes(b"".join(part), b"".join(part), pa.array(["great"] * len(part)))
    assert len(index.runs) == 7 and index.rows == 1100  # 1,050 rows spilled, 50 held
    fresh = [hashlib.blake2b(r[1].encode() + b"#", digest_size=16).digest() for r in rows[:500]]

    def seen(keys: list[bytes]) -> bool:
        return index.seen(dedupe_index.digests_array(b"".join(keys)))

    assert not seen(fresh)
    assert all(seen(fresh[:20] + [digests[i]]) for i in (0, 3, 399, 999, 1049, 1050, 1099))
    found = index.lookup([digests[250].hex(), fresh[0].hex()])
    assert list(found) == [digests[250].hex()]
