"""What the gRPC services share: one RPC's handling (API key, errors as status codes, metrics,
audit), the version it goes to, and its model run within the RPC's deadline.

Errors are gRPC status codes, each error class's ``grpc_code`` (TF Serving's mapping, drawn in
:mod:`evergreen.errors`); their details are the message REST would give.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from evergreen.errors import BadRequest, EvergreenError
from evergreen.serving import codec
from evergreen.serving.audit import Call
from evergreen.serving.models import LoadedVersion
from evergreen.serving.state import ServingState

log = logging.getLogger("evergreen.serving")

T = TypeVar("T")


class Shared:
    """The server's state as the gRPC services use it (the REST routes share the same one)."""

    def __init__(self, state: ServingState) -> None:
        self.state = state
        self.manager = state.manager
        self.settings = state.settings

    async def handle(
        self,
        call: Call,
        context: grpc.aio.ServicerContext,
        body: Callable[[Call], Awaitable[T]],
        *,
        public: bool = False,
    ) -> T:
        """Run ``body`` for one RPC: check the API key, map errors to statuses, count, audit.

        Raises:
            grpc.aio.AbortError: (through ``context.abort``) the RPC failed; its status and
                message are what the client gets.
        """
        started = time.perf_counter()
        code, message = grpc.StatusCode.OK, ""
        try:
            if self.state.api_keys is not None and not public:
                call.who = self.state.api_keys.check(_metadata(context))
            return await body(call)
        except asyncio.CancelledError:  # the client cancelled or hung up: not a server error
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as e:
            code, message = _status_of(e, call)
        finally:
            self._record(call, context, code, time.perf_counter() - started)
            if call.version is not None and code != grpc.StatusCode.CANCELLED:  # X-Model-Version
                context.set_trailing_metadata((("x-model-version", str(call.version)),))
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # it always raises

    def _record(self, call: Call, context: Any, code: grpc.StatusCode, elapsed: float) -> None:
        state = self.state
        state.count(call, code.name, elapsed)
        state.audit.record(
            call,
            client=context.peer(),
            method="grpc",
            path=call.method,
            status=code.name,
            elapsed=elapsed,
            payloads=state.settings.log_payloads,
            coalesce=True,
        )

    def acquire(
        self, call: Call, model: str, version: int | None, label: str | None
    ) -> LoadedVersion:
        """The version the RPC goes to (the REST rules); release it with ``manager.release``.

        Raises:
            BadRequest: no model name.
            NotFound, Unavailable: see :meth:`ModelManager.acquire`.
        """
        if not model:
            raise BadRequest("model_spec.name is empty; name the model, e.g. 'reviews'")
        call.model = model
        lv = self.manager.acquire(model, None if version is None else str(version), label or None)
        call.version = lv.version
        return lv

    async def run_model(
        self,
        call: Call,
        context: grpc.aio.ServicerContext,
        lv: LoadedVersion,
        sig: codec.Signature,
        inputs: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Run a signature through the model's batcher, within the RPC's deadline if shorter."""
        call.signature = sig.name
        return await self.state.run_model(call, lv, sig, inputs, timeout=context.time_remaining())


def check_shape(info: codec.TensorInfo, shape: tuple[int, ...]) -> None:
    """Raise BadRequest unless ``shape`` fits the signature's (rank and fixed dimensions)."""
    if info.shape is None:
        return
    fits = len(shape) == len(info.shape) and all(
        want is None or want == got for want, got in zip(info.shape, shape, strict=True)
    )
    if not fits:
        wanted = [-1 if d is None else d for d in info.shape]
        raise BadRequest(
            f"input {info.name!r} has shape {list(shape)}; the signature takes {wanted} "
            "(-1: any size; the first dimension is the batch)"
        )


def _metadata(context: grpc.aio.ServicerContext) -> dict[str, str]:
    return {
        key: value for key, value in (context.invocation_metadata() or ()) if isinstance(value, str)
    }


def _status_of(error: Exception, call: Call) -> tuple[grpc.StatusCode, str]:
    """The status and details an RPC that raised ``error`` fails with (call it in ``except``).

    An error with a ``grpc_code`` is the client's; anything else is a bug or a model failure:
    INTERNAL, logged with its traceback.
    """
    if isinstance(error, EvergreenError) and error.grpc_code is not None:
        return getattr(grpc.StatusCode, error.grpc_code), str(error)
    log.exception("gRPC %s failed", call.method)
    return grpc.StatusCode.INTERNAL, f"internal error: {type(error).__name__}: {error}"
