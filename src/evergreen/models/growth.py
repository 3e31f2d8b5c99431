"""Grow a warm-started model's embeddings when its featurizer's vocabularies grew.

A featurizer that grows append-only (:meth:`TextFeaturizer.grow`, :meth:`TabularFeaturizer.grow`)
keeps every known id, so the champion's embedding rows stay valid; only rows for the new ids are
missing. :func:`grow_model` clones the champion with larger embeddings, copies every weight and
starts each new row as a copy of the unknown id's row: before any training the grown model
answers exactly as the champion did (a new token used to be the unknown token), and training
then moves each new row on its own, since different tokens receive different gradients.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

from evergreen.errors import DataError
from evergreen.models.contract import keras_module

__all__ = ["grow_model"]


def grow_model(model: Any, rows: Mapping[str, tuple[int, int]]) -> tuple[Any, dict[str, int]]:
    """The model with its named embeddings enlarged to the featurizer's vocabulary sizes.

    Args:
        model: a Keras functional model (the champion, loaded).
        rows: embedding layer name → (rows needed, id whose row the new rows copy), from the
            featurizer's ``embedding_rows()``. Layers already that large are left alone.

    Returns:
        ``(model, {layer: rows added})``: the same model object when nothing grew.

    Raises:
        DataError: a named layer has more rows than asked (the vocabulary shrank: refit).
    """
    keras = keras_module()
    wanted: dict[str, int] = {}
    for layer in model.layers:
        if layer.name in rows and isinstance(layer, keras.layers.Embedding):
            size = int(rows[layer.name][0])
            if size < layer.input_dim:
                raise DataError(
                    f"embedding {layer.name!r} has {layer.input_dim} rows but the featurizer "
                    f"asks for {size}: vocabularies only grow; retrain in full (--full)."
                )
            if size > layer.input_dim:
                wanted[layer.name] = size
    if not wanted:
        return model, {}

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer.name in wanted:
            config["input_dim"] = wanted[layer.name]
        return layer.__class__.from_config(config)

    grown = keras.models.clone_model(model, clone_function=clone)
    added = {}
    for old, new in zip(model.layers, grown.layers, strict=True):
        weights = old.get_weights()
        if old.name in wanted:
            (table,) = weights
            extra = wanted[old.name] - table.shape[0]
            start = table[rows[old.name][1]]
            weights = [np.concatenate([table, np.tile(start, (extra, 1))]).astype(table.dtype)]
            added[old.name] = extra
        new.set_weights(weights)
        new.trainable = old.trainable
    return grown, added
