"""Benchmark: Evergreen's ingest against a plain pandas + TFRecordWriter baseline.

What it measures, on one large CSV made from the real dataset
``../shared/datasets/fine_foods_train.csv`` (columns product, review, score), repeated until it
has ``--rows`` rows, each copy's review suffixed with `` #copy-K`` so that no row is a duplicate:

* **evergreen**: ``Project(config.load("evergreen.toml")).ingest()`` on one span holding that
  file, with ``label = "score"`` and features ``{review = "text", product = "categorical"}``.
  That is ingest (read, check, hash, dedupe through the parquet dedupe index, split, write
  TFRecord shards and the span's sketches) plus statistics and validation; the ingest run's own
  seconds (from the metadata store's run records) are reported beside the end-to-end time.
* **baseline**: ``pandas.read_csv`` of the whole file, then ``tf.io.TFRecordWriter`` writing one
  ``tf.train.Example`` per row (product, review and score each as a one-value ``bytes_list``).

Each side runs in its own fresh subprocess (``--side``) so that its peak RSS is its own: the
parent collects each child's ``ru_maxrss`` with ``os.wait4``. Timings are ``time.perf_counter``
around the work only (imports of pandas/TensorFlow/Evergreen excluded), sent back as JSON on
stdout. Throughput is input rows per second.

Run it from the repository root:

    .venv/bin/python bench/bench_ingest.py               # ~1,000,000 rows (~420 MB), minutes
    .venv/bin/python bench/bench_ingest.py --quick       # ~100,000 rows, a smoke run
    .venv/bin/python bench/bench_ingest.py --rows 300000 --workdir /tmp/evb --keep
    .venv/bin/python bench/bench_ingest.py --quick --profile /tmp/ingest.prof   # + cProfile
    .venv/bin/python bench/bench_ingest.py --rows 300000 --repeats 5   # median of 5 pairs

``--profile`` runs the Evergreen side under cProfile (slower; its timings are then not
comparable) and prints the top functions by own time.
"""

from __future__ import annotations

import argparse
import csv
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "datasets" / "fine_foods_train.csv"
DEFAULT_ROWS = 1_000_000
QUICK_ROWS = 100_000
CONFIG = """\
[pipeline]
name = "bench-ingest"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "score"

[data.features]
review = "text"
product = "categorical"
"""


# -- input ------------------------------------------------------------------------------------
def generate(workdir: Path, rows: int) -> Path:
    """Write ``workdir/data/span-1/reviews.csv`` with ``rows`` unique rows (reused if present)."""
    target = workdir / "data" / "span-1" / "reviews.csv"
    marker = workdir / "reviews.rows"  # outside data/, so the span pattern never matches it
    if target.exists() and marker.exists() and marker.read_text() == str(rows):
        return target
    with open(SOURCE, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        columns = next(reader)
        source_rows = list(reader)
    review = columns.index("review")
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f, quoting=csv.QUOTE_ALL)
        writer.writerow(columns)
        written, copy = 0, 0
        while written < rows:
            for row in source_rows[: rows - written]:
                row = list(row)
                row[review] += f" #copy-{copy}"
                writer.writerow(row)
            written += min(len(source_rows), rows - written)
            copy += 1
    marker.write_text(str(rows))
    return target


