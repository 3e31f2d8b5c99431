"""The REST routes beside the model APIs: health probes, Prometheus metrics, and the answer for
paths no route takes.

::

    GET /v2/health/live     GET /v2/health/ready      (public: no API key needed)
    GET /metrics            GET /monitoring/prometheus/metrics   (TF Serving's path)
"""

from __future__ import annotations

from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response

from evergreen.serving.audit import Call
from evergreen.serving.metrics import CONTENT_TYPE_LATEST
from evergreen.serving.rest_io import JSONResponse, error_response
from evergreen.serving.state import ServingState


class AdminRoutes:
    """Health and metrics handlers; each takes the request and its :class:`Call`."""

    def __init__(self, state: ServingState) -> None:
        self.state = state

    async def live(self, request: Request, call: Call) -> Response:
        return JSONResponse({"live": True})

    async def ready(self, request: Request, call: Call) -> Response:
        ready = self.state.manager.ready
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    async def metrics(self, request: Request, call: Call) -> Response:
        return Response(self.state.metrics.render(), media_type=CONTENT_TYPE_LATEST)


async def no_route(request: Request, exc: Exception) -> Response:
    """Starlette's 404 and 405, in the server's ``{"error": ...}`` form."""
    status = exc.status_code if isinstance(exc, HTTPException) else 404
    if status == 405:
        return error_response(405, f"{request.url.path} does not take {request.method}")
    return error_response(
        status,
        f"no route {request.url.path}; the APIs are /v1/models/NAME..., /v2/models/NAME..., "
        "/v2/health/live, /v2/health/ready and /metrics",
    )
