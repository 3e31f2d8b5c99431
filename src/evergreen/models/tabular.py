"""The tabular model family: frozen normalization and category vocabularies, a wide & deep model.

The featurizer is fit once on a full run and then frozen:

- **numeric** columns: mean and standard deviation (streamed, never held in memory). A value is
  standardized; a missing value (None / NaN) becomes 0 with its ``missing`` indicator set to 1.
- **categorical** columns: a vocabulary of the ``max_categories`` most frequent values per
  column. Id 0 is the out-of-vocabulary bucket: unseen and missing values land there.

Featurized records hold ``numeric`` and ``missing`` (float32 vectors) and ``cat_<i>`` (int64
ids, one per categorical column) — written once per row. The exported SavedModel takes one raw
tensor of shape ``[None]`` per column (float32 for numeric, string for categorical) and applies
the same frozen statistics in-graph (``StringLookup`` layers with the frozen vocabularies).

The model is wide & deep: the wide part is linear in one-hot categories, their hashed pairwise
crosses and the numbers; the deep part embeds each category, concatenates the numbers and their
missing indicators and goes through two ReLU layers. Logits add up; softmax on top.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from itertools import combinations
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import DataError
from evergreen.models.contract import (
    check_format,
    keras_module,
    read_state,
    save_family,
    write_state,
)
from evergreen.tf import tensorflow

__all__ = ["TabularFamily", "TabularFeaturizer", "build_model"]

FORMAT_VERSION = 1
STATE_FILE = "tabular.json"
CROSS_BINS = 256
MAX_CROSSES = 6  # pairs of categorical columns crossed in the wide part (the first ones)


class TabularFeaturizer:
    """Standardizes numbers and maps categories to ids, with statistics learned once.

    Args:
        numeric: numeric columns, in order.
        categorical: categorical columns, in order.
        max_categories: vocabulary cap per categorical column (most frequent first). Default 1000.
    """

    family = "tabular"

    def __init__(
        self, numeric: Sequence[str], categorical: Sequence[str], max_categories: int = 1000
    ) -> None:
        self.numeric = list(numeric)
        self.categorical = list(categorical)
        self.max_categories = max_categories
        self.mean_: list[float] | None = None
        self.std_: list[float] | None = None
        self.vocabularies_: list[list[str]] | None = None
        self.rows_seen_ = 0
        self._lookups: list[Any] | None = None
        self._index: list[dict[str, int]] | None = None

    # -- hyperparameters ---------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "max_categories": self.max_categories,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TabularFeaturizer:
        return cls(data["numeric"], data["categorical"], int(data.get("max_categories", 1000)))

    # -- learning ----------------------------------------------------------------------------
    def fit(self, rows: Iterable[Mapping[str, Any]]) -> TabularFeaturizer:
        """Learn means, deviations and vocabularies from ``rows`` (streamed once).

        Raises:
            DataError: no rows, or no feature columns.
        """
        if not self.numeric and not self.categorical:
            raise DataError("the tabular family needs at least one numeric or categorical feature")
        n = np.zeros(len(self.numeric))
        total = np.zeros(len(self.numeric))
        squares = np.zeros(len(self.numeric))
        counts: list[Counter[str]] = [Counter() for _ in self.categorical]
        seen = 0
        for row in rows:
            seen += 1
            for i, column in enumerate(self.numeric):
                value = row.get(column)
                if value is not None and not math.isnan(value):
                    n[i] += 1
                    total[i] += value
                    squares[i] += value * value
            for i, column in enumerate(self.categorical):
                value = row.get(column)
                if value is not None and value != "":
                    counts[i][str(value)] += 1
        if seen == 0:
            raise DataError("the tabular featurizer got no rows to fit")
        mean = np.divide(total, n, out=np.zeros_like(total), where=n > 0)
        var = np.divide(squares, n, out=np.zeros_like(total), where=n > 0) - mean**2
        std = np.sqrt(np.maximum(var, 0.0))
        self.mean_ = [float(m) for m in mean]
        self.std_ = [float(s) if s > 1e-12 else 1.0 for s in std]
        self.vocabularies_ = [
            [v for v, _ in sorted(c.items(), key=lambda kv: (-kv[1], kv[0]))[: self.max_categories]]
            for c in counts
        ]
        self.rows_seen_ = seen
        self._lookups = self._index = None
        return self

    def _fitted(self) -> tuple[list[float], list[float], list[list[str]]]:
        if self.mean_ is None or self.std_ is None or self.vocabularies_ is None:
            raise RuntimeError("this TabularFeaturizer is not fitted: call fit() or load() first.")
        return self.mean_, self.std_, self.vocabularies_

    def fingerprint(self) -> str:
        mean, std, vocabularies = self._fitted()
        state = {
            "format_version": FORMAT_VERSION,
            **self.to_dict(),
            "mean": mean,
            "std": std,
            "vocabularies": vocabularies,
        }
        return hashlib.sha256(json.dumps(state, sort_keys=True).encode()).hexdigest()

    def properties(self) -> dict[str, Any]:
        return {
            "numeric": self.numeric,
            "categorical": self.categorical,
            "vocabulary_sizes": [len(v) for v in self._fitted()[2]],
        }

    # -- growing -----------------------------------------------------------------------------
    def grow(
        self, rows: Iterable[Mapping[str, Any]], min_count: int, limit: int
    ) -> dict[str, list[str]]:
        """Append each categorical column's frequent unseen values to its vocabulary.

        Known values keep their ids and the normalization is unchanged (both hold for the
        featurizer's whole life, until a full retrain refits it). A value seen at least
        ``min_count`` times in ``rows`` and not known gets the next id, most frequent first,
        at most ``limit`` per column.

        Returns:
            ``{column: values added}`` for the columns that grew (empty: nothing changed).
        """
        _, _, vocabularies = self._fitted()
        counts: list[Counter[str]] = [Counter() for _ in self.categorical]
        for row in rows:
            for i, column in enumerate(self.categorical):
                value = row.get(column)
                if value is not None and value != "":
                    counts[i][str(value)] += 1
        added: dict[str, list[str]] = {}
        for i, column in enumerate(self.categorical):
            known = set(vocabularies[i])
            fresh = sorted(
                ((n, v) for v, n in counts[i].items() if n >= min_count and v not in known),
                key=lambda item: (-item[0], item[1]),
            )[:limit]
            if fresh:
                added[column] = [value for _, value in fresh]
                vocabularies[i] = [*vocabularies[i], *added[column]]
        self._lookups = self._index = None
        return added

    def embedding_rows(self) -> dict[str, tuple[int, int]]:
        """Embedding layer → (rows it needs, the out-of-vocabulary id new rows start from)."""
        out: dict[str, tuple[int, int]] = {}
        for i, vocab in enumerate(self._fitted()[2]):
            out[f"deep_embed_{i}"] = out[f"wide_embed_{i}"] = (len(vocab) + 1, 0)
        return out

    # -- storage -----------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        mean, std, vocabularies = self._fitted()
        state = {
            "format_version": FORMAT_VERSION,
            "config": self.to_dict(),
            "mean": mean,
            "std": std,
            "vocabularies": vocabularies,
            "rows_seen": self.rows_seen_,
            "fingerprint": self.fingerprint(),
        }
        directory = write_state(directory, STATE_FILE, state)
        save_family(directory, self.family)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TabularFeaturizer:
        """Raises: NotFound (no state file), DataError (a damaged or edited state)."""
        path = Path(directory) / STATE_FILE
        state = read_state(directory, STATE_FILE, "tabular featurizer")
        check_format(state, FORMAT_VERSION, f"tabular featurizer {path}")
        featurizer = cls.from_dict(state["config"])
        featurizer.mean_, featurizer.std_, featurizer.vocabularies_ = (
            state["mean"],
            state["std"],
            state["vocabularies"],
        )
        featurizer.rows_seen_ = int(state.get("rows_seen", 0))
        if featurizer.fingerprint() != state.get("fingerprint"):
            raise DataError(
                f"tabular featurizer {path} does not match its fingerprint: it was edited or damaged; refit it with --full."
            )
        return featurizer

    # -- applying (numpy, once per row) ------------------------------------------------------
    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        spec: dict[str, tuple[list[int], str]] = {}
        if self.numeric:
            spec["numeric"] = ([len(self.numeric)], "float32")
            spec["missing"] = ([len(self.numeric)], "float32")
        for i in range(len(self.categorical)):
            spec[f"cat_{i}"] = ([1], "int64")
        return spec

    def _ids(self) -> list[dict[str, int]]:
        if self._index is None:
            self._index = [{v: i + 1 for i, v in enumerate(vocab)} for vocab in self._fitted()[2]]
        return self._index

    def transform(self, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
        """Featurized arrays of ``rows``: ``numeric``, ``missing`` (n, k) and ``cat_<i>`` (n, 1)."""
        mean, std, _ = self._fitted()
        out: dict[str, np.ndarray] = {}
        if self.numeric:
            raw = np.array(
                [
                    [np.nan if row.get(c) is None else float(row[c]) for c in self.numeric]
                    for row in rows
                ],
                dtype=np.float64,
            ).reshape(len(rows), len(self.numeric))
            missing = np.isnan(raw)
            z = (raw - np.array(mean)) / np.array(std)
            out["numeric"] = np.where(missing, 0.0, z).astype(np.float32)
            out["missing"] = missing.astype(np.float32)
        for i, (column, index) in enumerate(zip(self.categorical, self._ids(), strict=True)):
            out[f"cat_{i}"] = np.array(
                [
                    [index.get("" if row.get(column) is None else str(row[column]), 0)]
                    for row in rows
                ],
                dtype=np.int64,
            ).reshape(len(rows), 1)
        return out

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        return self.transform(rows), {"rows_featurized": len(rows), "rows_reused": 0}

    def unknown_rate(self, rows: Sequence[Mapping[str, Any]]) -> float:
        """Fraction of present categorical values outside the frozen vocabularies."""
        present = unknown = 0
        for row in rows:
            for column, index in zip(self.categorical, self._ids(), strict=True):
                value = row.get(column)
                if value is None or value == "":
                    continue
                present += 1
                unknown += str(value) not in index
        return unknown / present if present else 0.0

    def text_vocabulary(self) -> None:
        return None  # categories are not words: drift's unknown rate is for text columns

    # -- in-graph ----------------------------------------------------------------------------
    def model_inputs(self, parsed: Mapping[str, Any]) -> dict[str, Any]:
        return {name: parsed[name] for name in self.feature_spec()}

    def keras_inputs(self) -> dict[str, Any]:
        keras = keras_module()
        return {
            name: keras.Input(shape=tuple(shape), dtype=dtype, name=name)
            for name, (shape, dtype) in self.feature_spec().items()
        }

    def raw_signature(self) -> dict[str, Any]:
        tf = tensorflow()
        return {**{c: tf.float32 for c in self.numeric}, **{c: tf.string for c in self.categorical}}

    def feature_types(self) -> dict[str, str]:
        return {
            **{c: "numeric" for c in self.numeric},
            **{c: "categorical" for c in self.categorical},
        }

    def raw_columns(self) -> dict[str, str]:
        return {c: c for c in [*self.numeric, *self.categorical]}

    def serving_layers(self) -> list[Any]:
        if self._lookups is None:
            keras = keras_module()
            tf = tensorflow()
            self._lookups = []
            for i, vocab in enumerate(self._fitted()[2]):
                # An empty vocabulary (a column never present in training) maps all to OOV.
                layer = keras.layers.StringLookup(
                    vocabulary=vocab or ["\x00never"],
                    num_oov_indices=1,
                    mask_token=None,
                    name=f"lookup_{i}",
                )
                layer(tf.constant([""]))
                self._lookups.append(layer)
        return self._lookups

    def raw_to_model_inputs(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        tf = tensorflow()
        mean, std, _ = self._fitted()
        out = {}
        if self.numeric:
            x = tf.stack([tf.cast(raw[c], tf.float32) for c in self.numeric], axis=1)
            missing = tf.math.is_nan(x)
            z = (x - tf.constant(mean, tf.float32)) / tf.constant(std, tf.float32)
            out["numeric"] = tf.where(missing, tf.zeros_like(z), z)
            out["missing"] = tf.cast(missing, tf.float32)
        for i, (column, lookup) in enumerate(
            zip(self.categorical, self.serving_layers(), strict=True)
        ):
            out[f"cat_{i}"] = tf.reshape(tf.cast(lookup(raw[column]), tf.int64), [-1, 1])
        return out


def build_model(
    featurizer: TabularFeaturizer, num_classes: int, hidden_units: int = 64, dropout: float = 0.2
) -> Any:
    """The wide & deep classifier on :meth:`TabularFeaturizer.keras_inputs` (see the module doc)."""
    keras = keras_module()
    layers = keras.layers
    inputs = featurizer.keras_inputs()
    sizes = [len(v) + 1 for v in featurizer._fitted()[2]]
    cats = [inputs[f"cat_{i}"] for i in range(len(sizes))]
    deep_parts, wide_parts = [], []
    if "numeric" in inputs:
        deep_parts += [inputs["numeric"], inputs["missing"]]
        wide_parts.append(
            layers.Dense(num_classes, name="wide_numeric")(
                layers.Concatenate(name="numbers")([inputs["numeric"], inputs["missing"]])
            )
        )
    for i, (cat, size) in enumerate(zip(cats, sizes, strict=True)):
        dim = min(16, max(2, round(1.6 * size**0.56)))
        deep_parts.append(
            layers.Flatten(name=f"deep_flat_{i}")(
                layers.Embedding(size, dim, name=f"deep_embed_{i}")(cat)
            )
        )
        wide_parts.append(
            layers.Flatten(name=f"wide_flat_{i}")(
                layers.Embedding(size, num_classes, name=f"wide_embed_{i}")(cat)
            )
        )
    for n, (a, b) in enumerate(list(combinations(range(len(cats)), 2))[:MAX_CROSSES]):
        crossed = layers.HashedCrossing(CROSS_BINS, name=f"cross_{n}")((cats[a], cats[b]))
        wide_parts.append(
            layers.Flatten(name=f"cross_flat_{n}")(
                layers.Embedding(CROSS_BINS, num_classes, name=f"cross_embed_{n}")(crossed)
            )
        )
    deep = (
        deep_parts[0]
        if len(deep_parts) == 1
        else layers.Concatenate(name="deep_inputs")(deep_parts)
    )
    deep = layers.Dense(hidden_units, activation="relu", name="deep_1")(deep)
    deep = layers.Dropout(dropout, name="deep_dropout")(deep)
    deep = layers.Dense(max(hidden_units // 2, 2), activation="relu", name="deep_2")(deep)
    logits = layers.Add(name="logits")(
        [layers.Dense(num_classes, name="deep_logits")(deep), *wide_parts]
    )
    outputs = layers.Activation("softmax", name="classifier")(logits)
    return keras.Model(inputs, outputs, name="wide_and_deep")


class TabularFamily:
    """Numeric and categorical columns → wide & deep."""

    name = "tabular"

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> TabularFeaturizer:
        numeric = [c for c, t in types.items() if t == "numeric"]
        categorical = [c for c, t in types.items() if t == "categorical"]
        return TabularFeaturizer(numeric, categorical, cfg.max_categories)

    def load_featurizer(self, directory: str | Path) -> TabularFeaturizer:
        return TabularFeaturizer.load(directory)

    def build_model(self, featurizer: TabularFeaturizer, num_classes: int, cfg: Any) -> Any:
        return build_model(featurizer, num_classes, cfg.hidden_units)
