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
TLS uses the same PEM files as HTTPS. What the services share (handling an RPC, its errors as
status codes, metrics and audit) is in :mod:`evergreen.serving.grpc_common`; this module starts
and stops the server.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import grpc

from evergreen.config import ServingConfig
from evergreen.errors import ConfigError
from evergreen.serving import grpc_tfserving, grpc_v2
from evergreen.serving.grpc_common import Shared
from evergreen.serving.state import ServingState

log = logging.getLogger("evergreen.serving")

GRPC_OFF = -1  # serving.grpc_port value that turns the gRPC server off
SHUTDOWN_GRACE_SECONDS = 10.0  # in-flight RPCs get this long to finish at shutdown


# ------------------------------------------------------------------------------- lifecycle


@dataclass
class GrpcServer:
    """A started gRPC server and the port it listens on."""

    server: grpc.aio.Server
    port: int

    async def stop(self) -> None:
        await self.server.stop(SHUTDOWN_GRACE_SECONDS)


async def start_grpc(state: ServingState) -> GrpcServer | None:
    """Start the gRPC services of a server of ``state`` on its settings' ``grpc_port``.

    Returns:
        The running server, or None when ``serving.grpc_port`` is -1 (off).

    Raises:
        ConfigError: the port cannot be bound (in use, or no permission).
    """
    shared = Shared(state)
    settings = state.settings
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
