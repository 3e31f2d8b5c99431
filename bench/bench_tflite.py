"""Benchmark: `evergreen export tflite` — sizes and parity of each quantization, side by side.

Trains the default text model (``[train]`` defaults: embedding 64, Conv1D 128, 20,000-token
vocabulary, sequence length 200, 5 epochs) on the first ``--rows`` reviews of
``../shared/datasets/fine_foods_train.csv`` as one span, then exports the champion with
``--quantize none``, ``float16`` and ``int8`` in the same process and prints, for each: the
``model.tflite`` size (and its ratio to float32), both accuracies on the eval rows, the accuracy
drop, the largest |score| difference to the SavedModel, the share of rows with the same class,
and the export's seconds.

    .venv/bin/python bench/bench_tflite.py                 # 4,000 rows, ~2 minutes
    .venv/bin/python bench/bench_tflite.py --rows 1000     # a smoke run
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import sys
import tempfile
import time
from pathlib import Path

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO.parent / "shared" / "datasets" / "fine_foods_train.csv"
CONFIG = """\
[pipeline]
name = "bench-tflite"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "score"

[data.features]
product = "categorical"
review = "text"
"""


def _project(folder: Path, rows: int) -> Path:
    with open(SOURCE, newline="", encoding="utf-8") as f:
        data = list(csv.reader(f))
    span = folder / "data" / "span-1"
    span.mkdir(parents=True)
    with open(span / "reviews.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows(data[: rows + 1])
    (folder / "evergreen.toml").write_text(CONFIG, encoding="utf-8")
    return folder / "evergreen.toml"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=4000)
    args = parser.parse_args()
    from evergreen import config as config_mod
    from evergreen.export.tflite import TFLiteOptions, export_tflite
    from evergreen.loop import TrainingLoop
    from evergreen.project import Project

    print(f"machine: {platform.node()}, {os.cpu_count()} CPUs, load {os.getloadavg()}")
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    with tempfile.TemporaryDirectory() as tmp:
        config = _project(Path(tmp), args.rows)
        with Project(config_mod.load(config)) as project:
            started = time.perf_counter()
            [record] = TrainingLoop(project).run()
            print(f"trained version {record.version} in {time.perf_counter() - started:.1f} s")
            rows = []
            for quantize in ("none", "float16", "int8"):
                started = time.perf_counter()
                result = export_tflite(project, None, TFLiteOptions(quantize=quantize))
                rows.append((quantize, result, time.perf_counter() - started))
    base = rows[0][1].files["model.tflite"]
    print("quantize  model.tflite  vs f32  acc tflite/saved  drop     max|diff|  same    s")
    for quantize, r, seconds in rows:
        p, size = r.parity, r.files["model.tflite"]
        print(
            f"{quantize:<8}  {size:>12,}  {size / base:5.2f}x  "
            f"{p.tflite_accuracy:.4f}/{p.saved_model_accuracy:.4f}  {p.accuracy_drop:+.4f}  "
            f"{p.max_abs_score_diff:.1e}  {p.agreement:6.2%}  {seconds:.1f}"
        )
    print(
        f"eval rows: {rows[0][1].parity.rows}; model_flex.tflite: {rows[0][1].files.get('model_flex.tflite', 0):,} B"
    )


if __name__ == "__main__":
    main()
