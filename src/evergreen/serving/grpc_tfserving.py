"""TF Serving's gRPC API: ``PredictionService`` and ``ModelService``, with its own protos.

``Predict``, ``Classify``, ``Regress``, ``GetModelMetadata`` and ``GetModelStatus`` answer as
the REST routes of :mod:`evergreen.serving.app` do, from the same loaded versions; the model
spec's ``name``, ``version`` / ``version_label`` and ``signature_name`` pick the version and
signature by the REST rules. ``MultiInference`` and ``HandleReloadConfigRequest`` answer
UNIMPLEMENTED (the generated servicer's default).

Classify and Regress take ``tf.Example`` protos: a signature with one string input ``inputs``
(TF Serving's classify/regress signatures) gets them serialized; any other signature gets their
features as named inputs, converted exactly like the REST ``:classify`` body's examples.
"""

from __future__ import annotations

import base64
import functools
import math
from typing import Any

import grpc
import numpy as np
from google.protobuf import json_format
from tensorflow_serving.apis import (
    classification_pb2,
    get_model_metadata_pb2,
    get_model_status_pb2,
    model_service_pb2_grpc,
    predict_pb2,
    prediction_service_pb2_grpc,
    regression_pb2,
)

from evergreen.errors import BadRequest
from evergreen.serving import classify, codec
from evergreen.serving.audit import Call
from evergreen.serving.grpc_common import Shared, check_shape
from evergreen.serving.models import DEFAULT_SIGNATURE, SERIALIZED_EXAMPLES, LoadedVersion

API = "grpc_v1"
_EXAMPLE_METHODS = (classify.CLASSIFY_METHOD, classify.REGRESS_METHOD)
_SERVICE = "/tensorflow.serving.PredictionService/"


def add_services(server: grpc.aio.Server, shared: Shared) -> None:
    """Register ``PredictionService`` and ``ModelService`` on ``server``."""
    prediction_service_pb2_grpc.add_PredictionServiceServicer_to_server(
        PredictionService(shared), server
    )
    model_service_pb2_grpc.add_ModelServiceServicer_to_server(ModelService(shared), server)


