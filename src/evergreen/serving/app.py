"""The HTTP routes: TF Serving's REST API, the Open Inference Protocol (KServe V2), metrics.

TF Serving (``/v1``)::

    GET  /v1/models/{m}[/versions/{n}|/labels/{l}]            status of the loaded versions
    GET  /v1/models/{m}[/versions/{n}|/labels/{l}]/metadata   signatures
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:predict    {"instances": rows} | {"inputs": columns}
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:classify   {"examples": [...], "context": {...}}
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:regress    the same (two-class models)

Open Inference Protocol (``/v2``)::

    GET  /v2                    GET /v2/health/live           GET /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}]        GET /v2/models/{m}[/versions/{v}]/ready
    POST /v2/models/{m}[/versions/{v}]/infer

``GET /metrics`` is Prometheus' text format. Every model response carries the version that
answered in the ``X-Model-Version`` header (and in ``model_version`` for V2). Errors are
``{"error": "..."}`` with TF Serving's status codes. With API keys configured, every route but
the two health probes requires one.

Malformed requests are 4xx, never 500: bodies go through :func:`codec.parse_body` (depth,
huge numbers, lone surrogates), rows are counted against ``serving.max_rows_per_request``
before any is converted (413), versions in paths must be ASCII numbers. Metrics carry only the
names of models the server knows: any other name is counted as ``model="_unknown"``, so
made-up names cannot grow ``/metrics``. A client that hangs up before its answer is counted
and audited as status 499 (nginx's "client closed request"), not as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import re
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response
from starlette.routing import Route

import evergreen
from evergreen.config import ServingConfig
from evergreen.registry import Registry
from evergreen.serving import classify, codec, v2binary
from evergreen.serving.auth import ApiKeys
from evergreen.serving.errors import BadRequest, NotFound, PayloadTooLarge, ServingError
from evergreen.serving.metrics import CONTENT_TYPE_LATEST, ServingMetrics
from evergreen.serving.models import DEFAULT_SIGNATURE, LoadedVersion, ModelManager
from evergreen.serving.requestlog import RequestLog

VERSION_HEADER = "X-Model-Version"
UNKNOWN_MODEL = "_unknown"  # the metrics' model label for names not served (never a model name)
CLIENT_CLOSED = 499  # nginx's status for a client that hung up before the answer
_MAX_VERSION_DIGITS = 18  # an int64 version
_EXAMPLE_METHODS = (classify.CLASSIFY_METHOD, classify.REGRESS_METHOD)
_V1_PATH = (
    r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)


# One encoder each, made once: json.dumps with options builds a new encoder on every call.
_RESPONSE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))
_AUDIT_JSON = json.JSONEncoder(default=str)


class JSONResponse(_StarletteJSON):
    """JSON with NaN and Infinity written as tokens, as TF Serving does (Starlette refuses)."""

    def render(self, content: Any) -> bytes:
        text = _RESPONSE_JSON.encode(content)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed back: escape it, still valid JSON
            return json.dumps(content, separators=(",", ":")).encode("ascii")


@dataclass
class _Call:
    """What the audit log and the metrics learn about one request as it is handled."""

    api: str
    who: str = "anonymous"
    model: str | None = None
    version: int | None = None
    signature: str | None = None
    rows: int = 0
    payload: Any = None
    extra: dict[str, Any] = field(default_factory=dict)


def create_app(
    registry: Registry,
    settings: ServingConfig | None = None,
    *,
    api_keys: ApiKeys | None = None,
    request_log: RequestLog | None = None,
) -> Starlette:
    """The ASGI app serving every model of ``registry``.

    Models are loaded at startup (the lifespan) and the registry is watched from then on.

    Args:
        registry: the registry folder to serve.
        settings: the ``[serving]`` settings; default ``ServingConfig()``.
        api_keys: accepted keys; None or empty: no authentication (loopback only — the
            runner in :mod:`evergreen.serving.server` enforces that).
        request_log: where sampled rows go; None: no request logging.
    """
    settings = settings or ServingConfig()
    metrics = ServingMetrics()
    manager = ModelManager(registry, settings, metrics)
    audit = AuditLog(settings.audit_log)
    v1_path = re.compile(_V1_PATH)
    keys = api_keys if api_keys else None
    # Metric children by label values: prometheus_client's labels() costs a lock and a tuple
    # check per call, and every request would pay it twice.
    counters: dict[tuple[str, str, str, int], Any] = {}
    histograms: dict[tuple[str, str], Any] = {}
    in_flight = 0  # requests being handled; the audit log coalesces writes while others are
    max_rows = settings.max_rows_per_request

    def endpoint(
        api: str, handler: Callable[[Request, _Call], Awaitable[Response]], public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            nonlocal in_flight
            started = time.perf_counter()
            in_flight += 1
            call = _Call(api=api)
            try:
                if keys is not None and not public:
                    call.who = keys.check(request.headers)
                response = await handler(request, call)
            except ServingError as e:
                response = _error(e.status, e.message)
            except ClientDisconnect:  # nobody to answer; not a server error
                response = _error(CLIENT_CLOSED, "the client closed the connection")
            except Exception as e:  # a bug or a model failure: 500, logged with its traceback
                logging.getLogger("evergreen.serving").exception("request failed")
                response = _error(500, f"internal error: {type(e).__name__}: {e}")
            finally:
                in_flight -= 1
            status = response.status_code
            if call.version is not None:
                response.headers[VERSION_HEADER] = str(call.version)
            if status == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="evergreen"'
            elapsed = time.perf_counter() - started
            if call.model is not None:
                # Only names the registry has become label values: a client can send any.
                model = call.model if call.model in manager.discovered else UNKNOWN_MODEL
                version = str(call.version or "")
                counter = counters.get((model, version, api, status))
                if counter is None:
                    counter = metrics.requests.labels(model, version, api, str(status))
                    counters[(model, version, api, status)] = counter
                counter.inc()
                histogram = histograms.get((model, api))
                if histogram is None:
                    histogram = histograms[(model, api)] = metrics.latency.labels(model, api)
                histogram.observe(elapsed)
            scope = request.scope
            client = scope.get("client")
            record = {
                "ts": audit.timestamp(),
                "who": call.who,
                "client": client[0] if client else None,
                "method": scope["method"],
                "path": scope["path"],
                "model": call.model,
                "version": call.version,
                "signature": call.signature,
                "rows": call.rows,
                "status": status,
                "latency_ms": round(elapsed * 1000, 3),
            }
            if settings.log_payloads and call.payload is not None:
                record["payload"] = call.payload
            audit.write(_AUDIT_JSON.encode(record), coalesce=in_flight > 0)
            return response

        return run

    # ------------------------------------------------------------------------------ helpers

    async def body_json(request: Request, call: _Call) -> dict[str, Any]:
        body = codec.parse_body(await body_bytes(request))
        if settings.log_payloads:
            call.payload = body
        return body

    async def body_bytes(request: Request) -> bytes:
        limit = settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(
                f"the request body has {int(length)} bytes; this server takes at most {limit} "
                "(serving.max_body_bytes). Send fewer rows per request"
            )
        # ASGI messages read directly: Request.stream() is an async generator, dearer per
        # request, and a body is one message in the common case.
        chunks, size, more = [], 0, True
        while more:
            message = await request.receive()
            if message["type"] != "http.request":  # http.disconnect
                raise ClientDisconnect()
            chunk = message.get("body", b"")
            more = message.get("more_body", False)
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the request body is over {limit} bytes (serving.max_body_bytes); "
                    "send fewer rows per request"
                )
            chunks.append(chunk)
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

    class held:  # used like a function: `async with held(...) as lv`
        """The version a request goes to, held for the block (a class: cheaper per request
        than an asynccontextmanager generator)."""

        __slots__ = ("lv",)

        def __init__(self, call: _Call, model: str, version: str | None, label: str | None) -> None:
            call.model = model
            self.lv = manager.acquire(model, _version_param(model, version), label)
            call.version = self.lv.version

        async def __aenter__(self) -> LoadedVersion:
            return self.lv

        async def __aexit__(self, *exc: object) -> None:
            manager.release(self.lv)

    async def run_model(
        call: _Call, lv: LoadedVersion, sig: codec.Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        call.rows = codec.check_batch(sig, inputs) if sig.batchable else 0
        deadline = time.monotonic() + settings.request_timeout_ms / 1000
        outputs = await manager.predict(lv, sig.name, inputs, deadline)
        # Only raw-input (predict) signatures: the skew checks compare raw columns, and a
        # Classify/Regress signature's input is serialized tf.Example (log_examples logs
        # those requests' raw features instead).
        if request_log is not None and lv.methods.get(sig.name) not in _EXAMPLE_METHODS:
            request_log.sample(lv.model, lv.version, sig.name, inputs)
        return outputs

    def log_examples(lv: LoadedVersion, body: dict[str, Any]) -> None:
        """Sample a Classify/Regress request's rows into the request log as serving_default
        rows (the raw columns the skew checks compare); rows that do not fit are not logged."""
        default = lv.signatures.get(DEFAULT_SIGNATURE)
        if request_log is None or default is None:
            return
        try:
            rows = codec.decode_examples(default, body.get("examples"), body.get("context"))
        except ServingError:  # served by tf.Example rules, which are looser: nothing to log
            return
        request_log.sample(lv.model, lv.version, DEFAULT_SIGNATURE, rows)

    # ------------------------------------------------------------------------ TF Serving

    async def v1(request: Request, call: _Call) -> Response:
        match = v1_path.match(request.path_params["rest"])
        if match is None:
            raise NotFound(
                f"no route {request.url.path}; use /v1/models/NAME[/versions/N|/labels/L]"
                "[/metadata|:predict|:classify]"
            )
        model, version, label, tail = match.group("model", "version", "label", "tail")
        call.model = model
        if request.method == "GET":
            if tail is None:
                return await v1_status(call, model, version, label)
            if tail == "/metadata":
                return await v1_metadata(call, model, version, label)
        elif tail in (":predict", ":classify", ":regress"):
            body = await body_json(request, call)
            if tail == ":predict":
                return await v1_predict(call, body, model, version, label)
            if tail == ":classify":
                return await v1_classify(call, body, model, version, label)
            return await v1_regress(call, body, model, version, label)
        verb = "POST" if tail and tail.startswith(":") else "GET"
        return _error(405, f"{request.url.path} takes {verb}, not {request.method}")

    async def v1_status(
        call: _Call, model: str, version: str | None, label: str | None
    ) -> Response:
        entries = manager.status(model)
        if version is not None or label is not None:
            async with held(call, model, version, label) as lv:
                entries = [e for e in entries if e["version"] == str(lv.version)]
        return JSONResponse({"model_version_status": entries})

    async def v1_metadata(
        call: _Call, model: str, version: str | None, label: str | None
    ) -> Response:
        async with held(call, model, version, label) as lv:
            return JSONResponse(
                {
                    "model_spec": {"name": model, "signature_name": "", "version": str(lv.version)},
                    "metadata": {"signature_def": _signature_def_json(lv)},
                }
            )

    async def v1_predict(
        call: _Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        _known_keys(body, ("signature_name", "instances", "inputs"))
        if ("instances" in body) == ("inputs" in body):
            raise BadRequest(
                "give either 'instances' (a list of rows) or 'inputs' (columns), "
                + ("not both" if "inputs" in body else "one is required")
            )
        async with held(call, model, version, label) as lv:
            sig = lv.signature(_signature_name(body.get("signature_name")))
            call.signature = sig.name
            if "instances" in body:
                inputs = codec.decode_instances(sig, body["instances"], max_rows=max_rows)
                outputs = await run_model(call, lv, sig, inputs)
                return JSONResponse({"predictions": codec.encode_rows(outputs)})
            inputs = codec.decode_columns(sig, body["inputs"], max_rows=max_rows)
            outputs = await run_model(call, lv, sig, inputs)
            return JSONResponse({"outputs": codec.encode_columns(outputs)})

    async def v1_classify(
        call: _Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        _known_keys(body, ("signature_name", "examples", "context"))
        async with held(call, model, version, label) as lv:
            sig = lv.signature(_example_signature(lv, body, classify.CLASSIFY_SIGNATURE))
            call.signature = sig.name
            if lv.methods.get(sig.name) == classify.CLASSIFY_METHOD:
                serialized = classify.examples_to_serialized(
                    body.get("examples"), body.get("context"), max_rows=max_rows, floats=_floats(lv)
                )
                outputs = await run_model(call, lv, sig, {classify.CLASSIFY_INPUTS: serialized})
                log_examples(lv, body)
                return JSONResponse({"results": classify.classification_results(outputs)})
            # A version exported before the classification signature: raw-input signatures
            # with classes/scores (or label/score) outputs still answer, fed feature by feature.
            outputs_spec = set(sig.outputs)
            if not ({"classes", "scores"} <= outputs_spec or {"label", "score"} <= outputs_spec):
                raise BadRequest(
                    f"signature {sig.name!r} has no classification outputs (classes/scores); "
                    f"its outputs are {', '.join(sig.outputs)}. Use :predict"
                )
            inputs = codec.decode_examples(
                sig, body.get("examples"), body.get("context"), max_rows=max_rows
            )
            outputs = await run_model(call, lv, sig, inputs)
            return JSONResponse({"results": classify.classification_results(outputs)})

    async def v1_regress(
        call: _Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        _known_keys(body, ("signature_name", "examples", "context"))
        async with held(call, model, version, label) as lv:
            sig = lv.signature(_example_signature(lv, body, classify.REGRESS_SIGNATURE))
            call.signature = sig.name
            if lv.methods.get(sig.name) != classify.REGRESS_METHOD:
                regress = [n for n, m in lv.methods.items() if m == classify.REGRESS_METHOD]
                raise BadRequest(
                    f"signature {sig.name!r} of model {model!r} version {lv.version} is not a "
                    f"regression signature (method {lv.methods.get(sig.name)!r}); "
                    + (
                        f"regression signatures: {', '.join(regress)}"
                        if regress
                        else "this version has none (only two-class models export one); use "
                        ":classify or :predict"
                    )
                )
            serialized = classify.examples_to_serialized(
                body.get("examples"), body.get("context"), max_rows=max_rows, floats=_floats(lv)
            )
            outputs = await run_model(call, lv, sig, {classify.CLASSIFY_INPUTS: serialized})
            log_examples(lv, body)
            return JSONResponse({"results": classify.regression_results(outputs)})

    # --------------------------------------------------------------- Open Inference Protocol

    async def v2_server(request: Request, call: _Call) -> Response:
        return JSONResponse(
            {
                "name": "evergreen",
                "version": _package_version(),
                "extensions": v2binary.EXTENSIONS,
            }
        )

    async def v2_live(request: Request, call: _Call) -> Response:
        return JSONResponse({"live": True})

    async def v2_ready(request: Request, call: _Call) -> Response:
        ready = manager.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def v2_model(request: Request, call: _Call) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        async with held(call, model, version, None) as lv:
            sig = lv.signature(DEFAULT_SIGNATURE)
            state = manager.models[model]
            return JSONResponse(
                {
                    "name": model,
                    "versions": [str(v) for v in sorted(state.versions)],
                    "platform": "tensorflow_savedmodel",
                    "inputs": [t.to_v2() for t in sig.inputs.values()],
                    "outputs": [t.to_v2() for t in sig.outputs.values()],
                }
            )

    async def v2_model_ready(request: Request, call: _Call) -> Response:
        model, version = request.path_params["model"], request.path_params.get("version")
        async with held(call, model, version, None) as lv:
            return JSONResponse({"name": model, "version": str(lv.version), "ready": True})

    async def v2_infer(request: Request, call: _Call) -> Response:
        # The binary tensor extension: a JSON header of Inference-Header-Content-Length
        # bytes, then raw tensor bytes (v2binary).
        raw = v2binary.decompress(
            await body_bytes(request),
            request.headers.get("content-encoding"),
            settings.max_body_bytes,
        )
        header, binary = v2binary.split_body(raw, request.headers.get(v2binary.HEADER))
        body = codec.parse_body(header)
        if settings.log_payloads:
            call.payload = body
        _known_keys(body, ("id", "parameters", "inputs", "outputs"))
        model, version = request.path_params["model"], request.path_params.get("version")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"'parameters' must be an object, got {type(parameters).__name__}")
        if "id" in body and not isinstance(body["id"], str):  # echoed back: the spec's string
            raise BadRequest(f"'id' must be a string, got {type(body['id']).__name__}")
        async with held(call, model, version, None) as lv:
            sig = lv.signature(_signature_name(parameters.get("signature_name")))
            call.signature = sig.name
            requested = v2binary.requested_outputs(
                list(sig.outputs), body.get("outputs"), parameters
            )
            inputs = codec.decode_v2(sig, body.get("inputs"), max_rows=max_rows, binary=binary)
            outputs = await run_model(call, lv, sig, inputs)
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

    # ------------------------------------------------------------------------------ misc

    async def metrics_route(request: Request, call: _Call) -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE_LATEST)

    async def not_found(request: Request, exc: Exception) -> Response:
        status = exc.status_code if isinstance(exc, HTTPException) else 404
        if status == 405:
            return _error(405, f"{request.url.path} does not take {request.method}")
        return _error(
            status,
            f"no route {request.url.path}; the APIs are /v1/models/NAME..., /v2/models/NAME..., "
            "/v2/health/live, /v2/health/ready and /metrics",
        )

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await manager.start()
        try:
            yield
        finally:
            await manager.close()
            if request_log is not None:
                await asyncio.get_running_loop().run_in_executor(None, request_log.close)
            audit.close()

    v1_endpoint = endpoint("v1", v1)
    v2_infer_endpoint = endpoint("v2", v2_infer)
    routes = [
        Route("/v1/models/{rest:path}", v1_endpoint, methods=["GET", "POST"]),
        Route("/v2", endpoint("v2", v2_server), methods=["GET"]),
        Route("/v2/health/live", endpoint("v2", v2_live, public=True), methods=["GET"]),
        Route("/v2/health/ready", endpoint("v2", v2_ready, public=True), methods=["GET"]),
        Route("/v2/models/{model}", endpoint("v2", v2_model), methods=["GET"]),
        Route("/v2/models/{model}/versions/{version}", endpoint("v2", v2_model), methods=["GET"]),
        Route("/v2/models/{model}/ready", endpoint("v2", v2_model_ready), methods=["GET"]),
        Route(
            "/v2/models/{model}/versions/{version}/ready",
            endpoint("v2", v2_model_ready),
            methods=["GET"],
        ),
        Route("/v2/models/{model}/infer", v2_infer_endpoint, methods=["POST"]),
        Route(
            "/v2/models/{model}/versions/{version}/infer",
            v2_infer_endpoint,
            methods=["POST"],
        ),
        Route("/metrics", endpoint("metrics", metrics_route), methods=["GET"]),
    ]
    app = _App(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.predict_routes = {"v1": v1_endpoint, "v2": v2_infer_endpoint}
    app.state.manager = manager
    app.state.metrics = metrics
    return app


class _App(Starlette):
    """Starlette, with the prediction routes (``POST /v1/models/...``, ``POST /v2/models/.../infer``)
    taken straight to their endpoints.

    They skip Starlette's middleware stack and router, which cost about a quarter of the app's
    Python time per request; their endpoints already turn every exception into a response.
    Every other request, and every request these paths do not match exactly, goes through
    Starlette as before.
    """

    predict_routes: dict[str, Callable[[Request], Awaitable[Response]]]

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http" and scope["method"] == "POST":
            path, root = scope["path"], scope.get("root_path", "")
            params = _predict_params(path[len(root) :] if root and path.startswith(root) else path)
            if params is not None:
                scope["app"] = self
                scope["path_params"] = params[1]
                response = await self.predict_routes[params[0]](Request(scope, receive, send))
                await response(scope, receive, send)
                return
        await super().__call__(scope, receive, send)


def _predict_params(path: str) -> tuple[str, dict[str, str]] | None:
    """("v1" | "v2", path parameters) for a prediction path, as the routes would match it."""
    if path.startswith("/v1/models/"):
        rest = path[len("/v1/models/") :]
        return ("v1", {"rest": rest}) if rest else None
    if path.startswith("/v2/models/") and path.endswith("/infer"):
        parts = path[len("/v2/models/") : -len("/infer")].split("/")
        if len(parts) == 1 and parts[0]:
            return "v2", {"model": parts[0]}
        if len(parts) == 3 and parts[0] and parts[1] == "versions" and parts[2]:
            return "v2", {"model": parts[0], "version": parts[2]}
    return None


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _version_param(model: str, version: str | None) -> str | None:
    """A version from a path, checked: ASCII digits only (``"²".isdigit()`` is true, and
    ``int()`` refuses numbers of over 4300 digits), short enough for an int64."""
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()) or len(version) > _MAX_VERSION_DIGITS:
        shown = version if len(version) <= 40 else version[:37] + "..."
        raise BadRequest(
            f"version {shown!r} of model {model!r} is not a number; use e.g. /versions/3"
        )
    return version


def _signature_name(value: Any) -> str:
    if value is None or value == "":
        return DEFAULT_SIGNATURE
    if not isinstance(value, str):
        raise BadRequest(f"'signature_name' must be a string, got {type(value).__name__}")
    return value


def _known_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    for key in body:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise BadRequest(f"unknown key {key!r} in the request body; {hint}")


def _example_signature(lv: LoadedVersion, body: dict[str, Any], preferred: str) -> str:
    """The signature a Classify/Regress request names; unnamed: ``preferred`` when the version
    has it (TF Serving would use serving_default, a predict signature it refuses), else
    serving_default (versions exported before the classification signature)."""
    name = body.get("signature_name")
    if name is None or name == "":
        return preferred if preferred in lv.signatures else DEFAULT_SIGNATURE
    return _signature_name(name)


def _floats(lv: LoadedVersion) -> frozenset[str]:
    """Features of ``lv``'s examples parsed as floats (serving_default's float inputs)."""
    default = lv.signatures.get(DEFAULT_SIGNATURE)
    return classify.float_features(default.inputs) if default else frozenset()


def _signature_def_json(lv: LoadedVersion) -> dict[str, Any]:
    """TF Serving's metadata ``signature_def``: the SignatureDefMap proto read from
    saved_model.pb, as TF Serving prints it (proto field names, default values included)."""
    from google.protobuf import json_format

    return json_format.MessageToDict(
        lv.signature_defs,
        preserving_proto_field_name=True,
        always_print_fields_with_no_presence=True,
    )


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evergreen")
    except PackageNotFoundError:
        return getattr(evergreen, "__version__", "dev")


class AuditLog:
    """One JSON line per request, to ``path`` (appended) or to standard error.

    A line is written before its response goes out when no other request is in flight. Under
    load, lines of requests answered in the same event-loop turn are coalesced into one write
    at the end of that turn: a write per request would give up the GIL per request, and the
    event loop would wait to win it back from the model thread.
    """

    def __init__(self, path: str) -> None:
        self._own = bool(path)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = open(path, "a", encoding="utf-8")  # closed by close()
        else:
            self._file = sys.stderr
        self._pending: list[str] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""

    def timestamp(self) -> str:
        """Now, to the second, as ``2026-11-25T15:00:00Z`` (formatted once a second)."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
        return self._stamp

    def write(self, line: str, *, coalesce: bool = False) -> None:
        self._pending.append(line)
        if not coalesce:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except (OSError, ValueError) as e:  # a full disk must not fail requests; say so once
            logging.getLogger("evergreen.serving").error("audit log write failed: %s", e)

    def close(self) -> None:
        self.flush()
        if self._own:
            self._file.close()
