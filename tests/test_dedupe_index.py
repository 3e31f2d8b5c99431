"""The parquet dedupe index answers exactly as an independent reference does, on real rows.

A stream cut from fine foods has duplicates within a span, duplicates of earlier spans, the
same reviews relabelled (label conflicts) and a changed span (a second version of span 2 that
replaces its rows). Each span goes through the same :class:`RowProcessor` twice: once against
a reference index (plain Python: the stored entries of each span's current version, in ingest
order) and once against :class:`SpanIndex` with its files; every decision and count, and the
set of stored row hashes, must agree.
"""

from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq
import pytest

from evergreen import dedupe_index, readers
from evergreen.components import ingest
from evergreen.components.ingest import IngestReport, Quarantined, RowProcessor
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


class ReferenceIndex:
    """The index as plain Python: each span's current entries, spans in ingest order."""

    def __init__(self) -> None:
        self.entries: dict[int, list[dedupe_index.IndexedRow]] = {}

    def replace(self, span: int) -> None:
        """A new version of ``span``: its old entries go, its new ones come last."""
        self.entries.pop(span, None)
        self.entries[span] = []

    def lookup(self, input_hashes) -> dict[str, list[dedupe_index.IndexedRow]]:  # type: ignore[no-untyped-def]
        wanted = set(input_hashes)
        found: dict[str, list[dedupe_index.IndexedRow]] = {}
        for rows in self.entries.values():
            for row in rows:
                if row.input_hash in wanted:
                    found.setdefault(row.input_hash, []).append(row)
        return found

    def remember(self, span: int, rows: list[dedupe_index.IndexedRow]) -> None:
        self.entries[span].extend(rows)

    def row_hashes(self) -> set[str]:
        return {row.row_hash for rows in self.entries.values() for row in rows}


def run_reference(policy: str) -> tuple[list[dict], set[str]]:
    index = ReferenceIndex()
    out, versions = [], {}
    for span, rows in stream():
        versions[span] = versions.get(span, 0) + 1
        index.replace(span)
        proc = processor(
            span, policy, index.lookup, lambda kept, span=span: index.remember(span, kept)
        )
        out.append(outcome(proc, records(span, versions[span], rows), span))
    return out, index.row_hashes()


def run_files(tmp_path: Path, policy: str, spill: bool = False) -> tuple[list[dict], set[str]]:
    current: dict[int, dedupe_index.IndexSource] = {}  # span -> its current version's file
    out, versions = [], {}
    for order, (span, rows) in enumerate(stream(), start=1):
        versions[span] = versions.get(span, 0) + 1
        index = dedupe_index.SpanIndex(
            span,
            [s for k, s in current.items() if k != span],
            tmp_path / f"spill-{order}" if spill else None,
        )
        proc = processor(span, policy, index.lookup, index.remember)
        out.append(outcome(proc, records(span, versions[span], rows), span))
        path = tmp_path / f"span-{span}-v{versions[span]}.parquet"
        index.write(path)
        current[span] = dedupe_index.IndexSource(span, order, path)
    stored = [pq.read_table(s.path)["row_hash"].to_pylist() for s in current.values()]
    assert sum(dedupe_index.rows_in(s.path) for s in current.values()) == sum(map(len, stored))
    return out, {h.hex() for hashes in stored for h in hashes}


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
@pytest.mark.parametrize("policy", ["quarantine", "keep"])
def test_file_index_decides_as_the_reference(
    tmp_path: Path, policy: str, spill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    if spill:  # small batches and runs: lookups hit spilled runs, spans span several runs
        monkeypatch.setattr(ingest, "_CHUNK", 37)
        monkeypatch.setattr(dedupe_index, "_SPILL_ROWS", 50)
    reference, reference_hashes = run_reference(policy)
    files, files_hashes = run_files(tmp_path, policy, spill)
    if spill:
        assert not list(tmp_path.glob("spill-*"))  # every span's runs merged and removed
    assert files == reference
    assert files_hashes == reference_hashes
    reports = [o["report"] for o in reference]
    # The stream exercises every case, so agreement is not agreement on nothing.
    assert reports[0]["duplicates_within_span"] == 40
    assert reports[1]["duplicates_of_earlier_spans"] == 50
    assert len(reports[1]["label_conflicts"]) == 10
    assert reports[2]["duplicates_within_span"] >= 10
    assert reports[3]["duplicates_of_earlier_spans"] == 110  # of spans 1 and 3
    assert reports[4]["duplicates_of_earlier_spans"] == 10  # rows 300-310 went with span 2 v1
    quarantined = sum(1 for o in reference for item in o["items"] if len(item) == 2)
    assert quarantined == (30 if policy == "quarantine" else 0)


@pytest.mark.parametrize("spill", [False, True], ids=["in-memory", "spilled"])
def test_index_file_is_sorted_and_holds_every_kept_row(
    tmp_path: Path, spill: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(ingest, "_CHUNK", 250)
    monkeypatch.setattr(dedupe_index, "_SPILL_ROWS", 600)
    index = dedupe_index.SpanIndex(1, [], tmp_path / "spill" if spill else None)
    proc = processor(1, "quarantine", index.lookup, index.remember)
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    kept = [
        i
        for i in proc.process(records(1, 1, rows[:2000]), IngestReport(1, 1, []))
        if not isinstance(i, Quarantined)
    ]
    assert len(index.runs) == (2 if spill else 0)  # after 750 and 1,500 rows; the rest at write
    path = tmp_path / "index.parquet"
    assert index.write(path) == len(kept)
    assert not (tmp_path / "spill").exists()
    table = pq.read_table(path)
    assert table["position"].to_pylist() != list(range(len(kept)))  # sorted by hash, not row
    hashes = table["input_hash"].to_pylist()
    assert hashes == sorted(hashes)
    assert {h.hex() for h in table["row_hash"].to_pylist()} == {r.row_hash for r in kept}
