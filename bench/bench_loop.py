"""Benchmark: Evergreen's incremental loop against a full retrain on all history, day by day.

The data is the real ``../shared/datasets/fine_foods_train.csv`` cut into spans (default 2,000
rows, then 4 × 500: one delivery per "day"). Two pipelines see the same days, side by side:

* **evergreen**: ``TrainingLoop(project).run()`` after each day's span lands — a full training
  on day 1, then whatever the policy decides (incremental: warm start from the champion on the
  new span plus a replay sample no larger than it; each new text tokenized once).
* **full retrain**: the same pipeline with ``run(full=True)`` every day — the featurizer is refit
  and the model retrained from scratch on every span so far (what a team without Evergreen does).

Each day is timed around the ``run`` call (ingest of the new span included on both sides; the
ingest cost is the same). Tokens computed come from the run records' token ledger. Accuracy is
measured on ``fine_foods_test.csv`` through the exported SavedModel: Evergreen's champion (what
it serves) and the full retrain's candidate of that day.

Run it from the repository root (a few minutes on 2 cores):

    .venv/bin/python bench/bench_loop.py
    .venv/bin/python bench/bench_loop.py --sizes 4000,1000,1000 --workdir /tmp/evl --keep
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
CONFIG = """\
[pipeline]
name = "bench-loop"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "score"

[data.features]
product = "categorical"
review = "text"
"""


def read_rows(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def write_span(project: Path, number: int, header: list[str], rows: list[list[str]]) -> None:
    folder = project / "data" / f"span-{number}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


def test_accuracy(saved_model: Path, texts: list[str], truth: list[str]) -> float:
    import numpy as np

    from evergreen.components.evaluate import score_saved_model

    scores, labels = score_saved_model(saved_model, texts)
    return float(
        np.mean([labels[i] == t for i, t in zip(scores.argmax(axis=1), truth, strict=True)])
    )


def run_day(project_dir: Path, *, full: bool) -> tuple[dict[str, Any], float, Path]:
    """One day's ``run``: its record, wall seconds, and the SavedModel to score."""
    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop, champion_saved_model
    from evergreen.project import Project

    with Project(config_mod.load(project_dir / "evergreen.toml")) as project:
        start = time.perf_counter()
        [record] = [r.to_dict() for r in TrainingLoop(project).run(full=full)]
        seconds = time.perf_counter() - start
        if full:
            model = [a for a in project.store.artifacts(type="Model") if a.span == record["span"]][
                -1
            ]
            saved = Path(model.uri) / "saved_model"
        else:
            saved = champion_saved_model(project)
    return record, seconds, saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--sizes", default="2000,500,500,500,500", help="rows per span (comma-separated)"
    )
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]

    from evergreen.tf import tensorflow

    tf = tensorflow()
    header, rows = read_rows(DATASETS / "fine_foods_train.csv")
    if sum(sizes) > len(rows):
        sys.exit(f"--sizes adds up to {sum(sizes)} rows; fine_foods_train.csv has {len(rows)}")
    _, test_rows = read_rows(DATASETS / "fine_foods_test.csv")
    test_texts, test_truth = [r[1] for r in test_rows], [r[2] for r in test_rows]

    work = args.workdir or Path(tempfile.mkdtemp(prefix="evergreen-bench-loop-"))
    sides = {"evergreen": work / "evergreen", "full": work / "full"}
    for folder in sides.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "evergreen.toml").write_text(CONFIG, encoding="utf-8")

    print(f"command   : {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine   : {platform.platform()}, {os.cpu_count()} cpus, python {platform.python_version()}, tensorflow {tf.__version__}"
    )
    print(
        f"data      : fine_foods_train.csv spans {sizes}; accuracy on fine_foods_test.csv ({len(test_rows)} rows)"
    )
    print()
    head = f"{'day':>3} {'rows':>6} {'mode':<12} {'evergreen s':>11} {'full s':>8} {'speedup':>7} {'tokens eg':>10} {'tokens full':>11} {'acc eg':>7} {'acc full':>8}"
    print(head)
    print("-" * len(head))
    totals = {"evergreen": 0.0, "full": 0.0, "tokens_evergreen": 0, "tokens_full": 0}
    start = 0
    accuracy = {}
    for day, size in enumerate(sizes, start=1):
        for folder in sides.values():
            write_span(folder, day, header, rows[start : start + size])
        start += size
        eg, eg_s, eg_model = run_day(sides["evergreen"], full=False)
        fr, fr_s, fr_model = run_day(sides["full"], full=True)
        accuracy = {
            "evergreen": test_accuracy(eg_model, test_texts, test_truth),
            "full": test_accuracy(fr_model, test_texts, test_truth),
        }
        totals["evergreen"] += eg_s
        totals["full"] += fr_s
        totals["tokens_evergreen"] += eg["tokens_computed"]
        totals["tokens_full"] += fr["tokens_computed"]
        print(
            f"{day:>3} {eg['rows_total']:>6} {eg['mode'] + ('' if eg['blessed'] else ' (kept)'):<12} {eg_s:>11.1f} {fr_s:>8.1f} {fr_s / eg_s:>6.2f}x "
            f"{eg['tokens_computed']:>10,} {fr['tokens_computed']:>11,} {accuracy['evergreen']:>7.3f} {accuracy['full']:>8.3f}"
        )
    print("-" * len(head))
    print(
        "mode: Evergreen's choice that day; (kept) = the candidate was not blessed, the champion stayed"
    )
    later = len(sizes) - 1
    print(
        f"all days : evergreen {totals['evergreen']:.1f} s vs full retrain {totals['full']:.1f} s ({totals['full'] / totals['evergreen']:.2f}x); "
        f"tokens computed {totals['tokens_evergreen']:,} vs {totals['tokens_full']:,} ({totals['tokens_full'] / max(totals['tokens_evergreen'], 1):.2f}x)"
    )
    print(
        f"final    : test accuracy evergreen champion {accuracy['evergreen']:.4f} vs full retrain {accuracy['full']:.4f} "
        f"(difference {100 * (accuracy['evergreen'] - accuracy['full']):+.1f} points) after {later} incremental day(s)"
    )
    if args.keep or args.workdir:
        print(f"work folder kept: {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
