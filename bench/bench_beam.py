"""Benchmark: ingest of one span embedded vs on Apache Beam (DirectRunner, 2 worker processes).

The input is generated from the real dataset ``../shared/datasets/fine_foods_train.csv``
(product, review, score), repeated until it has ``--rows`` rows, each copy's review suffixed
with `` #copy-K`` so that no row is a duplicate, cut into ``--files`` CSV files of one span
(Beam reads files in parallel; one file is read by one worker).

Each side is ``Project(config).ingest()`` of that span in a fresh project, in its own
subprocess: ingest (read, check, dedupe, split, write shards) + statistics + validation + drift.
The Beam side's config adds ``[beam] pipeline_args = ["--runner=DirectRunner",
"--direct_num_workers=2", "--direct_running_mode=multi_processing"]``. Reported: input rows per
second of the ingest run alone (its seconds from the metadata store's run record) and end to
end, and the peak memory of the whole process tree (the side's process and every descendant,
Beam's workers included: the sum of their RSS, sampled every 0.2 s with psutil).

Run it from the repository root:

    .venv/bin/python bench/bench_beam.py                  # 1,000,000 rows, 8 files
    .venv/bin/python bench/bench_beam.py --rows 200000    # a smaller run
    .venv/bin/python bench/bench_beam.py --running-mode multi_threading   # threads, not processes
    .venv/bin/python bench/bench_beam.py --workers 1 --running-mode in_memory   # [beam]'s default
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

ENGINES = ("embedded", "beam")
REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "datasets" / "fine_foods_train.csv"
BEAM = (
    '\n[beam]\npipeline_args = ["--runner=DirectRunner", "--direct_num_workers={workers}", '
    '"--direct_running_mode={mode}"]\n'
)
CONFIG = """\
[pipeline]
name = "bench-beam"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "score"

[data.features]
review = "text"
product = "categorical"
"""


def generate(data: Path, rows: int, files: int) -> None:
    """Write ``rows`` unique rows into ``files`` CSV files under ``data/span-1/``."""
    with open(SOURCE, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        columns = next(reader)
        source = list(reader)
    review = columns.index("review")
    span = data / "span-1"
    span.mkdir(parents=True)
    per_file = -(-rows // files)
    outs = [
        open(span / f"part-{k:02d}.csv", "w", newline="", encoding="utf-8") for k in range(files)
    ]
    writers = [csv.writer(out, quoting=csv.QUOTE_ALL) for out in outs]
    for writer in writers:
        writer.writerow(columns)
    for n in range(rows):
        row = list(source[n % len(source)])
        row[review] += f" #copy-{n // len(source)}"
        writers[n // per_file].writerow(row)
    for out in outs:
        out.close()


def side(engine: str, workdir: Path, mode: str, workers: int) -> dict[str, Any]:
    """Ingest the span in a fresh project; the run's seconds and counts."""
    from evergreen import config as config_mod
    from evergreen.project import Project

    project_dir = workdir / engine
    shutil.rmtree(project_dir, ignore_errors=True)
    project_dir.mkdir()
    (project_dir / "data").symlink_to(workdir / "data")
    config = project_dir / "evergreen.toml"
    beam = BEAM.format(mode=mode, workers=workers) if engine == "beam" else ""
    config.write_text(CONFIG + beam, encoding="utf-8")
    from evergreen.errors import EvergreenError

    started = time.perf_counter()
    with Project(config_mod.load(config)) as project:
        try:
            (outcome,) = project.ingest()
        except EvergreenError as e:  # e.g. BeamError: the runner lost rows; reported, not hidden
            return {"error": str(e)}
        seconds = time.perf_counter() - started
        runs = {r.component: r.seconds for r in project.store.runs()}
    return {
        "rows_read": outcome.report["rows_read"],
        "rows_written": sum(outcome.report["rows_written"].values()),
        "seconds_end_to_end": seconds,
        "seconds_ingest": runs["ingest"],
        "seconds_statistics": runs["statistics"],
    }


