"""uvicorn's httptools protocol with the limits it lacks: header size and read time.

uvicorn bounds neither with httptools: the C parser buffers a header of any size before it
calls back (50 MB of headers were accepted), and a connection that never finishes its request
holds its slot forever (no timer runs until a first response). This protocol adds:

- **header size**: at most ``max_header_bytes`` of request line and headers are fed to the
  parser; a request whose headers go on is answered 431 and the connection closed;
- **read time**: a request's headers and body must arrive within ``read_timeout`` seconds of
  the connection opening or of the request's first byte; else 408 (when no response has
  started) and the connection is closed. The app then sees a disconnect.

Idle keep-alive connections are closed by uvicorn's own ``timeout_keep_alive``, and
``limit_concurrency`` answers 503 beyond a number of connections; :func:`bounded_protocol`
only makes the class that carries the two limits above.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol


class BoundedHttpToolsProtocol(HttpToolsProtocol):
    """HttpToolsProtocol with a header byte limit and a read deadline (see the module)."""

    max_header_bytes = 16 * 1024
    read_timeout = 30.0

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._header_bytes = 0  # bytes fed while the current request's headers are incomplete
        self._in_headers = True
        self._read_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------------------ read deadline

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm_read_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_read_timer()
        super().connection_lost(exc)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        if self._read_timer is None:  # a keep-alive connection starting its next request
            self._arm_read_timer()

    def on_headers_complete(self) -> None:
        self._in_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        self._cancel_read_timer()
        # The next request's headers start here (bytes after this one in the same piece go
        # uncounted: at most one piece, itself bounded by the allowance or the read size).
        self._in_headers = True
        self._header_bytes = 0
        super().on_message_complete()

    def _arm_read_timer(self) -> None:
        self._cancel_read_timer()
        self._read_timer = self.loop.call_later(self.read_timeout, self._read_timed_out)

    def _cancel_read_timer(self) -> None:
        if self._read_timer is not None:
            self._read_timer.cancel()
            self._read_timer = None

    def _read_timed_out(self) -> None:
        self._read_timer = None
        if self.transport.is_closing():
            return
        if self._header_bytes == 0 and self.cycle is None:  # a connection that sent nothing
            self.transport.close()
            return
        started = self.cycle is not None and self.cycle.response_started
        if self.cycle is None or not started:
            self._reject(
                408,
                f"the request did not arrive within {self.read_timeout:g} s "
                "(serving.read_timeout_seconds); send headers and body without pausing",
            )
        else:
            self.transport.close()

    # -------------------------------------------------------------------------- header size

    def data_received(self, data: bytes) -> None:
        # Feed the parser at most the header allowance while headers are incomplete: once it
        # holds that much without on_headers_complete, the headers are too large.
        while data:
            if not self._in_headers:
                super().data_received(data)
                return
            room = self.max_header_bytes - self._header_bytes
            if room <= 0:
                self._reject(
                    431,
                    f"the request line and headers are over {self.max_header_bytes} bytes "
                    "(serving.max_header_bytes); send shorter headers",
                )
                return
            piece, data = (data, b"") if len(data) <= room else (data[:room], data[room:])
            self._header_bytes += len(piece)
            super().data_received(piece)
            if self.transport.is_closing():
                return

    def _reject(self, status: int, message: str) -> None:
        """Answer ``status`` with a JSON error and close, whatever the parser's state."""
        import json

        body = json.dumps({"error": message}).encode("utf-8")
        reason = {408: b"Request Timeout", 431: b"Request Header Fields Too Large"}[status]
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n" % (status, reason, len(body))
        )
        self.logger.info("closing a connection: %s", message)
        self.transport.write(head + body)
        self.transport.close()


def bounded_protocol(max_header_bytes: int, read_timeout: float) -> type[BoundedHttpToolsProtocol]:
    """A protocol class carrying these limits (uvicorn makes one instance per connection)."""
    return type(
        "BoundedHttpToolsProtocol",
        (BoundedHttpToolsProtocol,),
        {"max_header_bytes": max_header_bytes, "read_timeout": read_timeout},
    )
