"""The ASGI app: TF Serving's REST API, the Open Inference Protocol (KServe V2), metrics.

:func:`create_app` assembles it from its parts:

- :mod:`~evergreen.serving.state`: what every part shares (models, settings, metrics, logs);
- :mod:`~evergreen.serving.middleware`: the API key, errors as answers, metrics and the audit
  line around every route;
- :mod:`~evergreen.serving.rest_tfserving` (``/v1``), :mod:`~evergreen.serving.rest_v2`
  (``/v2``) and :mod:`~evergreen.serving.rest_admin` (health probes, ``/metrics``): the routes;
- :mod:`~evergreen.serving.lifespan`: loading, the registry watcher, gRPC, shutdown.

Every model response carries the version that answered in the ``X-Model-Version`` header (and
in ``model_version`` for V2). Errors are ``{"error": "..."}`` with TF Serving's status codes
(:mod:`evergreen.errors`). With API keys configured, every route but the two health probes
requires one.

Malformed requests are 4xx, never 500: bodies go through :func:`codec.parse_body` (depth,
huge numbers, lone surrogates), rows are counted against ``serving.max_rows_per_request``
before any is converted (413), versions in paths must be ASCII numbers. Metrics carry only the
names of models the server knows: any other name is counted as ``model="_unknown"``, so
made-up names cannot grow ``/metrics``. A client that hangs up before its answer is counted
and audited as status 499 (nginx's "client closed request"), not as an error.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from evergreen.config import ServingConfig
from evergreen.registry import Registry
from evergreen.serving.audit import AuditLog
from evergreen.serving.auth import ApiKeys
from evergreen.serving.lifespan import lifespan
from evergreen.serving.metrics import ServingMetrics
from evergreen.serving.middleware import endpoint
from evergreen.serving.models import ModelManager
from evergreen.serving.requestlog import RequestLog
from evergreen.serving.rest_admin import AdminRoutes, no_route
from evergreen.serving.rest_io import VERSION_HEADER
from evergreen.serving.rest_tfserving import TfServingRoutes
from evergreen.serving.rest_v2 import V2Routes
from evergreen.serving.state import ServingState

__all__ = ["VERSION_HEADER", "create_app"]


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
    state = ServingState(
        manager=ModelManager(registry, settings, metrics),
        metrics=metrics,
        settings=settings,
        audit=AuditLog(settings.audit_log),
        api_keys=api_keys if api_keys else None,
        request_log=request_log,
    )
    routes, predict_routes = _routes(state)
    app = _App(
        routes=routes,
        lifespan=lifespan(state),
        exception_handlers={404: no_route, 405: no_route},
    )
    app.predict_routes = predict_routes
    app.state.serving = state
    return app


def _routes(state: ServingState) -> tuple[list[Route], dict[str, Any]]:
    """Every route, and the two prediction endpoints :class:`_App` takes straight."""
    v1, v2, admin = TfServingRoutes(state), V2Routes(state), AdminRoutes(state)
    v1_endpoint = endpoint(state, "v1", v1)
    infer = endpoint(state, "v2", v2.infer)
    model, ready = endpoint(state, "v2", v2.model), endpoint(state, "v2", v2.model_ready)
    metrics = endpoint(state, "metrics", admin.metrics)
    get, post = ["GET"], ["POST"]
    routes = [
        Route("/v1/models/{rest:path}", v1_endpoint, methods=["GET", "POST"]),
        Route("/v2", endpoint(state, "v2", v2.server), methods=get),
        Route("/v2/health/live", endpoint(state, "v2", admin.live, public=True), methods=get),
        Route("/v2/health/ready", endpoint(state, "v2", admin.ready, public=True), methods=get),
        Route("/v2/models/{model}", model, methods=get),
        Route("/v2/models/{model}/versions/{version}", model, methods=get),
        Route("/v2/models/{model}/ready", ready, methods=get),
        Route("/v2/models/{model}/versions/{version}/ready", ready, methods=get),
        Route("/v2/models/{model}/infer", infer, methods=post),
        Route("/v2/models/{model}/versions/{version}/infer", infer, methods=post),
        Route("/metrics", metrics, methods=get),
        # TF Serving's path for the same exposition (its --monitoring_config_file default).
        Route("/monitoring/prometheus/metrics", metrics, methods=get),
    ]
    return routes, {"v1": v1_endpoint, "v2": infer}


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
