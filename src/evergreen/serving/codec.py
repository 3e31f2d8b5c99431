"""JSON ⇄ tensors, checked against a SavedModel signature.

Nothing here knows about a model family: input names, dtypes and shapes come from the loaded
signature (``structured_input_signature`` / ``structured_outputs``), so text, tabular and image
models are served alike. String inputs take JSON strings (UTF-8) or TF Serving's binary
convention ``{"b64": "..."}``; string outputs come back as JSON strings, or as ``{"b64": ...}``
when they are not UTF-8 or when the output's name ends in ``_bytes`` (TF Serving's rule).

Three request shapes are decoded:

- TF Serving rows, ``{"instances": [...]}``: a row is a bare value when the signature has one
  input, an object ``{input: value}`` otherwise;
- TF Serving columns, ``{"inputs": value | {input: value}}``;
- Open Inference Protocol tensors, ``{"inputs": [{"name", "shape", "datatype", "data"}]}``.

Every decoder returns one NumPy array per input whose first axis is the batch, and raises
:class:`BadRequest` with a message that says which input, which row, what was expected and
what came. Bodies are parsed by :func:`parse_body`, which refuses (400) what Python's ``json``
would take but the rest could not: nesting deeper than :data:`MAX_JSON_DEPTH`, numbers of more
than 4300 digits, strings with a lone UTF-16 surrogate (``"\\ud800"``). Decoders given
``max_rows`` count a request's rows before converting any of them (413 beyond).
"""

from __future__ import annotations

import base64
import binascii
import difflib
import json
import math
import re
import reprlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evergreen.errors import BadRequest, PayloadTooLarge
from evergreen.serving import v2binary
from evergreen.serving.v2binary import v2_datatype

_INTEGERS = {"uint8", "uint16", "uint32", "uint64", "int8", "int16", "int32", "int64"}
_FLOATS = {"float16", "float32", "float64", "bfloat16"}
_NON_FINITE = {"NaN": math.nan, "Infinity": math.inf, "-Infinity": -math.inf}

# Lists and objects nested in a request body. A tensor's rank plus the few objects around it
# stays far below; Python's parser (and any recursive walk) fails near 1000 with a
# RecursionError, which must be a 400, not a 500. Below NumPy's 64 dimensions too.
MAX_JSON_DEPTH = 32
_JSON_STRING = re.compile(rb'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
# A surrogate escaped (\ud800) or as raw bytes (ED A0..BF): json.loads(bytes) decodes with
# "surrogatepass", so both come through as lone surrogates that cannot be encoded again.
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]|\xed[\xa0-\xbf]")
_SHORT = reprlib.Repr()
_SHORT.maxstring = _SHORT.maxother = _SHORT.maxlong = 50
_SHORT.maxlist = _SHORT.maxdict = 4
_SHORT.maxlevel = 3


def tf_datatype_name(dtype: str) -> str:
    """TF's ``DataType`` enum name for a dtype name: ``float32`` → ``DT_FLOAT`` (not DT_FLOAT32)."""
    from tensorflow.core.framework import types_pb2

    from evergreen.tf import tensorflow

    return types_pb2.DataType.Name(tensorflow().as_dtype(dtype).as_datatype_enum)


@dataclass(frozen=True)
class TensorInfo:
    """One input or output of a signature: dtype name (``"string"``) and shape (None: any)."""

    name: str
    dtype: str
    shape: tuple[int | None, ...] | None  # None: unknown rank

    def to_tf_serving(self) -> dict[str, Any]:
        """The ``TensorInfo`` JSON of TF Serving's metadata API."""
        shape: dict[str, Any] = {"unknown_rank": self.shape is None}
        if self.shape is not None:
            shape["dim"] = [{"size": str(-1 if d is None else d), "name": ""} for d in self.shape]
        return {"dtype": tf_datatype_name(self.dtype), "tensor_shape": shape, "name": self.name}

    def to_v2(self) -> dict[str, Any]:
        """The ``$metadata_tensor`` JSON of the Open Inference Protocol."""
        shape = [-1] if self.shape is None else [-1 if d is None else d for d in self.shape]
        return {
            "name": self.name,
            "datatype": v2_datatype(self.dtype),
            "shape": shape,
        }


