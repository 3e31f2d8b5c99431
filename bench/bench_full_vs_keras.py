"""Benchmark: Evergreen's full retrain against a plain Keras 3 script, same data, same model.

Issue 12 asks for "a full retrain at least as good as plain Keras on the same data and
architecture". Three datasets from this machine (no download), each split once into train and
test rows:

* **fine_foods** (text, binary): ``fine_foods_train.csv`` (4,000 rows) → ``fine_foods_test.csv``
  (1,000 rows).
* **churn** (tabular, binary, 14 % positives): ``mlc_churn.csv``, every fifth row is a test row
  (4,000 train / 1,000 test).
* **digits** (image, 10 classes): scikit-learn's 1,797 8x8 digits as PNG files (as
  ``bench_quality.py`` builds them), every fifth image is a test image (1,437 / 360).

Two sides per dataset and seed:

* **evergreen**: one span holding every train row, ``evergreen run --full``
  (``TrainingLoop(project).run(full=True)``) with the config ``evergreen init --template
  <family>`` writes — only the label and feature names filled in and ``train.seed`` set. The
  champion is scored on the test rows through its registry SavedModel (raw inputs).
* **keras**: a plain Keras 3 script — the family's layers and sizes written out with
  ``keras.layers`` (``TextVectorization``, ``StringLookup``/``Normalization``, image resizing
  done by hand), Adam at the template's learning rate and batch size, the same epoch cap, and
  ``EarlyStopping(restore_best_weights=True)`` with the family's patience on
  ``validation_split=0.1`` of the same train rows. Scored on the same test rows.

Both sides are scored by the same ``metrics()`` (``evergreen.components.evaluate``): accuracy at
argmax, AUC for binary tasks, balanced accuracy for digits; ``bal@thr`` is the balanced accuracy
at the model's exported decision threshold (Evergreen picks one on skewed binary data; the plain
script has none, 0.5). Wall and CPU seconds (this process and its children, all threads) are per
side: Evergreen's include ingest, statistics, featurize, evaluation, export and publication.

What still differs by design (the plain script is what a user would write):

* validation rows: Evergreen trains on its 80 % hash split and stops on the 20 % eval split
  (after dedupe); the script trains on 90 % and stops on the last 10 %;
* Evergreen adds ``ReduceLROnPlateau(factor=0.5, patience=1)`` on val_loss;
* text: Evergreen pads to the 0.99 quantile of tokens per text (capped at 200), the script to 200;
* Evergreen shuffles through ``tf.data`` with its seed; the script lets ``fit`` shuffle.

Run it from the repository root (about 2 minutes a seed on 2 shared cores; 5 seeds took 10):

    .venv/bin/python bench/bench_full_vs_keras.py
    .venv/bin/python bench/bench_full_vs_keras.py --seeds 0,1,2
    .venv/bin/python bench/bench_full_vs_keras.py --datasets fine_foods --set 'train.patience=3'
"""

from __future__ import annotations

import argparse
import io
import os
import platform
import resource
import shlex
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_quality import (  # noqa: E402  (a sibling script, not a package)
    DATASETS,
    digit_rows,
    primary,
    read_rows,
    run_span,
    score,
    with_overrides,
    write_span,
)

os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

DATASET_NAMES = ("fine_foods", "churn", "digits")
FAMILY = {"fine_foods": "text", "churn": "tabular", "digits": "image"}


@dataclass
class Dataset:
    """Train and test rows of one dataset, and its ``evergreen init`` config."""

    name: str
    header: list[str]
    train: list[dict[str, Any]]
    test: list[dict[str, Any]]
    label: str
    config: str
    labels: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.labels = sorted({r[self.label] for r in self.train})


def template(family: str, label: str, features: dict[str, str] | None = None) -> str:
    """The config ``evergreen init --template family`` writes, with the label (and features) set."""
    text = resources.files("evergreen").joinpath(f"templates/{family}.toml").read_text("utf-8")
    text = text.replace("{name}", "bench-full-vs-keras")
    lines = []
    for line in text.splitlines():
        if line.startswith("label = "):
            line = f'label = "{label}"'
        elif features is not None and line.startswith(("text = ", "image = ")):
            line = "\n".join(f'{column} = "{kind}"' for column, kind in features.items())
        lines.append(line)
    return "\n".join(lines) + "\n"


