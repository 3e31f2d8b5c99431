"""The gRPC server beside the REST one: same event loop, models, batching, keys, TLS, metrics.

It serves three services on ``serving.grpc_port`` (TF Serving's 8500 by default):

- ``tensorflow.serving.PredictionService`` and ``tensorflow.serving.ModelService``
  (:mod:`evergreen.serving.grpc_tfserving`), with the protos of ``tensorflow-serving-api``;
- ``inference.GRPCInferenceService``, the Open Inference Protocol (KServe V2,
  :mod:`evergreen.serving.grpc_v2`), with the stubs shipped in ``tritonclient.grpc``.

The server is a ``grpc.aio`` server started by the REST app's lifespan, on uvicorn's event
loop, once the models are loaded: gRPC requests go through the same :class:`ModelManager` as
REST ones (dynamic batches mix both), so hot swap, version labels and the canary share apply
alike. API keys come as gRPC metadata (``authorization: Bearer KEY`` or ``x-api-key: KEY``);
TLS uses the same PEM files as HTTPS. Errors are gRPC status codes (:data:`STATUS`), their
details the message REST would give.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import grpc
import numpy as np

from evergreen.config import ServingConfig
from evergreen.errors import ConfigError
from evergreen.serving import codec
from evergreen.serving.auth import ApiKeys
from evergreen.serving.errors import (
    BadRequest,
    DeadlineExceeded,
    NotFound,
    PayloadTooLarge,
    ServingError,
    Unauthorized,
    Unavailable,
)
from evergreen.serving.metrics import ServingMetrics
from evergreen.serving.models import LoadedVersion, ModelManager
from evergreen.serving.requestlog import RequestLog

log = logging.getLogger("evergreen.serving")

GRPC_OFF = -1  # serving.grpc_port value that turns the gRPC server off
UNKNOWN_MODEL = "_unknown"  # as in evergreen.serving.app: names not served never become labels
SHUTDOWN_GRACE_SECONDS = 10.0  # in-flight RPCs get this long to finish at shutdown

# Each HTTP error of evergreen.serving.errors and its gRPC status (TF Serving's own mapping).
STATUS: dict[type[ServingError], grpc.StatusCode] = {
    BadRequest: grpc.StatusCode.INVALID_ARGUMENT,
    Unauthorized: grpc.StatusCode.UNAUTHENTICATED,
    NotFound: grpc.StatusCode.NOT_FOUND,
    PayloadTooLarge: grpc.StatusCode.RESOURCE_EXHAUSTED,
    Unavailable: grpc.StatusCode.UNAVAILABLE,
    DeadlineExceeded: grpc.StatusCode.DEADLINE_EXCEEDED,
}

T = TypeVar("T")
_AUDIT_JSON = json.JSONEncoder(default=str)


@dataclass
class GrpcCall:
    """What the audit log and the metrics learn about one RPC as it is handled."""

    api: str  # "grpc_v1" (TF Serving) or "grpc_v2" (Open Inference Protocol)
    method: str  # e.g. "/tensorflow.serving.PredictionService/Predict"
    who: str = "anonymous"
    model: str | None = None
    version: int | None = None
    signature: str | None = None
    rows: int = 0


@dataclass
class Shared:
    """What the gRPC services share with the REST app (see ``app.state`` in create_app)."""

    manager: ModelManager
    metrics: ServingMetrics
    settings: ServingConfig
    audit: Any  # evergreen.serving.app.AuditLog
    api_keys: ApiKeys | None
    request_log: RequestLog | None
    # Metric children by label values: labels() costs a lock and a tuple check per call.
    _children: dict[tuple[str, ...], Any] = field(default_factory=dict)

    @classmethod
    def of(cls, app: Any) -> Shared:
        state = app.state
        return cls(
            state.manager,
            state.metrics,
            state.settings,
            state.audit,
            state.api_keys,
            state.request_log,
        )

    # -------------------------------------------------------------------------- handling

    async def handle(
        self,
        call: GrpcCall,
        context: grpc.aio.ServicerContext,
        body: Callable[[GrpcCall], Awaitable[T]],
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
            if self.api_keys and not public:
                call.who = self.api_keys.check(_metadata(context))
            return await body(call)
        except ServingError as e:
            code, message = _status_of(e), e.message
        except asyncio.CancelledError:  # the client cancelled or hung up: not a server error
            code = grpc.StatusCode.CANCELLED
            raise
        except Exception as e:  # a bug or a model failure: INTERNAL, logged with its traceback
            log.exception("gRPC %s failed", call.method)
            code, message = grpc.StatusCode.INTERNAL, f"internal error: {type(e).__name__}: {e}"
        finally:
            self._record(call, context, code, time.perf_counter() - started)
            if call.version is not None and code != grpc.StatusCode.CANCELLED:  # X-Model-Version
                context.set_trailing_metadata((("x-model-version", str(call.version)),))
        await context.abort(code, message)
        raise AssertionError("context.abort returned")  # it always raises

    def _record(self, call: GrpcCall, context: Any, code: grpc.StatusCode, elapsed: float) -> None:
        status = code.name
        if call.model is not None:
            model = call.model if call.model in self.manager.discovered else UNKNOWN_MODEL
            key = (model, str(call.version or ""), call.api, status)
            children = self._children.get(key)
            if children is None:
                children = self._children[key] = (
                    self.metrics.requests.labels(*key),
                    self.metrics.latency.labels(model, call.api),
                )
            children[0].inc()
            children[1].observe(elapsed)
        record = {
            "ts": self.audit.timestamp(),
            "who": call.who,
            "client": context.peer(),
            "method": "grpc",
            "path": call.method,
            "model": call.model,
            "version": call.version,
            "signature": call.signature,
            "rows": call.rows,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
        }
        self.audit.write(_AUDIT_JSON.encode(record), coalesce=True)

    def acquire(
        self, call: GrpcCall, model: str, version: int | None, label: str | None
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
        call: GrpcCall,
        context: grpc.aio.ServicerContext,
        lv: LoadedVersion,
        sig: codec.Signature,
        inputs: dict[str, np.ndarray],
    ) -> dict[str, np.ndarray]:
        """Run a signature through the model's batcher, within the RPC's deadline if shorter."""
        call.signature = sig.name
        call.rows = codec.check_batch(sig, inputs) if sig.batchable else 0
        timeout = self.settings.request_timeout_ms / 1000
        remaining = context.time_remaining()
        if remaining is not None:
            timeout = min(timeout, remaining)
        outputs = await self.manager.predict(lv, sig.name, inputs, time.monotonic() + timeout)
        if self.request_log is not None:
            self.request_log.sample(lv.model, lv.version, sig.name, inputs)
        return outputs


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


def _status_of(error: ServingError) -> grpc.StatusCode:
    for kind in type(error).__mro__:
        if kind in STATUS:
            return STATUS[kind]
    return grpc.StatusCode.INTERNAL


# ------------------------------------------------------------------------------- lifecycle


@dataclass
class GrpcServer:
    """A started gRPC server and the port it listens on."""

    server: grpc.aio.Server
    port: int

    async def stop(self) -> None:
        await self.server.stop(SHUTDOWN_GRACE_SECONDS)


async def start_grpc(app: Any) -> GrpcServer | None:
    """Start the gRPC services for the REST ``app`` on its settings' ``grpc_port``.

    Returns:
        The running server, or None when ``serving.grpc_port`` is -1 (off).

    Raises:
        ConfigError: the port cannot be bound (in use, or no permission).
    """
    from evergreen.serving import grpc_tfserving, grpc_v2

    shared = Shared.of(app)
    settings = shared.settings
    if settings.grpc_port == GRPC_OFF:
        return None
    server = grpc.aio.server(
        options=[
            # A message over the REST body limit fails with RESOURCE_EXHAUSTED before decoding.
            ("grpc.max_receive_message_length", settings.max_body_bytes),
            ("grpc.max_send_message_length", -1),
            # gRPC sets SO_REUSEPORT by default: a second server on the same port would start
            # and silently take half the connections. A taken port must stop startup instead.
            ("grpc.so_reuseport", 0),
        ],
        maximum_concurrent_rpcs=settings.max_connections,
    )
    grpc_tfserving.add_services(server, shared)
    grpc_v2.add_services(server, shared)
    host = f"[{settings.host}]" if ":" in settings.host else settings.host
    address = f"{host}:{settings.grpc_port}"
    try:
        if settings.tls_cert:
            port = server.add_secure_port(address, _credentials(settings))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as e:  # grpcio raises when the port cannot be bound
        raise ConfigError(
            f"cannot listen for gRPC on {address} ({e}); choose another serving.grpc_port "
            "(--grpc-port), or -1 to turn gRPC off"
        ) from e
    if port == 0:
        raise ConfigError(
            f"cannot listen for gRPC on {address}; choose another serving.grpc_port "
            "(--grpc-port), or -1 to turn gRPC off"
        )
    await server.start()
    scheme = "TLS" if settings.tls_cert else "plaintext"
    log.info("gRPC (%s) listening on %s:%d", scheme, host, port)
    return GrpcServer(server, port)


def _credentials(settings: ServingConfig) -> grpc.ServerCredentials:
    key = Path(settings.tls_key).read_bytes()
    cert = Path(settings.tls_cert).read_bytes()
    return grpc.ssl_server_credentials([(key, cert)])