@dataclass(frozen=True)
class Signature:
    """A signature's inputs and outputs, in name order."""

    name: str
    inputs: dict[str, TensorInfo]
    outputs: dict[str, TensorInfo]

    @classmethod
    def from_concrete_function(cls, name: str, fn: Any) -> Signature:
        _, kwargs = fn.structured_input_signature
        outputs = fn.structured_outputs
        return cls(
            name=name,
            inputs={k: _info(k, spec) for k, spec in sorted(kwargs.items())},
            outputs={k: _info(k, spec) for k, spec in sorted(outputs.items())},
        )

    @property
    def batchable(self) -> bool:
        """True when every input has a leading batch axis, so requests can be concatenated."""
        return bool(self.inputs) and all(
            t.shape is not None and len(t.shape) >= 1 for t in self.inputs.values()
        )

    def describe_inputs(self) -> str:
        return ", ".join(
            f"{t.name} ({t.dtype}{list(t.shape) if t.shape is not None else ''})"
            for t in self.inputs.values()
        )


def _info(name: str, spec: Any) -> TensorInfo:
    shape = None if spec.shape.rank is None else tuple(spec.shape.as_list())
    return TensorInfo(name=name, dtype=spec.dtype.name, shape=shape)


# --------------------------------------------------------------------------------------------
# Requests
# --------------------------------------------------------------------------------------------


def parse_body(raw: bytes) -> dict[str, Any]:
    """A request body as a JSON object, refusing what the decoders could not take.

    Raises:
        BadRequest: empty, not UTF-8, not JSON, not an object, nested deeper than
            MAX_JSON_DEPTH, a number of more than 4300 digits, a lone surrogate in a string.
    """
    if not raw.strip():
        raise BadRequest("the request body is empty; send a JSON object")
    _check_depth(raw)
    try:
        body = json.loads(raw)
    except UnicodeDecodeError:
        raise BadRequest("the request body is not UTF-8 text; send JSON") from None
    except json.JSONDecodeError as e:
        raise BadRequest(f"the request body is not valid JSON: {e}") from None
    except RecursionError:  # _check_depth misjudged a malformed body; still the client's
        raise BadRequest(f"the request body is nested too deeply; {_DEPTH_HINT}") from None
    except ValueError:  # Python refuses integers of more than 4300 digits (CVE-2020-10735)
        raise BadRequest(
            "the request body has an integer of more than 4300 digits; a tensor value has at "
            "most 20 (int64, uint64)"
        ) from None
    if not isinstance(body, dict):
        raise BadRequest(f"the request body must be a JSON object, got a {type(body).__name__}")
    if _SURROGATE_ESCAPE.search(raw):
        where = _lone_surrogate(body, "body")
        if where is not None:
            raise BadRequest(
                f"the request body has a lone UTF-16 surrogate in the string at {where}; JSON "
                'text must be Unicode: pair the \\uD8xx\\uDCxx escapes, or send bytes as {"b64": ...}'
            )
    return body


_DEPTH_HINT = (
    f"this server takes lists and objects nested at most {MAX_JSON_DEPTH} deep "
    "(a tensor's rank plus the objects around it)"
)


def _check_depth(raw: bytes) -> None:
    """Refuse bodies nested deeper than MAX_JSON_DEPTH before parsing them.

    Counting brackets is C-speed; only a body with more opening brackets than the limit has
    its strings blanked (brackets inside strings do not nest) and its depth measured.
    """
    if raw.count(b"[") + raw.count(b"{") <= MAX_JSON_DEPTH:
        return
    skeleton = np.frombuffer(_JSON_STRING.sub(b"", raw), dtype=np.uint8)
    steps = np.zeros(len(skeleton), dtype=np.int32)
    steps[(skeleton == ord("[")) | (skeleton == ord("{"))] = 1
    steps[(skeleton == ord("]")) | (skeleton == ord("}"))] = -1
    deepest = int(np.cumsum(steps).max(initial=0))
    if deepest > MAX_JSON_DEPTH:
        raise BadRequest(f"the request body is nested {deepest} deep; {_DEPTH_HINT}")


