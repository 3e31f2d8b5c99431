"""The HTTP routes: TF Serving's REST API, the Open Inference Protocol (KServe V2), metrics.

TF Serving (``/v1``)::

    GET  /v1/models/{m}[/versions/{n}|/labels/{l}]            status of the loaded versions
    GET  /v1/models/{m}[/versions/{n}|/labels/{l}]/metadata   signatures
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:predict    {"instances": rows} | {"inputs": columns}
    POST /v1/models/{m}[/versions/{n}|/labels/{l}]:classify   {"examples": [...], "context": {...}}

Open Inference Protocol (``/v2``)::

    GET  /v2                    GET /v2/health/live           GET /v2/health/ready
    GET  /v2/models/{m}[/versions/{v}]        GET /v2/models/{m}[/versions/{v}]/ready
    POST /v2/models/{m}[/versions/{v}]/infer

``GET /metrics`` is Prometheus' text format. Every model response carries the version that
answered in the ``X-Model-Version`` header (and in ``model_version`` for V2). Errors are
``{"error": "..."}`` with TF Serving's status codes. With API keys configured, every route but
the two health probes requires one.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import json
import logging
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse as _StarletteJSON
from starlette.responses import Response
from starlette.routing import Route

import evergreen
from evergreen.config import ServingConfig
from evergreen.registry import Registry
from evergreen.serving import codec
from evergreen.serving.auth import ApiKeys
from evergreen.serving.errors import BadRequest, NotFound, PayloadTooLarge, ServingError
from evergreen.serving.metrics import CONTENT_TYPE_LATEST, ServingMetrics
from evergreen.serving.models import DEFAULT_SIGNATURE, LoadedVersion, ModelManager
from evergreen.serving.requestlog import RequestLog

VERSION_HEADER = "X-Model-Version"
_V1_PATH = (
    r"^(?P<model>[^/:]+)(?:/versions/(?P<version>[^/:]+)|/labels/(?P<label>[^/:]+))?"
    r"(?P<tail>/metadata|:predict|:classify|:regress)?$"
)


class JSONResponse(_StarletteJSON):
    """JSON with NaN and Infinity written as tokens, as TF Serving does (Starlette refuses)."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


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
    audit = _audit_logger(settings.audit_log)
    v1_path = re.compile(_V1_PATH)
    keys = api_keys if api_keys else None

    def endpoint(
        api: str, handler: Callable[[Request, _Call], Awaitable[Response]], public: bool = False
    ) -> Callable[[Request], Awaitable[Response]]:
        async def run(request: Request) -> Response:
            started = time.perf_counter()
            call = _Call(api=api)
            try:
                if keys is not None and not public:
                    call.who = keys.check(request.headers)
                response = await handler(request, call)
            except ServingError as e:
                response = _error(e.status, e.message)
            except Exception as e:  # a bug or a model failure: 500, logged with its traceback
                logging.getLogger("evergreen.serving").exception("request failed")
                response = _error(500, f"internal error: {type(e).__name__}: {e}")
            if call.version is not None:
                response.headers[VERSION_HEADER] = str(call.version)
            if response.status_code == 401:
                response.headers["WWW-Authenticate"] = 'Bearer realm="evergreen"'
            elapsed = time.perf_counter() - started
            if call.model is not None:
                metrics.requests.labels(
                    call.model, str(call.version or ""), api, str(response.status_code)
                ).inc()
                metrics.latency.labels(call.model, api).observe(elapsed)
            record = {
                "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + "Z",
                "who": call.who,
                "client": request.client.host if request.client else None,
                "method": request.method,
                "path": request.url.path,
                "model": call.model,
                "version": call.version,
                "signature": call.signature,
                "rows": call.rows,
                "status": response.status_code,
                "latency_ms": round(elapsed * 1000, 3),
            }
            if settings.log_payloads and call.payload is not None:
                record["payload"] = call.payload
            audit.info(json.dumps(record, default=str))
            return response

        return run

    # ------------------------------------------------------------------------------ helpers

    async def body_json(request: Request, call: _Call) -> dict[str, Any]:
        limit = settings.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and length.isdigit() and int(length) > limit:
            raise PayloadTooLarge(
                f"the request body has {int(length)} bytes; this server takes at most {limit} "
                "(serving.max_body_bytes). Send fewer rows per request"
            )
        chunks, size = [], 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise PayloadTooLarge(
                    f"the request body is over {limit} bytes (serving.max_body_bytes); "
                    "send fewer rows per request"
                )
            chunks.append(chunk)
        raw = b"".join(chunks)
        if not raw.strip():
            raise BadRequest("the request body is empty; send a JSON object")
        try:
            body = json.loads(raw)
        except UnicodeDecodeError:
            raise BadRequest("the request body is not UTF-8 text; send JSON") from None
        except json.JSONDecodeError as e:
            raise BadRequest(f"the request body is not valid JSON: {e}") from None
        if not isinstance(body, dict):
            raise BadRequest(f"the request body must be a JSON object, got a {type(body).__name__}")
        if settings.log_payloads:
            call.payload = body
        return body

    @contextlib.asynccontextmanager
    async def held(
        call: _Call, model: str, version: str | None, label: str | None
    ) -> AsyncIterator[LoadedVersion]:
        call.model = model
        lv = manager.acquire(model, version, label)
        call.version = lv.version
        try:
            yield lv
        finally:
            manager.release(lv)

    async def run_model(
        call: _Call, lv: LoadedVersion, sig: codec.Signature, inputs: dict[str, np.ndarray]
    ) -> dict[str, np.ndarray]:
        call.rows = codec.check_batch(sig, inputs) if sig.batchable else 0
        deadline = time.monotonic() + settings.request_timeout_ms / 1000
        outputs = await manager.predict(lv, sig.name, inputs, deadline)
        if request_log is not None:
            request_log.sample(lv.model, lv.version, sig.name, inputs)
        return outputs

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
            raise BadRequest(
                "regress is not supported: Evergreen's models export predict-style signatures; "
                "use :predict"
            )
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
            defs = {
                name: {
                    "inputs": {n: t.to_tf_serving() for n, t in sig.inputs.items()},
                    "outputs": {n: t.to_tf_serving() for n, t in sig.outputs.items()},
                    "method_name": "tensorflow/serving/predict",
                }
                for name, sig in sorted(lv.signatures.items())
            }
            return JSONResponse(
                {
                    "model_spec": {"name": model, "signature_name": "", "version": str(lv.version)},
                    "metadata": {"signature_def": {"signature_def": defs}},
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
                inputs = codec.decode_instances(sig, body["instances"])
                outputs = await run_model(call, lv, sig, inputs)
                return JSONResponse({"predictions": codec.encode_rows(outputs)})
            inputs = codec.decode_columns(sig, body["inputs"])
            outputs = await run_model(call, lv, sig, inputs)
            return JSONResponse({"outputs": codec.encode_columns(outputs)})

    async def v1_classify(
        call: _Call, body: dict[str, Any], model: str, version: str | None, label: str | None
    ) -> Response:
        _known_keys(body, ("signature_name", "examples", "context"))
        async with held(call, model, version, label) as lv:
            sig = lv.signature(_signature_name(body.get("signature_name")))
            call.signature = sig.name
            outputs_spec = set(sig.outputs)
            if not (
                {"classes", "scores"} <= outputs_spec
                or {"label", "score"} <= outputs_spec
                or "scores" in outputs_spec
            ):
                raise BadRequest(
                    f"signature {sig.name!r} has no classification outputs (classes/scores); "
                    f"its outputs are {', '.join(sig.outputs)}. Use :predict"
                )
            inputs = codec.decode_examples(sig, body.get("examples"), body.get("context"))
            outputs = await run_model(call, lv, sig, inputs)
            return JSONResponse({"result": _classification(outputs)})

    # --------------------------------------------------------------- Open Inference Protocol

    async def v2_server(request: Request, call: _Call) -> Response:
        return JSONResponse({"name": "evergreen", "version": _package_version(), "extensions": []})

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
        body = await body_json(request, call)
        _known_keys(body, ("id", "parameters", "inputs", "outputs"))
        model, version = request.path_params["model"], request.path_params.get("version")
        parameters = body.get("parameters") or {}
        if not isinstance(parameters, dict):
            raise BadRequest(f"'parameters' must be an object, got {type(parameters).__name__}")
        async with held(call, model, version, None) as lv:
            sig = lv.signature(_signature_name(parameters.get("signature_name")))
            call.signature = sig.name
            requested = _requested_outputs(sig, body.get("outputs"))
            inputs = codec.decode_v2(sig, body.get("inputs"))
            outputs = await run_model(call, lv, sig, inputs)
            answer: dict[str, Any] = {
                "model_name": model,
                "model_version": str(lv.version),
                "outputs": codec.encode_v2(outputs, requested),
            }
            if "id" in body:
                answer["id"] = body["id"]
            return JSONResponse(answer)

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
            for handler in audit.handlers:
                handler.flush()

    routes = [
        Route("/v1/models/{rest:path}", endpoint("v1", v1), methods=["GET", "POST"]),
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
        Route("/v2/models/{model}/infer", endpoint("v2", v2_infer), methods=["POST"]),
        Route(
            "/v2/models/{model}/versions/{version}/infer",
            endpoint("v2", v2_infer),
            methods=["POST"],
        ),
        Route("/metrics", endpoint("metrics", metrics_route), methods=["GET"]),
    ]
    app = Starlette(
        routes=routes,
        lifespan=lifespan,
        exception_handlers={404: not_found, 405: not_found},
    )
    app.state.manager = manager
    app.state.metrics = metrics
    return app


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


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


def _requested_outputs(sig: codec.Signature, outputs: Any) -> list[str] | None:
    if outputs is None:
        return None
    if not isinstance(outputs, list) or not all(
        isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs
    ):
        raise BadRequest("'outputs' must be a list of objects with a 'name'")
    names = [o["name"] for o in outputs]
    unknown = [n for n in names if n not in sig.outputs]
    if unknown:
        raise BadRequest(
            f"output(s) {', '.join(map(repr, unknown))} not in signature {sig.name!r}; "
            f"outputs: {', '.join(sig.outputs)}"
        )
    return names


def _classification(outputs: dict[str, np.ndarray]) -> list[list[list[Any]]]:
    """TF Serving's classify result: per example, a list of [label, score] pairs."""
    if "scores" in outputs:
        scores = np.asarray(outputs["scores"], dtype=float)
        if scores.ndim == 1:
            scores = scores[:, None]
        classes = outputs.get("classes")
        if classes is None:
            classes = np.full(scores.shape, b"", dtype=object)
        classes = np.asarray(classes).reshape(scores.shape)
        return [
            [[codec.to_json_value(c), float(s)] for c, s in zip(crow, srow, strict=True)]
            for crow, srow in zip(classes, scores, strict=True)
        ]
    return [
        [[codec.to_json_value(label), float(score)]]
        for label, score in zip(outputs["label"], outputs["score"], strict=True)
    ]


def _package_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("evergreen")
    except PackageNotFoundError:
        return getattr(evergreen, "__version__", "dev")


def _audit_logger(path: str) -> logging.Logger:
    """A private logger writing one JSON line per request to ``path`` (or standard error)."""
    logger = logging.getLogger(f"evergreen.serving.audit.{id(object())}")
    logger.setLevel(logging.INFO)
    logger.propagate = False
    if path:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(path, encoding="utf-8")
    else:
        handler = logging.StreamHandler()
    handler.setFormatter(logging.Formatter("%(message)s"))
    logger.addHandler(handler)
    return logger
