"""Classify raw inputs with an exported SavedModel, as ``evergreen predict`` does.

An input is a text (text models), an image file's path (image models), or a JSON object of raw
columns such as ``'{"state": "KS", "account_length": 128}'`` (tabular and adopted models):
:func:`shape_inputs` turns the strings given into what the model's signature takes, with a
clear error for one that does not fit.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from evergreen.components.threshold import decide, read_threshold
from evergreen.errors import DataError
from evergreen.models.saved_model import feed_saved_model, raw_inputs_of
from evergreen.models.text import predict_texts


def classify(path: Path, given: Sequence[str]) -> list[dict[str, Any]]:
    """Each input's ``{"label", "score", "scores"}`` from the SavedModel at ``path``.

    Raises:
        DataError: an input does not fit the model (not an image file, not a JSON object).
    """
    inputs = list(raw_inputs_of(path))
    if inputs in ([], ["text"]):
        return predict_texts(path, list(given))
    scores, labels = feed_saved_model(path, shape_inputs(inputs, given))
    chosen = decide(scores, labels, read_threshold(path))  # the exported threshold, if any
    return [
        {
            "label": labels[best],
            "score": float(s[best]),
            "scores": dict(zip(labels, map(float, s), strict=True)),
        }
        for s, best in zip(scores, chosen, strict=True)
    ]


def shape_inputs(inputs: list[str], given: Sequence[str]) -> list[Any]:
    """The rows to feed a model whose raw inputs are ``inputs``: image bytes or column dicts.

    Raises:
        DataError: naming the input that does not fit and what the model takes.
    """
    if inputs == ["image_bytes"]:
        return [_image_bytes(arg) for arg in given]
    return [_columns(arg, inputs) for arg in given]


def _image_bytes(arg: str) -> bytes:
    if not Path(arg).is_file():
        raise DataError(
            f"{arg!r} is not an image file; this model takes image files (PNG, JPEG, GIF, BMP)"
        )
    return Path(arg).read_bytes()


def _columns(arg: str, inputs: list[str]) -> dict[str, Any]:
    try:
        row = json.loads(arg)
    except json.JSONDecodeError as e:
        raise DataError(
            f"{arg[:80]!r} is not a JSON object of raw columns ({e}); this model takes e.g. '{{\"{inputs[0]}\": ...}}'"
        ) from None
    if not isinstance(row, dict):
        raise DataError(
            f"{arg[:80]!r} is not a JSON object; this model takes columns {', '.join(inputs)}"
        )
    return row