def _lone_surrogate(value: Any, path: str) -> str | None:
    """Where in ``value`` a string (or key) with a lone surrogate is; None if none is."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return path
        return None
    if isinstance(value, list):
        for i, item in enumerate(value):
            found = _lone_surrogate(item, f"{path}[{i}]")
            if found is not None:
                return found
    elif isinstance(value, dict):
        for key, item in value.items():
            if _lone_surrogate(key, path) is not None:
                return f"a key of {path}"
            found = _lone_surrogate(item, f"{path}.{key}")
            if found is not None:
                return found
    return None


def check_rows(rows: int, max_rows: int | None, where: str) -> None:
    """Raise PayloadTooLarge when ``rows`` is over ``max_rows`` (None: no limit)."""
    if max_rows is not None and rows > max_rows:
        raise PayloadTooLarge(
            f"{where} has {rows} rows; this server takes at most {max_rows} per request "
            "(serving.max_rows_per_request). Split the rows over several requests"
        )


def decode_instances(
    sig: Signature, instances: Any, *, max_rows: int | None = None
) -> dict[str, np.ndarray]:
    """TF Serving's row format: a list of rows, one tensor per input stacked on axis 0.

    Raises:
        BadRequest: not a list of rows, or a row that does not fit the signature.
        PayloadTooLarge: more than ``max_rows`` rows (counted before any is converted).
    """
    if not isinstance(instances, list) or not instances:
        raise BadRequest(
            f"'instances' must be a non-empty list of rows, got {_kind(instances)}; "
            f"signature {sig.name!r} takes {sig.describe_inputs()}"
        )
    check_rows(len(instances), max_rows, "'instances'")
    names = list(sig.inputs)
    if len(names) == 1:
        info = sig.inputs[names[0]]
        if (
            info.dtype == "string"
            and info.shape is not None
            and len(info.shape) == 1
            and info.shape[0] is None
            and all(type(row) is str for row in instances)
        ):
            # The common case of a text model, without the general walk: one string per row.
            array = np.empty(len(instances), dtype=object)
            array[:] = [row.encode("utf-8") for row in instances]
            return {names[0]: array}
    columns: dict[str, list[Any]] = {name: [] for name in names}
    for i, row in enumerate(instances):
        if len(names) == 1 and not _is_named_row(row, names):
            columns[names[0]].append(row)
            continue
        if not isinstance(row, dict):
            raise BadRequest(
                f"row {i} of 'instances' must be an object with the inputs "
                f"{', '.join(names)}, got {_kind(row)}"
            )
        _check_names(sig, row, f"row {i} of 'instances'")
        for name in names:
            columns[name].append(row[name])
    return {
        name: to_array(sig.inputs[name], values, batched=True, where="instances")
        for name, values in columns.items()
    }


def decode_columns(
    sig: Signature, inputs: Any, *, max_rows: int | None = None
) -> dict[str, np.ndarray]:
    """TF Serving's columnar format: one (batched) value per input.

    Raises:
        BadRequest: a value that does not fit the signature.
        PayloadTooLarge: an input with more than ``max_rows`` rows.
    """
    names = list(sig.inputs)
    if isinstance(inputs, dict) and not (len(names) == 1 and _is_b64(inputs)):
        _check_names(sig, inputs, "'inputs'")
        for name in names:
            if isinstance(inputs[name], list):
                check_rows(len(inputs[name]), max_rows, f"input {name!r} ('inputs')")
        arrays = {
            name: to_array(sig.inputs[name], inputs[name], batched=False, where="inputs")
            for name in names
        }
    elif len(names) == 1:
        if isinstance(inputs, list):
            check_rows(len(inputs), max_rows, "'inputs'")
        arrays = {names[0]: to_array(sig.inputs[names[0]], inputs, batched=False, where="inputs")}
    else:
        raise BadRequest(
            f"'inputs' must be an object with the inputs {', '.join(names)} of signature "
            f"{sig.name!r}, got {_kind(inputs)}"
        )
    check_batch(sig, arrays)
    return arrays


def decode_v2(
    sig: Signature, inputs: Any, *, max_rows: int | None = None, binary: bytes = b""
) -> dict[str, np.ndarray]:
    """Open Inference Protocol request tensors (``name``, ``shape``, ``datatype``, ``data``).

    Args:
        sig: the signature the tensors must fit.
        inputs: the request's ``inputs`` list.
        max_rows: the most rows a tensor may have (None: no limit).
        binary: the bytes after the JSON header (the binary tensor extension: inputs with
            ``parameters.binary_data_size`` take theirs from it, in order; see
            :mod:`evergreen.serving.v2binary`).

    Raises:
        BadRequest: a tensor that is not of the protocol's form or does not fit the signature.
        PayloadTooLarge: a shape with more than ``max_rows`` rows.
    """
    given = _v2_tensors(inputs)
    parts = v2binary.binary_sizes(inputs, binary)
    _check_names(sig, given, "'inputs'")
    arrays: dict[str, np.ndarray] = {}
    for name, info in sig.inputs.items():
        arrays[name] = _v2_array(info, given[name], max_rows, parts.get(name))
    check_batch(sig, arrays)
    return arrays


def _v2_tensors(inputs: Any) -> dict[str, dict[str, Any]]:
    """The request's V2 input tensors by name, each checked to be of the protocol's form."""
    if not isinstance(inputs, list) or not inputs:
        raise BadRequest(
            "'inputs' must be a non-empty list of tensors "
            '{"name", "shape", "datatype", "data"}, got ' + _kind(inputs)
        )
    given: dict[str, Any] = {}
    for i, tensor in enumerate(inputs):
        if not isinstance(tensor, dict):
            raise BadRequest(f"inputs[{i}] must be an object, got {_kind(tensor)}")
        params = tensor.get("parameters")
        # binary_data_size: null is no binary size (v2binary skips it too): the input needs data.
        binary_input = isinstance(params, dict) and params.get("binary_data_size") is not None
        required = ("name", "shape", "datatype") if binary_input else _V2_KEYS
        missing = [k for k in required if k not in tensor]
        if missing:
            raise BadRequest(
                f"inputs[{i}] lacks {', '.join(missing)}; each input needs name, shape, datatype "
                "and data (or parameters.binary_data_size with binary data)"
            )
        for key in ("name", "datatype"):
            if not isinstance(tensor[key], str):
                raise BadRequest(f"inputs[{i}].{key} must be a string, got {_kind(tensor[key])}")
        if tensor["name"] in given:
            raise BadRequest(f"input {tensor['name']!r} is given twice")
        given[tensor["name"]] = tensor
    return given


def _v2_array(
    info: TensorInfo, tensor: dict[str, Any], max_rows: int | None, raw: bytes | None
) -> np.ndarray:
    """One V2 input tensor as an array: from its binary bytes ``raw`` when it has them, else
    from its JSON ``data``; checked against the signature's datatype and shape."""
    name = info.name
    expected = v2_datatype(info.dtype)
    if tensor["datatype"] != expected:
        raise BadRequest(
            f"input {name!r} has datatype {tensor['datatype']!r} but the model expects {expected!r}"
        )
    shape = _v2_shape(name, tensor["shape"])
    if shape:
        check_rows(shape[0], max_rows, f"input {name!r}")
    if raw is not None:
        array = v2binary.from_binary(name, expected, shape, raw)
    else:
        _, flat = _walk(tensor["data"], f"input {name!r} data")
        if len(flat) != math.prod(shape):
            raise BadRequest(
                f"input {name!r}: shape {shape} holds {math.prod(shape)} values but data "
                f"has {len(flat)}"
            )
        array = _convert(info, flat, f"input {name!r}").reshape(shape)
    _check_shape(info, array.shape, f"input {name!r}")
    return array


