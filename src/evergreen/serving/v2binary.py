"""The Open Inference Protocol's binary tensor and classification extensions (KServe V2 / Triton).

**Binary tensor data** (Triton's ``binary_tensor_data`` extension, what ``tritonclient.http``
sends by default): the request body is a JSON header of ``Inference-Header-Content-Length``
bytes followed by raw tensor bytes. An input whose ``parameters.binary_data_size`` is set has
no ``data``: its values are the next ``binary_data_size`` bytes, in the order the inputs are
listed — little-endian, row-major; ``BOOL`` one byte per value; ``BYTES`` each element as a
4-byte little-endian length then its bytes. A requested output with
``parameters.binary_data: true`` (or every output, with the request's
``parameters.binary_data_output: true``) comes back the same way: the response's JSON header
(its length in the ``Inference-Header-Content-Length`` response header) gives the output's
``parameters.binary_data_size`` instead of ``data``, and its bytes follow.

**Classification** (``parameters.classification: K`` on a requested output): the output, a
``[batch, C]`` score tensor, is answered as a ``BYTES`` ``[batch, K]`` tensor of the K best
classes per row, each ``"score:index:label"`` (Triton's format; the label from the
signature's ``classes`` output).

Every size is checked before a byte is read: a header length beyond the body, sizes that do
not add up to the binary part, or a tensor whose bytes do not fit its shape and datatype are a
400 that says which input and what the numbers were.
"""

from __future__ import annotations

import math
import struct
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from evergreen.errors import BadRequest, PayloadTooLarge

HEADER = "inference-header-content-length"
EXTENSIONS = ["binary_tensor_data", "classification"]
# Open Inference Protocol datatype -> NumPy little-endian dtype of its binary form.
BINARY_DTYPES = {
    "BOOL": "|b1",
    "UINT8": "|u1",
    "UINT16": "<u2",
    "UINT32": "<u4",
    "UINT64": "<u8",
    "INT8": "|i1",
    "INT16": "<i2",
    "INT32": "<i4",
    "INT64": "<i8",
    "FP16": "<f2",
    "FP32": "<f4",
    "FP64": "<f8",
}
# TensorFlow dtype name -> Open Inference Protocol datatype.
V2_DATATYPES = {
    "bool": "BOOL",
    "uint8": "UINT8",
    "uint16": "UINT16",
    "uint32": "UINT32",
    "uint64": "UINT64",
    "int8": "INT8",
    "int16": "INT16",
    "int32": "INT32",
    "int64": "INT64",
    "float16": "FP16",
    "float32": "FP32",
    "float64": "FP64",
    "string": "BYTES",
}


def v2_datatype(dtype: str) -> str:
    """The Open Inference Protocol datatype of a TensorFlow / NumPy dtype name."""
    return V2_DATATYPES.get(dtype, dtype.upper())


def decompress(raw: bytes, encoding: str | None, limit: int) -> bytes:
    """A body sent with ``Content-Encoding: gzip`` or ``deflate`` (tritonclient's
    ``request_compression_algorithm``), inflated to at most ``limit`` bytes.

    Raises:
        BadRequest: another encoding, or bytes that do not inflate.
        PayloadTooLarge: the inflated body would be over ``limit`` (checked while inflating).
    """
    name = (encoding or "identity").strip().lower()
    if name == "identity":
        return raw
    if name not in ("gzip", "deflate"):
        raise BadRequest(
            f"Content-Encoding {encoding[:40]!r} is not supported; send gzip, deflate or none"
        )
    inflater = zlib.decompressobj(wbits=31 if name == "gzip" else 15)
    try:
        body = inflater.decompress(raw, limit + 1)
    except zlib.error as e:
        raise BadRequest(f"the body is not valid {name} data: {e}") from None
    if len(body) > limit:
        raise PayloadTooLarge(
            f"the {name} body inflates to over {limit} bytes (serving.max_body_bytes); send "
            "fewer rows per request"
        )
    if not inflater.eof:
        raise BadRequest(f"the {name} body is cut short")
    return body


def split_body(raw: bytes, header_length: str | None) -> tuple[bytes, bytes]:
    """The JSON header and the binary part of a body (all JSON when no header length is sent).

    Raises:
        BadRequest: the header length is not a number, is zero, or is beyond the body.
    """
    if header_length is None:
        return raw, b""
    value = header_length.strip()
    if not (value.isascii() and value.isdigit()) or len(value) > 18:
        raise BadRequest(
            f"the Inference-Header-Content-Length header must be a byte count, got {value[:40]!r}"
        )
    size = int(value)
    if size == 0 or size > len(raw):
        raise BadRequest(
            f"Inference-Header-Content-Length is {size} but the body has {len(raw)} bytes; it "
            "must be the length of the JSON header that starts the body (at least 1 byte)"
        )
    return raw[:size], raw[size:]


