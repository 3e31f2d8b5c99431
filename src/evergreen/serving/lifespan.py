"""The server's lifespan: load the models and watch the registry, start the gRPC server, and
at shutdown stop it, drain and unload the models, and close the logs."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

from evergreen.serving.state import ServingState

Lifespan = Callable[[Any], contextlib.AbstractAsyncContextManager[None]]


def lifespan(state: ServingState) -> Lifespan:
    """Starlette's ``lifespan`` for a server of ``state``."""

    @contextlib.asynccontextmanager
    async def run(app: Any) -> AsyncIterator[None]:
        # Imported here: the gRPC services import TensorFlow's protos (seconds), which an app
        # that is only built (or a CLI that only imports this package) should not wait for.
        from evergreen.serving.grpc_server import start_grpc

        await state.manager.start()  # loads every model, then watches the registry
        grpc_server = None
        try:
            # gRPC on the same loop and models (serving.grpc_port; -1: off).
            grpc_server = await start_grpc(state)
            state.grpc_port = grpc_server.port if grpc_server else None
            yield
        finally:
            if grpc_server is not None:
                await grpc_server.stop()
            await state.manager.close()  # stops the watcher, unloads every version
            if state.request_log is not None:
                await asyncio.get_running_loop().run_in_executor(None, state.request_log.close)
            state.audit.close()

    return run
