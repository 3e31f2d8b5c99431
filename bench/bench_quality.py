"""Benchmark: the quality of Evergreen's incremental champion against a full retrain, span by span.

Five streams built from data on this machine (``../shared/datasets/`` and scikit-learn's bundled
digits; no download):

* **fine_foods** (text, binary): ``fine_foods_train.csv`` in file order, 5 spans.
* **fine_foods_by_product** (text, binary): train and test files pooled and ordered by product
  id, so each span reviews other products and the vocabulary drifts.
* **fine_foods_shift** (text, binary): the longest half of the reviews first, then a domain
  shift to the shortest half (length, vocabulary and tone change).
* **churn** (tabular, binary, 14 % positives): ``mlc_churn.csv`` in 5 spans.
* **digits** (image, 10 classes): scikit-learn's 1,797 8x8 digits as PNG files, 5 spans.

Every fifth row of each span is held out (that span's test rows); no model trains on them. Two
pipelines see the same spans side by side: **incremental** runs ``evergreen run`` after each
span (whatever the policy decides), **full** runs ``evergreen run --full`` (featurizer refit,
model trained from scratch on every span so far). After each span both *champions* (the
registry's champion of each side) are scored through their SavedModels on: **all** held-out rows
of the spans so far, the **last** span's, and span **1**'s (forgetting). The metric is AUC for
binary streams, balanced accuracy for digits; ``bal`` is balanced accuracy at each model's
exported decision threshold. Printed per span: the incremental side's mode, reason, publication,
vocabulary growth and verdict; rows trained on by each side (examples seen over the epochs run).

One run is deterministic for a given ``train.seed``, but the seed alone moves a final metric by
points on these few hundred held-out rows (docs/quality.md), so ``--seeds 0,1,2`` runs each stream once per
seed (``train.seed = S`` on both sides) and judges the mean gap: printed per stream are each
seed's final gap and rows trained, then the mean and sample sd of the gap; the summary's verdict
("within 0.5 points of the full retrain, or better") is on the mean. Without ``--seeds`` each
stream runs once with the config's seed (0).

Run it from the repository root (the full run takes about an hour on 2 cores per seed;
``--quick`` uses fewer, smaller spans):

    .venv/bin/python bench/bench_quality.py --quick
    .venv/bin/python bench/bench_quality.py --quick --seeds 0,1,2
    .venv/bin/python bench/bench_quality.py --streams fine_foods --workdir /tmp/evq --keep
    .venv/bin/python bench/bench_quality.py --quick --set 'train.incremental_schedule="rewarm"'
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import shlex
import shutil
import statistics
import sys
import tempfile
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

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
    # churn and digits: the epochs, rates and schedule `evergreen init`'s tabular and image
    # templates set (digits: resized to 16x16, grayscale)
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
incremental_schedule = "constant"
""",
    "digits": """\
[pipeline]
name = "bench-quality"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "digit"

[data.features]
image = "image"

[train]
family = "image"
image_size = 16
image_channels = 1
epochs = 15
learning_rate = 0.003
batch_size = 32
incremental_epochs = 5
incremental_learning_rate = 0.001
""",
}


STREAMS = ("fine_foods", "fine_foods_by_product", "fine_foods_shift", "churn", "digits")


