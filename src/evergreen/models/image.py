"""The image model family: encoded image bytes in, a small CNN with augmentation.

Ingest stores each image as its encoded file bytes (PNG, JPEG, GIF or BMP) in the examples.
The featurizer keeps them encoded: a featurized record holds the bytes once (``image``), and
``tf.data`` decodes and resizes them in-graph, in parallel, at training time — the same
:func:`decode_images` the exported SavedModel runs on its ``image_bytes`` input. The featurizer
has nothing to learn but its settings (size, channels); they are frozen with it.

The model (the kind of CIFAR-10 CNN TensorFlow tutorials train)::

    Rescaling(1/255) → RandomTranslation, RandomRotation (training only)
    → Conv 32 → MaxPool → Conv 64 → MaxPool → Flatten → Dense 64 → Dropout → softmax
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import ConfigError
from evergreen.models.contract import (
    ConfigProblem,
    keras_module,
    read_state,
    save_family,
    write_state,
)
from evergreen.tf import tensorflow

__all__ = ["ImageFamily", "ImageFeaturizer", "build_model", "decode_images"]

STATE_FILE = "image.json"
FORMAT_VERSION = 1
# Layers from the input up; freeze_lower_layers counts these (augmentation layers have no weights).
LAYER_NAMES = (
    "rescale",
    "translate",
    "rotate",
    "conv_1",
    "pool_1",
    "conv_2",
    "pool_2",
    "flatten",
    "dense",
    "dropout",
    "classifier",
)


def decode_images(encoded: Any, size: int, channels: int) -> Any:
    """float32 ``[batch, size, size, channels]`` in 0..255 from a batch of encoded image bytes.

    An empty string (a missing image) gives a black image; an undecodable one fails the call
    (ingest only keeps files that start like PNG, JPEG, GIF or BMP).
    """
    tf = tensorflow()

    def decode(data: Any) -> Any:
        image = tf.io.decode_image(data, channels=channels, expand_animations=False)
        return tf.image.resize(tf.cast(image, tf.float32), [size, size])

    def one(data: Any) -> Any:
        image = tf.cond(
            tf.strings.length(data) > 0,
            lambda: decode(data),
            lambda: tf.zeros([size, size, channels], tf.float32),
        )
        return tf.ensure_shape(image, [size, size, channels])

    return tf.map_fn(
        one, encoded, fn_output_signature=tf.TensorSpec([size, size, channels], tf.float32)
    )


class ImageFeaturizer:
    """Keeps images encoded; decodes them to ``size × size × channels`` in-graph.

    Args:
        image_feature: the image column.
        size: height and width after resizing. Default 32.
        channels: 1 (grayscale) or 3 (RGB). Default 3.
    """

    family = "image"

    def __init__(self, image_feature: str, size: int = 32, channels: int = 3) -> None:
        self.image_feature = image_feature
        self.size = size
        self.channels = channels
        self.rows_seen_ = 0

    def to_dict(self) -> dict[str, Any]:
        return {"image_feature": self.image_feature, "size": self.size, "channels": self.channels}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ImageFeaturizer:
        return cls(data["image_feature"], int(data.get("size", 32)), int(data.get("channels", 3)))

    def fit(self, rows: Iterable[Mapping[str, Any]]) -> ImageFeaturizer:
        self.rows_seen_ = sum(1 for _ in rows)
        return self

    def fingerprint(self) -> str:
        return hashlib.sha256(
            json.dumps(
                {"format_version": FORMAT_VERSION, **self.to_dict()}, sort_keys=True
            ).encode()
        ).hexdigest()

    def properties(self) -> dict[str, Any]:
        return self.to_dict()

    def save(self, directory: str | Path) -> Path:
        state = {
            "format_version": FORMAT_VERSION,
            "config": self.to_dict(),
            "rows_seen": self.rows_seen_,
        }
        directory = write_state(directory, STATE_FILE, state)
        save_family(directory, self.family)
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> ImageFeaturizer:
        state = read_state(directory, STATE_FILE, "image featurizer")
        featurizer = cls.from_dict(state["config"])
        featurizer.rows_seen_ = int(state.get("rows_seen", 0))
        return featurizer

    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        return {"image": ([], "string")}

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        data = np.array([row.get(self.image_feature) or b"" for row in rows], dtype=object)
        return {"image": data}, {"rows_featurized": len(rows), "rows_reused": 0}

    def model_inputs(self, parsed: Mapping[str, Any]) -> Any:
        return decode_images(parsed["image"], self.size, self.channels)

    def keras_inputs(self) -> Any:
        return keras_module().Input(
            shape=(self.size, self.size, self.channels), dtype="float32", name="image"
        )

    def raw_signature(self) -> dict[str, Any]:
        return {"image_bytes": tensorflow().string}

    def raw_columns(self) -> dict[str, str]:
        return {"image_bytes": self.image_feature}

    def feature_types(self) -> dict[str, str]:
        return {self.image_feature: "image"}

    def raw_to_model_inputs(self, raw: Mapping[str, Any]) -> Any:
        return decode_images(raw["image_bytes"], self.size, self.channels)

    def unknown_rate(self, rows: Sequence[Mapping[str, Any]]) -> float:
        return 0.0  # pixels have no vocabulary

    def text_vocabulary(self) -> None:
        return None


MIN_IMAGE_SIZE = 4  # two 2x2 max-pools: a smaller image has no pixel left for the classifier


def config_problem(cfg: Any) -> ConfigProblem | None:
    """What the image CNN needs of ``[train]``: ``(key, value, fix)``, or None."""
    if cfg.image_size < MIN_IMAGE_SIZE:
        return (
            "train.image_size",
            cfg.image_size,
            f"use {MIN_IMAGE_SIZE} or more: the image model halves the image twice",
        )
    return None


def build_model(featurizer: ImageFeaturizer, num_classes: int, dropout: float = 0.3) -> Any:
    """The small CNN of the module docstring, on ``featurizer.keras_inputs()``."""
    keras = keras_module()
    layers = keras.layers
    names = iter(LAYER_NAMES)
    inputs = featurizer.keras_inputs()
    x = layers.Rescaling(1.0 / 255, name=next(names))(inputs)
    x = layers.RandomTranslation(0.1, 0.1, name=next(names))(x)
    x = layers.RandomRotation(0.05, name=next(names))(x)
    x = layers.Conv2D(32, 3, padding="same", activation="relu", name=next(names))(x)
    x = layers.MaxPooling2D(name=next(names))(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu", name=next(names))(x)
    x = layers.MaxPooling2D(name=next(names))(x)
    x = layers.Flatten(name=next(names))(x)
    x = layers.Dense(64, activation="relu", name=next(names))(x)
    x = layers.Dropout(dropout, name=next(names))(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=next(names))(x)
    return keras.Model(inputs, outputs, name="image_cnn")


class ImageFamily:
    """One image column → a small CNN."""

    name = "image"

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> ImageFeaturizer:
        images = [c for c, t in types.items() if t == "image"]
        if len(images) != 1:
            raise ConfigError(
                f'the image family needs exactly one image feature; found {images or "none"}. Mark the column of image paths as "image" in [data.features]'
            )
        return ImageFeaturizer(images[0], cfg.image_size, cfg.image_channels)

    def load_featurizer(self, directory: str | Path) -> ImageFeaturizer:
        return ImageFeaturizer.load(directory)

    def build_model(self, featurizer: ImageFeaturizer, num_classes: int, cfg: Any) -> Any:
        return build_model(featurizer, num_classes)
