"""TF Serving's REST API (``/v1``): status, metadata, predict, classify and regress.

::

    GET  /v1/models/{m}[/versions/{n}|/labels/{l}]            status of the loaded versions
    GET  /v1/models/{m}[/versions/{n}|/labels/{l}]/metadata   signatures
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:predict    {"instances": rows} | {"inputs": columns}
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:classify   {"examples": [...], "context": {...}}
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:regress    the same (two-class models)

One route takes every path under ``/v1/models/`` and :class:`TfServingRoutes` dispatches it.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from evergreen.errors import BadRequest, NotFound, ServingError
from evergreen.serving import classify, codec
from evergreen.serving.audit import Call
from evergreen.serving.models import DEFAULT_SIGNATURE, LoadedVersion
from evergreen.serving.rest_io import (
    Held,
    JSONResponse,
    error_response,
    example_signature,
    float_features,
    known_keys,
    parse_json,
    read_body,
    run_model,
    signature_name,
)
from evergreen.serving.state import ServingState

_V1_PATH = re.compile(
    r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)
_EXAMPLE_KEYS = ("signature_name", "examples", "context")


class TfServingRoutes:
    """The ``/v1/models/{rest:path}`` handler (call it with the request and its :class:`Call`)."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def __call__(self, request: Request, call: Call) -> Response:
        match = _V1_PATH.match(request.path_params["rest"])
        if match is None:
            raise NotFound(
                f"no route {request.url.path}; use /v1/models/NAME[/versions/N|/labels/L]"
                "[/metadata|:predict|:classify]"
            )
        model, version, label, tail = match.group("model", "version", "label", "tail")
        call.model = model
        spec = (model, version, label)
        if request.method == "GET":
            if tail is None:
                return await self.status(call, *spec)
            if tail == "/metadata":
                return await self.metadata(call, *spec)
        elif tail in (":predict", ":classify", ":regress"):
            state = self.state
            raw = await read_body(request, state.settings.max_body_bytes)
            body = parse_json(raw, call, state.settings.log_payloads)
            if tail == ":predict":
                return await self.predict(call, body, *spec)
            if tail == ":classify":
                return await self.classify(call, body, *spec)
            return await self.regress(call, body, *spec)
        verb = "POST" if tail and tail.startswith(":") else "GET"
        return error_response(405, f"{request.url.path} takes {verb}, not {request.method}")

    def held(self, call: Call, model: str, version: str | None, label: str | None) -> Held:
        return Held(self.state.manager, call, model, version, label)

    async def status(
        self, call: Call, model: str, version: str | None, label: str | None
    ) -> Response:
        entries = self.state.manager.status(model)
        if version is not None or label is not None:
            async with self.held(call, model, version, label) as lv:
                entries = [e for e in entries if e["version"] == str(lv.version)]
        return JSONResponse({"model_version_status": entries})

    async def metadata(
        self, call: Call, model: str, version: str | None, label: str | None
    ) -> Response:
        async with self.held(call, model, version, label) as lv:
            return JSONResponse(
                {
                    "model_spec": {"name": model, "signature_name": "", "version": str(lv.version)},
                    "metadata": {"signature_def": _signature_def_json(lv)},
                }
            )

    async def predict(
        self, call: Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        known_keys(body, ("signature_name", "instances", "inputs"))
        if ("instances" in body) == ("inputs" in body):
            raise BadRequest(
                "give either 'instances' (a list of rows) or 'inputs' (columns), "
                + ("not both" if "inputs" in body else "one is required")
            )
        max_rows = self.state.settings.max_rows_per_request
        async with self.held(call, model, version, label) as lv:
            sig = lv.signature(signature_name(body.get("signature_name")))
            call.signature = sig.name
            if "instances" in body:
                inputs = codec.decode_instances(sig, body["instances"], max_rows=max_rows)
                outputs = await run_model(self.state, call, lv, sig, inputs)
                return JSONResponse({"predictions": codec.encode_rows(outputs)})
            inputs = codec.decode_columns(sig, body["inputs"], max_rows=max_rows)
            outputs = await run_model(self.state, call, lv, sig, inputs)
            return JSONResponse({"outputs": codec.encode_columns(outputs)})

    async def classify(
        self, call: Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        spec = (model, version, label)
        return await self._examples(call, body, spec, classify.CLASSIFY_SIGNATURE, self._classify)

    async def regress(
        self, call: Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        spec = (model, version, label)
        return await self._examples(call, body, spec, classify.REGRESS_SIGNATURE, self._regress)

    async def _examples(
        self,
        call: Call,
        body: dict[str, Any],
        spec: tuple[str, str | None, str | None],
        preferred: str,
        answer: Callable[
            [Call, LoadedVersion, codec.Signature, dict[str, Any]], Awaitable[Response]
        ],
    ) -> Response:
        """A ``:classify`` or ``:regress`` request: its version held, its signature picked
        (``preferred`` when unnamed, see :func:`example_signature`), then ``answer``."""
        known_keys(body, _EXAMPLE_KEYS)
        async with self.held(call, *spec) as lv:
            sig = lv.signature(example_signature(lv, body, preferred))
            call.signature = sig.name
            return await answer(call, lv, sig, body)

    async def _classify(
        self, call: Call, lv: LoadedVersion, sig: codec.Signature, body: dict[str, Any]
    ) -> Response:
        if lv.methods.get(sig.name) == classify.CLASSIFY_METHOD:
            outputs = await self._run_examples(call, lv, sig, body)
        else:
            outputs = await self._run_features(call, lv, sig, body)
        return JSONResponse({"results": classify.classification_results(outputs)})

    async def _regress(
        self, call: Call, lv: LoadedVersion, sig: codec.Signature, body: dict[str, Any]
    ) -> Response:
        if lv.methods.get(sig.name) != classify.REGRESS_METHOD:
            raise _not_regression(lv, sig.name)
        outputs = await self._run_examples(call, lv, sig, body)
        return JSONResponse({"results": classify.regression_results(outputs)})

    async def _run_examples(
        self, call: Call, lv: LoadedVersion, sig: codec.Signature, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Run a Classify/Regress signature on the body's examples, serialized as tf.Example."""
        serialized = classify.examples_to_serialized(
            body.get("examples"),
            body.get("context"),
            max_rows=self.state.settings.max_rows_per_request,
            floats=float_features(lv),
        )
        outputs = await run_model(self.state, call, lv, sig, {classify.CLASSIFY_INPUTS: serialized})
        self._log_examples(lv, body)
        return outputs

    async def _run_features(
        self, call: Call, lv: LoadedVersion, sig: codec.Signature, body: dict[str, Any]
    ) -> dict[str, Any]:
        """Classify with a version exported before the classification signature: raw-input
        signatures with classes/scores (or label/score) outputs still answer, fed feature by
        feature."""
        outputs_spec = set(sig.outputs)
        if not ({"classes", "scores"} <= outputs_spec or {"label", "score"} <= outputs_spec):
            raise BadRequest(
                f"signature {sig.name!r} has no classification outputs (classes/scores); "
                f"its outputs are {', '.join(sig.outputs)}. Use :predict"
            )
        inputs = codec.decode_examples(
            sig,
            body.get("examples"),
            body.get("context"),
            max_rows=self.state.settings.max_rows_per_request,
        )
        return await run_model(self.state, call, lv, sig, inputs)

    def _log_examples(self, lv: LoadedVersion, body: dict[str, Any]) -> None:
        """Sample a Classify/Regress request's rows into the request log as serving_default
        rows (the raw columns the skew checks compare); rows that do not fit are not logged."""
        request_log = self.state.request_log
        default = lv.signatures.get(DEFAULT_SIGNATURE)
        if request_log is None or default is None:
            return
        try:
            rows = codec.decode_examples(default, body.get("examples"), body.get("context"))
        except ServingError:  # served by tf.Example rules, which are looser: nothing to log
            return
        request_log.sample(lv.model, lv.version, DEFAULT_SIGNATURE, rows)


def _not_regression(lv: LoadedVersion, name: str) -> BadRequest:
    regress = [n for n, m in lv.methods.items() if m == classify.REGRESS_METHOD]
    return BadRequest(
        f"signature {name!r} of model {lv.model!r} version {lv.version} is not a "
        f"regression signature (method {lv.methods.get(name)!r}); "
        + (
            f"regression signatures: {', '.join(regress)}"
            if regress
            else "this version has none (only two-class models export one); use "
            ":classify or :predict"
        )
    )


def _signature_def_json(lv: LoadedVersion) -> dict[str, Any]:
    """TF Serving's metadata ``signature_def``: the SignatureDefMap proto read from
    saved_model.pb, as TF Serving prints it (proto field names, default values included)."""
    from google.protobuf import json_format  # only metadata requests need it

    return json_format.MessageToDict(
        lv.signature_defs,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )
