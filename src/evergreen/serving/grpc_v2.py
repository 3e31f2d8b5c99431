"""The Open Inference Protocol over gRPC (KServe V2): ``inference.GRPCInferenceService``.

The stubs are the ones shipped in ``tritonclient.grpc`` (``service_pb2``, ``service_pb2_grpc``).
``ServerLive``, ``ServerReady``, ``ServerMetadata``, ``ModelReady``, ``ModelMetadata`` and
``ModelInfer`` answer as the ``/v2`` REST routes do; the other Triton RPCs (model config,
statistics, repository and shared-memory control, streaming) answer UNIMPLEMENTED.

``ModelInfer`` takes inputs as typed ``contents`` or as ``raw_input_contents`` (little-endian,
``BYTES`` as 4-byte length-prefixed elements: what ``tritonclient.grpc`` sends), and answers in
``raw_output_contents``, as Triton does. The request parameter ``signature_name`` picks a
signature other than ``serving_default``.
"""

from __future__ import annotations

import logging
import math
import struct
from typing import Any

import grpc
import numpy as np

from evergreen.errors import BadRequest
from evergreen.serving import codec
from evergreen.serving.audit import Call
from evergreen.serving.grpc_common import Shared, check_shape
from evergreen.serving.models import DEFAULT_SIGNATURE
from evergreen.serving.state import package_version
from evergreen.serving.v2binary import v2_datatype

log = logging.getLogger("evergreen.serving")

API = "grpc_v2"
_SERVICE = "/inference.GRPCInferenceService/"
# Open Inference Protocol datatype -> NumPy dtype (little-endian in raw contents) and the
# InferTensorContents field that holds it when it comes typed.
_NUMPY = {
    "BOOL": ("bool", "bool_contents"),
    "UINT8": ("<u1", "uint_contents"),
    "UINT16": ("<u2", "uint_contents"),
    "UINT32": ("<u4", "uint_contents"),
    "UINT64": ("<u8", "uint64_contents"),
    "INT8": ("<i1", "int_contents"),
    "INT16": ("<i2", "int_contents"),
    "INT32": ("<i4", "int_contents"),
    "INT64": ("<i8", "int64_contents"),
    "FP16": ("<f2", ""),  # raw only: the protocol has no typed field for it
    "FP32": ("<f4", "fp32_contents"),
    "FP64": ("<f8", "fp64_contents"),
    "BYTES": ("object", "bytes_contents"),
}
_LENGTH = struct.Struct("<I")


def add_services(server: grpc.aio.Server, shared: Shared) -> None:
    """Register ``GRPCInferenceService`` on ``server``; skipped (and logged) without tritonclient."""
    try:
        from tritonclient.grpc import service_pb2_grpc
    except ImportError:
        log.warning(
            "the Open Inference Protocol over gRPC is off: it needs the stubs of "
            "tritonclient.grpc (pip install 'tritonclient[grpc]'); TF Serving's gRPC API is on"
        )
        return
    service_pb2_grpc.add_GRPCInferenceServiceServicer_to_server(InferenceService(shared), server)


def _pb() -> Any:
    from tritonclient.grpc import service_pb2

    return service_pb2


def _servicer_base() -> type:
    try:
        from tritonclient.grpc import service_pb2_grpc
    except ImportError:
        return object
    return service_pb2_grpc.GRPCInferenceServiceServicer