_V2_KEYS = ("name", "shape", "datatype", "data")


def _v2_shape(name: str, shape: Any) -> list[int]:
    """A V2 tensor's shape, checked: a list of at most MAX_JSON_DEPTH non-negative integers,
    each small enough for NumPy (a zero-size tensor may still name huge dimensions)."""
    if (
        not isinstance(shape, list)
        or len(shape) > MAX_JSON_DEPTH
        or not all(isinstance(d, int) and not isinstance(d, bool) and 0 <= d < 2**31 for d in shape)
    ):
        raise BadRequest(
            f"input {name!r}: shape must be a list of at most {MAX_JSON_DEPTH} integers from 0 "
            f"to 2^31-1, got {_kind(shape)}"
        )
    return shape


def decode_examples(
    sig: Signature, examples: Any, context: Any = None, *, max_rows: int | None = None
) -> dict[str, np.ndarray]:
    """TF Serving's classify/regress body: ``examples`` (feature objects) plus ``context``.

    Raises:
        BadRequest: an example that is not an object of the signature's features.
        PayloadTooLarge: more than ``max_rows`` examples.
    """
    if not isinstance(examples, list) or not examples:
        raise BadRequest(f"'examples' must be a non-empty list of objects, got {_kind(examples)}")
    check_rows(len(examples), max_rows, "'examples'")
    context = context or {}
    if not isinstance(context, dict):
        raise BadRequest(f"'context' must be an object, got {_kind(context)}")
    rows = []
    for i, example in enumerate(examples):
        if not isinstance(example, dict):
            raise BadRequest(f"examples[{i}] must be an object of features, got {_kind(example)}")
        both = set(example) & set(context)
        if both:
            raise BadRequest(
                f"feature(s) {', '.join(sorted(both))} appear in both 'context' and examples[{i}]; give each in one place"
            )
        rows.append({**context, **example})
    names = list(sig.inputs)
    for i, row in enumerate(rows):
        _check_names(sig, row, f"examples[{i}]")
        for name in names:  # a tf.Example feature is a list: [value] for a one-value feature
            info = sig.inputs[name]
            scalar = info.shape is not None and len(info.shape) == 1
            if scalar and isinstance(row[name], list) and len(row[name]) == 1:
                row[name] = row[name][0]
    return {
        name: to_array(
            sig.inputs[name], [row[name] for row in rows], batched=True, where="examples"
        )
        for name in names
    }