def measure(engine: str, workdir: Path, mode: str, workers: int) -> dict[str, Any]:
    """Run one side in a subprocess; its result and the peak RSS of its process tree."""
    import psutil

    command = [sys.executable, __file__, "--side", engine, "--workdir", str(workdir)]
    command += ["--running-mode", mode, "--workers", str(workers)]
    cpu_before = _children_cpu()
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    root = psutil.Process(child.pid)
    peak = 0
    while child.poll() is None:
        try:
            tree = [root, *root.children(recursive=True)]
            peak = max(peak, sum(_rss(p) for p in tree))
        except psutil.NoSuchProcess:
            pass
        time.sleep(0.2)
    out, _ = child.communicate()
    if child.returncode:
        raise SystemExit(f"{engine} side failed ({child.returncode})")
    result = json.loads(out.strip().splitlines()[-1])
    result["peak_tree_rss"] = peak
    # CPU of the side and every descendant it reaped (Beam's workers): beside the wall seconds,
    # it shows how much of the wall time the shared machine gave us.
    result["cpu_seconds"] = _children_cpu() - cpu_before
    result["wall_seconds"] = time.perf_counter() - started
    print(f"{engine}: {result}", flush=True)
    return result


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def _rss(process: Any) -> int:
    try:
        return int(process.memory_info().rss)
    except Exception:  # a worker that just exited
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--files", type=int, default=8)
    parser.add_argument("--workdir", type=Path)
    parser.add_argument("--side", choices=("embedded", "beam"))
    parser.add_argument(
        "--running-mode",
        default="multi_processing",
        choices=("multi_processing", "multi_threading", "in_memory"),
        help="DirectRunner's --direct_running_mode for the Beam side",
    )
    parser.add_argument(
        "--workers", type=int, default=2, help="DirectRunner's --direct_num_workers (default 2)"
    )
    args = parser.parse_args()
    if args.side:
        print(json.dumps(side(args.side, args.workdir, args.running_mode, args.workers)))
        return
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="bench-beam-"))
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine: {platform.platform()}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.1f} at start"
    )
    generate(workdir / "data", args.rows, args.files)
    print(
        f"Beam: DirectRunner, --direct_num_workers={args.workers}, "
        f"--direct_running_mode={args.running_mode}"
    )
    results = {
        engine: measure(engine, workdir, args.running_mode, args.workers) for engine in ENGINES
    }
    print(f"load average {os.getloadavg()[0]:.1f} at end; {args.rows:,} rows in {args.files} files")
    _table(results)
    shutil.rmtree(workdir, ignore_errors=True)


def _table(results: dict[str, dict[str, Any]]) -> None:
    e, b = results["embedded"], results["beam"]
    for engine, result in results.items():  # a failed side still has its time and memory
        print(
            f"{engine}: {result['wall_seconds']:,.0f} s wall, {result['cpu_seconds']:,.0f} s CPU"
            " (the side's process tree, subprocess start included), peak RSS of the tree "
            f"{result['peak_tree_rss'] / 2**20:,.0f} MiB"
        )
    for engine, result in results.items():
        if "error" in result:
            print(f"{engine} FAILED: {result['error']}")
            return
    assert e["rows_written"] == b["rows_written"], (e, b)
    lines = [
        (
            "rows/s, the ingest run",
            e["rows_read"] / e["seconds_ingest"],
            b["rows_read"] / b["seconds_ingest"],
        ),
        (
            "rows/s, end to end",
            e["rows_read"] / e["seconds_end_to_end"],
            b["rows_read"] / b["seconds_end_to_end"],
        ),
        (
            "peak RSS of the process tree, MiB",
            e["peak_tree_rss"] / 2**20,
            b["peak_tree_rss"] / 2**20,
        ),
    ]
    print(f"| {'':38} | embedded | Beam, 2 workers | Beam / embedded |")
    print(f"| {'-' * 38} | -------- | --------------- | --------------- |")
    for name, x, y in lines:
        print(f"| {name:38} | {x:8,.0f} | {y:15,.0f} | {y / x:14.2f}× |")
    print(
        f"rows kept: {e['rows_written']:,} (both); statistics run: "
        f"{e['seconds_statistics']:.1f} s embedded, {b['seconds_statistics']:.1f} s on Beam"
    )


if __name__ == "__main__":
    main()