# -- the two sides, each run in its own subprocess ----------------------------------------------
def run_baseline(csv_path: Path, out_dir: Path) -> dict[str, Any]:
    import pandas as pd
    import psutil

    from evergreen.tf import tensorflow

    tf = tensorflow()
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    output = out_dir / "examples.tfrecord"

    def feature(value: str) -> Any:
        return tf.train.Feature(bytes_list=tf.train.BytesList(value=[value.encode("utf-8")]))

    rss_before = psutil.Process().memory_info().rss
    cpu_started = _cpu()
    started = time.perf_counter()
    frame = pd.read_csv(csv_path, dtype=str, keep_default_na=False)
    read_seconds = time.perf_counter() - started
    rows = 0
    with tf.io.TFRecordWriter(str(output)) as writer:
        for product, review, score in zip(
            frame["product"], frame["review"], frame["score"], strict=True
        ):
            example = tf.train.Example(
                features=tf.train.Features(
                    feature={
                        "product": feature(product),
                        "review": feature(review),
                        "score": feature(score),
                    }
                )
            )
            writer.write(example.SerializeToString())
            rows += 1
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu() - cpu_started
    return {
        "cpu_seconds": cpu_seconds,
        "rows_read": len(frame),
        "rows_written": rows,
        "seconds": seconds,
        "read_seconds": read_seconds,
        "rss_before": rss_before,
        "output_bytes": output.stat().st_size,
    }


def run_evergreen(workdir: Path, profile: str | None) -> dict[str, Any]:
    import psutil

    import evergreen.config
    import evergreen.project
    from evergreen.tf import tensorflow

    tensorflow()  # import it now, so that its seconds are not counted as ingest
    shutil.rmtree(workdir / ".evergreen", ignore_errors=True)  # a fresh store: nothing cached
    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    rss_before = psutil.Process().memory_info().rss
    cpu_started = _cpu()
    started = time.perf_counter()
    project = evergreen.project.Project(evergreen.config.load(workdir / "evergreen.toml"))
    outcomes = project.ingest()
    seconds = time.perf_counter() - started
    cpu_seconds = _cpu() - cpu_started
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    runs = {run.component: run.seconds for run in project.store.runs()}
    project.close()
    (outcome,) = outcomes
    report = outcome.report
    examples_dir = workdir / ".evergreen" / "artifacts" / "ingest"
    return {
        "cpu_seconds": cpu_seconds,
        "rows_read": report["rows_read"],
        "rows_written": sum(report["rows_written"].values()),
        "splits": report["rows_written"],
        "duplicates": report["duplicates_within_span"] + report["duplicates_of_earlier_spans"],
        "quarantined": sum(report["quarantined"].values()),
        "status": outcome.status,
        "seconds": seconds,
        "run_seconds": runs,
        "rss_before": rss_before,
        "output_bytes": sum(p.stat().st_size for p in examples_dir.rglob("*.tfrecord")),
    }


def _cpu() -> float:
    """CPU seconds of this process (all threads): a fairer clock than wall time on a machine
    shared with other work, where the two sides run at different moments."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def side_main(args: argparse.Namespace) -> None:
    workdir = Path(args.workdir)
    if args.side == "baseline":
        result = run_baseline(workdir / "data" / "span-1" / "reviews.csv", workdir / "baseline")
    else:
        result = run_evergreen(workdir, args.profile)
    print(json.dumps(result))


def spawn(side: str, workdir: Path, profile: str | None) -> dict[str, Any]:
    """Run one side in a fresh interpreter; its JSON result plus its own peak RSS (bytes)."""
    command = [sys.executable, __file__, "--side", side, "--workdir", str(workdir)]
    if profile and side == "evergreen":
        command += ["--profile", profile]
    started = time.perf_counter()
    child = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    assert child.stdout is not None
    stdout = child.stdout.read()
    child.stdout.close()
    _, status, usage = os.wait4(child.pid, 0)  # this child's rusage alone, not all children's
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode != 0:
        sys.exit(f"the {side} side failed (exit {child.returncode}): {shlex.join(command)}")
    result = json.loads(stdout.strip().splitlines()[-1])
    result["peak_rss"] = usage.ru_maxrss * 1024  # KiB on Linux
    result["process_seconds"] = time.perf_counter() - started
    result["command"] = shlex.join(command)
    return result


# -- report -----------------------------------------------------------------------------------
def machine() -> list[tuple[str, str]]:
    import psutil

    def version(package: str) -> str:
        try:
            return importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            return "?"

    return [
        ("cpus", f"{os.cpu_count()} logical, {psutil.cpu_count(logical=False)} physical"),
        ("ram", f"{psutil.virtual_memory().total / 2**30:.1f} GiB"),
        ("platform", platform.platform()),
        ("processor", platform.processor() or platform.machine()),
        ("python", platform.python_version()),
        ("tensorflow", version("tensorflow")),
        ("pandas", version("pandas")),
        ("evergreen", f"{version('evergreen')} at {revision()}"),
    ]


def revision() -> str:
    """The checkout's commit, with "+changes" when the working tree differs from it."""
    try:
        git = ["git", "-C", str(REPO)]
        commit = subprocess.run([*git, "rev-parse", "--short", "HEAD"], capture_output=True)
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--untracked-files=no"], capture_output=True
        )
    except OSError:
        return "unknown commit"
    if commit.returncode != 0:
        return "unknown commit"
    return commit.stdout.decode().strip() + (" +changes" if dirty.stdout.strip() else "")


