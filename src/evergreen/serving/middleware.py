"""What every REST request goes through around its route: the API key, errors as answers, the
``X-Model-Version`` header, metrics and the audit line.

It wraps each route's handler (:func:`endpoint`) rather than running as Starlette middleware:
the prediction routes skip Starlette's middleware stack (see :class:`evergreen.serving.app`),
and a wrapper costs less per request.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

from starlette.requests import ClientDisconnect, Request
from starlette.responses import Response

from evergreen.serving.audit import Call
from evergreen.serving.rest_io import (
    CLIENT_CLOSED,
    VERSION_HEADER,
    error_answer,
    error_response,
)
from evergreen.serving.state import ServingState

Handler = Callable[[Request, Call], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def endpoint(state: ServingState, api: str, handler: Handler, *, public: bool = False) -> Endpoint:
    """The Starlette endpoint running ``handler`` for the ``api`` ("v1", "v2", "metrics").

    Args:
        public: no API key needed (the health probes).
    """
    keys = None if public else state.api_keys

    async def run(request: Request) -> Response:
        started = time.perf_counter()
        state.in_flight += 1
        call = Call(api=api)
        try:
            if keys is not None:
                call.who = keys.check(request.headers)
            response = await handler(request, call)
        except ClientDisconnect:  # nobody to answer; not a server error
            response = error_response(CLIENT_CLOSED, "the client closed the connection")
        except Exception as e:
            response = error_answer(e)
        finally:
            state.in_flight -= 1
        status = response.status_code
        if call.version is not None:
            response.headers[VERSION_HEADER] = str(call.version)
        if status == 401:
            response.headers["WWW-Authenticate"] = 'Bearer realm="evergreen"'
        elapsed = time.perf_counter() - started
        state.count(call, status, elapsed)
        scope = request.scope
        client = scope.get("client")
        state.audit.record(
            call,
            client=client[0] if client else None,
            method=scope["method"],
            path=scope["path"],
            status=status,
            elapsed=elapsed,
            payloads=state.settings.log_payloads,
            coalesce=state.in_flight > 0,
        )
        return response

    return run
