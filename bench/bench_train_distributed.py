"""Benchmark: training examples/s in one process vs 2 workers (``MultiWorkerMirroredStrategy``).

The scale-out benchmark's training rows. The same fine foods span (``--rows`` of
``../shared/datasets/fine_foods_train.csv``, a full training of ``--epochs`` epochs) is trained
three ways, one after the other, in fresh projects:

* **keras fit**: ``evergreen run`` with ``train.distribution = "none"`` (today's default);
* **1 worker loop**: ``evergreen run`` with ``"multi_worker"`` and no TF_CONFIG: the custom
  ``strategy.run`` loop alone, to separate its cost from the second worker's;
* **2 workers**: ``evergreen train-worker`` twice on loopback, each with its TF_CONFIG.

Each row reports the held-out accuracy of the published model on ``fine_foods_test.csv``
(1,000 rows), the train step's seconds (``seconds.train`` of the run record: model build,
epochs, export) and examples/s = rows trained / those seconds, and the ratio to keras fit; and,
since the machine may be shared, the whole run's wall seconds beside the CPU seconds of its
processes (every worker; ingest to push), which another job's load disturbs far less.
Expect no speedup on one 2-core machine: two workers share the same cores and add a gradient
all-reduce per step. On a cluster each worker brings its own cores or GPU, so examples/s grows
with the workers until the per-step all-reduce (the model's size / network bandwidth) dominates.

    .venv/bin/python bench/bench_train_distributed.py [--rows 3000 --epochs 3 --repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
CONFIG = """\
[pipeline]
name = "bench-distributed"
root = ".evergreen"

[data]
pattern = "data/span-{{SPAN}}/*.csv"
label = "score"

[data.features]
product = "categorical"
review = "text"

[train]
epochs = {epochs}
patience = {epochs}
distribution = "{distribution}"
"""


def make_project(folder: Path, rows: int, epochs: int, distribution: str) -> Path:
    """A project with one span of ``rows`` fine foods reviews; returns its config."""
    lines = (DATASETS / "fine_foods_train.csv").read_text(encoding="utf-8").splitlines(True)
    span = folder / "data" / "span-1"
    span.mkdir(parents=True)
    # Reviews hold no newlines in this file: lines are rows (the header first).
    (span / "reviews.csv").write_text("".join(lines[: rows + 1]), encoding="utf-8")
    config = folder / "evergreen.toml"
    config.write_text(CONFIG.format(epochs=epochs, distribution=distribution), encoding="utf-8")
    return config


def train(config: Path, workers: int) -> dict:
    """Run the loop (``run``, or ``train-worker`` per worker); the chief's record of span 1."""
    from evergreen.training.strategy import local_tf_configs

    command = "run" if workers == 0 else "train-worker"
    procs = []
    for tf_config in local_tf_configs(workers) if workers else [""]:
        env = {k: v for k, v in os.environ.items() if k != "TF_CONFIG"}
        if tf_config:
            env["TF_CONFIG"] = tf_config
        argv = [sys.executable, "-m", "evergreen", command, "-c", str(config), "--json"]
        procs.append(subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, text=True))
    cpu = _children_cpu()
    outputs = [p.communicate()[0] for p in procs]
    record_cpu = _children_cpu() - cpu
    if any(p.returncode for p in procs):
        raise SystemExit(f"{command} failed: exit codes {[p.returncode for p in procs]}")
    [record] = json.loads(outputs[0])
    record["cpu_seconds_all_workers"] = record_cpu
    return record


def _children_cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def rows_and_accuracy(config: Path) -> tuple[int, float]:
    """Rows trained (from the candidate's properties); the champion's held-out accuracy."""
    import csv

    from evergreen import config as config_mod
    from evergreen.models.saved_model import feed_saved_model
    from evergreen.project import Project
    from evergreen.registry import Registry

    cfg = config_mod.load(config)
    with Project(cfg) as project:
        [model] = project.store.artifacts(type="Model")
    with open(DATASETS / "fine_foods_test.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    saved_model = Registry(cfg.registry_dir).get(cfg.name, "champion").path
    probabilities, classes = feed_saved_model(saved_model, rows)
    hits = sum(classes[i] == r["score"] for i, r in zip(probabilities.argmax(1), rows, strict=True))
    return int(model.properties["rows_trained"]), hits / len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=3000)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    print(f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f} at start")  # fmt: skip
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    print("GPU: none on this machine (GPU and MirroredStrategy checks need a session with one)")
    ways = [("keras fit (1 process)", "none", 0), ("1 worker loop", "multi_worker", 0)]
    ways.append(("2 workers (loopback)", "multi_worker", 2))
    results: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    accuracy: dict[str, list[float]] = {name: [] for name, _, _ in ways}
    with tempfile.TemporaryDirectory() as tmp:
        for repeat in range(args.repeats):
            for name, distribution, workers in ways:  # interleaved: the same load for each
                folder = Path(tmp) / f"{repeat}-{distribution}-{workers}"
                config = make_project(folder, args.rows, args.epochs, distribution)
                started = time.perf_counter()
                record = train(config, workers)
                wall = time.perf_counter() - started
                rows, held_out = rows_and_accuracy(config)
                results[name].append(rows / record["seconds"]["train"])
                accuracy[name].append(held_out)
                cpu = record["cpu_seconds_all_workers"]
                print(f"{name}: the run took {wall:.0f} s wall, {cpu:.0f} s CPU", flush=True)
    base = sum(results[ways[0][0]]) / args.repeats
    print(f"\n{args.rows} rows x {args.epochs} epochs, batch 64, text CNN")
    print(f"{'training':<24} {'examples/s':>11} {'vs keras fit':>13} {'held-out accuracy':>18}")
    for name, _, _ in ways:
        rate = sum(results[name]) / args.repeats
        held_out = sum(accuracy[name]) / args.repeats
        print(f"{name:<24} {rate:>11.0f} {rate / base:>12.2f}x {held_out:>18.3f}")
    print(f"load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
