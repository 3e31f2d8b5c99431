"""Benchmark: checking a new span against the dedupe index, parquet files vs a SQL row index.

For each size N (default 10^5, 10^6 and 10^7) it generates N stored rows (random 128-bit input
and row hashes, labels from 5 classes) spread over 10 spans, and stores them twice:

* **files**: sorted parquet files per span, as ingest writes them (:mod:`evergreen.dedupe_index`);
* **sql**: a SQLite ``row_index`` table, one SQL row per data row: the schema and lookup query
  the metadata store used before the files (copied here, below, so that this baseline does not
  depend on the product keeping that legacy table).

Then a new span of ``--new`` rows (default 2,000; 10 % of them repeat stored inputs) is checked:
``SpanIndex.lookup`` (one Arrow join per file) vs the SQL lookup (``IN`` queries of 900 keys).
Each check runs in a fresh subprocess, so its peak RSS is its own; the answers of both are
compared. Seconds are ``time.perf_counter`` (wall) and ``time.process_time`` (CPU, all threads)
around the check only; the build is not what is measured. Each side is checked twice: **cold**,
its files first evicted from the OS page cache (``fsync`` + ``posix_fadvise(DONTNEED)`` on those
files only: what a check costs when the index is larger than memory, as at 10^9 rows), then
**warm**, the same check again with the pages the cold one read still cached.

The SQL side is built the fast way (the product grew it one ingest at a time): the rows of all
spans inserted with ``executemany`` in batches inside one transaction, the two indexes created
after loading. SQLite stores a table's non-integer primary key as a unique index, so a unique
index created afterwards gives the same b-trees and the same query plan.

    .venv/bin/python bench/bench_dedupe.py                   # 10^5 to 10^7 (~5 GB disk)
    .venv/bin/python bench/bench_dedupe.py --sizes 1000000   # one size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import sqlalchemy as sa

REPO = Path(__file__).resolve().parent.parent
SPANS = 10
LABELS = ["a", "b", "c", "d", "e"]
PIPELINE = "bench"
CHUNK = 1_000_000  # stored rows generated at a time (and per parquet file)
LOOKUP_CHUNK = 900  # keys per IN query: under SQLite's bound-parameter limit, as the store used

# The metadata store's row index, as it was: one SQL row per unique (inputs, label) data row.
_META = sa.MetaData()
ROW_INDEX = sa.Table(
    "row_index",
    _META,
    sa.Column("pipeline", sa.String(200), primary_key=True),
    sa.Column("row_hash", sa.String(32), primary_key=True),
    sa.Column("input_hash", sa.String(32), nullable=False),
    sa.Column("label", sa.Text, nullable=False),
    sa.Column("span", sa.Integer, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Index("ix_row_index_input", "pipeline", "input_hash"),
)
# The same table for a bulk load: no key while loading, its indexes created afterwards.
_BULK_TABLE = (
    "CREATE TABLE row_index (pipeline VARCHAR(200) NOT NULL, row_hash VARCHAR(32) NOT NULL,"
    " input_hash VARCHAR(32) NOT NULL, label TEXT NOT NULL, span INTEGER NOT NULL,"
    " version INTEGER NOT NULL)"
)
_BULK_INDEXES = (
    "CREATE UNIQUE INDEX pk_row_index ON row_index (pipeline, row_hash)",
    "CREATE INDEX ix_row_index_input ON row_index (pipeline, input_hash)",
)


def hexes(rng: np.random.Generator, n: int) -> list[str]:
    data = rng.bytes(16 * n).hex()
    return [data[i : i + 32] for i in range(0, 32 * n, 32)]


def generate(n: int) -> Iterator[tuple[int, int, list[str], list[str], list[str]]]:
    """The N stored rows, chunk by chunk: (span, first position, inputs, rows, labels)."""
    rng = np.random.default_rng(0)
    per_span = n // SPANS
    for span in range(1, SPANS + 1):
        for start in range(0, per_span, CHUNK):
            count = min(CHUNK, per_span - start)
            inputs, rows = hexes(rng, count), hexes(rng, count)
            labels = [LABELS[i] for i in rng.integers(0, len(LABELS), count)]
            yield span, start, inputs, rows, labels


def build(folder: Path, n: int) -> dict[str, float]:
    """Write the N stored rows as parquet files and as the SQLite row index (reused if there).

    Returns the seconds each side took to build (0 when reused)."""
    marker = folder / "built"
    if marker.exists():
        return {"files": 0.0, "sql": 0.0}
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    seconds = {"files": 0.0, "sql": 0.0}
    db = sqlite3.connect(folder / "sql.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=OFF")  # a throwaway build: no rollback journal needed
    db.execute("PRAGMA synchronous=OFF")
    db.execute("PRAGMA cache_size=-262144")  # 256 MiB for sorting the index keys
    db.execute(_BULK_TABLE)
    db.execute("BEGIN")
    for span, start, inputs, rows, labels in generate(n):
        started = time.perf_counter()
        write_files(folder, span, start, inputs, rows, labels)
        seconds["files"] += time.perf_counter() - started
        started = time.perf_counter()
        insert_rows(db, span, inputs, rows, labels)
        seconds["sql"] += time.perf_counter() - started
    started = time.perf_counter()
    for statement in _BULK_INDEXES:
        db.execute(statement)
    db.execute("COMMIT")
    (stored,) = db.execute("SELECT count(*) FROM row_index").fetchone()
    db.close()
    seconds["sql"] += time.perf_counter() - started
    assert stored == n // SPANS * SPANS, stored
    marker.write_text(str(n))
    return seconds


def insert_rows(
    db: sqlite3.Connection, span: int, inputs: list[str], rows: list[str], labels: list[str]
) -> None:
    batch = 100_000
    for s in range(0, len(rows), batch):
        db.executemany(
            "INSERT INTO row_index (pipeline, row_hash, input_hash, label, span, version)"
            " VALUES (?, ?, ?, ?, ?, 1)",
            [
                (PIPELINE, r, i, label, span)
                for i, r, label in zip(
                    inputs[s : s + batch], rows[s : s + batch], labels[s : s + batch], strict=True
                )
            ],
        )


def write_files(
    folder: Path, span: int, start: int, inputs: list[str], rows: list[str], labels: list[str]
) -> None:
    """One sorted index file, as ``SpanIndex.write`` writes it (sort, row group size)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from evergreen import dedupe_index

    table = pa.table(
        [
            dedupe_index.hashes_array(inputs),
            dedupe_index.hashes_array(rows),
            pa.array(labels, pa.string()),
            pa.array(range(start, start + len(rows)), pa.int64()),
        ],
        schema=dedupe_index.SCHEMA,
    )
    table = table.sort_by([("input_hash", "ascending"), ("position", "ascending")])
    path = folder / f"span-{span}-{start // CHUNK}.parquet"
    pq.write_table(table, path, row_group_size=1 << 17)


