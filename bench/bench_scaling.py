"""Benchmark: does an update cost in proportion to the new data, whatever the history?

For each history size H (``--base`` × 1, 4, 16, 64 by default: 3k … 192k rows) one pipeline
goes through, in order:

1. **history**: span 1 holds H rows; ``evergreen run`` trains the first champion (not timed
   against anything; printed as "initial full").
2. **update as a CLI run**: span 2 holds 1 % of H new rows; ``evergreen run --json`` as a
   subprocess, timed around the whole command (interpreter, imports, run, exit). The run
   record gives its mode, seconds per stage and tokens computed.
3. **full retrain as a CLI run**: ``evergreen run --full --json`` on the same two spans (a
   fresh featurizer, every row featurized again, a model trained from scratch), timed the same.
4. **update inside watch**: in this (warm) process, the ``Watcher`` library entry runs the loop
   the way ``evergreen watch`` does: span 3 (1 % new rows) is run once to warm it, then span 4
   (and, with ``--repeats N``, spans 5 … 3 + N; 1 % new rows each) is timed around
   ``Watcher.run``.

Accuracy: the champion before the update (the history's full training), the champion after the
CLI update and the full retrain's candidate, all scored on the real ``fine_foods_test.csv``
(1,000 rows never used to build the histories) through their exported SavedModels. Two
trainings of the same data differ by a point or more on 1,000 rows, so ``--seeds 0,1,2`` runs
the whole measurement once per ``[train] seed`` and prints the gap (update − full) per seed, its
mean and standard deviation.

Noise in the timings: ``--repeats N`` runs the CLI update N times, each on the same state (the
pipeline folder is restored from a copy between repeats), and times N spans inside watch after
the warm-up span; the tables show medians, the raw times are printed beside them.

**The data.** ``../shared/datasets/fine_foods_train.csv`` has 4,000 real reviews, too few for
192k distinct rows, so histories are recombined at sentence level: every review is split into
sentences (``<br />`` removed; on ``.``, ``!``, ``?`` followed by space; sentences of 3 words or
more); each generated row draws its label with the real class frequencies, then 2 to 5 sentences
uniformly from the sentences of reviews with that label (the product column is left out: its
4,000 ids would read as drift in every small span).
The generator is seeded per span, so every run sees the same rows. The text is real, the
combinations are not: accuracy on the real test set is lower than a model trained on real
reviews, but the same for both sides of the comparison.

Run it from the repository root (long: the 64× history's two full trainings take many minutes)::

    python bench/bench_scaling.py                     # 1,4,16,64 × 3,000 rows
    python bench/bench_scaling.py --quick             # 1,4 × 1,000 rows
    python bench/bench_scaling.py --sizes 1,16 --base 3000 --workdir /tmp/bs --keep
    python bench/bench_scaling.py --sizes 1,16 --new-rows 480 --updates-only
    python bench/bench_scaling.py --sizes 1,16,64 --repeats 3 --seeds 0,1,2

``--new-rows N`` gives every history the same new span of N rows instead of 1 % of it: the
update's cost then shows whether it depends on the history at all (the question "is an update
at 16× the history as cheap as at 1×?"), separately from the new span's own size.
``--updates-only`` skips the full retrain (its columns print as n/a).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import random
import re
import resource
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

REPO = Path(__file__).resolve().parent.parent
DATASETS = REPO.parent / "shared" / "datasets"
CONFIG = """\
[pipeline]
name = "bench-scaling"
root = ".evergreen"

[data]
pattern = "data/span-{SPAN}/*.csv"
label = "score"

[data.features]
review = "text"

# The recombined spans have no real drift, but a 1 % span of a small history is a few dozen
# rows, whose length and word histograms read as "major" drift by sampling noise alone and
# would turn the update into a full retrain: this benchmark measures the update path.
[drift]
full_retrain_on = "never"

