"""TF Serving's Classify and Regress APIs: examples in, ``results`` out, for REST and gRPC.

A model exported by Evergreen has a ``classification`` signature (method
``tensorflow/serving/classify``) and, with two classes, a ``regression`` one (method
``tensorflow/serving/regress``), both over serialized ``tf.Example`` (see
:mod:`evergreen.models.tfserving_signatures`). This module turns TF Serving's REST bodies
(``{"examples": [{feature: value}], "context": {...}}``) into serialized examples, the way TF
Serving does (a string is a ``bytes_list``, ``{"b64": ...}`` bytes, an integer an
``int64_list``, a number with a fraction a ``float_list``; a list holds several values; the
context's features are merged into every example, the example's own winning), and the
signature's outputs into TF Serving's response shapes. The gRPC server can call the same
functions with the examples of a ``ClassificationRequest``.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any

import numpy as np

from evergreen.errors import BadRequest
from evergreen.models.tfserving_signatures import (
    CLASSIFY_INPUTS,
    CLASSIFY_METHOD,
    CLASSIFY_SIGNATURE,
    REGRESS_METHOD,
    REGRESS_SIGNATURE,
)
from evergreen.serving.codec import check_rows, to_json_value

__all__ = [
    "CLASSIFY_INPUTS",
    "CLASSIFY_METHOD",
    "CLASSIFY_SIGNATURE",
    "REGRESS_METHOD",
    "REGRESS_SIGNATURE",
    "classification_result_proto",
    "classification_results",
    "examples_from_arrays",
    "examples_to_serialized",
    "float_features",
    "regression_result_proto",
    "regression_results",
    "serialized_from_input",
]


def examples_to_serialized(
    examples: Any,
    context: Any = None,
    *,
    max_rows: int | None = None,
    floats: frozenset[str] = frozenset(),
) -> np.ndarray:
    """TF Serving's REST ``examples`` (+ ``context``) as serialized ``tf.Example`` bytes.

    ``floats`` names features the model parses as floats: whole numbers given for them go to
    a ``float_list`` (TF Serving would write an ``int64_list``, which the parser refuses).

    Raises:
        BadRequest: not a non-empty list of objects, or a feature value of no Example type.
        PayloadTooLarge: more than ``max_rows`` examples.
    """
    from tensorflow.core.example import example_pb2

    if not isinstance(examples, list) or not examples:
        raise BadRequest("'examples' must be a non-empty list of objects {feature: value}")
    check_rows(len(examples), max_rows, "'examples'")
    if context is None:
        context = {}
    if not isinstance(context, dict):
        raise BadRequest(
            f"'context' must be an object {{feature: value}}, got {type(context).__name__}"
        )
    base = example_pb2.Example()
    _fill(base, context, "'context'", floats)
    out = np.empty(len(examples), dtype=object)
    for i, features in enumerate(examples):
        if not isinstance(features, dict):
            raise BadRequest(
                f"examples[{i}] must be an object {{feature: value}}, got {type(features).__name__}"
            )
        example = example_pb2.Example()
        example.CopyFrom(base)
        _fill(example, features, f"examples[{i}]", floats)
        out[i] = example.SerializeToString()
    return out


def _fill(example: Any, features: Mapping[str, Any], where: str, floats: frozenset[str]) -> None:
    for name, value in features.items():
        values = value if isinstance(value, list) else [value]
        feature = example.features.feature[name]
        feature.Clear()  # the example's own value replaces the context's
        label = f"{where}, feature {name!r}"
        if all(isinstance(v, str) or _is_b64(v) for v in values):
            feature.bytes_list.value.extend(_bytes(v, label) for v in values)
        elif name not in floats and all(
            isinstance(v, int) and not isinstance(v, bool) for v in values
        ):
            if not all(-(2**63) <= v < 2**63 for v in values):
                raise BadRequest(f"{label}: an integer is out of range for int64")
            feature.int64_list.value.extend(values)
        elif all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            if any(isinstance(v, int) and abs(v) > 2**127 for v in values):
                raise BadRequest(f"{label}: a number is out of range for float")
            feature.float_list.value.extend(float(v) for v in values)
        else:
            raise BadRequest(
                f'{label}: values must all be strings (or {{"b64": ...}}), all integers, or '
                f"all numbers; got {_short(value)}"
            )


def float_features(inputs: Mapping[str, Any]) -> frozenset[str]:
    """The names of float inputs among a signature's ``TensorInfo`` (``dtype`` names)."""
    return frozenset(n for n, t in inputs.items() if t.dtype.startswith(("float", "bfloat")))