def check_batch(sig: Signature, arrays: Mapping[str, np.ndarray]) -> int:
    """The shared batch size of ``arrays``; 400 when inputs disagree or have no batch axis."""
    sizes = {name: (a.shape[0] if a.ndim else None) for name, a in arrays.items()}
    if any(size is None for size in sizes.values()):
        scalar = [n for n, s in sizes.items() if s is None]
        raise BadRequest(
            f"input(s) {', '.join(scalar)} came as a single value; send a list, one value per "
            "row (the first dimension is the batch)"
        )
    if len(set(sizes.values())) > 1:
        raise BadRequest(
            "inputs must have the same number of rows: "
            + ", ".join(f"{n} has {s}" for n, s in sizes.items())
        )
    return next(iter(sizes.values()))


def to_array(info: TensorInfo, value: Any, *, batched: bool, where: str) -> np.ndarray:
    """One input's JSON value as an array of the signature's dtype, shape checked.

    Args:
        info: the signature input.
        value: the JSON value; with ``batched`` a list of rows, each a value of one row.
        batched: whether ``value`` is a list of rows (row format) or a whole tensor.
        where: which part of the request, for messages.
    """
    label = f"input {info.name!r} ({where})"
    shape, flat = _walk(value, label)
    array = _convert(info, flat, label).reshape(shape)
    _check_shape(info, array.shape, label)
    return array


