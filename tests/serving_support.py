"""Shared by the serving tests and the serving benchmark: tiny real text models in a registry.

A word CNN is trained for one epoch on 300 fine-foods reviews (about two seconds), then
exported several times with different label names (``great-1``/``other-1``, ``great-2``/...),
so each export answers with its own classes and a response shows which model really ran.
"""

from __future__ import annotations

import csv
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from evergreen.registry import Registry
from evergreen.tf import tensorflow

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
MODEL = "reviews"


@dataclass(frozen=True)
class Exports:
    """SavedModel folders, ``paths[k]`` answering with classes ``great-{k+1}``/``other-{k+1}``."""

    paths: list[Path]
    texts: list[str]

    def labels(self, k: int) -> list[str]:
        return [f"great-{k + 1}", f"other-{k + 1}"]


def read_reviews(rows: int = 300) -> tuple[list[str], list[str]]:
    with open(DATASETS / "fine_foods_train.csv", newline="", encoding="utf-8") as f:
        data = list(csv.DictReader(f))[:rows]
    return [r["review"] for r in data], [r["score"] for r in data]


def train_exports(
    folder: Path,
    variants: int,
    *,
    rows: int = 300,
    sequence_length: int = 32,
    embedding_dim: int = 8,
    conv_filters: int = 8,
) -> Exports:
    """Train one tiny text model and export it ``variants`` times with distinct label names."""
    tensorflow()
    import keras

    from evergreen.models.contract import compile_model
    from evergreen.models.serving_export import export_serving_model
    from evergreen.models.text import TextColumnFeaturizer, TextFeaturizer, TextHParams, build_model

    texts, labels = read_reviews(rows)
    names = sorted(set(labels))
    featurizer = TextFeaturizer(max_tokens=5000, sequence_length=sequence_length).fit(texts)
    keras.utils.set_random_seed(0)
    model = build_model(
        featurizer.vocabulary_size(),
        len(names),
        TextHParams(embedding_dim=embedding_dim, conv_filters=conv_filters, kernel_size=3),
        sequence_length=sequence_length,
    )
    compile_model(model)
    model.fit(
        featurizer.transform(texts),
        np.array([names.index(y) for y in labels]),
        epochs=1,
        batch_size=32,
        verbose=0,
    )
    exports = Exports([], texts)
    for k in range(variants):
        path = folder / f"export-{k + 1}"
        if path.exists():
            shutil.rmtree(path)
        export_serving_model(
            TextColumnFeaturizer("text", featurizer), model, exports.labels(k), path
        )
        exports.paths.append(path)
    return exports


def publish(registry: Registry, exports: Exports, k: int, *, champion: bool = True) -> int:
    """Publish export ``k`` as the next version; make it champion unless told not to."""
    version = registry.publish(MODEL, exports.paths[k], {"lineage": {"export": k}}).version
    if champion:
        registry.set_alias(MODEL, "champion", version, reason="test")
    return version


_CACHE: dict[str, Exports] = {}


def shared_exports(tmp_path_factory: object, variants: int = 6) -> Exports:
    """One set of exports per test session (training costs seconds; every test file uses it)."""
    if "exports" not in _CACHE:
        folder = tmp_path_factory.mktemp("serving-exports")  # type: ignore[attr-defined]
        _CACHE["exports"] = train_exports(folder, variants)
    return _CACHE["exports"]


def publish_generic(registry: Registry, folder: Path) -> None:
    """Publish two hand-made SavedModels: ``churn`` (float32, int64 and string columns, one
    float output) and ``photos`` (bytes in; length and the bytes back)."""
    tf = tensorflow()

    # autograph off: these graphs have no Python control flow to convert, and autograph's cache
    # was seen handing one `serve` (three arguments) to another module's (one) in a full run.
    class Churn(tf.Module):
        @tf.function(
            autograph=False,
            input_signature=[
                tf.TensorSpec([None], tf.float32, name="minutes"),
                tf.TensorSpec([None], tf.int64, name="calls"),
                tf.TensorSpec([None], tf.string, name="plan"),
            ],
        )
        def serve(self, minutes, calls, plan):
            gold = tf.cast(tf.equal(plan, "gold"), tf.float32)
            return {"score": minutes * 0.5 + tf.cast(calls, tf.float32) + 100 * gold}

    class Photos(tf.Module):
        @tf.function(
            autograph=False,
            input_signature=[tf.TensorSpec([None], tf.string, name="image_bytes")],
        )
        def serve(self, image_bytes):
            return {"length": tf.strings.length(image_bytes), "echo_bytes": image_bytes}

    for name, module in (("churn", Churn()), ("photos", Photos())):
        tf.saved_model.save(
            module, str(folder / name), signatures={"serving_default": module.serve}
        )
        registry.publish(name, folder / name, {})
