"""Running the app: uvicorn with TLS options and the loopback rule, in the foreground or a thread.

The loopback rule: without API keys the server binds only to a loopback address (127.0.0.0/8,
::1, ``localhost``); asked to bind anything else, it refuses to start.
"""

from __future__ import annotations

import ipaddress
import logging
import signal
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evergreen.config import ServingConfig
from evergreen.errors import ConfigError
from evergreen.registry import Registry
from evergreen.serving.app import create_app
from evergreen.serving.auth import ApiKeys
from evergreen.serving.requestlog import RequestLog

SWITCH_INTERVAL = 0.0005  # seconds; see serve()


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_settings(settings: ServingConfig, api_keys: ApiKeys | None) -> None:
    """Refuse settings that would expose models without authentication, or half-set TLS.

    Raises:
        ConfigError: a non-loopback host without API keys; a missing certificate file.
    """
    if not is_loopback(settings.host) and not api_keys:
        raise ConfigError(
            f"serving.host = {settings.host!r} is not a loopback address, so API keys are "
            f"required: put them in the environment variable {settings.api_key_env or 'named by serving.api_key_env'} "
            "(comma-separated, NAME:KEY or KEY) or pass --api-key-file FILE; or bind "
            "--host 127.0.0.1"
        )
    for key in ("tls_cert", "tls_key"):
        value = getattr(settings, key)
        if value and not Path(value).is_file():
            raise ConfigError(f"serving.{key} = {value!r}: no such file; give a PEM file")


def build(
    registry_dir: Path,
    settings: ServingConfig,
    *,
    api_keys: ApiKeys | None = None,
    request_log_dir: Path | None = None,
) -> Any:
    """The checked ASGI app for ``registry_dir`` (see :func:`evergreen.serving.app.create_app`).

    Raises:
        ConfigError: see :func:`check_settings`; sampling asked for without a log folder.
    """
    check_settings(settings, api_keys)
    request_log = None
    if settings.request_log_sample_rate > 0:
        if request_log_dir is None:
            raise ConfigError(
                f"serving.request_log_sample_rate = {settings.request_log_sample_rate} but "
                "there is no folder to write to: pass --request-log DIR (or serve with a config, "
                "which logs to <pipeline root>/serving/requests)"
            )
        request_log = RequestLog(Path(request_log_dir), settings.request_log_sample_rate)
    return create_app(
        Registry(Path(registry_dir)), settings, api_keys=api_keys, request_log=request_log
    )


def http_stack() -> dict[str, str]:
    """uvicorn's fastest parts that are installed: httptools' C HTTP parser instead of the
    pure-Python h11, and uvloop instead of asyncio's default event loop. Both are project
    dependencies; without them the server still runs, slower (about 1.3-1.5x fewer requests
    per second on 2 cores, bench/bench_serving.py)."""
    stack = {"http": "h11", "loop": "asyncio"}
    try:
        import httptools  # noqa: F401

        stack["http"] = "httptools"
    except ImportError:
        pass
    try:
        import uvloop  # noqa: F401

        stack["loop"] = "uvloop"
    except ImportError:
        pass
    return stack


def uvicorn_server(app: Any, settings: ServingConfig) -> Any:
    """uvicorn configured from ``settings``, with every connection limit set.

    Header size and read time are bounded by :mod:`evergreen.serving.protocol` on httptools
    (uvicorn bounds neither there); on h11, header size by ``h11_max_incomplete_event_size``.
    """
    import uvicorn

    stack: dict[str, Any] = dict(http_stack())
    if stack["http"] == "httptools":
        from evergreen.serving.protocol import bounded_protocol

        stack["http"] = bounded_protocol(settings.max_header_bytes, settings.read_timeout_seconds)
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        **stack,
        h11_max_incomplete_event_size=settings.max_header_bytes,
        timeout_keep_alive=settings.keep_alive_seconds,  # type: ignore[arg-type]  # a float works
        limit_concurrency=settings.max_connections,
        server_header=False,  # one header less per response, and no software version to probe
        ssl_certfile=settings.tls_cert or None,
        ssl_keyfile=settings.tls_key or None,
        log_level="warning",
        access_log=False,  # the audit log has one line per request already
        timeout_graceful_shutdown=10,
        lifespan="on",
    )
    return uvicorn.Server(config)


def serve(app: Any, settings: ServingConfig) -> None:
    """Serve in the foreground until interrupted (Ctrl-C, SIGTERM: graceful)."""
    # uvicorn drains in-flight requests on SIGTERM, then raises the signal again so that the
    # process dies of it; an orchestrator stopping a server that shut down cleanly should see
    # exit status 0 instead.
    main = threading.current_thread() is threading.main_thread()
    previous = signal.getsignal(signal.SIGTERM) if main else None
    if main:
        signal.signal(signal.SIGTERM, _exit_cleanly)
    # While a model call runs in a thread, every socket call of the event loop gives up the
    # GIL and must win it back; with Python's default 5 ms switch interval the loop waits in
    # a convoy behind the model thread. 0.5 ms measured best (bench/bench_serving.py: about
    # 1.5x the throughput of 5 ms at 32 clients on 2 cores). The server owns its process.
    sys.setswitchinterval(SWITCH_INTERVAL)
    events = logging.getLogger("evergreen.serving")  # loads, swaps, unloads, failures
    if not events.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
        events.addHandler(handler)
        events.setLevel(logging.INFO)
    try:
        uvicorn_server(app, settings).run()
    finally:
        if main:
            signal.signal(signal.SIGTERM, previous)


def _exit_cleanly(signum: int, frame: Any) -> None:
    raise SystemExit(0)


@dataclass
class ServerThread:
    """A server running in a background thread; for tests, benchmarks and notebooks.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. ``settings.port = 0``
    picks a free port; :attr:`url` then names the real one.
    """

    app: Any
    settings: ServingConfig
    server: Any = None
    thread: threading.Thread | None = None

    def start(self, timeout: float = 120.0) -> ServerThread:
        self.server = uvicorn_server(self.app, self.settings)
        self.server.install_signal_handlers = lambda: None  # not the main thread
        self.thread = threading.Thread(target=self.server.run, name="evergreen-serve", daemon=True)
        self.thread.start()
        deadline = time.monotonic() + timeout
        while not self.server.started:
            if not self.thread.is_alive():
                raise RuntimeError("the server thread stopped during startup; see its log")
            if time.monotonic() > deadline:
                raise TimeoutError(f"the server did not start within {timeout:.0f}s")
            time.sleep(0.02)
        return self

    @property
    def port(self) -> int:
        return self.server.servers[0].sockets[0].getsockname()[1]

    @property
    def grpc_port(self) -> int | None:
        """The bound gRPC port (``settings.grpc_port = 0`` picks a free one); None when off."""
        return self.app.state.serving.grpc_port

    @property
    def grpc_target(self) -> str:
        """``host:port`` of the gRPC server, for ``grpc.insecure_channel`` and the like.

        Raises:
            RuntimeError: gRPC is off (``settings.grpc_port = -1``).
        """
        if self.grpc_port is None:
            raise RuntimeError("this server has no gRPC port; set serving.grpc_port (0: any)")
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        return f"{host}:{self.grpc_port}"

    @property
    def url(self) -> str:
        scheme = "https" if self.settings.tls_cert else "http"
        host = self.settings.host if ":" not in self.settings.host else f"[{self.settings.host}]"
        return f"{scheme}://{host}:{self.port}"

    def stop(self) -> None:
        if self.server is not None:
            self.server.should_exit = True
        if self.thread is not None:
            self.thread.join(timeout=30)

    def __enter__(self) -> ServerThread:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