def sql_lookup(conn: sa.Connection, input_hashes: list[str]) -> dict[str, list[Any]]:
    """Stored rows whose inputs hash to any of ``input_hashes``, grouped by input hash: the
    query ``MetadataStore.lookup_inputs`` ran, chunk by chunk."""
    found: dict[str, list[Any]] = {}
    keys = list(set(input_hashes))
    t = ROW_INDEX
    for start in range(0, len(keys), LOOKUP_CHUNK):
        query = sa.select(t.c.row_hash, t.c.input_hash, t.c.label, t.c.span).where(
            t.c.pipeline == PIPELINE,
            t.c.input_hash.in_(keys[start : start + LOOKUP_CHUNK]),
        )
        for r in conn.execute(query).all():
            found.setdefault(r.input_hash, []).append(r)
    return found


def sqlite_engine(path: Path) -> sa.Engine:
    """An engine with the pragmas the metadata store sets on every SQLite connection."""
    engine = sa.create_engine(f"sqlite:///{path}")

    @sa.event.listens_for(engine, "connect")
    def _pragmas(dbapi_connection: Any, _record: Any) -> None:
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.close()

    return engine


def new_span(folder: Path, rows: int) -> list[str]:
    """The new span's input hashes: 10 % taken from the stored rows, the rest new."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    stored = pq.read_table(sorted(folder.glob("span-*.parquet"))[0], columns=["input_hash"])
    repeats = [h.hex() for h in stored["input_hash"].to_pylist()[: rows // 10]]
    return repeats + hexes(rng, rows - len(repeats))


SIDE_FILES = {"files": "span-*.parquet", "sql": "sql.db*"}


def evict(folder: Path, side: str) -> None:
    """Drop the side's files from the OS page cache (only these files; no root needed)."""
    for path in folder.glob(SIDE_FILES[side]):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)  # dirty pages cannot be dropped: write them first
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def check(side: str, folder: Path, rows: int, cold: bool) -> dict[str, Any]:
    """Look the new span up on one side; its seconds (wall and CPU) and its answer."""
    from evergreen import dedupe_index

    hashes = new_span(folder, rows)
    if cold:
        evict(folder, side)
    rss_before = _rss()
    reset_peak_rss()
    if side == "files":
        sources = [
            dedupe_index.IndexSource(int(p.name.split("-")[1]), i, p)
            for i, p in enumerate(sorted(folder.glob("span-*.parquet")))
        ]
        started, cpu = time.perf_counter(), time.process_time()
        found = dedupe_index.SpanIndex(0, sources).lookup(hashes)
    else:
        engine = sqlite_engine(folder / "sql.db")
        started, cpu = time.perf_counter(), time.process_time()
        with engine.connect() as conn:
            found = sql_lookup(conn, hashes)
    seconds, cpu = time.perf_counter() - started, time.process_time() - cpu
    peak = peak_rss()
    answer = sorted((k, sorted(r.row_hash for r in v)) for k, v in found.items())
    return {
        "seconds": seconds,
        "cpu": cpu,
        "found": len(found),
        "answer": answer,
        "rss_before": rss_before,
        "peak_rss": peak,
    }


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def reset_peak_rss() -> None:
    """Start the kernel's peak-RSS mark (VmHWM) again from the current RSS (Linux >= 4.0)."""
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")