def _walk(value: Any, label: str) -> tuple[tuple[int, ...], list[Any]]:
    """The shape of a nested list and its leaves in row-major order; ragged lists are a 400."""
    flat: list[Any] = []

    def shape_of(v: Any, path: str) -> tuple[int, ...]:
        if isinstance(v, list):
            if not v:
                return (0,)
            shapes = [shape_of(item, f"{path}[{i}]") for i, item in enumerate(v)]
            for i, s in enumerate(shapes[1:], start=1):
                if s != shapes[0]:
                    raise BadRequest(
                        f"{label}: {path}[{i}] has shape {list(s)} but {path}[0] has "
                        f"{list(shapes[0])}; every row must have the same shape"
                    )
            return (len(v), *shapes[0])
        flat.append(v)
        return ()

    shape = shape_of(value, "value")
    return shape, flat


def _convert(info: TensorInfo, flat: list[Any], label: str) -> np.ndarray:
    dtype = info.dtype
    if dtype == "string":
        out = np.empty(len(flat), dtype=object)
        for i, v in enumerate(flat):
            if isinstance(v, str):
                out[i] = v.encode("utf-8")
            elif _is_b64(v):
                try:
                    out[i] = base64.b64decode(v["b64"], validate=True)
                except (binascii.Error, ValueError, TypeError):
                    raise BadRequest(
                        f'{label}: value {i} is not valid base64 in {{"b64": ...}}'
                    ) from None
            else:
                raise BadRequest(
                    f'{label} expects strings (or {{"b64": "..."}} for bytes); value {i} is '
                    f"{_kind(v)}"
                )
        return out
    if dtype == "bool":
        if not all(isinstance(v, bool) for v in flat):
            bad = next(i for i, v in enumerate(flat) if not isinstance(v, bool))
            raise BadRequest(f"{label} expects true/false; value {bad} is {_kind(flat[bad])}")
        return np.array(flat, dtype=bool)
    if dtype in _INTEGERS:
        for i, v in enumerate(flat):
            if (
                isinstance(v, bool)
                or not isinstance(v, int | float)
                or (isinstance(v, float) and not v.is_integer())
            ):
                raise BadRequest(
                    f"{label} expects whole numbers ({dtype}); value {i} is {_kind(v)}"
                )
        limits = np.iinfo(dtype)
        ints = [int(v) for v in flat]
        for i, v in enumerate(ints):
            if not limits.min <= v <= limits.max:
                raise BadRequest(
                    f"{label}: value {i} = {_SHORT.repr(v)} is out of range for {dtype} "
                    f"({limits.min} to {limits.max})"
                )
        return np.array(ints, dtype=dtype)
    if dtype in _FLOATS:
        numbers = []
        for i, v in enumerate(flat):
            if isinstance(v, str) and v in _NON_FINITE:
                v = _NON_FINITE[v]
            if isinstance(v, bool) or not isinstance(v, int | float):
                raise BadRequest(f"{label} expects numbers ({dtype}); value {i} is {_kind(v)}")
            numbers.append(v)
        try:
            return np.array(numbers, dtype=np.float32 if dtype == "bfloat16" else dtype)
        except OverflowError:  # an integer beyond float64 (about 1.8e308)
            bad = next(i for i, v in enumerate(numbers) if _beyond_float(v))
            raise BadRequest(
                f"{label}: value {bad} = {_SHORT.repr(numbers[bad])} is out of range for {dtype}"
            ) from None
    raise BadRequest(f"{label} has dtype {dtype}, which this server cannot take from JSON")


def _beyond_float(value: float) -> bool:
    try:
        float(value)
    except OverflowError:
        return True
    return False


def _check_shape(info: TensorInfo, shape: tuple[int, ...], label: str) -> None:
    if info.shape is None:
        return
    if len(shape) != len(info.shape) or any(
        want is not None and want != got for want, got in zip(info.shape, shape, strict=False)
    ):
        want = [
            "batch" if i == 0 and d is None else ("any" if d is None else d)
            for i, d in enumerate(info.shape)
        ]
        per_row = "a single value per row" if len(info.shape) == 1 else f"rows of shape {want[1:]}"
        raise BadRequest(
            f"{label} has shape {list(shape)} but the signature expects {want} ({per_row})"
        )


