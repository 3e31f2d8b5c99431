"""Adopting a model trained elsewhere: its own preprocessing, Evergreen's loop around it.

The contract for ``evergreen adopt --model PATH`` (a ``.keras`` file; SavedModel folders are
refused for now, see :func:`load_model`):

- the model takes **raw columns**: one input per feature column it reads, named after the column
  (a model with a single input may name it anything when the data has exactly one text
  feature), float32 for numeric columns and string for categorical, text or image-bytes ones, of
  shape ``[batch]`` or ``[batch, 1]``; it does its own preprocessing (``StringLookup``,
  ``Normalization``, ``TextVectorization`` … inside the model);
- it returns class probabilities ``[batch, C]`` (softmax), in the order of the sorted label
  classes (or of ``--labels``).

Evergreen's featurizer for such a model is the **pass-through** one below: featurizing a row
writes its raw values once into the featurized shards (so history is never read from the source
files again), and the exported SavedModel feeds the raw inputs straight into the model. The
model's preprocessing state is its own and stays frozen unless its layers are trainable; use
``train.freeze_lower_layers`` and a low ``train.incremental_learning_rate`` for the
incremental updates.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import ConfigError, NotFound
from evergreen.models.contract import keras_module, read_state, save_family, write_state
from evergreen.tf import tensorflow

__all__ = ["AdoptedFamily", "PassThroughFeaturizer", "inputs_of", "load_model"]

STATE_FILE = "passthrough.json"


class PassThroughFeaturizer:
    """Raw column values in, the same values out: for models that preprocess themselves.

    Args:
        inputs: one ``{"name", "column", "dtype" ("float32"|"string"), "shape" ([] or [1])}``
            per model input, in the model's input order.
    """

    family = "adopted"

    def __init__(self, inputs: Sequence[Mapping[str, Any]]) -> None:
        self.inputs = [dict(i) for i in inputs]
        self.rows_seen_ = 0

    def to_dict(self) -> dict[str, Any]:
        return {"inputs": self.inputs}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PassThroughFeaturizer:
        return cls(data["inputs"])

    def fit(self, rows: Iterable[Mapping[str, Any]]) -> PassThroughFeaturizer:
        self.rows_seen_ = sum(1 for _ in rows)
        return self

    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.to_dict(), sort_keys=True).encode()).hexdigest()

    def properties(self) -> dict[str, Any]:
        return {"inputs": [i["column"] for i in self.inputs]}

    def save(self, directory: str | Path) -> Path:
        directory = write_state(
            directory, STATE_FILE, {**self.to_dict(), "rows_seen": self.rows_seen_}
        )
        save_family(directory, self.family)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> PassThroughFeaturizer:
        state = read_state(directory, STATE_FILE, "pass-through featurizer")
        featurizer = cls.from_dict(state)
        featurizer.rows_seen_ = int(state.get("rows_seen", 0))
        return featurizer

    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        return {i["name"]: (list(i["shape"]), i["dtype"]) for i in self.inputs}

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        out: dict[str, np.ndarray] = {}
        for i in self.inputs:
            values = [row.get(i["column"]) for row in rows]
            if i["dtype"] == "float32":
                out[i["name"]] = np.array(
                    [np.nan if v is None else float(v) for v in values], dtype=np.float32
                )
            else:
                out[i["name"]] = np.array(
                    [
                        b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8")
                        for v in values
                    ],
                    dtype=object,
                )
        return out, {"rows_featurized": len(rows), "rows_reused": 0}

    def model_inputs(self, parsed: Mapping[str, Any]) -> Any:
        if len(self.inputs) == 1:
            return parsed[self.inputs[0]["name"]]
        return {i["name"]: parsed[i["name"]] for i in self.inputs}

    def keras_inputs(self) -> Any:
        keras = keras_module()
        made = {
            i["name"]: keras.Input(shape=tuple(i["shape"]), dtype=i["dtype"], name=i["name"])
            for i in self.inputs
        }
        return next(iter(made.values())) if len(made) == 1 else made

    def raw_signature(self) -> dict[str, Any]:
        tf = tensorflow()
        return {
            i["name"]: tf.float32 if i["dtype"] == "float32" else tf.string for i in self.inputs
        }

    def raw_columns(self) -> dict[str, str]:
        return {i["name"]: i["column"] for i in self.inputs}

    def feature_types(self) -> dict[str, str]:
        return {
            i["column"]: "numeric" if i["dtype"] == "float32" else "categorical"
            for i in self.inputs
        }

    def raw_to_model_inputs(self, raw: Mapping[str, Any]) -> Any:
        tf = tensorflow()
        shaped = {
            i["name"]: tf.reshape(raw[i["name"]], [-1, 1]) if i["shape"] == [1] else raw[i["name"]]
            for i in self.inputs
        }
        return self.model_inputs(shaped)

    def unknown_rate(self, rows: Sequence[Mapping[str, Any]]) -> float:
        return 0.0  # the model's own preprocessing decides what it knows

    def text_vocabulary(self) -> None:
        return None  # the model's own vocabulary, if any, is inside it


class AdoptedFamily:
    """Featurizers for adopted models; such a model is never built from scratch."""

    name = "adopted"

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> PassThroughFeaturizer:
        raise ConfigError(
            "an adopted model's featurizer is made by `evergreen adopt`, from the model's inputs"
        )

    def load_featurizer(self, directory: str | Path) -> PassThroughFeaturizer:
        return PassThroughFeaturizer.load(directory)

    def build_model(self, featurizer: Any, num_classes: int, cfg: Any) -> Any:
        raise ConfigError(
            "an adopted model cannot be rebuilt from scratch; a full retrain uses train.family"
        )


def load_model(path: Path, *, own_artifact: bool = False) -> Any:
    """A Keras model from a ``.keras``/``.h5`` file.

    ``own_artifact``: the file is a ``model.keras`` Evergreen wrote (e.g. the champion's), so it
    is loaded with Keras's safe mode off (custom-module layers, lambdas).

    Raises:
        NotFound: nothing at ``path``.
        ConfigError: a folder (SavedModel), or a file Keras cannot load.
    """
    keras = keras_module()
    if not path.exists():
        raise NotFound(f"--model {path} does not exist; give a .keras file")
    if path.is_dir():
        # Wrapping a SavedModel in Keras (TFSMLayer) gives variables that Keras 3.x optimizers
        # cannot name ("…:0_momentum"), so it could not be fine-tuned: refuse it clearly.
        raise ConfigError(
            f"--model {path} is a folder (a SavedModel?); adopt a Keras model file instead: load or rebuild it in Keras and model.save('model.keras')"
        )
    try:
        return keras.models.load_model(path, safe_mode=not own_artifact)
    except Exception as e:
        raise ConfigError(
            f"--model {path} could not be loaded as a Keras model: {type(e).__name__}: {e}"
        ) from None


def inputs_of(model: Any, types: Mapping[str, str]) -> list[dict[str, Any]]:
    """The pass-through inputs for ``model``: each model input matched to a feature column.

    Raises:
        ConfigError: an input is not a column (the message lists the columns), or has a dtype
            or shape that raw columns cannot feed.
    """
    texts = [c for c, t in types.items() if t == "text"]
    out = []
    for tensor in model.inputs:
        name = tensor.name.split(":")[0]
        column = name
        if column not in types and len(model.inputs) == 1 and len(texts) == 1:
            column = texts[0]
        if column not in types:
            raise ConfigError(
                f"the adopted model's input {name!r} is not a feature column; its inputs must be named after columns: {', '.join(types)}"
            )
        dtype = str(tensor.dtype)
        if "float" in dtype or "int" in dtype:
            if types[column] != "numeric":
                raise ConfigError(
                    f"the adopted model's input {name!r} is numeric ({dtype}) but column {column!r} is {types[column]}; take a string input for it"
                )
            dtype = "float32"
        elif dtype == "string":
            if types[column] == "numeric":
                raise ConfigError(
                    f"the adopted model's input {name!r} takes strings but column {column!r} is numeric; take a float32 input for it"
                )
        else:
            raise ConfigError(
                f"the adopted model's input {name!r} has dtype {dtype}; use float32 or string inputs"
            )
        shape = list(tensor.shape[1:])
        if shape not in ([], [1]):
            raise ConfigError(
                f"the adopted model's input {name!r} has shape {tensor.shape}; raw columns feed shape [batch] or [batch, 1]"
            )
        out.append({"name": name, "column": column, "dtype": dtype, "shape": shape})
    return out