def binary_sizes(inputs: Sequence[Mapping[str, Any]], binary: bytes) -> dict[str, bytes]:
    """Each binary input's bytes (input name → bytes), cut from ``binary`` in request order.

    Raises:
        BadRequest: a ``binary_data_size`` that is not a non-negative integer, sizes adding up to
            more or less than the binary part, binary data with no input claiming it.
    """
    parts: dict[str, bytes] = {}
    offset = 0
    for i, tensor in enumerate(inputs):
        parameters = tensor.get("parameters")
        if parameters is None:
            continue
        if not isinstance(parameters, dict):
            raise BadRequest(f"inputs[{i}].parameters must be an object")
        size = parameters.get("binary_data_size")
        if size is None:
            continue
        if isinstance(size, bool) or not isinstance(size, int) or size < 0:
            raise BadRequest(
                f"inputs[{i}].parameters.binary_data_size must be a non-negative integer, got "
                f"{size!r}"[:200]
            )
        if "data" in tensor:
            raise BadRequest(f"input {tensor['name']!r} has both 'data' and binary_data_size")
        if offset + size > len(binary):
            raise BadRequest(
                f"input {tensor['name']!r}: binary_data_size {size} at byte {offset} of the "
                f"binary data goes beyond it ({len(binary)} bytes after the JSON header; "
                "check Inference-Header-Content-Length)"
            )
        parts[tensor["name"]] = binary[offset : offset + size]
        offset += size
    if offset != len(binary):
        raise BadRequest(
            f"{len(binary)} bytes follow the JSON header but the inputs' binary_data_size add up "
            f"to {offset}; send binary_data_size for every binary input"
        )
    return parts


