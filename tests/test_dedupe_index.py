"""The parquet dedupe index answers exactly as the SQL row index did, on real rows.

A stream cut from fine foods has duplicates within a span, duplicates of earlier spans, the
same reviews relabelled (label conflicts) and a changed span (a second version of span 2 that
replaces its rows). Each span goes through the same :class:`RowProcessor` twice: once against
the old SQL index (the metadata store's ``row_index`` table, as ingest used it before) and once
against :class:`SpanIndex` with its files; every decision and count must agree.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evergreen import dedupe_index, readers
from evergreen.components.ingest import IngestReport, Quarantined, RowProcessor
from evergreen.metadata import MetadataStore
from tests.conftest import dataset, read_csv

TYPES = {"review": "text", "product": "categorical"}


def stream() -> list[tuple[int, list[list[str]]]]:
    """(span, rows) in ingest order; the 4th delivery is a changed version of span 2."""
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    rows = rows[:900]
    relabel = [[p, r, "other" if s != "other" else "positive"] for p, r, s in rows[100:130]]
    return [
        (1, rows[0:300] + rows[0:40]),  # 40 duplicates within the span
        (2, rows[250:500] + relabel[:10]),  # 50 duplicates of span 1, 10 label conflicts
        (3, rows[450:700] + relabel[10:] + rows[690:700]),  # of span 2, conflicts, within
        (2, rows[500:600] + rows[280:290]),  # span 2 again, changed: replaces its rows
        (4, rows[300:310] + rows[520:530] + rows[700:900]),  # old span 2's rows are new again
    ]


def records(span: int, version: int, rows: list[list[str]]) -> list[readers.RawRecord]:
    return [
        readers.RawRecord(
            f"span-{span}-v{version}.csv:{n}", {"product": p, "review": r, "score": s}
        )
        for n, (p, r, s) in enumerate(rows, start=2)
    ]


def processor(span: int, policy: str, lookup, remember) -> RowProcessor:  # type: ignore[no-untyped-def]
    return RowProcessor(
        span=span,
        types=TYPES,
        label="score",
        split_ratios={"train": 0.8, "eval": 0.2},
        split_key="",
        max_field_bytes=1_000_000,
        label_conflicts=policy,
        lookup=lookup,
        remember=remember,
    )


def outcome(proc: RowProcessor, recs: list[readers.RawRecord], span: int) -> dict:
    report = IngestReport(span, 1, [])
    items = [
        (i.source, i.reason) if isinstance(i, Quarantined) else (i.source, i.row_hash, i.split)
        for i in proc.process(recs, report)
    ]
    report.index_rows_replaced = 0  # each index counts it its own way; compared separately
    return {"items": items, "report": report.to_dict()}


def run_sql(tmp_path: Path, policy: str) -> tuple[list[dict], int]:
    store = MetadataStore(f"sqlite:///{tmp_path / 'sql.db'}", "p")
    out, versions = [], {}
    for span, rows in stream():
        versions[span] = versions.get(span, 0) + 1
        with store.transaction() as conn:
            store.drop_index_span(conn, span)
            proc = processor(
                span,
                policy,
                lambda hashes, conn=conn: store.lookup_inputs(conn, hashes),
                lambda rows, conn=conn, v=versions[span]: store.add_index_rows(conn, rows, v),
            )
            out.append(outcome(proc, records(span, versions[span], rows), span))
    size = store.index_size()
    store.close()
    return out, size


def run_files(tmp_path: Path, policy: str) -> tuple[list[dict], int]:
    current: dict[int, dedupe_index.IndexSource] = {}  # span -> its current version's file
    out, versions = [], {}
    for order, (span, rows) in enumerate(stream(), start=1):
        versions[span] = versions.get(span, 0) + 1
        index = dedupe_index.SpanIndex(span, [s for k, s in current.items() if k != span])
        proc = processor(span, policy, index.lookup, index.remember)
        out.append(outcome(proc, records(span, versions[span], rows), span))
        path = tmp_path / f"span-{span}-v{versions[span]}.parquet"
        index.write(path)
        current[span] = dedupe_index.IndexSource(span, order, path)
    return out, sum(dedupe_index.rows_in(s.path) for s in current.values())


@pytest.mark.parametrize("policy", ["quarantine", "keep"])
def test_file_index_decides_as_the_sql_index(tmp_path: Path, policy: str) -> None:
    sql, sql_size = run_sql(tmp_path, policy)
    files, files_size = run_files(tmp_path, policy)
    assert files == sql
    assert files_size == sql_size
    reports = [o["report"] for o in sql]
    # The stream exercises every case, so agreement is not agreement on nothing.
    assert reports[0]["duplicates_within_span"] == 40
    assert reports[1]["duplicates_of_earlier_spans"] == 50
    assert len(reports[1]["label_conflicts"]) == 10
    assert reports[2]["duplicates_within_span"] >= 10
    assert reports[3]["duplicates_of_earlier_spans"] == 110  # of spans 1 and 3
    assert reports[4]["duplicates_of_earlier_spans"] == 10  # rows 300-310 went with span 2 v1
    quarantined = sum(1 for o in sql for item in o["items"] if len(item) == 2)
    assert quarantined == (30 if policy == "quarantine" else 0)


def test_index_file_is_sorted_and_holds_every_kept_row(tmp_path: Path) -> None:
    index = dedupe_index.SpanIndex(1, [])
    proc = processor(1, "quarantine", index.lookup, index.remember)
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    kept = [
        i
        for i in proc.process(records(1, 1, rows[:2000]), IngestReport(1, 1, []))
        if not isinstance(i, Quarantined)
    ]
    path = tmp_path / "index.parquet"
    assert index.write(path) == len(kept)
    table = pq.read_table(path)
    hashes = table["input_hash"].to_pylist()
    assert hashes == sorted(hashes)
    assert {h.hex() for h in table["row_hash"].to_pylist()} == {r.row_hash for r in kept}