def dataset(name: str) -> Dataset:
    """One dataset's train and test rows (fixed splits: see the module docstring)."""
    if name == "fine_foods":
        header, train = read_rows(DATASETS / "fine_foods_train.csv")
        _, test = read_rows(DATASETS / "fine_foods_test.csv")
        config = template("text", "score", {"review": "text"})
        return Dataset(name, header, train, test, "score", config)
    if name == "churn":
        header, rows = read_rows(DATASETS / "mlc_churn.csv")
        train = [r for i, r in enumerate(rows) if i % 5]
        return Dataset(name, header, train, rows[::5], "churn", template("tabular", "churn"))
    rows = digit_rows()
    train = [r for i, r in enumerate(rows) if i % 5]
    config = template("image", "digit")
    return Dataset(name, ["image", "digit"], train, rows[::5], "digit", config)


# --------------------------------------------------------------------------------------------
# Measuring
# --------------------------------------------------------------------------------------------


@dataclass
class Cost:
    wall: float = 0.0
    cpu: float = 0.0


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + children.ru_utime + children.ru_stime


@contextmanager
def measured(cost: Cost) -> Any:
    wall, cpu = time.perf_counter(), _cpu()
    yield
    cost.wall, cost.cpu = time.perf_counter() - wall, _cpu() - cpu


@dataclass
class Side:
    """One side's result on one dataset and seed."""

    metrics: dict[str, float]
    rows: int  # rows the final model was trained on (one epoch's)
    epochs: int
    cost: Cost
    note: str = ""


# --------------------------------------------------------------------------------------------
# Evergreen: run --full with the template's config
# --------------------------------------------------------------------------------------------