def _check_names(sig: Signature, given: Mapping[str, Any], where: str) -> None:
    missing = [n for n in sig.inputs if n not in given]
    unknown = [n for n in given if n not in sig.inputs]
    if not missing and not unknown:
        return
    parts = []
    if missing:
        parts.append(f"missing input(s) {', '.join(repr(n) for n in missing)}")
    for name in unknown:
        close = difflib.get_close_matches(name, list(sig.inputs), n=1)
        parts.append(
            f"unknown input {name!r}" + (f" (did you mean {close[0]!r}?)" if close else "")
        )
    raise BadRequest(
        f"{where}: {'; '.join(parts)}. Signature {sig.name!r} takes {sig.describe_inputs()}"
    )


def _is_named_row(row: Any, names: Sequence[str]) -> bool:
    # A one-input row may still be written {input: value}; only {"b64": ...} is a bare value.
    return isinstance(row, dict) and not _is_b64(row)


def _is_b64(value: Any) -> bool:
    return isinstance(value, dict) and set(value) == {"b64"} and isinstance(value["b64"], str)


def _kind(value: Any) -> str:
    """``value`` for a message: its type and a short repr (cheap, whatever its size)."""
    text = _SHORT.repr(value)
    return (
        f"{type(value).__name__} {text}"
        if not isinstance(value, dict | list)
        else f"a {type(value).__name__} {text}"
    )


# --------------------------------------------------------------------------------------------
# Responses
# --------------------------------------------------------------------------------------------


def to_json_value(value: Any, name: str = "") -> Any:
    """A NumPy value (scalar or array) as JSON: bytes as UTF-8 text or ``{"b64": ...}``."""
    if isinstance(value, np.ndarray):
        if value.dtype == object or value.dtype.kind == "S":
            return [to_json_value(v, name) for v in value]
        return value.tolist()
    if isinstance(value, bytes):
        if not name.endswith("_bytes"):
            try:
                return value.decode("utf-8")
            except UnicodeDecodeError:
                pass
        return {"b64": base64.b64encode(value).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    return value


def encode_rows(outputs: Mapping[str, np.ndarray]) -> list[Any]:
    """``predictions`` of TF Serving's row format: bare values for one output, else objects."""
    names = list(outputs)
    if len(names) == 1:
        return to_json_value(outputs[names[0]], names[0])
    columns = {name: to_json_value(outputs[name], name) for name in names}
    n = len(next(iter(columns.values())))
    return [{name: columns[name][i] for name in names} for i in range(n)]


def encode_columns(outputs: Mapping[str, np.ndarray]) -> Any:
    """``outputs`` of TF Serving's columnar format."""
    if len(outputs) == 1:
        name = next(iter(outputs))
        return to_json_value(outputs[name], name)
    return {name: to_json_value(a, name) for name, a in outputs.items()}


def encode_v2(
    outputs: Mapping[str, np.ndarray], requested: Sequence[str] | None = None
) -> list[dict[str, Any]]:
    """Open Inference Protocol ``outputs``: flattened data with shape and datatype."""
    names = list(requested) if requested else list(outputs)
    result = []
    for name in names:
        array = np.asarray(outputs[name])
        dtype = "string" if array.dtype == object or array.dtype.kind == "S" else array.dtype.name
        result.append(
            {
                "name": name,
                "shape": list(array.shape),
                "datatype": v2_datatype(dtype),
                "data": to_json_value(array.reshape(-1), name),
            }
        )
    return result


def row_values(arrays: Mapping[str, np.ndarray], index: int) -> dict[str, Any]:
    """Row ``index`` of each input as a JSON value (what the request log stores)."""
    return {name: to_json_value(a[index], name) for name, a in arrays.items()}
