"""The model family contract: what the loop needs from a family, and nothing more.

A family (text, tabular, image, a custom module, an adopted model) supplies a **featurizer**
and a **model builder**; the pipeline does the rest the same way for every family::

    featurizer = family.new_featurizer(types, train_config).fit(rows)   # full run only, then frozen
    arrays, ledger = featurizer.featurize(rows, cache)                  # once per row → TFRecord
    model = family.build_model(featurizer, n_classes, train_config)     # takes featurizer.model_inputs(...)
    export_serving_model(featurizer, model, labels, directory)           # raw inputs in, in-graph featurizer

A featurizer's featurized record is described by :meth:`Featurizer.feature_spec` (name →
shape and dtype), written and read back by :mod:`evergreen.models.featurized`;
:meth:`Featurizer.model_inputs` turns the parsed tensors into what the Keras model eats
(in-graph: an image is decoded here). The exported SavedModel takes raw inputs
(:meth:`Featurizer.raw_signature`) and runs :meth:`Featurizer.raw_to_model_inputs` in-graph, so
training and serving share one featurizer by construction
(:mod:`evergreen.models.serving_export`).

This module is the bottom of ``models/``: the families import it, and
:mod:`evergreen.models.registry` maps family names to them. It also holds what every family
shares: the ``family.json`` marker, JSON state files, ``compile_model`` and ``freeze_lower``.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.tf import tensorflow

__all__ = [
    "ConfigProblem",
    "FeatureCache",
    "Featurizer",
    "ModelFamily",
    "SequenceSized",
    "check_format",
    "compile_model",
    "freeze_lower",
    "keras_module",
    "read_family",
    "read_state",
    "save_family",
    "write_state",
]

FAMILY_FILE = "family.json"  # beside every saved featurizer: which family reads it back
INPUTS_FILE = "evergreen_inputs.json"  # in <saved_model>/assets.extra: signature input → column

Ledger = dict[str, int]
# What a family refuses in ``[train]`` at config load: (key, value, how to fix it).
ConfigProblem = tuple[str, Any, str]


class FeatureCache(Protocol):
    """A content-addressed store of featurized values (the metadata store's token cache)."""

    def get(self, keys: Sequence[str]) -> dict[str, bytes]: ...

    def put(self, values: Mapping[str, bytes]) -> None: ...


@runtime_checkable
class Featurizer(Protocol):
    """A fitted, frozen featurizer. Hyperparameters via ``to_dict``; learned state in ``save``."""

    family: str

    def fit(self, rows: Iterable[Mapping[str, Any]]) -> Featurizer: ...

    def fingerprint(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def save(self, directory: str | Path) -> Path: ...

    def feature_spec(self) -> dict[str, tuple[list[int], str]]: ...

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: FeatureCache | None
    ) -> tuple[dict[str, np.ndarray], Ledger]: ...

    def model_inputs(self, parsed: Mapping[str, Any]) -> Any: ...

    def keras_inputs(self) -> Any: ...

    def raw_signature(self) -> dict[str, Any]: ...

    def raw_columns(self) -> dict[str, str]: ...

    def feature_types(self) -> dict[str, str]: ...

    def raw_to_model_inputs(self, raw: Mapping[str, Any]) -> Any: ...

    def unknown_rate(self, rows: Sequence[Mapping[str, Any]]) -> float: ...

    def text_vocabulary(self) -> set[str] | None:
        """The frozen words of a text column (drift's unknown-word rate); None without text."""
        ...


@runtime_checkable
class SequenceSized(Protocol):
    """A featurizer whose padded length is chosen from the data at a full retrain (text).

    The loop sets ``sequence_length`` on the unfitted featurizer from the token counts of
    ``text_feature`` (see :mod:`evergreen.sequence_length`), never below
    ``min_sequence_length`` (what the model accepts).
    """

    text_feature: str
    sequence_length: int
    min_sequence_length: int


class ModelFamily(Protocol):
    """A family: makes featurizers and models (see the module docstring)."""

    name: str

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> Featurizer:
        """An unfitted featurizer for the feature ``types`` (column → type) and ``[train]``."""
        ...

    def load_featurizer(self, directory: str | Path) -> Featurizer: ...

    def build_model(self, featurizer: Featurizer, num_classes: int, cfg: Any) -> Any:
        """A fresh Keras model from ``featurizer.keras_inputs()`` to class probabilities."""
        ...


# --------------------------------------------------------------------------------------------
# Saved featurizers
# --------------------------------------------------------------------------------------------


def save_family(directory: str | Path, name: str, extra: Mapping[str, Any] | None = None) -> None:
    """Mark a saved featurizer's folder with the family that reads it back."""
    (Path(directory) / FAMILY_FILE).write_text(
        json.dumps({"family": name, **(extra or {})}) + "\n", encoding="utf-8"
    )


def read_family(directory: str | Path) -> dict[str, Any]:
    """The ``family.json`` of a saved featurizer: ``{"family": name, ...}``.

    Raises:
        NotFound: the folder holds no ``family.json`` (not a saved featurizer).
    """
    marker = Path(directory) / FAMILY_FILE
    if not marker.is_file():
        raise NotFound(
            f"{directory} is not a saved featurizer: {marker} does not exist. "
            "Refit the featurizer with a full retrain (--full)."
        )
    return json.loads(marker.read_text(encoding="utf-8"))


def write_state(directory: str | Path, name: str, state: Mapping[str, Any]) -> Path:
    """Write a featurizer's JSON state file ``name`` into ``directory`` (made if missing)."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / name).write_text(json.dumps(state, indent=1) + "\n", encoding="utf-8")
    return directory


def read_state(directory: str | Path, name: str, what: str) -> dict[str, Any]:
    """A featurizer's JSON state file, written by :func:`write_state`.

    Raises:
        NotFound: the file does not exist (``what`` names the featurizer in the message).
    """
    path = Path(directory) / name
    if not path.is_file():
        raise NotFound(f"{what} file {path} does not exist.")
    return json.loads(path.read_text(encoding="utf-8"))


def check_format(state: Mapping[str, Any], expected: int, where: str) -> None:
    """Refuse a saved state of another format version (``where``: the featurizer and path).

    Raises:
        DataError: ``state["format_version"]`` is not ``expected``.
    """
    if state.get("format_version") != expected:
        raise DataError(
            f"{where} has format_version {state.get('format_version')!r}; this Evergreen reads "
            f"{expected}. Refit it with a full retrain (--full)."
        )


# --------------------------------------------------------------------------------------------
# Models: compile, freeze
# --------------------------------------------------------------------------------------------


def keras_module() -> Any:
    """The ``keras`` module, imported after TensorFlow's C++ logs are quieted."""
    tensorflow()
    import keras as module

    return module


def compile_model(model: Any, learning_rate: float = 1e-3) -> Any:
    """Compile for integer label ids: Adam, sparse categorical cross-entropy, accuracy.

    Call it again after :func:`freeze_lower` for the change to take effect.
    """
    model.compile(
        optimizer=keras_module().optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def freeze_lower(model: Any, n_layers: int) -> list[str]:
    """Make the ``n_layers`` layers nearest the input non-trainable and all others trainable.

    Layers count in topological order, input layers excluded. It sets the whole state, so
    ``freeze_lower(model, 0)`` unfreezes a model whose layers were frozen when it was saved.
    Recompile afterwards (:func:`compile_model`).

    Returns:
        The names of the frozen layers, from the input up.

    Raises:
        ConfigError: ``n_layers`` is negative or would freeze the classifier.
    """
    input_layer = keras_module().layers.InputLayer
    layers = [layer for layer in model.layers if not isinstance(layer, input_layer)]
    if not (isinstance(n_layers, int) and 0 <= n_layers < len(layers)):
        raise ConfigError(
            f"freeze_lower_layers={n_layers!r} is not allowed: expected 0 to {len(layers) - 1}. "
            f"The layers from the input are {', '.join(layer.name for layer in layers)}; "
            "the last one always trains."
        )
    for index, layer in enumerate(layers):
        layer.trainable = index >= n_layers
    return [layer.name for layer in layers[:n_layers]]