class InferenceService(_servicer_base()):  # type: ignore[misc]
    """``inference.GRPCInferenceService`` over the shared model manager."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def ServerLive(self, request: Any, context: Any) -> Any:  # noqa: N802 (RPC names)
        async def body(call: Call) -> Any:
            return _pb().ServerLiveResponse(live=True)

        return await self._handle("ServerLive", context, body, public=True)

    async def ServerReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            return _pb().ServerReadyResponse(ready=self.shared.manager.ready)

        return await self._handle("ServerReady", context, body, public=True)

    async def ServerMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            return _pb().ServerMetadataResponse(name="evergreen", version=package_version())

        return await self._handle("ServerMetadata", context, body)

    async def ModelReady(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            lv = self.shared.acquire(call, request.name, _version(request.version), None)
            self.shared.manager.release(lv)
            return _pb().ModelReadyResponse(ready=True)

        return await self._handle("ModelReady", context, body)

    async def ModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            lv = self.shared.acquire(call, request.name, _version(request.version), None)
            try:
                sig = lv.signature(DEFAULT_SIGNATURE)
                versions = self.shared.manager.models[lv.model].versions
                pb = _pb()
                return pb.ModelMetadataResponse(
                    name=lv.model,
                    versions=[str(v) for v in sorted(versions)],
                    platform="tensorflow_savedmodel",
                    inputs=[
                        pb.ModelMetadataResponse.TensorMetadata(**t.to_v2())
                        for t in sig.inputs.values()
                    ],
                    outputs=[
                        pb.ModelMetadataResponse.TensorMetadata(**t.to_v2())
                        for t in sig.outputs.values()
                    ],
                )
            finally:
                self.shared.manager.release(lv)

        return await self._handle("ModelMetadata", context, body)

    async def ModelInfer(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            lv = self.shared.acquire(
                call, request.model_name, _version(request.model_version), None
            )
            try:
                signature = _string_parameter(request.parameters, "signature_name")
                sig = lv.signature(signature or DEFAULT_SIGNATURE)
                requested = [o.name for o in request.outputs]
                _check_outputs(sig, requested)
                inputs = infer_inputs(sig, request, self.shared.settings.max_rows_per_request)
                outputs = await self.shared.run_model(call, context, lv, sig, inputs)
                response = _pb().ModelInferResponse(
                    model_name=lv.model, model_version=str(lv.version), id=request.id
                )
                for name in requested or list(outputs):
                    _add_output(response, name, np.asarray(outputs[name]))
                return response
            finally:
                self.shared.manager.release(lv)

        return await self._handle("ModelInfer", context, body)

    async def _handle(self, rpc: str, context: Any, body: Any, *, public: bool = False) -> Any:
        return await self.shared.handle(Call(API, _SERVICE + rpc), context, body, public=public)


def _version(text: str) -> int | None:
    if not text:
        return None
    if not (text.isascii() and text.isdigit()) or len(text) > 18:
        raise BadRequest(f"model version {text[:40]!r} is not a number; use e.g. '3' or ''")
    return int(text)


def _string_parameter(parameters: Any, name: str) -> str:
    if name not in parameters:
        return ""
    parameter = parameters[name]
    if parameter.WhichOneof("parameter_choice") != "string_param":
        raise BadRequest(f"parameter {name!r} must be a string_param")
    return parameter.string_param


def _check_outputs(sig: codec.Signature, requested: list[str]) -> None:
    unknown = [n for n in requested if n not in sig.outputs]
    if unknown:
        raise BadRequest(
            f"output(s) {', '.join(map(repr, unknown))} not in signature {sig.name!r}; "
            f"outputs: {', '.join(sig.outputs)}"
        )


# -------------------------------------------------------------------------------- tensors


def infer_inputs(sig: codec.Signature, request: Any, max_rows: int) -> dict[str, np.ndarray]:
    """A ModelInfer request's inputs as arrays, checked against ``sig``.

    Raises:
        BadRequest: names, datatypes, shapes or contents that do not fit the signature.
        PayloadTooLarge: a shape with more than ``max_rows`` rows.
    """
    tensors = list(request.inputs)
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(tensors):
        raise BadRequest(
            f"raw_input_contents has {len(raw)} entries for {len(tensors)} inputs; give one per "
            "input, in the order of 'inputs'"
        )
    names = [t.name for t in tensors]
    if len(set(names)) != len(names) or set(names) != set(sig.inputs):
        raise BadRequest(
            f"signature {sig.name!r} takes the inputs {sig.describe_inputs()} once each; "
            f"got {', '.join(names) or 'none'}"
        )
    arrays = {}
    for i, tensor in enumerate(tensors):
        info = sig.inputs[tensor.name]
        expected = v2_datatype(info.dtype)
        if tensor.datatype != expected:
            raise BadRequest(
                f"input {tensor.name!r} has datatype {tensor.datatype!r} but the model expects "
                f"{expected!r}"
            )
        if tensor.datatype not in _NUMPY:
            raise BadRequest(
                f"input {tensor.name!r}: datatype {tensor.datatype} is not served over gRPC"
            )
        shape = [int(d) for d in tensor.shape]
        if any(d < 0 for d in shape):
            raise BadRequest(f"input {tensor.name!r} has a negative dimension in {shape}")
        if shape:
            codec.check_rows(shape[0], max_rows, f"input {tensor.name!r}")
        flat = _raw_values(tensor, raw[i]) if raw else _typed_values(tensor)
        if flat.size != math.prod(shape):
            raise BadRequest(
                f"input {tensor.name!r}: shape {shape} holds {math.prod(shape)} values but "
                f"{flat.size} came"
            )
        array = flat.reshape(shape)
        check_shape(info, array.shape)
        arrays[tensor.name] = array
    return arrays


def _raw_values(tensor: Any, raw: bytes) -> np.ndarray:
    dtype, _ = _NUMPY[tensor.datatype]
    if tensor.datatype == "BYTES":
        return _split_bytes(tensor.name, raw)
    width = np.dtype(dtype).itemsize
    if len(raw) % width:
        raise BadRequest(
            f"raw contents of input {tensor.name!r} have {len(raw)} bytes, not a multiple of "
            f"{width} ({tensor.datatype})"
        )
    return np.frombuffer(raw, dtype=dtype)


def _split_bytes(name: str, raw: bytes) -> np.ndarray:
    """``BYTES`` raw contents: each element a 4-byte little-endian length, then its bytes."""
    values, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise BadRequest(f"raw contents of input {name!r} end inside an element's length")
        (length,) = _LENGTH.unpack_from(raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise BadRequest(
                f"raw contents of input {name!r}: an element of {length} bytes runs past the "
                f"end ({len(raw) - offset} left)"
            )
        values.append(raw[offset : offset + length])
        offset += length
    array = np.empty(len(values), dtype=object)
    array[:] = values
    return array


def _typed_values(tensor: Any) -> np.ndarray:
    dtype, field = _NUMPY[tensor.datatype]
    if not field:
        raise BadRequest(
            f"input {tensor.name!r} of datatype {tensor.datatype} must come in raw_input_contents"
        )
    values = list(getattr(tensor.contents, field))
    if tensor.datatype == "BYTES":
        array = np.empty(len(values), dtype=object)
        array[:] = values
        return array
    return np.asarray(values, dtype=dtype)


def _add_output(response: Any, name: str, array: np.ndarray) -> None:
    """Append one output tensor, its data in ``raw_output_contents`` (Triton's way)."""
    if array.dtype == object or array.dtype.kind in "SU":
        datatype = "BYTES"
        parts = []
        for value in array.reshape(-1):
            data = value.encode("utf-8") if isinstance(value, str) else bytes(value)
            parts.append(_LENGTH.pack(len(data)))
            parts.append(data)
        raw = b"".join(parts)
    else:
        datatype = v2_datatype(array.dtype.name)
        raw = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<")).tobytes()
    response.outputs.add(name=name, datatype=datatype, shape=list(array.shape))
    response.raw_output_contents.append(raw)