def evergreen_side(data: Dataset, work: Path, seed: int, overrides: list[str]) -> Side:
    project = work / f"{data.name}-seed-{seed}"
    shutil.rmtree(project, ignore_errors=True)
    project.mkdir(parents=True)
    config = with_overrides(data.config, [*overrides, f"train.seed={seed}"])
    (project / "evergreen.toml").write_text(config, encoding="utf-8")
    write_span(project, 1, data.header, data.train)
    cost = Cost()
    with measured(cost):
        record, rows_trained, saved_model = run_span(project, full=True)
    summary = _train_summary(project)
    epochs = int(summary.get("epochs") or 0)
    m = score(saved_model, data.test, data.label)
    note = f"seq_len {_sequence_length(project)}" if data.name == "fine_foods" else ""
    return Side(m, rows_trained // max(epochs, 1), epochs, cost, note)


def _train_summary(project_dir: Path) -> dict[str, Any]:
    from evergreen import config as config_mod
    from evergreen.project import Project

    with Project(config_mod.load(project_dir / "evergreen.toml")) as project:
        runs = project.store.runs(component="train", limit=10)
        return dict(runs[0].summary) if runs else {}  # newest first


def _sequence_length(project_dir: Path) -> int | str:
    import json

    found = sorted(project_dir.rglob("featurizer.json"))
    if not found:
        return "?"
    config = json.loads(found[-1].read_text(encoding="utf-8")).get("config", {})
    return config.get("sequence_length", "?")


# --------------------------------------------------------------------------------------------
# The plain Keras 3 script: the family's layers written out, fit with EarlyStopping
# --------------------------------------------------------------------------------------------

# What each template sets (src/evergreen/templates/*.toml, config.py defaults for text) and each
# family's early-stopping patience (evergreen.training.data.FAMILY_PATIENCE).
PLAIN = {
    "text": {"epochs": 5, "learning_rate": 1e-3, "batch_size": 64, "patience": 2},
    "tabular": {"epochs": 30, "learning_rate": 3e-3, "batch_size": 32, "patience": 3},
    "image": {"epochs": 15, "learning_rate": 3e-3, "batch_size": 32, "patience": 4},
}
TEXT_MAX_TOKENS, TEXT_SEQUENCE_LENGTH = 20_000, 200
IMAGE_SIZE, IMAGE_CHANNELS = 32, 3
CROSS_BINS, MAX_CROSSES = 256, 6


def text_model(keras: Any, vocab_size: int, sequence_length: int, num_classes: int) -> Any:
    """The word CNN: embedding 64, Conv1D 128 x 5 relu, global max-pool, dropout 0.3, softmax."""
    inputs = keras.Input(shape=(sequence_length,), dtype="int64")
    x = keras.layers.Embedding(vocab_size, 64)(inputs)
    x = keras.layers.Conv1D(128, 5, activation="relu")(x)
    x = keras.layers.GlobalMaxPooling1D()(x)
    x = keras.layers.Dropout(0.3)(x)
    return keras.Model(inputs, keras.layers.Dense(num_classes, activation="softmax")(x))


def image_model(keras: Any, num_classes: int) -> Any:
    """The small CNN: rescale, translate/rotate, conv 32, pool, conv 64, pool, dense 64, dropout."""
    layers = keras.layers
    inputs = keras.Input(shape=(IMAGE_SIZE, IMAGE_SIZE, IMAGE_CHANNELS))
    x = layers.Rescaling(1.0 / 255)(inputs)
    x = layers.RandomTranslation(0.1, 0.1)(x)
    x = layers.RandomRotation(0.05)(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    x = layers.Dropout(0.3)(x)
    return keras.Model(inputs, layers.Dense(num_classes, activation="softmax")(x))


def tabular_model(keras: Any, n_numeric: int, cat_sizes: list[int], num_classes: int) -> Any:
    """Wide & deep: standardized numbers + missing flags, one embedding per category (deep,
    64 → 32 relu) plus linear one-hot categories, hashed pairwise crosses and numbers (wide)."""
    layers = keras.layers
    numeric = keras.Input(shape=(n_numeric,), name="numeric")
    missing = keras.Input(shape=(n_numeric,), name="missing")
    cats = [keras.Input(shape=(1,), dtype="int64", name=f"cat_{i}") for i in range(len(cat_sizes))]
    deep = [numeric, missing]
    wide = [layers.Dense(num_classes)(layers.Concatenate()([numeric, missing]))]
    for cat, size in zip(cats, cat_sizes, strict=True):
        dim = min(16, max(2, round(1.6 * size**0.56)))
        deep.append(layers.Flatten()(layers.Embedding(size, dim)(cat)))
        wide.append(layers.Flatten()(layers.Embedding(size, num_classes)(cat)))
    for a, b in list(combinations(range(len(cats)), 2))[:MAX_CROSSES]:
        crossed = layers.HashedCrossing(CROSS_BINS)((cats[a], cats[b]))
        wide.append(layers.Flatten()(layers.Embedding(CROSS_BINS, num_classes)(crossed)))
    x = layers.Dense(64, activation="relu")(layers.Concatenate()(deep))
    x = layers.Dropout(0.2)(x)
    x = layers.Dense(32, activation="relu")(x)
    logits = layers.Add()([layers.Dense(num_classes)(x), *wide])
    outputs = layers.Activation("softmax")(logits)
    return keras.Model(
        {"numeric": numeric, "missing": missing, **{c.name: c for c in cats}}, outputs
    )


def text_inputs(keras: Any, data: Dataset) -> tuple[Any, Callable[[list[dict]], Any]]:
    """The word CNN and a function from rows to its token ids (TextVectorization 20k, 200)."""
    vectorize = keras.layers.TextVectorization(
        max_tokens=TEXT_MAX_TOKENS, output_sequence_length=TEXT_SEQUENCE_LENGTH
    )
    vectorize.adapt([r["review"] for r in data.train], batch_size=1024)

    def features(rows: list[dict]) -> Any:
        return np.asarray(vectorize(np.array([r["review"] for r in rows])), dtype=np.int64)

    model = text_model(keras, vectorize.vocabulary_size(), TEXT_SEQUENCE_LENGTH, len(data.labels))
    return model, features


def image_inputs(keras: Any, data: Dataset) -> tuple[Any, Callable[[list[dict]], Any]]:
    """The small CNN and a function from rows to 32x32x3 float images (0..255)."""
    from PIL import Image

    from evergreen.tf import tensorflow

    tf = tensorflow()

    def features(rows: list[dict]) -> Any:
        gray = np.stack([np.asarray(Image.open(io.BytesIO(r["image"])).convert("L")) for r in rows])
        images = tf.image.resize(gray[..., None].astype("float32"), [IMAGE_SIZE, IMAGE_SIZE])
        return np.repeat(np.asarray(images), IMAGE_CHANNELS, axis=-1)

    return image_model(keras, len(data.labels)), features


def tabular_inputs(keras: Any, data: Dataset) -> tuple[Any, Callable[[list[dict]], Any]]:
    """Wide & deep and a function from rows to its inputs (numbers standardized on the train
    rows, categories as ``StringLookup`` ids by frequency, 0 the unknown bucket)."""
    columns = [c for c in data.header if c != data.label]
    numeric = [c for c in columns if all(_is_number(r[c]) for r in data.train)]
    categorical = [c for c in columns if c not in numeric]
    raw = np.array([[float(r[c]) for c in numeric] for r in data.train])
    mean, std = raw.mean(axis=0), np.where(raw.std(axis=0) > 1e-12, raw.std(axis=0), 1.0)
    lookups = []
    for column in categorical:
        lookup = keras.layers.StringLookup(num_oov_indices=1, mask_token=None)
        lookup.adapt(np.array([r[column] for r in data.train]))
        lookups.append(lookup)

    def features(rows: list[dict]) -> dict[str, Any]:
        values = np.array([[float(r[c]) for c in numeric] for r in rows])
        out = {
            "numeric": ((values - mean) / std).astype("float32"),
            "missing": np.isnan(values).astype("float32"),
        }
        for i, (column, lookup) in enumerate(zip(categorical, lookups, strict=True)):
            ids = lookup(np.array([r[column] for r in rows]))
            out[f"cat_{i}"] = np.asarray(ids, dtype=np.int64).reshape(-1, 1)
        return out

    sizes = [lookup.vocabulary_size() for lookup in lookups]
    return tabular_model(keras, len(numeric), sizes, len(data.labels)), features


def _is_number(value: str) -> bool:
    try:
        float(value)
    except ValueError:
        return False
    return True


PLAIN_INPUTS = {"text": text_inputs, "tabular": tabular_inputs, "image": image_inputs}


def keras_side(data: Dataset, seed: int) -> Side:
    """The plain script: build, ``fit`` with EarlyStopping on a 10 % split, score on the test rows."""
    import keras

    from evergreen.components.evaluate import metrics

    family = FAMILY[data.name]
    settings = PLAIN[family]
    cost = Cost()
    with measured(cost):
        keras.utils.set_random_seed(seed)
        model, features = PLAIN_INPUTS[family](keras, data)
        model.compile(
            optimizer=keras.optimizers.Adam(learning_rate=settings["learning_rate"]),
            loss="sparse_categorical_crossentropy",
            metrics=["accuracy"],
        )
        index = {label: i for i, label in enumerate(data.labels)}
        y = np.array([index[r[data.label]] for r in data.train])
        stop = keras.callbacks.EarlyStopping(
            monitor="val_loss", patience=settings["patience"], restore_best_weights=True
        )
        history = model.fit(
            features(data.train),
            y,
            validation_split=0.1,
            epochs=settings["epochs"],
            batch_size=settings["batch_size"],
            callbacks=[stop],
            verbose=0,
        )
        scores = model.predict(features(data.test), batch_size=256, verbose=0)
    m = metrics(scores, [r[data.label] for r in data.test], data.labels)
    epochs = len(history.history["loss"])
    return Side(m, int(len(data.train) * (1 - 0.1)), epochs, cost)  # Keras's split: floor


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

HEAD = (
    f"{'dataset':<11} {'seed':>4} {'side':<9} {'rows':>5} {'epochs':>6} {'accuracy':>8} "
    f"{'primary':>8} {'bal@thr':>7} {'wall s':>7} {'cpu s':>7}  note"
)


def row_line(name: str, seed: int, side: str, result: Side) -> str:
    m = result.metrics
    bal = m.get("balanced_accuracy_at_threshold", m["balanced_accuracy"])
    return (
        f"{name:<11} {seed:>4} {side:<9} {result.rows:>5} {result.epochs:>6} "
        f"{m['accuracy']:>8.3f} {primary(m):>8.3f} {bal:>7.3f} {result.cost.wall:>7.1f} "
        f"{result.cost.cpu:>7.1f}  {result.note}"
    ).rstrip()


def summary(name: str, runs: list[tuple[Side, Side]]) -> None:
    """Means over seeds of each side, and of the gap (evergreen minus keras), in points."""

    def mean(values: list[float]) -> str:
        sd = f" (sd {statistics.stdev(values):.1f})" if len(values) > 1 else ""
        return f"{statistics.mean(values):+.1f}{sd}"

    what = "AUC" if name != "digits" else "bal.acc"
    acc = [(e.metrics["accuracy"], k.metrics["accuracy"]) for e, k in runs]
    prim = [(primary(e.metrics), primary(k.metrics)) for e, k in runs]
    cost = [(e.cost, k.cost) for e, k in runs]
    print(
        f"{name:<11} accuracy {statistics.mean(a for a, _ in acc):.3f} vs "
        f"{statistics.mean(b for _, b in acc):.3f} (gap {mean([(a - b) * 100 for a, b in acc])}); "
        f"{what} {statistics.mean(a for a, _ in prim):.3f} vs "
        f"{statistics.mean(b for _, b in prim):.3f} (gap {mean([(a - b) * 100 for a, b in prim])}); "
        f"wall {statistics.mean(e.wall for e, _ in cost):.0f} vs "
        f"{statistics.mean(k.wall for _, k in cost):.0f} s, cpu "
        f"{statistics.mean(e.cpu for e, _ in cost):.0f} vs {statistics.mean(k.cpu for _, k in cost):.0f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--datasets", default=",".join(DATASET_NAMES), help="comma-separated")
    parser.add_argument("--seeds", default="0", metavar="0,1,2", help="train.seed / Keras seed")
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="train.KEY=VALUE",
        help="a [train] setting for the Evergreen side only, e.g. --set 'train.patience=3'",
    )
    args = parser.parse_args()
    names = [n for n in args.datasets.split(",") if n]
    unknown = set(names) - set(DATASET_NAMES)
    if unknown:
        sys.exit(f"unknown datasets {sorted(unknown)}; known: {', '.join(DATASET_NAMES)}")
    try:
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    except ValueError:
        sys.exit(f"--seeds {args.seeds!r}: use comma-separated integers, e.g. --seeds 0,1,2")

    from evergreen.tf import tensorflow

    tf = tensorflow()
    tf.get_logger().setLevel("ERROR")  # predict's retracing notes (one model per side)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="evergreen-bench-keras-"))
    print(f"command : {shlex.join([sys.executable, *sys.argv])}")
    print(
        f"machine : {platform.platform()}, {os.cpu_count()} cpus, python "
        f"{platform.python_version()}, tensorflow {tf.__version__}, load {os.getloadavg()[0]:.1f}"
    )
    print("primary: AUC (binary) or balanced accuracy (digits); rows: one epoch's train rows\n")
    print(HEAD)
    print("-" * len(HEAD))
    results: dict[str, list[tuple[Side, Side]]] = {}
    try:
        for name in names:
            data = dataset(name)
            for seed in seeds:
                ours = evergreen_side(data, work, seed, args.set)
                print(row_line(name, seed, "evergreen", ours), flush=True)
                plain = keras_side(data, seed)
                print(row_line(name, seed, "keras", plain), flush=True)
                results.setdefault(name, []).append((ours, plain))
        print(f"\n## evergreen vs keras, mean over seeds {','.join(map(str, seeds))}")
        for name, runs in results.items():
            summary(name, runs)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