def _bytes(value: Any, label: str) -> bytes:
    if isinstance(value, str):
        try:
            return value.encode("utf-8")
        except UnicodeEncodeError:
            raise BadRequest(f"{label}: a string is not valid Unicode; send bytes as b64") from None
    try:
        return base64.b64decode(value["b64"], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f'{label}: not valid base64 in {{"b64": ...}}') from None


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def examples_from_arrays(arrays: Mapping[str, np.ndarray]) -> np.ndarray:
    """Rows of raw input arrays (name → ``[rows]``) as serialized ``tf.Example`` bytes."""
    from tensorflow.core.example import example_pb2

    rows = len(next(iter(arrays.values()))) if arrays else 0
    out = np.empty(rows, dtype=object)
    for i in range(rows):
        example = example_pb2.Example()
        for name, column in arrays.items():
            value = column[i]
            feature = example.features.feature[name]
            if isinstance(value, bytes | str):
                feature.bytes_list.value.append(
                    value if isinstance(value, bytes) else value.encode()
                )
            elif np.issubdtype(np.asarray(value).dtype, np.floating):
                feature.float_list.value.append(float(value))
            else:
                feature.int64_list.value.append(int(value))
        out[i] = example.SerializeToString()
    return out


def serialized_from_input(input_proto: Any) -> np.ndarray:
    """A gRPC ``tensorflow.serving.Input`` (``example_list`` or ``example_list_with_context``)
    as serialized ``tf.Example`` bytes, the context merged into each example as TF Serving does
    (the context's bytes then the example's: protobuf merging, the example's features winning).

    Raises:
        BadRequest: the input holds no examples.
    """
    kind = input_proto.WhichOneof("kind")
    if kind == "example_list":
        examples, context = input_proto.example_list.examples, b""
    elif kind == "example_list_with_context":
        examples = input_proto.example_list_with_context.examples
        context = input_proto.example_list_with_context.context.SerializeToString()
    else:
        examples, context = [], b""
    if not examples:
        raise BadRequest(
            "the request's input has no examples (example_list or example_list_with_context)"
        )
    out = np.empty(len(examples), dtype=object)
    out[:] = [context + e.SerializeToString() for e in examples]
    return out


def classification_result_proto(outputs: Mapping[str, np.ndarray]) -> Any:
    """A gRPC ``tensorflow.serving.ClassificationResult`` from a classification signature's
    outputs (the same pairs as :func:`classification_results`)."""
    from tensorflow_serving.apis import classification_pb2

    result = classification_pb2.ClassificationResult()
    for pairs in classification_results(outputs):
        row = result.classifications.add()
        for label, score in pairs:
            text = label if isinstance(label, str) else json_label(label)
            row.classes.add(label=text, score=score)
    return result


def regression_result_proto(outputs: Mapping[str, np.ndarray]) -> Any:
    """A gRPC ``tensorflow.serving.RegressionResult`` from a regression signature's outputs."""
    from tensorflow_serving.apis import regression_pb2

    result = regression_pb2.RegressionResult()
    for value in regression_results(outputs):
        result.regressions.add(value=value)
    return result


def json_label(label: Any) -> str:
    """A label that came back as ``{"b64": ...}`` (not UTF-8) as text for a proto string."""
    return label["b64"] if isinstance(label, dict) else str(label)


def classification_results(outputs: Mapping[str, np.ndarray]) -> list[list[list[Any]]]:
    """TF Serving's classify ``results``: per example, a list of ``[label, score]`` pairs.

    Takes ``classes``/``scores`` (a classification signature, or ``serving_default``) or
    ``label``/``score`` (Evergreen's older ``classify`` signature: one pair per example).
    """
    if "scores" in outputs:
        scores = np.asarray(outputs["scores"], dtype=float)
        if scores.ndim == 1:
            scores = scores[:, None]
        classes = outputs.get("classes")
        if classes is None:
            classes = np.full(scores.shape, b"", dtype=object)
        classes = np.asarray(classes).reshape(scores.shape)
        return [
            [[to_json_value(c), float(s)] for c, s in zip(crow, srow, strict=True)]
            for crow, srow in zip(classes, scores, strict=True)
        ]
    return [
        [[to_json_value(label), float(score)]]
        for label, score in zip(outputs["label"], outputs["score"], strict=True)
    ]


def regression_results(outputs: Mapping[str, np.ndarray]) -> list[float]:
    """TF Serving's regress ``results``: one number per example (the ``outputs`` tensor)."""
    values = np.asarray(outputs["outputs"], dtype=float).reshape(-1)
    return [float(v) for v in values]
