"""The audit log: one JSON line per request, REST or gRPC, and what a request records in it.

A line::

    {"ts": "2026-11-25T15:00:00Z", "who": "alice", "client": "127.0.0.1",
     "method": "POST", "path": "/v1/models/reviews:predict", "model": "reviews",
     "version": 3, "signature": "serving_default", "rows": 2, "status": 200,
     "latency_ms": 4.2}

gRPC lines have ``"method": "grpc"``, the RPC's full name as ``path``, the peer as ``client``
and a status name (``"OK"``, ``"NOT_FOUND"``) as ``status``. With ``serving.log_payloads``
the request body comes last, as ``payload``.
"""

from __future__ import annotations

import asyncio
import json
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

_AUDIT_JSON = json.JSONEncoder(default=str)  # made once: json.dumps builds one per call


@dataclass
class Call:
    """What the audit log and the metrics learn about one request (or RPC) as it is handled."""

    api: str  # "v1", "v2", "metrics" (REST); "grpc_v1", "grpc_v2"
    method: str = ""  # gRPC: the RPC, e.g. "/tensorflow.serving.PredictionService/Predict"
    who: str = "anonymous"
    model: str | None = None
    version: int | None = None
    signature: str | None = None
    rows: int = 0
    payload: Any = None  # the parsed body, kept only with serving.log_payloads


class AuditLog:
    """One JSON line per request, to ``path`` (appended) or to standard error.

    A line is written before its response goes out when no other request is in flight. Under
    load, lines of requests answered in the same event-loop turn are coalesced into one write
    at the end of that turn: a write per request would give up the GIL per request, and the
    event loop would wait to win it back from the model thread.
    """

    def __init__(self, path: str) -> None:
        self._own = bool(path)
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            self._file: TextIO = open(path, "a", encoding="utf-8")  # closed by close()
        else:
            self._file = sys.stderr
        self._pending: list[str] = []
        self._scheduled = False
        self._second = -1
        self._stamp = ""

    def timestamp(self) -> str:
        """Now, to the second, as ``2026-11-25T15:00:00Z`` (formatted once a second)."""
        now = int(time.time())
        if now != self._second:
            self._second = now
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + "Z"
        return self._stamp

    def record(
        self,
        call: Call,
        *,
        client: str | None,
        method: str,
        path: str,
        status: int | str,
        elapsed: float,
        payloads: bool,
        coalesce: bool,
    ) -> None:
        """Write ``call``'s line (see the module docstring); ``payloads``: add its body."""
        line = {
            "ts": self.timestamp(),
            "who": call.who,
            "client": client,
            "method": method,
            "path": path,
            "model": call.model,
            "version": call.version,
            "signature": call.signature,
            "rows": call.rows,
            "status": status,
            "latency_ms": round(elapsed * 1000, 3),
        }
        if payloads and call.payload is not None:
            line["payload"] = call.payload
        self.write(_AUDIT_JSON.encode(line), coalesce=coalesce)

    def write(self, line: str, *, coalesce: bool = False) -> None:
        self._pending.append(line)
        if not coalesce:
            self.flush()
        elif not self._scheduled:
            self._scheduled = True
            asyncio.get_running_loop().call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        lines, self._pending = self._pending, []
        try:
            self._file.write("\n".join(lines) + "\n")
            self._file.flush()
        except (OSError, ValueError) as e:  # a full disk must not fail requests; say so once
            logging.getLogger("evergreen.serving").error("audit log write failed: %s", e)

    def close(self) -> None:
        self.flush()
        if self._own:
            self._file.close()