def peak_rss() -> int:
    """The process's peak RSS since :func:`reset_peak_rss` (VmHWM, bytes).

    Not ``ru_maxrss`` from ``wait4``: Linux carries it over ``exec`` from the forking parent,
    so a child of this (large) bench process would report the parent's peak."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def spawn(side: str, folder: Path, rows: int, cold: bool) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--folder",
        str(folder),
        "--new",
        str(rows),
        *(["--cold"] if cold else []),
    ]
    done = subprocess.run(command, stdout=subprocess.PIPE, text=True)
    if done.returncode != 0:
        sys.exit(f"the {side} check failed: {shlex.join(command)}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def size_on_disk(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="100000,1000000,10000000", help="stored rows, comma-separated"
    )
    parser.add_argument("--new", type=int, default=2_000, help="rows in the new span")
    parser.add_argument("--workdir", help="where to build the indexes (default: a temp dir)")
    parser.add_argument("--side", choices=("files", "sql"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    parser.add_argument("--cold", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(check(args.side, Path(args.folder), args.new, args.cold)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evergreen-dedupe-"))
    print("command:  " + shlex.join(sys.orig_argv))
    print(
        f"machine:  {os.cpu_count()} cpus, {platform.platform()}, python {platform.python_version()}"
    )
    print(f"load:     {os.getloadavg()[0]:.1f} (1-minute load average at the start)")
    print(f"new span: {args.new:,} rows, 10 % of them already stored\n")
    print(
        f"{'stored':>12} {'index':>6} {'cache':>5} {'check s':>9} {'CPU s':>7} {'ratio':>7}"
        f" {'peak RSS':>10} {'RSS added':>10} {'on disk':>10} {'build s':>8}"
    )
    for n in (int(s) for s in args.sizes.split(",")):
        measure_size(workdir / f"n{n}", n, args.new)
    print(f"\nload:     {os.getloadavg()[0]:.1f} (1-minute load average at the end)")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


def measure_size(folder: Path, n: int, new: int) -> None:
    """Build (or reuse) the N stored rows, check the new span on both sides (cold, then warm)."""
    built = build(folder, n)
    disk = {side: size_on_disk(folder, pattern) for side, pattern in SIDE_FILES.items()}
    for cache in ("cold", "warm"):
        results = {side: spawn(side, folder, new, cache == "cold") for side in ("files", "sql")}
        assert results["files"]["answer"] == results["sql"]["answer"], "the indexes disagree"
        for name, r in results.items():
            ratio = r["seconds"] / results["sql"]["seconds"]
            print(
                f"{n:>12,} {name:>6} {cache:>5} {r['seconds']:>9.3f} {r['cpu']:>7.3f}"
                f" {ratio:>6.2f}x {r['peak_rss'] / 2**20:>6.0f} MiB"
                f" {(r['peak_rss'] - r['rss_before']) / 2**20:>6.0f} MiB"
                f" {disk[name] / 2**20:>6.0f} MiB {built[name]:>8.0f}",
                flush=True,
            )
    print(
        f"{'':>12} both found {results['files']['found']:,} stored inputs among the new rows;"
        f" load {os.getloadavg()[0]:.1f}",
        flush=True,
    )


if __name__ == "__main__":
    main()
