"""Benchmark: the quality of Evergreen's incremental champion against a full retrain, span by span.

Two streams built from real data in ``../shared/datasets/``:

* **fine_foods** (text, binary): ``fine_foods_train.csv`` cut into 2,000 + 4 x 500 rows; the
  champions are scored on ``fine_foods_test.csv`` (1,000 rows no model sees).
* **churn** (tabular, binary, 14 % positives): ``mlc_churn.csv``; every fifth row is held out
  (1,000 rows), the other 4,000 cut into 5 spans of 800; the ``tabular`` template's settings.

For each stream two pipelines see the same spans, side by side: **incremental** runs
``evergreen run`` after each span (whatever the policy decides), **full** runs
``evergreen run --full`` after each span (featurizer refit, model trained from scratch on every
span so far). After each span both *champions* (what each pipeline serves: the registry's
champion) are scored on the held-out rows through their SavedModels. Printed per span: the
incremental side's mode, reason and verdict; the primary metric (AUC) of both champions, their
accuracy and balanced accuracy; rows trained on by each (examples seen over the epochs run).

Run it from the repository root (several minutes on 2 cores):

    .venv/bin/python bench/bench_quality.py
    .venv/bin/python bench/bench_quality.py --streams fine_foods --workdir /tmp/evq --keep
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
CONFIGS = {
    "fine_foods": """\
[pipeline]
name = "bench-quality"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "score"

[data.features]
product = "categorical"
review = "text"
""",
    "churn": """\
[pipeline]
name = "bench-quality"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "churn"

[train]
family = "tabular"
epochs = 30
learning_rate = 0.003
batch_size = 32
incremental_epochs = 10
incremental_learning_rate = 0.001
""",
}


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def stream(name: str) -> tuple[list[str], list[list[dict[str, str]]], list[dict[str, str]], str]:
    """Header, spans, held-out rows and label column of one stream."""
    if name == "fine_foods":
        header, rows = read_rows(DATASETS / "fine_foods_train.csv")
        _, test = read_rows(DATASETS / "fine_foods_test.csv")
        sizes, spans, start = [2000, 500, 500, 500, 500], [], 0
        for size in sizes:
            spans.append(rows[start : start + size])
            start += size
        return header, spans, test, "score"
    header, rows = read_rows(DATASETS / "mlc_churn.csv")
    test = rows[::5]
    pool = [r for i, r in enumerate(rows) if i % 5]
    return header, [pool[i * 800 : (i + 1) * 800] for i in range(5)], test, "churn"


def typed(rows: list[dict[str, str]], label: str) -> list[dict[str, Any]]:
    """Raw rows as a client sends them: numbers as numbers, the rest as strings."""

    def value(v: str) -> Any:
        try:
            return float(v)
        except ValueError:
            return v

    return [{k: (v if k == label else value(v)) for k, v in r.items()} for r in rows]


def write_span(project: Path, number: int, header: list[str], rows: list[dict[str, str]]) -> None:
    folder = project / "data" / f"span-{number}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def run_span(project_dir: Path, *, full: bool) -> tuple[dict[str, Any], int, Path]:
    """One span's ``run``: its record, the rows its training saw, and the champion to score."""
    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop, champion_saved_model
    from evergreen.project import Project

    with Project(config_mod.load(project_dir / "evergreen.toml")) as project:
        [record] = TrainingLoop(project).run(full=full)
        trained = [
            r.summary.get("rows_trained", 0)
            for r in project.store.runs(component="train", limit=1_000_000)
            if r.span == record["span"] and r.status == "succeeded"
        ]
        return record, int(trained[-1]) if trained else 0, champion_saved_model(project)


def score(saved_model: Path, rows: list[dict[str, Any]], label: str) -> dict[str, float]:
    from evergreen.components.evaluate import metrics, score_saved_model

    scores, labels = score_saved_model(saved_model, rows)
    return metrics(scores, [r[label] for r in rows], list(labels))


def bench_stream(name: str, work: Path) -> list[dict[str, Any]]:
    header, spans, test_rows, label = stream(name)
    test = typed(test_rows, label)
    sides = {"incremental": work / name / "incremental", "full": work / name / "full"}
    for folder in sides.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "evergreen.toml").write_text(CONFIGS[name], encoding="utf-8")
    print(
        f"\n## {name}: spans {[len(s) for s in spans]}; champions scored on {len(test)} held-out rows"
    )
    head = (
        f"{'span':>4} {'mode (reason) / verdict':<58} {'AUC inc':>7} {'AUC full':>8} "
        f"{'acc inc':>7} {'acc full':>8} {'bal inc':>7} {'bal full':>8} {'rows inc':>8} {'rows full':>9}"
    )
    print(head)
    print("-" * len(head))
    out = []
    for number, rows in enumerate(spans, start=1):
        for folder in sides.values():
            write_span(folder, number, header, rows)
        started = time.perf_counter()
        inc, inc_rows, inc_model = run_span(sides["incremental"], full=False)
        inc_seconds = time.perf_counter() - started
        started = time.perf_counter()
        full, full_rows, full_model = run_span(sides["full"], full=True)
        full_seconds = time.perf_counter() - started
        m_inc, m_full = score(inc_model, test, label), score(full_model, test, label)
        published = f"v{inc['version']}" if inc.get("version") else "not published"
        what = f"{inc['mode']} ({inc['reason']}) → {published}"
        print(
            f"{number:>4} {what[:58]:<58} {m_inc.get('auc', float('nan')):>7.3f} "
            f"{m_full.get('auc', float('nan')):>8.3f} {m_inc['accuracy']:>7.3f} "
            f"{m_full['accuracy']:>8.3f} {m_inc.get('balanced_accuracy', float('nan')):>7.3f} "
            f"{m_full.get('balanced_accuracy', float('nan')):>8.3f} {inc_rows:>8,} {full_rows:>9,}"
        )
        for line in inc.get("verdict") or []:
            print(f"{'':>5}  · {line}")
        if not full.get("blessed"):
            print(f"{'':>5}  · full side not published: {'; '.join(full.get('verdict') or [])}")
        out.append(
            {
                "span": number,
                "incremental": m_inc,
                "full": m_full,
                "rows": (inc_rows, full_rows),
                "seconds": (inc_seconds, full_seconds),
            }
        )
    last = out[-1]
    print(
        f"final champions: AUC {last['incremental'].get('auc', float('nan')):.3f} incremental vs "
        f"{last['full'].get('auc', float('nan')):.3f} full; accuracy "
        f"{last['incremental']['accuracy']:.3f} vs {last['full']['accuracy']:.3f}; rows trained "
        f"{sum(r['rows'][0] for r in out):,} vs {sum(r['rows'][1] for r in out):,}; seconds "
        f"{sum(r['seconds'][0] for r in out):.0f} vs {sum(r['seconds'][1] for r in out):.0f}"
    )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default="fine_foods,churn", help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    args = parser.parse_args()
    names = [s for s in args.streams.split(",") if s]
    unknown = set(names) - set(CONFIGS)
    if unknown:
        sys.exit(f"unknown streams {sorted(unknown)}; known: {', '.join(CONFIGS)}")

    from evergreen.tf import tensorflow

    tf = tensorflow()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="evergreen-bench-quality-"))
    print(f"command : {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine : {platform.platform()}, {os.cpu_count()} cpus, python "
        f"{platform.python_version()}, tensorflow {tf.__version__}"
    )
    try:
        for name in names:
            bench_stream(name, work)
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