def from_binary(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> np.ndarray:
    """One binary input as a NumPy array of ``shape`` (object bytes for ``BYTES``).

    Raises:
        BadRequest: the bytes do not hold ``prod(shape)`` values of ``datatype``.
    """
    count = math.prod(shape)
    if datatype == "BYTES":
        return _bytes_elements(name, raw, count).reshape(shape)
    dtype = BINARY_DTYPES.get(datatype)
    if dtype is None:
        raise BadRequest(f"input {name!r}: datatype {datatype!r} cannot be sent as binary data")
    itemsize = np.dtype(dtype).itemsize
    if len(raw) != count * itemsize:
        raise BadRequest(
            f"input {name!r}: shape {list(shape)} of {datatype} needs {count * itemsize} bytes "
            f"({count} × {itemsize}) but binary_data_size is {len(raw)}"
        )
    array = np.frombuffer(raw, dtype=dtype)
    if datatype == "BOOL" and (np.frombuffer(raw, dtype=np.uint8) > 1).any():
        raise BadRequest(f"input {name!r}: BOOL bytes must be 0 or 1")
    return array.astype(array.dtype.newbyteorder("="), copy=False).reshape(shape)


def _bytes_elements(name: str, raw: bytes, count: int) -> np.ndarray:
    if count * 4 > len(raw):  # checked before allocating: a shape may claim billions
        raise BadRequest(
            f"input {name!r}: {count} BYTES elements need at least {count * 4} bytes (a 4-byte "
            f"length each) but binary_data_size is {len(raw)}"
        )
    out = np.empty(count, dtype=object)
    offset = 0
    for i in range(count):
        if offset + 4 > len(raw):
            raise BadRequest(
                f"input {name!r}: BYTES element {i} of {count}: its 4-byte length is missing "
                f"(the binary data ends at byte {len(raw)})"
            )
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(
                f"input {name!r}: BYTES element {i} claims {length} bytes but only "
                f"{len(raw) - offset} remain"
            )
        out[i] = raw[offset : offset + length]
        offset += length
    if offset != len(raw):
        raise BadRequest(
            f"input {name!r}: {len(raw) - offset} bytes left over after the {count} BYTES "
            "elements its shape holds"
        )
    return out


def to_binary(array: np.ndarray) -> bytes:
    """An output's bytes in the binary extension's form."""
    if array.dtype == object or array.dtype.kind == "S":
        pieces = []
        for value in array.reshape(-1):
            data = value if isinstance(value, bytes) else str(value).encode("utf-8")
            pieces.append(struct.pack("<I", len(data)) + data)
        return b"".join(pieces)
    little = array.dtype.newbyteorder("<") if array.dtype.itemsize > 1 else array.dtype
    return np.ascontiguousarray(array, dtype=little).tobytes()


@dataclass(frozen=True)
class OutputRequest:
    """One requested output: its name, whether it comes back binary, its top-K (0: off)."""

    name: str
    binary: bool = False
    classification: int = 0


def requested_outputs(
    output_names: Sequence[str], outputs: Any, parameters: Mapping[str, Any]
) -> list[OutputRequest]:
    """The outputs a V2 request asks for (all, when it names none), with their parameters.

    Raises:
        BadRequest: ``outputs`` is not a list of ``{"name", "parameters"?}``, names an output
            the signature lacks, or has parameters of the wrong type.
    """
    binary_all = parameters.get("binary_data_output", False)
    if not isinstance(binary_all, bool):
        raise BadRequest("parameters.binary_data_output must be true or false")
    if outputs is None:
        return [OutputRequest(name, binary=binary_all) for name in output_names]
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    unknown = [o["name"] for o in outputs if o["name"] not in output_names]
    if unknown:
        raise BadRequest(
            f"output(s) {', '.join(map(repr, unknown))} not in the signature; outputs: "
            f"{', '.join(output_names)}"
        )
    requests = []
    for o in outputs:
        params = o.get("parameters") or {}
        if not isinstance(params, dict):
            raise BadRequest(f"output {o['name']!r}: 'parameters' must be an object")
        binary = params.get("binary_data", binary_all)
        k = params.get("classification", 0)
        if not isinstance(binary, bool):
            raise BadRequest(f"output {o['name']!r}: parameters.binary_data must be true or false")
        if isinstance(k, bool) or not isinstance(k, int) or k < 0:
            raise BadRequest(
                f"output {o['name']!r}: parameters.classification must be a class count >= 0"
            )
        requests.append(OutputRequest(o["name"], binary=binary, classification=k))
    return requests


def top_classes(name: str, scores: np.ndarray, classes: np.ndarray | None, k: int) -> np.ndarray:
    """Triton's classification output: per row the ``k`` best ``"score:index[:label]"``.

    Raises:
        BadRequest: ``scores`` is not a numeric ``[batch, C]`` tensor.
    """
    if scores.dtype.kind not in "fiu" or scores.ndim != 2:
        raise BadRequest(
            f"output {name!r} ({scores.dtype.name}{list(scores.shape)}) cannot be classified: "
            "parameters.classification needs a [batch, classes] score tensor"
        )
    rows = scores
    labels = classes if classes is not None and classes.shape == rows.shape else None
    k = min(k, rows.shape[1])
    # As float64: negating unsigned scores would wrap around.
    order = np.argsort(-rows.astype(np.float64), axis=1, kind="stable")[:, :k]
    out = np.empty((rows.shape[0], k), dtype=object)
    for r, best in enumerate(order):
        for j, index in enumerate(best):
            text = f"{float(rows[r, index]):f}:{int(index)}"
            if labels is not None:
                label = labels[r, index]
                text += ":" + (
                    label.decode("utf-8", "replace") if isinstance(label, bytes) else str(label)
                )
            out[r, j] = text.encode("utf-8")
    return out


def encode_outputs(
    outputs: Mapping[str, np.ndarray], requests: Sequence[OutputRequest], to_json: Any
) -> tuple[list[dict[str, Any]], bytes]:
    """V2 ``outputs`` (JSON) and the binary part that follows the header (b"" when none).

    Args:
        outputs: the signature's outputs.
        requests: what the request asked for (:func:`requested_outputs`).
        to_json: the codec's JSON encoder for one output: ``(array, name) -> data``.
    """
    result, chunks = [], []
    for req in requests:
        array = np.asarray(outputs[req.name])
        if req.classification:
            array = top_classes(req.name, array, outputs.get("classes"), req.classification)
        kind = "string" if array.dtype == object or array.dtype.kind == "S" else array.dtype.name
        entry: dict[str, Any] = {
            "name": req.name,
            "shape": list(array.shape),
            "datatype": v2_datatype(kind),
        }
        if req.binary:
            data = to_binary(array)
            entry["parameters"] = {"binary_data_size": len(data)}
            chunks.append(data)
        else:
            entry["data"] = to_json(array.reshape(-1), req.name)
        result.append(entry)
    return result, b"".join(chunks)