class PredictionService(prediction_service_pb2_grpc.PredictionServiceServicer):
    """``tensorflow.serving.PredictionService`` over the shared model manager."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def Predict(self, request: Any, context: Any) -> Any:  # noqa: N802 (the RPC's name)
        async def body(call: Call) -> Any:
            lv = _acquire(self.shared, call, request.model_spec)
            try:
                sig = lv.signature(request.model_spec.signature_name or DEFAULT_SIGNATURE)
                inputs = tensors_to_arrays(
                    sig, request.inputs, self.shared.settings.max_rows_per_request
                )
                wanted = _output_filter(sig, request.output_filter)
                outputs = await self.shared.run_model(call, context, lv, sig, inputs)
                response = predict_pb2.PredictResponse()
                _fill_spec(response.model_spec, lv, sig.name)
                for name in wanted:
                    response.outputs[name].CopyFrom(array_to_tensor(outputs[name]))
                return response
            finally:
                self.shared.manager.release(lv)

        return await self.shared.handle(Call(API, _SERVICE + "Predict"), context, body)

    async def Classify(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._example_rpc("Classify", request, context)

    async def Regress(self, request: Any, context: Any) -> Any:  # noqa: N802
        return await self._example_rpc("Regress", request, context)

    async def _example_rpc(self, rpc: str, request: Any, context: Any) -> Any:
        """Classify or Regress: the request's examples through the signature, and its answer."""
        kind = rpc.lower()

        async def body(call: Call) -> Any:
            lv, sig, outputs = await self._examples(call, context, request, kind)
            response = _EXAMPLE_RESPONSES[kind](sig, outputs)
            _fill_spec(response.model_spec, lv, sig.name)
            return response

        return await self.shared.handle(Call(API, _SERVICE + rpc), context, body)

    async def _examples(
        self, call: Call, context: Any, request: Any, kind: str
    ) -> tuple[LoadedVersion, codec.Signature, dict[str, np.ndarray]]:
        """Run a Classify or Regress request's examples through its signature.

        Unnamed, the signature is the version's ``classification`` / ``regression`` one when it
        has it (as for REST), else ``serving_default``.
        """
        lv = _acquire(self.shared, call, request.model_spec)
        try:
            preferred = (
                classify.CLASSIFY_SIGNATURE if kind == "classify" else classify.REGRESS_SIGNATURE
            )
            name = request.model_spec.signature_name or (
                preferred if preferred in lv.signatures else DEFAULT_SIGNATURE
            )
            sig = lv.signature(name)
            takes_examples = lv.methods.get(sig.name) in _EXAMPLE_METHODS or (
                set(sig.inputs) == {SERIALIZED_EXAMPLES}
                and sig.inputs[SERIALIZED_EXAMPLES].dtype == "string"
            )
            check = _check_classification if kind == "classify" else _check_regression
            check(sig)
            inputs = examples_to_arrays(
                sig, request.input, self.shared.settings.max_rows_per_request, takes_examples
            )
            return lv, sig, await self.shared.run_model(call, context, lv, sig, inputs)
        finally:
            self.shared.manager.release(lv)

    async def GetModelMetadata(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            fields = list(request.metadata_field)
            if fields != ["signature_def"]:
                raise BadRequest(
                    f"metadata_field {fields} is not supported; ask for ['signature_def']"
                )
            lv = _acquire(self.shared, call, request.model_spec)
            try:
                response = get_model_metadata_pb2.GetModelMetadataResponse()
                _fill_spec(response.model_spec, lv, "")
                # The SignatureDefMap read from saved_model.pb, as REST shows it.
                response.metadata["signature_def"].Pack(lv.signature_defs)
                return response
            finally:
                self.shared.manager.release(lv)

        method = _SERVICE + "GetModelMetadata"
        return await self.shared.handle(Call(API, method), context, body)


class ModelService(model_service_pb2_grpc.ModelServiceServicer):
    """``tensorflow.serving.ModelService``: ``GetModelStatus`` (reloading config is not offered)."""

    def __init__(self, shared: Shared) -> None:
        self.shared = shared

    async def GetModelStatus(self, request: Any, context: Any) -> Any:  # noqa: N802
        async def body(call: Call) -> Any:
            spec = request.model_spec
            call.model = spec.name
            entries = self.shared.manager.status(spec.name)
            if spec.WhichOneof("version_choice"):
                lv = _acquire(self.shared, call, spec)
                self.shared.manager.release(lv)
                entries = [e for e in entries if e["version"] == str(lv.version)]
            return json_format.ParseDict(
                {"model_version_status": entries}, get_model_status_pb2.GetModelStatusResponse()
            )

        method = "/tensorflow.serving.ModelService/GetModelStatus"
        return await self.shared.handle(Call(API, method), context, body)


# ---------------------------------------------------------------------------- model specs


def _acquire(shared: Shared, call: Call, spec: Any) -> LoadedVersion:
    choice = spec.WhichOneof("version_choice")  # a oneof: a version or a label, not both
    version = spec.version.value if choice == "version" else None
    return shared.acquire(call, spec.name, version, spec.version_label or None)


def _fill_spec(spec: Any, lv: LoadedVersion, signature: str) -> None:
    spec.name = lv.model
    spec.version.value = lv.version
    spec.signature_name = signature


def _output_filter(sig: codec.Signature, names: Any) -> list[str]:
    wanted = list(names) or list(sig.outputs)
    unknown = [n for n in wanted if n not in sig.outputs]
    if unknown:
        raise BadRequest(
            f"output_filter names {', '.join(map(repr, unknown))}, not in signature "
            f"{sig.name!r}; its outputs are {', '.join(sig.outputs)}"
        )
    return wanted


# -------------------------------------------------------------------------------- tensors


def tensors_to_arrays(sig: codec.Signature, tensors: Any, max_rows: int) -> dict[str, np.ndarray]:
    """A Predict request's ``TensorProto`` inputs as arrays, checked against ``sig``.

    Rows are counted from the shapes before any tensor is converted.

    Raises:
        BadRequest: an input missing or unknown, of the wrong dtype or shape, or malformed.
        PayloadTooLarge: more than ``max_rows`` rows.
    """
    from evergreen.tf import tensorflow

    tf = tensorflow()
    given, expected = set(tensors), set(sig.inputs)
    if given != expected:
        raise BadRequest(
            f"signature {sig.name!r} takes the inputs {sig.describe_inputs()}; "
            + (f"missing: {', '.join(sorted(expected - given))}. " if expected - given else "")
            + (f"unknown: {', '.join(sorted(given - expected))}" if given - expected else "")
        )
    for name in sorted(given):
        dims = tensors[name].tensor_shape.dim
        if dims:
            codec.check_rows(dims[0].size, max_rows, f"input {name!r}")
    arrays = {}
    for name in sorted(given):
        info, proto = sig.inputs[name], tensors[name]
        want = tf.as_dtype(info.dtype).as_datatype_enum
        if proto.dtype != want:
            raise BadRequest(
                f"input {name!r} is {_dtype_name(proto.dtype)}; signature {sig.name!r} takes "
                f"{codec.tf_datatype_name(info.dtype)}"
            )
        try:
            array = _fast_ndarray(proto, info.dtype)
            if array is None:  # values in the typed fields, or a short list TF pads out
                array = tf.make_ndarray(proto)
        except (ValueError, TypeError) as e:
            raise BadRequest(f"input {name!r} is not a valid TensorProto: {e}") from None
        check_shape(info, array.shape)
        arrays[name] = array
    return arrays


def _dtype_name(enum: int) -> str:
    from tensorflow.core.framework import types_pb2

    try:
        return types_pb2.DataType.Name(enum)
    except ValueError:
        return f"DataType {enum}"


def _fast_ndarray(proto: Any, dtype: str) -> np.ndarray | None:
    """``tf.make_ndarray`` for the two common layouts, without its per-call checks: strings in
    ``string_val`` and numbers in ``tensor_content``, one value per element. None otherwise."""
    shape = [d.size for d in proto.tensor_shape.dim]
    count = math.prod(shape)
    if dtype == "string":
        if len(proto.string_val) != count:
            return None
        array = np.empty(count, dtype=object)
        array[:] = list(proto.string_val)
        return array.reshape(shape)
    numpy_dtype = _numpy_dtype(dtype)
    if not proto.tensor_content or len(proto.tensor_content) != count * numpy_dtype.itemsize:
        return None
    return np.frombuffer(proto.tensor_content, dtype=numpy_dtype).reshape(shape)


@functools.cache
def _numpy_dtype(dtype: str) -> np.dtype:
    from evergreen.tf import tensorflow

    return np.dtype(tensorflow().as_dtype(dtype).as_numpy_dtype).newbyteorder("<")


@functools.cache
def _datatype_enum(dtype: np.dtype) -> int:
    from evergreen.tf import tensorflow

    return tensorflow().as_dtype(dtype).as_datatype_enum


def array_to_tensor(array: np.ndarray) -> Any:
    """An output array as a ``TensorProto``: numbers as little-endian ``tensor_content``,
    strings in ``string_val`` (what ``tf.make_tensor_proto`` writes, at a fraction of its cost)."""
    from tensorflow.core.framework import tensor_pb2

    proto = tensor_pb2.TensorProto()
    for size in array.shape:
        proto.tensor_shape.dim.add(size=size)
    if array.dtype == object or array.dtype.kind in "SU":
        proto.dtype = _datatype_enum(np.dtype(object))
        proto.string_val.extend(
            v.encode("utf-8") if isinstance(v, str) else bytes(v) for v in array.reshape(-1)
        )
        return proto
    proto.dtype = _datatype_enum(array.dtype)
    little = array.dtype.newbyteorder("<")
    proto.tensor_content = np.ascontiguousarray(array, dtype=little).tobytes()
    return proto


# ------------------------------------------------------------------------------- examples


def examples_to_arrays(
    sig: codec.Signature, request_input: Any, max_rows: int, serialized: bool
) -> dict[str, Any]:
    """The ``tf.Example`` protos of a Classify or Regress request as the signature's inputs:
    serialized (the context merged into each, as TF Serving does) for a signature over
    serialized examples, else their features by name, converted like the REST body's.

    Raises:
        BadRequest: no examples; features that do not fit the signature.
        PayloadTooLarge: more than ``max_rows`` examples.
    """
    kind = request_input.WhichOneof("kind")
    source = getattr(request_input, kind) if kind else None
    codec.check_rows(len(source.examples) if source else 0, max_rows, "input.examples")
    if serialized:
        return {SERIALIZED_EXAMPLES: classify.serialized_from_input(request_input)}
    if source is None or not source.examples:
        raise BadRequest("input has no examples; fill input.example_list.examples")
    context = source.context if kind == "example_list_with_context" else None
    rows = [_features(e) for e in source.examples]
    return codec.decode_examples(
        sig, rows, _features(context) if context is not None else None, max_rows=max_rows
    )


def _features(example: Any) -> dict[str, Any]:
    """A tf.Example's features as the REST body's JSON values (bytes not UTF-8 as b64)."""
    out: dict[str, Any] = {}
    for name, feature in example.features.feature.items():
        kind = feature.WhichOneof("kind")
        if kind is None:
            raise BadRequest(f"feature {name!r} of an example has no value list")
        values = list(getattr(feature, kind).value)
        if kind == "bytes_list":
            values = [_text_or_b64(v) for v in values]
        out[name] = values
    return out


def _text_or_b64(value: bytes) -> Any:
    try:
        return value.decode("utf-8")
    except UnicodeDecodeError:
        return {"b64": base64.b64encode(value).decode("ascii")}


def _check_classification(sig: codec.Signature) -> None:
    names = set(sig.outputs)
    if not ({"classes", "scores"} <= names or {"label", "score"} <= names or "scores" in names):
        raise BadRequest(
            f"signature {sig.name!r} has no classification outputs (classes/scores); its "
            f"outputs are {', '.join(sig.outputs)}. Use Predict"
        )


def _check_regression(sig: codec.Signature) -> None:
    if _regression_output(sig) is None:
        raise BadRequest(
            f"signature {sig.name!r} has no regression output (one float output, one value per "
            f"example); its outputs are {', '.join(sig.outputs)}. Use Predict"
        )


def _regression_output(sig: codec.Signature) -> str | None:
    if "outputs" in sig.outputs:
        return "outputs"
    floats = [
        t
        for t in sig.outputs.values()
        if t.dtype in ("float16", "float32", "float64")
        and t.shape is not None
        and (len(t.shape) == 1 or (len(t.shape) == 2 and t.shape[1] == 1))
    ]
    return floats[0].name if len(sig.outputs) == 1 and floats else None


def _classification_response(sig: codec.Signature, outputs: dict[str, np.ndarray]) -> Any:
    response = classification_pb2.ClassificationResponse()
    response.result.CopyFrom(classify.classification_result_proto(outputs))
    return response


def _regression_response(sig: codec.Signature, outputs: dict[str, np.ndarray]) -> Any:
    response = regression_pb2.RegressionResponse()
    for value in regressions(sig, outputs):
        response.result.regressions.add(value=value)
    return response


# The answer of a Classify or Regress RPC from its signature's outputs (model_spec not set).
_EXAMPLE_RESPONSES = {"classify": _classification_response, "regress": _regression_response}


def regressions(sig: codec.Signature, outputs: dict[str, np.ndarray]) -> list[float]:
    name = _regression_output(sig)
    assert name is not None  # _check_regression ran
    return [float(v) for v in np.asarray(outputs[name], dtype=float).reshape(-1)]