[watch]
poll_seconds = 0.5
metrics_port = 0
"""
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+")


@dataclass
class Corpus:
    """Real sentences per label and the real label frequencies."""

    sentences: dict[str, list[str]]
    weights: dict[str, float]


@dataclass
class Measured:
    """One history size's numbers."""

    history: int
    new_rows: int
    seed: int = 0
    initial_seconds: float = 0.0
    update_cli: float = 0.0
    full_cli: float = float("nan")  # nan: not run (--updates-only)
    update_watch: float = 0.0
    update_cli_cpu: float = 0.0
    full_cli_cpu: float = float("nan")
    update_watch_cpu: float = 0.0
    update_record: dict[str, Any] = field(default_factory=dict)
    full_record: dict[str, Any] = field(default_factory=dict)
    watch_record: dict[str, Any] = field(default_factory=dict)
    accuracy_initial: float = float("nan")  # the champion before the update
    accuracy_update: float = float("nan")
    accuracy_full: float = float("nan")
    # every repeat: (wall s, CPU s, its record)
    update_cli_runs: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)
    update_watch_runs: list[tuple[float, float, dict[str, Any]]] = field(default_factory=list)


def load_corpus(path: Path) -> Corpus:
    """Split the real reviews into sentences, grouped by label."""
    sentences: dict[str, list[str]] = {}
    counts: dict[str, int] = {}
    with open(path, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            label = row["score"]
            counts[label] = counts.get(label, 0) + 1
            text = row["review"].replace("<br />", " ")
            for sentence in _SENTENCE_END.split(text):
                if len(sentence.split()) >= 3:
                    sentences.setdefault(label, []).append(sentence.strip())
    total = sum(counts.values())
    return Corpus(sentences, {k: n / total for k, n in counts.items()})


def write_span(corpus: Corpus, folder: Path, rows: int, seed: int) -> Path:
    """``rows`` recombined reviews as ``folder/reviews.csv`` (see the module docstring)."""
    rng = random.Random(seed)
    labels = sorted(corpus.weights)
    weights = [corpus.weights[k] for k in labels]
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "reviews.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["review", "score"])
        for _ in range(rows):
            label = rng.choices(labels, weights)[0]
            pool = corpus.sentences[label]
            text = " ".join(rng.choice(pool) for _ in range(rng.randint(2, 5)))
            writer.writerow([text, label])
    return path


def cpu_seconds(who: int) -> float:
    """User + system CPU seconds of this process (RUSAGE_SELF) or its waited-for children."""
    usage = resource.getrusage(who)
    return usage.ru_utime + usage.ru_stime


def cli(config: Path, *args: str) -> tuple[float, float, list[dict[str, Any]]]:
    """``evergreen run`` as a user runs it: a subprocess, timed around the whole command.

    Returns wall seconds, the subprocess's CPU seconds (all its threads; what other processes
    on a shared machine do not inflate), and its records.
    """
    command = [sys.executable, "-m", "evergreen", "run", "-c", str(config), "--json", *args]
    started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_CHILDREN)
    done = subprocess.run(command, capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - started
    cpu = cpu_seconds(resource.RUSAGE_CHILDREN) - cpu
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(command)} failed:\n{done.stdout}\n{done.stderr}")
    return seconds, cpu, json.loads(done.stdout)


def test_accuracy(saved_model: Path, test_rows: list[dict[str, str]]) -> float:
    from evergreen.components.evaluate import score_saved_model

    scores, labels = score_saved_model(saved_model, [r["review"] for r in test_rows])
    predicted = [labels[i] for i in scores.argmax(axis=1)]
    return sum(p == r["score"] for p, r in zip(predicted, test_rows, strict=True)) / len(test_rows)


def latest_model(config: Path, mode: str) -> Path:
    """The saved model of the latest candidate trained in ``mode`` (published or not)."""
    from evergreen import config as config_mod
    from evergreen.project import Project

    with Project(config_mod.load(config)) as project:
        models = [
            a for a in project.store.artifacts(type="Model") if a.properties.get("mode") == mode
        ]
        return Path(models[-1].uri) / "saved_model"


