"""Benchmark: checking a new span against the dedupe index, parquet files vs the SQL index.

For each size N (default 10^6 and 10^7) it generates N stored rows (random 128-bit input and
row hashes, labels from 5 classes) spread over 10 spans, and stores them twice:

* **files**: one sorted ``index.parquet`` per span, as ingest writes them
  (:mod:`evergreen.dedupe_index`);
* **sql**: the metadata store's ``row_index`` table in SQLite (one SQL row per data row, with
  its two indexes), as ingest used it before.

Then a new span of ``--new`` rows (default 10,000; 10 % of them repeat stored inputs) is
checked: ``SpanIndex.lookup`` (one Arrow join per file) vs ``MetadataStore.lookup_inputs``
(``IN`` queries of 900 keys). Each check runs in a fresh subprocess, so its peak RSS is its
own; the answers of both are compared. Seconds are ``time.perf_counter`` around the check only.

    .venv/bin/python bench/bench_dedupe.py                   # 10^6 and 10^7 (minutes, ~3 GB disk)
    .venv/bin/python bench/bench_dedupe.py --sizes 1000000   # one size
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parent.parent
SPANS = 10
LABELS = ["a", "b", "c", "d", "e"]


def hexes(rng: np.random.Generator, n: int) -> list[str]:
    data = rng.bytes(16 * n).hex()
    return [data[i : i + 32] for i in range(0, 32 * n, 32)]


def build(folder: Path, n: int) -> None:
    """Write the N stored rows as parquet files and as the SQLite row index (reused if there)."""
    import pyarrow as pa
    import pyarrow.parquet as pq
    import sqlalchemy as sa

    from evergreen import dedupe_index
    from evergreen.metadata import MetadataStore, row_index_table

    marker = folder / "built"
    if marker.exists():
        return
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    store = MetadataStore(f"sqlite:///{folder / 'sql.db'}", "bench")
    rng = np.random.default_rng(0)
    per_span = n // SPANS
    for span in range(1, SPANS + 1):
        for start in range(0, per_span, 1_000_000):
            count = min(1_000_000, per_span - start)
            inputs, rows = hexes(rng, count), hexes(rng, count)
            labels = [LABELS[i] for i in rng.integers(0, len(LABELS), count)]
            with store.transaction() as conn:  # the driver's executemany: the fast way in
                conn.exec_driver_sql(
                    "INSERT INTO row_index (pipeline, row_hash, input_hash, label, span, version)"
                    " VALUES (?, ?, ?, ?, ?, 1)",
                    [
                        ("bench", r, i, label, span)
                        for i, r, label in zip(inputs, rows, labels, strict=True)
                    ],
                )
            table = pa.table(
                [
                    dedupe_index.hashes_array(inputs),
                    dedupe_index.hashes_array(rows),
                    pa.array(labels, pa.string()),
                    pa.array(range(start, start + count), pa.int64()),
                ],
                schema=dedupe_index.SCHEMA,
            )
            pq.write_table(
                table.sort_by("input_hash"), folder / f"span-{span}-{start // 1_000_000}.parquet"
            )
    with store.engine.connect() as conn:
        stored = conn.execute(sa.select(sa.func.count()).select_from(row_index_table)).scalar()
    assert stored == per_span * SPANS
    store.close()
    marker.write_text(str(n))


def new_span(folder: Path, rows: int) -> list[str]:
    """The new span's input hashes: 10 % taken from the stored rows, the rest new."""
    import pyarrow.parquet as pq

    rng = np.random.default_rng(1)
    stored = pq.read_table(sorted(folder.glob("span-*.parquet"))[0], columns=["input_hash"])
    repeats = [h.hex() for h in stored["input_hash"].to_pylist()[: rows // 10]]
    return repeats + hexes(rng, rows - len(repeats))


def check(side: str, folder: Path, rows: int) -> dict[str, Any]:
    from evergreen import dedupe_index
    from evergreen.metadata import MetadataStore

    hashes = new_span(folder, rows)
    rss_before = _rss()
    if side == "files":
        sources = [
            dedupe_index.IndexSource(int(p.name.split("-")[1]), i, p)
            for i, p in enumerate(sorted(folder.glob("span-*.parquet")))
        ]
        started = time.perf_counter()
        found = dedupe_index.SpanIndex(0, sources).lookup(hashes)
    else:
        store = MetadataStore(f"sqlite:///{folder / 'sql.db'}", "bench")
        started = time.perf_counter()
        with store.engine.connect() as conn:
            found = store.lookup_inputs(conn, hashes)
    seconds = time.perf_counter() - started
    answer = sorted((k, sorted(r.row_hash for r in v)) for k, v in found.items())
    return {"seconds": seconds, "found": len(found), "answer": answer, "rss_before": rss_before}


def _rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def spawn(side: str, folder: Path, rows: int) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        "--side",
        side,
        "--folder",
        str(folder),
        "--new",
        str(rows),
    ]
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    out = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    if os.waitstatus_to_exitcode(status) != 0:
        sys.exit(f"the {side} check failed: {shlex.join(command)}")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024
    return result


def size_on_disk(folder: Path, pattern: str) -> int:
    return sum(p.stat().st_size for p in folder.glob(pattern))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000000,10000000", help="stored rows, comma-separated")
    parser.add_argument("--new", type=int, default=10_000, help="rows in the new span")
    parser.add_argument("--workdir", help="where to build the indexes (default: a temp dir)")
    parser.add_argument("--side", choices=("files", "sql"), help=argparse.SUPPRESS)
    parser.add_argument("--folder", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        print(json.dumps(check(args.side, Path(args.folder), args.new)))
        return
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evergreen-dedupe-"))
    print("command:  " + shlex.join(sys.orig_argv))
    print(
        f"machine:  {os.cpu_count()} cpus, {platform.platform()}, python {platform.python_version()}"
    )
    print(f"load:     {os.getloadavg()[0]:.1f} (1-minute load average at the start)")
    print(f"new span: {args.new:,} rows, 10 % of them already stored\n")
    header = (
        f"{'stored':>12} {'index':>6} {'check s':>9} {'ratio':>7} {'peak RSS':>10} {'on disk':>10}"
    )
    print(header)
    for n in (int(s) for s in args.sizes.split(",")):
        folder = workdir / f"n{n}"
        started = time.perf_counter()
        build(folder, n)
        print(f"(built {n:,} stored rows in {time.perf_counter() - started:.0f}s)", file=sys.stderr)
        files, sql = spawn("files", folder, args.new), spawn("sql", folder, args.new)
        assert files["answer"] == sql["answer"], "the two indexes disagree"
        disk = {
            "files": size_on_disk(folder, "span-*.parquet"),
            "sql": size_on_disk(folder, "sql.db*"),
        }
        for name, r in (("files", files), ("sql", sql)):
            ratio = r["seconds"] / sql["seconds"]
            print(
                f"{n:>12,} {name:>6} {r['seconds']:>9.3f} {ratio:>6.2f}x "
                f"{r['peak_rss'] / 2**20:>7.0f} MiB"
                f" {(r['peak_rss'] - r['rss_before']) / 2**20:>10.0f} MiB"
                f" {disk[name] / 2**20:>6.0f} MiB"
            )
        print(f"{'':>12} both found {files['found']:,} stored inputs among the new rows")
    if not args.workdir:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
