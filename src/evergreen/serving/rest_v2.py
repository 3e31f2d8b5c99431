"""The Open Inference Protocol's REST API (KServe V2, ``/v2``): server and model metadata,
readiness, and ``infer`` with the binary tensor and classification extensions.

::

    GET  /v2                                   server metadata
    GET  /v2/models/{m}[/versions/{v}]         model metadata
    GET  /v2/models/{m}[/versions/{v}]/ready   model readiness
    POST /v2/models/{m}[/versions/{v}]/infer   inference

The health probes (``/v2/health/live``, ``/v2/health/ready``) are in
:mod:`evergreen.serving.rest_admin`.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from evergreen.errors import BadRequest
from evergreen.serving import codec, v2binary
from evergreen.serving.audit import Call
from evergreen.serving.models import DEFAULT_SIGNATURE
from evergreen.serving.rest_io import (
    Held,
    JSONResponse,
    known_keys,
    parse_json,
    read_body,
    run_model,
    signature_name,
)
from evergreen.serving.state import ServingState, package_version


class V2Routes:
    """The ``/v2`` handlers; each takes the request and its :class:`Call`."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def server(self, request: Request, call: Call) -> Response:
        return JSONResponse(
            {"name": "evergreen", "version": package_version(), "extensions": v2binary.EXTENSIONS}
        )

    async def model(self, request: Request, call: Call) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        async with Held(self.state.manager, call, model, version, None) as lv:
            sig = lv.signature(DEFAULT_SIGNATURE)
            versions = self.state.manager.models[model].versions
            return JSONResponse(
                {
                    "name": model,
                    "versions": [str(v) for v in sorted(versions)],
                    "platform": "tensorflow_savedmodel",
                    "inputs": [t.to_v2() for t in sig.inputs.values()],
                    "outputs": [t.to_v2() for t in sig.outputs.values()],
                }
            )

    async def model_ready(self, request: Request, call: Call) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        async with Held(self.state.manager, call, model, version, None) as lv:
            return JSONResponse({"name": model, "version": str(lv.version), "ready": True})

    async def infer(self, request: Request, call: Call) -> Response:
        settings = self.state.settings
        # The binary tensor extension: a JSON header of Inference-Header-Content-Length
        # bytes, then raw tensor bytes (v2binary).
        raw = v2binary.decompress(
            await read_body(request, settings.max_body_bytes),
            request.headers.get("content-encoding"),
            settings.max_body_bytes,
        )
        header, binary = v2binary.split_body(raw, request.headers.get(v2binary.HEADER))
        body = parse_json(header, call, settings.log_payloads)
        known_keys(body, ("id", "parameters", "inputs", "outputs"))
        parameters = _parameters(body)
        model, version = request.path_params["model"], request.path_params.get("version")
        async with Held(self.state.manager, call, model, version, None) as lv:
            sig = lv.signature(signature_name(parameters.get("signature_name")))
            call.signature = sig.name
            requested = v2binary.requested_outputs(
                list(sig.outputs), body.get("outputs"), parameters
            )
            inputs = codec.decode_v2(
                sig, body.get("inputs"), max_rows=settings.max_rows_per_request, binary=binary
            )
            outputs = await run_model(self.state, call, lv, sig, inputs)
            tensors, data = v2binary.encode_outputs(outputs, requested, codec.to_json_value)
            answer: dict[str, Any] = {
                "model_name": model,
                "model_version": str(lv.version),
                "outputs": tensors,
            }
            if "id" in body:
                answer["id"] = body["id"]
            if not data and not any(r.binary for r in requested):
                return JSONResponse(answer)
            head = JSONResponse(answer).body
            return Response(
                head + data,
                media_type="application/octet-stream",
                headers={"Inference-Header-Content-Length": str(len(head))},
            )


def _parameters(body: dict[str, Any]) -> dict[str, Any]:
    """The request's ``parameters`` (an object, or {}), with its ``id`` checked to be a string."""
    parameters = body.get("parameters") or {}
    if not isinstance(parameters, dict):
        raise BadRequest(f"'parameters' must be an object, got {type(parameters).__name__}")
    if "id" in body and not isinstance(body["id"], str):  # echoed back: the spec's string
        raise BadRequest(f"'id' must be a string, got {type(body['id']).__name__}")
    return parameters