def watch_updates(
    config: Path, corpus: Corpus, new_rows: int, repeats: int
) -> list[tuple[float, float, dict[str, Any]]]:
    """1 % spans through the ``Watcher`` in this process: span 3 warms it, then ``repeats``
    spans (4, 5, …) are timed, one ``Watcher.run`` each: [(wall s, CPU s, record)]."""
    from evergreen import config as config_mod
    from evergreen.project import Project
    from evergreen.watch import Watcher

    cfg = config_mod.load(config)
    watcher = Watcher(cfg, log=lambda line: None)
    timed: list[tuple[float, float, dict[str, Any]]] = []
    with Project(cfg) as project:
        for span in range(3, 4 + repeats):
            write_span(corpus, config.parent / "data" / f"span-{span}", new_rows, seed=span)
            started, cpu = time.perf_counter(), cpu_seconds(resource.RUSAGE_SELF)
            records = watcher.run(project, watcher.pending(project))
            if span > 3:
                timed.append(
                    (
                        time.perf_counter() - started,
                        cpu_seconds(resource.RUSAGE_SELF) - cpu,
                        records[-1].to_dict() if records else {},
                    )
                )
    return timed


def median_run(
    runs: list[tuple[float, float, Any]],
) -> tuple[float, float, Any]:
    """The run of median wall time (the lower middle one of an even count)."""
    ordered = sorted(runs, key=lambda run: run[0])
    return ordered[(len(ordered) - 1) // 2]


def repeated_update(config: Path, repeats: int) -> list[tuple[float, float, dict[str, Any]]]:
    """The CLI update ``repeats`` times from the same state: [(wall s, CPU s, last record)].

    Between repeats the pipeline folder is restored from a copy taken before the first (at
    the same path: the store's artifact URIs are absolute), so every repeat does the same work.
    """
    folder = config.parent
    snapshot = folder.with_name(folder.name + "-before-update")
    runs = []
    if repeats > 1:
        shutil.rmtree(snapshot, ignore_errors=True)
        shutil.copytree(folder, snapshot)
    try:
        for repeat in range(repeats):
            if repeat:
                shutil.rmtree(folder)
                shutil.copytree(snapshot, folder)
            seconds, cpu, records = cli(config)
            runs.append((seconds, cpu, records[-1]))
    finally:
        shutil.rmtree(snapshot, ignore_errors=True)
    return runs


def measure(
    corpus: Corpus,
    folder: Path,
    history: int,
    test_rows: list[dict[str, str]],
    new_rows: int | None = None,
    full: bool = True,
    repeats: int = 1,
    seed: int = 0,
) -> Measured:
    """One history's numbers; ``new_rows`` per new span (None: 1 % of the history)."""
    config = folder / "evergreen.toml"
    folder.mkdir(parents=True, exist_ok=True)
    config.write_text(CONFIG + f"\n[train]\nseed = {seed}\n", encoding="utf-8")
    new_rows = new_rows or max(1, history // 100)
    result = Measured(history, new_rows, seed)
    write_span(corpus, folder / "data" / "span-1", history, seed=1)
    result.initial_seconds, _, _ = cli(config)
    result.accuracy_initial = test_accuracy(latest_champion(config), test_rows)
    write_span(corpus, folder / "data" / "span-2", new_rows, seed=2)
    runs = repeated_update(config, repeats)
    result.update_cli_runs = runs
    result.update_cli, result.update_cli_cpu, result.update_record = median_run(runs)
    result.accuracy_update = test_accuracy(latest_champion(config), test_rows)
    if full:
        result.full_cli, result.full_cli_cpu, records = cli(config, "--full")
        result.full_record = records[-1]
        result.accuracy_full = test_accuracy(latest_model(config, "full"), test_rows)
    runs = watch_updates(config, corpus, new_rows, repeats)
    result.update_watch_runs = runs
    result.update_watch, result.update_watch_cpu, result.watch_record = median_run(runs)
    return result


def latest_champion(config: Path) -> Path:
    from evergreen import config as config_mod
    from evergreen.loop import champion_saved_model
    from evergreen.project import Project

    with Project(config_mod.load(config)) as project:
        return champion_saved_model(project)


def report(results: list[Measured]) -> None:
    print()
    print(
        "| seed | history | new | update CLI s | update watch s | full retrain s | full/CLI "
        "| full/watch | tokens update / full | fewer tokens | accuracy before / update / full "
        "| update mode |"
    )
    print("| " + " | ".join(["---"] * 12) + " |")
    for r in results:
        up, full = r.update_record, r.full_record
        fewer = (
            1 - up.get("tokens_computed", 0) / max(full["tokens_computed"], 1)
            if full
            else float("nan")
        )
        print(
            f"| {r.seed} | {r.history:,} | {r.new_rows:,} | {r.update_cli:.1f} | "
            f"{r.update_watch:.1f} | {r.full_cli:.1f} | {r.full_cli / r.update_cli:.1f}× | "
            f"{r.full_cli / r.update_watch:.1f}× | {up.get('tokens_computed', 0):,} / "
            f"{full.get('tokens_computed', 0):,} | {fewer:.2%} | {r.accuracy_initial:.3f} / "
            f"{r.accuracy_update:.3f} / {r.accuracy_full:.3f} | {up.get('mode')} |"
        )
    if any(len(r.update_cli_runs) > 1 for r in results):
        print()
        print("every repeat, wall s (CPU s, mode, train stage s; the tables show the median):")
        for r in results:
            print(
                f"  seed {r.seed}, {r.history:>7,}: CLI {describe_runs(r.update_cli_runs)}; "
                f"watch {describe_runs(r.update_watch_runs)}"
            )
    print()
    # The update's ledger says what a full retrain would compute (its fit over every train row
    # plus featurizing every span); the full retrain that ran says what it did compute.
    print("tokens_full_retrain in the update's record vs tokens_computed by the full retrain:")
    for r in results:
        said, did = r.update_record.get("tokens_full_retrain"), r.full_record.get("tokens_computed")
        if said is None or did is None:  # --updates-only: no full retrain to compare with
            print(f"  {r.history:,}: {said} (no full retrain run)")
            continue
        print(f"  {r.history:,}: {said:,} vs {did:,} ({'equal' if said == did else 'differ'})")
    print()
    print("CPU seconds (user + system, all threads; not inflated by other processes' load):")
    print("| seed | history | update CLI | update watch | full retrain | full/CLI | full/watch |")
    print("| " + " | ".join(["---"] * 7) + " |")
    for r in results:
        print(
            f"| {r.seed} | {r.history:,} | {r.update_cli_cpu:.1f} | {r.update_watch_cpu:.1f} | "
            f"{r.full_cli_cpu:.1f} | {r.full_cli_cpu / r.update_cli_cpu:.1f}× | "
            f"{r.full_cli_cpu / r.update_watch_cpu:.1f}× |"
        )
    print()
    print("update seconds per stage (CLI run record; watch run record):")
    for r in results:
        print(f"  {r.history:>7,}: CLI   {json.dumps(r.update_record.get('seconds', {}))}")
        print(f"  {'':>7}  watch {json.dumps(r.watch_record.get('seconds', {}))}")
    for seed in sorted({r.seed for r in results}):
        of_seed = [r for r in results if r.seed == seed]
        first = of_seed[0]
        for r in of_seed[1:]:
            print(
                f"seed {seed}: update at {r.history // first.history}x history / at 1x: wall CLI "
                f"{r.update_cli / first.update_cli:.2f}, watch "
                f"{r.update_watch / first.update_watch:.2f}; CPU CLI "
                f"{r.update_cli_cpu / first.update_cli_cpu:.2f}, watch "
                f"{r.update_watch_cpu / first.update_watch_cpu:.2f}"
            )
    report_accuracy(results)


def describe_runs(runs: list[tuple[float, float, dict[str, Any]]]) -> str:
    return ", ".join(
        f"{wall:.1f} ({cpu:.1f}, {record.get('mode')}, {record.get('seconds', {}).get('train', 0):.1f})"
        for wall, cpu, record in runs
    )


def report_accuracy(results: list[Measured]) -> None:
    """The accuracy gap (update − full retrain) per history over the seeds, in points."""
    measured = [r for r in results if r.accuracy_full == r.accuracy_full]  # not nan
    if not measured:
        return
    print()
    print("accuracy gap, update − full retrain, points on the 1,000 real test reviews:")
    for history in sorted({r.history for r in measured}):
        gaps = [
            100 * (r.accuracy_update - r.accuracy_full) for r in measured if r.history == history
        ]
        spread = f" (sd {statistics.stdev(gaps):.2f})" if len(gaps) > 1 else ""
        print(
            f"  {history:>7,}: {', '.join(f'{g:+.1f}' for g in gaps)}; "
            f"mean {statistics.mean(gaps):+.2f}{spread}"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sizes", default="1,4,16,64", help="history multiples of --base")
    parser.add_argument("--base", type=int, default=3000, help="rows of the 1x history")
    parser.add_argument("--quick", action="store_true", help="--sizes 1,4 --base 1000")
    parser.add_argument(
        "--new-rows", type=int, default=None, help="rows of each new span (default: 1 %% of H)"
    )
    parser.add_argument(
        "--updates-only", action="store_true", help="skip the full retrain (history flatness)"
    )
    parser.add_argument(
        "--repeats", type=int, default=1, help="CLI updates (same state) and watch spans timed"
    )
    parser.add_argument("--seeds", default="0", help="[train] seed of each whole measurement")
    parser.add_argument("--workdir", default=None)
    parser.add_argument("--keep", action="store_true", help="keep the pipelines")
    args = parser.parse_args()
    sizes = [1, 4] if args.quick else [int(s) for s in args.sizes.split(",")]
    base = 1000 if args.quick else args.base
    print(
        f"machine: {platform.node()} {platform.machine()}, {os.cpu_count()} cores, "
        f"load average {os.getloadavg()[0]:.2f} at start"
    )
    print(f"command: {shlex.join([sys.executable, *sys.argv])}")
    corpus = load_corpus(DATASETS / "fine_foods_train.csv")
    with open(DATASETS / "fine_foods_test.csv", newline="", encoding="utf-8") as f:
        test_rows = list(csv.DictReader(f))
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench-scaling-"))
    results = []
    try:
        for seed, size in [(int(s), z) for s in args.seeds.split(",") for z in sizes]:
            folder = work / f"s{seed}-h{size}"
            shutil.rmtree(folder, ignore_errors=True)
            measured = measure(
                corpus,
                folder,
                size * base,
                test_rows,
                args.new_rows,
                not args.updates_only,
                args.repeats,
                seed,
            )
            results.append(measured)
            print(
                f"seed {seed}, history {measured.history:,}: initial full {measured.initial_seconds:.1f} s, "
                f"update CLI {measured.update_cli:.1f} s, full {measured.full_cli:.1f} s, "
                f"update watch {measured.update_watch:.1f} s (CPU s: update CLI "
                f"{measured.update_cli_cpu:.1f}, full {measured.full_cli_cpu:.1f}, update watch "
                f"{measured.update_watch_cpu:.1f}); accuracy before / update / full "
                f"{measured.accuracy_initial:.3f} / {measured.accuracy_update:.3f} / "
                f"{measured.accuracy_full:.3f}; load average {os.getloadavg()[0]:.2f}",
                flush=True,
            )
        report(results)
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    print(f"load average at end {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