def mib(n: float) -> str:
    return f"{n / 2**20:,.0f} MiB"


def show(rows: int, csv_path: Path, evergreen: dict[str, Any], baseline: dict[str, Any]) -> None:
    print("command:    " + shlex.join(sys.orig_argv))
    print(f"load:       {os.getloadavg()[0]:.1f} (1-minute load average at the end)")
    for key, value in machine():
        print(f"{key + ':':<12}{value}")
    print(f"input:      {csv_path} ({rows:,} rows, {mib(csv_path.stat().st_size)})")
    ingest_seconds = evergreen["run_seconds"].get("ingest") or float("nan")
    e_rate = evergreen["rows_read"] / evergreen["seconds"]
    i_rate = evergreen["rows_read"] / ingest_seconds
    b_rate = baseline["rows_read"] / baseline["seconds"]
    e_cpu = evergreen["rows_read"] / evergreen["cpu_seconds"]
    b_cpu = baseline["rows_read"] / baseline["cpu_seconds"]
    lines = [
        ("rows read", f"{evergreen['rows_read']:,}", f"{baseline['rows_read']:,}", ""),
        ("rows written", f"{evergreen['rows_written']:,}", f"{baseline['rows_written']:,}", ""),
        ("seconds (end to end)", f"{evergreen['seconds']:.1f}", f"{baseline['seconds']:.1f}", ""),
        ("rows/s (end to end)", f"{e_rate:,.0f}", f"{b_rate:,.0f}", f"{e_rate / b_rate:.2f}x"),
        ("CPU seconds", f"{evergreen['cpu_seconds']:.1f}", f"{baseline['cpu_seconds']:.1f}", ""),
        (
            "rows per CPU second",
            f"{e_cpu:,.0f}",
            f"{b_cpu:,.0f}",
            f"{e_cpu / b_cpu:.2f}x",
        ),
        ("seconds (ingest run)", f"{ingest_seconds:.1f}", "", ""),
        ("rows/s (ingest run)", f"{i_rate:,.0f}", f"{b_rate:,.0f}", f"{i_rate / b_rate:.2f}x"),
        (
            "peak RSS",
            mib(evergreen["peak_rss"]),
            mib(baseline["peak_rss"]),
            f"{evergreen['peak_rss'] / baseline['peak_rss']:.2f}x",
        ),
        ("RSS before the work", mib(evergreen["rss_before"]), mib(baseline["rss_before"]), ""),
        (
            "peak RSS - before",
            mib(evergreen["peak_rss"] - evergreen["rss_before"]),
            mib(baseline["peak_rss"] - baseline["rss_before"]),
            f"{(evergreen['peak_rss'] - evergreen['rss_before']) / (baseline['peak_rss'] - baseline['rss_before']):.2f}x",
        ),
        ("TFRecord output", mib(evergreen["output_bytes"]), mib(baseline["output_bytes"]), ""),
    ]
    print()
    print(f"{'':<22}{'evergreen':>14}{'baseline':>14}{'evergreen/baseline':>21}")
    for name, e, b, ratio in lines:
        print(f"{name:<22}{e:>14}{b:>14}{ratio:>21}")
    print()
    runs = ", ".join(f"{name} {s:.1f}s" for name, s in sorted(evergreen["run_seconds"].items()))
    other = evergreen["seconds"] - sum(evergreen["run_seconds"].values())
    print(f"evergreen runs: {runs}; outside runs (discover, fingerprint, store) {other:.1f}s")
    print(
        f"evergreen span: {evergreen['status']}, splits {evergreen['splits']}, "
        f"duplicates {evergreen['duplicates']}, quarantined {evergreen['quarantined']}"
    )
    print(
        f"baseline: pandas.read_csv {baseline['read_seconds']:.1f}s of {baseline['seconds']:.1f}s"
    )
    print(
        "peak RSS includes the interpreter and the imports (TensorFlow, pandas/Evergreen); "
        "'RSS before the work' is what those alone held."
    )
    for side in (evergreen, baseline):
        print(f"  {side['command']}")


