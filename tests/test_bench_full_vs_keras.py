"""bench/bench_full_vs_keras.py compares like with like: its plain Keras models are the families'.

The bench's "plain Keras 3 script" writes each family's model out with ``keras.layers``; if a
family changes (a layer, a width, a dropout) and the script does not, the bench would compare two
different models. These tests build both on the same inputs and compare the layers' kinds, the
weight shapes and the output shape.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import Any

import keras
import pytest

from evergreen.models import image, tabular, text
from tests.conftest import dataset as shared_dataset

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))

import bench_full_vs_keras as bench  # noqa: E402  (a script folder, not a package)


def architecture(model: Any) -> tuple[Counter, list[tuple[int, ...]], list[float], tuple]:
    """Layer kinds, weight shapes (sorted: the two models may order them differently), dropout
    rates and the output shape."""
    kinds = Counter(type(layer).__name__ for layer in model.layers)
    shapes = sorted(tuple(w.shape) for w in model.weights)
    rates = sorted(layer.rate for layer in model.layers if type(layer).__name__ == "Dropout")
    return kinds, shapes, rates, tuple(model.output_shape)


def test_text_model_is_the_families_word_cnn() -> None:
    family = text.build_model(1234, 2, sequence_length=200)
    plain = bench.text_model(keras, 1234, 200, 2)
    assert architecture(plain) == architecture(family)


def test_image_model_is_the_families_cnn() -> None:
    featurizer = image.ImageFeaturizer("image", bench.IMAGE_SIZE, bench.IMAGE_CHANNELS)
    family = image.build_model(featurizer, 10)
    plain = bench.image_model(keras, 10)
    assert architecture(plain) == architecture(family)
    assert plain.input_shape == family.input_shape


def test_tabular_model_on_churn_is_the_families_wide_and_deep() -> None:
    """On churn's train rows: the same columns, vocabularies and so the same embeddings."""
    shared_dataset("mlc_churn.csv")
    data = bench.dataset("churn")
    plain, features = bench.tabular_inputs(keras, data)
    columns = [c for c in data.header if c != data.label]
    numeric = [c for c in columns if all(bench._is_number(r[c]) for r in data.train)]
    assert len(numeric) == 15 and len(columns) - len(numeric) == 4  # state, area, 2 plans
    featurizer = tabular.TabularFeaturizer(numeric, [c for c in columns if c not in numeric])
    featurizer.fit({c: float(r[c]) if c in numeric else r[c] for c in columns} for r in data.train)
    family = tabular.build_model(featurizer, 2)
    assert architecture(plain) == architecture(family)
    ours = featurizer.transform(
        [{c: float(r[c]) if c in numeric else r[c] for c in columns} for r in data.test]
    )
    theirs = features(data.test)
    assert sorted(theirs) == sorted(ours)
    for name in ours:  # the same inputs: standardized numbers, ids by frequency (ties aside)
        if name.startswith("cat_"):
            assert (theirs[name] == 0).sum() == (ours[name] == 0).sum()
        else:
            assert theirs[name] == pytest.approx(ours[name], abs=1e-4)