def read_rows(path: Path) -> tuple[list[str], list[dict[str, str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


@dataclass
class Stream:
    """One stream: spans of training rows, each span's held-out rows, and its config."""

    header: list[str]
    spans: list[list[dict[str, Any]]]
    tests: list[list[dict[str, Any]]]  # per span: rows no model trains on
    label: str
    config: str


def _hold_out(
    parts: list[list[dict[str, Any]]], config: str, header: list[str], label: str
) -> Stream:
    """Every fifth row of each span is held out: that span's test rows."""
    spans = [[r for i, r in enumerate(part) if i % 5] for part in parts]
    tests = [part[::5] for part in parts]
    return Stream(header, spans, tests, label, config)


def _cut(rows: list[dict[str, Any]], sizes: list[int]) -> list[list[dict[str, Any]]]:
    out, start = [], 0
    for size in sizes:
        out.append(rows[start : start + size])
        start += size
    return out


def stream(name: str, quick: bool) -> Stream:
    """The spans of one stream (``quick``: fewer, smaller spans)."""
    if name == "churn":
        header, rows = read_rows(DATASETS / "mlc_churn.csv")
        sizes = [750] * 4 if quick else [1000] * 5
        return _hold_out(_cut(rows, sizes), CONFIGS["churn"], header, "churn")
    if name == "digits":
        return digits_stream(quick)
    header, rows = read_rows(DATASETS / "fine_foods_train.csv")
    _, test = read_rows(DATASETS / "fine_foods_test.csv")
    if name == "fine_foods":
        sizes = [1000, 400, 400, 400] if quick else [2000, 500, 500, 500, 500]
        return _hold_out(_cut(rows, sizes), CONFIGS["fine_foods"], header, "score")
    pooled = rows + test
    if name == "fine_foods_by_product":  # product ids in order: the vocabulary drifts
        pooled.sort(key=lambda r: r["product"])
        sizes = [750] * 4 if quick else [1000] * 5
        return _hold_out(_cut(pooled, sizes), CONFIGS["fine_foods"], header, "score")
    # fine_foods_shift: long reviews first, then a shift to short ones (length, vocabulary,
    # tone); each half in file order, so spans within a half are alike and the shift is one step.
    median = sorted(len(r["review"]) for r in pooled)[len(pooled) // 2]
    long = [r for r in pooled if len(r["review"]) > median]
    short = [r for r in pooled if len(r["review"]) <= median]
    sizes = [600, 600] if quick else [800, 800, 800]
    parts = _cut(long, sizes) + _cut(short, [600, 600] if quick else [800, 800])
    return _hold_out(parts, CONFIGS["fine_foods"], header, "score")


def digits_stream(quick: bool) -> Stream:
    """scikit-learn's bundled 8x8 digits (1,797 images, no download) as PNG files, 4-5 spans."""
    parts = _cut(digit_rows(), [450] * 4 if quick else [360] * 5)
    return _hold_out(parts, CONFIGS["digits"], ["image", "digit"], "digit")


def digit_rows() -> list[dict[str, Any]]:
    """The 1,797 digits as rows: ``image`` (PNG bytes, 0..255 gray), ``name``, ``digit``."""
    import io

    from PIL import Image
    from sklearn.datasets import load_digits

    data = load_digits()
    rows = []
    for i, (pixels, target) in enumerate(zip(data.images, data.target, strict=True)):
        buffer = io.BytesIO()
        scaled = np.clip(pixels * 16, 0, 255).astype("uint8")
        Image.fromarray(scaled, mode="L").save(buffer, format="PNG")
        rows.append({"image": buffer.getvalue(), "name": f"{i:05d}.png", "digit": str(target)})
    return rows


def typed(rows: list[dict[str, Any]], label: str) -> list[Any]:
    """Raw inputs as a client sends them: numbers as numbers, images as bytes."""

    def value(v: Any) -> Any:
        if isinstance(v, bytes):
            return v
        try:
            return float(v)
        except ValueError:
            return v

    if rows and "image" in rows[0]:
        return [r["image"] for r in rows]
    return [{k: (v if k == label else value(v)) for k, v in r.items()} for r in rows]


def write_span(project: Path, number: int, header: list[str], rows: list[dict[str, Any]]) -> None:
    folder = project / "data" / f"span-{number}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "rows.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        for row in rows:
            if isinstance(row.get("image"), bytes):  # images: a file beside the CSV
                (folder / row["name"]).write_bytes(row["image"])
                row = {"image": row["name"], "digit": row["digit"]}
            writer.writerow(row)


def with_overrides(config: str, overrides: list[str]) -> str:
    """The config with ``train.key=value`` settings (TOML values) added to its [train] table."""
    lines = []
    for item in overrides:
        key, _, value = item.partition("=")
        section, _, name = key.strip().partition(".")
        if section != "train" or not name:
            sys.exit(f"--set {item!r}: use train.KEY=VALUE (a TOML value)")
        tomllib.loads(f"v = {value}")  # fails loudly on a bad value
        lines.append(f"{name} = {value}")
    if not lines:
        return config
    if "[train]\n" in config:
        return config.replace("[train]\n", "[train]\n" + "\n".join(lines) + "\n", 1)
    return config + "\n[train]\n" + "\n".join(lines) + "\n"


def run_span(project_dir: Path, *, full: bool) -> tuple[dict[str, Any], int, Path]:
    """One span's ``run``: its record, the rows its training saw, and the champion to score.

    A span whose increment a full retrain challenged (the policy's quality debt) has two
    records: the increment's is returned, with the challenger's as ``record["challenger"]``;
    the rows are both trainings'.
    """
    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop, champion_saved_model
    from evergreen.project import Project

    with Project(config_mod.load(project_dir / "evergreen.toml")) as project:
        record, *challenger = [r.to_dict() for r in TrainingLoop(project).run(full=full)]
        if challenger:
            record["challenger"] = challenger[0]
        trained = [
            r.summary.get("rows_trained", 0)
            for r in project.store.runs(component="train", limit=1_000_000)
            if r.span == record["span"] and r.status == "succeeded"
        ]
        return record, sum(trained), champion_saved_model(project)


def score(saved_model: Path, rows: list[dict[str, Any]], label: str) -> dict[str, float]:
    """Metrics of a champion on held-out rows, at its exported decision threshold if any."""
    from evergreen.components.evaluate import metrics, score_saved_model
    from evergreen.components.threshold import read_threshold

    scores, labels = score_saved_model(saved_model, typed(rows, label))
    return metrics(scores, [r[label] for r in rows], list(labels), read_threshold(saved_model))


def primary(m: dict[str, float]) -> float:
    """The stream's primary metric: AUC for binary tasks, balanced accuracy otherwise."""
    return m.get("auc", m.get("balanced_accuracy", float("nan")))


def bench_stream(
    name: str, work: Path, quick: bool, overrides: list[str], seed: int | None
) -> dict[str, Any]:
    """One stream at one seed (``None``: the config's own), both sides span by span."""
    data = stream(name, quick)
    seeded = [*overrides, f"train.seed={seed}"] if seed is not None else overrides
    config = with_overrides(data.config, seeded)
    folder_name = name if seed is None else f"{name}-seed-{seed}"
    sides = {side: work / folder_name / side for side in ("incremental", "full")}
    for folder in sides.values():
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir(parents=True)
        (folder / "evergreen.toml").write_text(config, encoding="utf-8")
    print(
        f"\n## {name}{'' if seed is None else f' (seed {seed})'}: spans "
        f"{[len(s) for s in data.spans]} (train); held out "
        f"{[len(t) for t in data.tests]} per span; metric "
        f"{'AUC' if name != 'digits' else 'balanced accuracy'}"
    )
    head = (
        f"{'span':>4} {'mode → published (reason)':<56} {'all inc':>7} {'all full':>8} "
        f"{'last inc':>8} {'last full':>9} {'s1 inc':>6} {'s1 full':>7} {'bal inc':>7} "
        f"{'bal full':>8} {'rows inc':>8} {'rows full':>9}"
    )
    print(head)
    print("-" * len(head))
    out = []
    for number, rows in enumerate(data.spans, start=1):
        for folder in sides.values():
            write_span(folder, number, data.header, rows)
        started = time.perf_counter()
        inc, inc_rows, inc_model = run_span(sides["incremental"], full=False)
        inc_seconds = time.perf_counter() - started
        started = time.perf_counter()
        full, full_rows, full_model = run_span(sides["full"], full=True)
        full_seconds = time.perf_counter() - started
        seen = [row for part in data.tests[:number] for row in part]
        m = {
            (side, where): score(saved, rows_, data.label)
            for side, saved in (("inc", inc_model), ("full", full_model))
            for where, rows_ in (
                ("all", seen),
                ("last", data.tests[number - 1]),
                ("s1", data.tests[0]),
            )
        }
        published = f"v{inc['version']}" if inc.get("version") else "not published"
        # A growth record can add nothing (a tabular vocabulary that saw no new value).
        grown = inc.get("featurizer_growth")
        grown = grown if grown and sum(grown["added"].values()) else None
        extra = f"; +{sum(grown['added'].values())} ids" if grown else ""
        # Publication first: the reason is long and is cut to the column's width.
        what = f"{inc['mode']} → {published}{extra} ({inc['reason']})"
        print(
            f"{number:>4} {what[:56]:<56} {primary(m['inc', 'all']):>7.3f} "
            f"{primary(m['full', 'all']):>8.3f} {primary(m['inc', 'last']):>8.3f} "
            f"{primary(m['full', 'last']):>9.3f} {primary(m['inc', 's1']):>6.3f} "
            f"{primary(m['full', 's1']):>7.3f} "
            f"{m['inc', 'all'].get('balanced_accuracy_at_threshold', m['inc', 'all']['balanced_accuracy']):>7.3f} "
            f"{m['full', 'all'].get('balanced_accuracy_at_threshold', m['full', 'all']['balanced_accuracy']):>8.3f} "
            f"{inc_rows:>8,} {full_rows:>9,}"
        )
        if grown:
            print(
                f"{'':>5}  · grown: {grown['added']} e.g. {sum(grown['sample'].values(), [])[:8]}"
            )
        for line in inc.get("verdict") or []:
            print(f"{'':>5}  · {line}")
        challenger = inc.get("challenger")
        if challenger:
            landed = f"v{challenger['version']}" if challenger.get("version") else "not published"
            print(f"{'':>5}  · full retrain challenger → {landed}: {challenger['reason']}")
            for line in challenger.get("verdict") or []:
                print(f"{'':>5}    · {line}")
        if not full.get("blessed"):
            print(f"{'':>5}  · full side not published: {'; '.join(full.get('verdict') or [])}")
        out.append(
            {"metrics": m, "rows": (inc_rows, full_rows), "seconds": (inc_seconds, full_seconds)}
        )
    last = out[-1]["metrics"]
    gap = (primary(last["inc", "all"]) - primary(last["full", "all"])) * 100
    print(
        f"final champions on all held-out rows: {primary(last['inc', 'all']):.3f} incremental vs "
        f"{primary(last['full', 'all']):.3f} full ({gap:+.1f} points); span 1 (forgetting) "
        f"{primary(last['inc', 's1']):.3f} vs {primary(last['full', 's1']):.3f}; rows trained "
        f"{sum(r['rows'][0] for r in out):,} vs {sum(r['rows'][1] for r in out):,}; seconds "
        f"{sum(r['seconds'][0] for r in out):.0f} vs {sum(r['seconds'][1] for r in out):.0f}"
    )
    rows = (sum(r["rows"][0] for r in out), sum(r["rows"][1] for r in out))
    return {"name": name, "seed": seed, "gap": gap, "rows": rows, "spans": out}


def over_seeds(name: str, runs: list[dict[str, Any]]) -> dict[str, Any]:
    """A stream's gap over its seeds: each seed's, the mean and the sample sd; judged on the mean."""
    gaps = [run["gap"] for run in runs]
    mean = statistics.mean(gaps)
    sd = statistics.stdev(gaps) if len(gaps) > 1 else float("nan")
    if len(runs) > 1:
        print(
            f"\n## {name} over {len(runs)} seeds: final gap (points) and rows trained (inc / full)"
        )
        for run in runs:
            print(
                f"seed {run['seed']:>3}: {run['gap']:+5.1f}   {run['rows'][0]:,} / {run['rows'][1]:,}"
            )
        print(f"mean {mean:+.2f} (sd {sd:.2f}): {verdict(mean)}")
    return {"name": name, "gaps": gaps, "mean": mean, "sd": sd}


def verdict(gap: float) -> str:
    return "within 0.5" if gap >= -0.5 else "NOT within 0.5"


def parse_seeds(text: str | None, overrides: list[str]) -> list[int | None]:
    """``--seeds 0,1,2`` as ints; without it, one run with the config's seed."""
    if text is None:
        return [None]
    if any(item.partition("=")[0].strip() == "train.seed" for item in overrides):
        sys.exit("--seeds sets train.seed on both sides; drop --set train.seed (or --seeds)")
    try:
        seeds = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"--seeds {text!r}: use comma-separated integers, e.g. --seeds 0,1,2")
    if not seeds or len(set(seeds)) != len(seeds):
        sys.exit(f"--seeds {text!r}: give one or more distinct seeds, e.g. --seeds 0,1,2")
    return seeds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--streams", default=",".join(STREAMS), help="comma-separated")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--keep", action="store_true", help="keep the work folder")
    parser.add_argument("--quick", action="store_true", help="fewer, smaller spans (minutes)")
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="train.KEY=VALUE",
        help="a [train] setting for both sides, e.g. --set 'train.incremental_schedule=\"rewarm\"'",
    )
    parser.add_argument(
        "--seeds",
        default=None,
        metavar="0,1,2",
        help="run each stream once per train.seed and judge the mean gap (default: the config's, 0)",
    )
    args = parser.parse_args()
    seeds = parse_seeds(args.seeds, args.set)
    names = [s for s in args.streams.split(",") if s]
    unknown = set(names) - set(STREAMS)
    if unknown:
        sys.exit(f"unknown streams {sorted(unknown)}; known: {', '.join(STREAMS)}")

    from evergreen.tf import tensorflow

    tf = tensorflow()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="evergreen-bench-quality-"))
    print(f"command : {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine : {platform.platform()}, {os.cpu_count()} cpus, python "
        f"{platform.python_version()}, tensorflow {tf.__version__}"
    )
    try:
        results = [
            over_seeds(name, [bench_stream(name, work, args.quick, args.set, s) for s in seeds])
            for name in names
        ]
        if len(seeds) > 1:
            judged = "mean over seeds " + ",".join(map(str, seeds))
        else:
            judged = "one run" if seeds == [None] else f"one run, seed {seeds[0]}"
        print(
            "\n## summary: final incremental champion minus the full retrain, primary metric "
            f"({judged})"
        )
        for result in results:
            spread = (
                f" (sd {result['sd']:.2f}; seeds {', '.join(f'{g:+.1f}' for g in result['gaps'])})"
            )
            mean = f"{result['mean']:+.2f}" if len(seeds) > 1 else f"{result['mean']:+.1f}"
            print(
                f"{result['name']:<24} {mean} points"
                f"{spread if len(seeds) > 1 else ''} ({verdict(result['mean'])})"
            )
    finally:
        if not args.keep and args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