def show_repeats(pairs: list[tuple[dict[str, Any], dict[str, Any]]]) -> None:
    """Every run's rows per CPU second, side by side, and the median ratio.

    The same code on the same file moves by up to a third in CPU seconds from run to run on
    this machine (both sides alike), so one run cannot settle a ratio near 1.
    """
    ratios = []
    print(f"\n{len(pairs)} alternating runs, rows per CPU second:")
    for i, (evergreen, baseline) in enumerate(pairs, start=1):
        e_cpu = evergreen["rows_read"] / evergreen["cpu_seconds"]
        b_cpu = baseline["rows_read"] / baseline["cpu_seconds"]
        ratios.append(e_cpu / b_cpu)
        rss = evergreen["peak_rss"] - evergreen["rss_before"]
        print(
            f"  run {i}: evergreen {e_cpu:,.0f}, baseline {b_cpu:,.0f}, "
            f"ratio {e_cpu / b_cpu:.2f}x, evergreen peak RSS above imports {mib(rss)}"
        )
    print(
        f"median ratio {statistics.median(ratios):.2f}x "
        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--rows", type=int, default=DEFAULT_ROWS, help="rows in the generated CSV")
    size.add_argument("--quick", action="store_true", help=f"{QUICK_ROWS:,} rows: a smoke run")
    parser.add_argument(
        "--workdir", help="where to write the CSV and outputs (default: a temp dir)"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temp dir afterwards")
    parser.add_argument("--profile", help="cProfile the evergreen side into this file")
    parser.add_argument(
        "--repeats", type=int, default=1, help="alternating runs of both sides (median shown)"
    )
    parser.add_argument("--side", choices=("evergreen", "baseline"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        side_main(args)
        return

    rows = QUICK_ROWS if args.quick else args.rows
    workdir = Path(args.workdir or tempfile.mkdtemp(prefix="evergreen-bench-")).resolve()
    try:
        workdir.mkdir(parents=True, exist_ok=True)
        started = time.perf_counter()
        csv_path = generate(workdir, rows)
        print(f"generated {csv_path} in {time.perf_counter() - started:.1f}s", file=sys.stderr)
        (workdir / "evergreen.toml").write_text(CONFIG, encoding="utf-8")
        pairs = []
        for _ in range(args.repeats):  # alternating, so that a load swing hits both sides
            baseline = spawn("baseline", workdir, None)
            pairs.append((spawn("evergreen", workdir, args.profile), baseline))
        show(rows, csv_path, *pairs[-1])
        if args.repeats > 1:
            show_repeats(pairs)
        if args.profile:
            import pstats

            print(f"\ncProfile of the evergreen side ({args.profile}), top 25 by own time:")
            pstats.Stats(args.profile).sort_stats("tottime").print_stats(25)
    finally:
        if not args.workdir and not args.keep:
            shutil.rmtree(workdir, ignore_errors=True)
        elif args.keep:
            print(f"kept {workdir}", file=sys.stderr)


if __name__ == "__main__":
    main()
