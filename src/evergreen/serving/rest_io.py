"""What the REST routes read and write: bodies within limits, checked path and body fields,
JSON answers, the version a request holds, and errors as ``{"error": ...}``."""

from __future__ import annotations

import difflib
import json
import logging
from typing import Any

import numpy as np
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse as _StarletteJSON

from evergreen.errors import BadRequest, EvergreenError, PayloadTooLarge
from evergreen.serving import classify, codec
from evergreen.serving.audit import Call
from evergreen.serving.models import DEFAULT_SIGNATURE, LoadedVersion, ModelManager
from evergreen.serving.state import ServingState

VERSION_HEADER = "X-Model-Version"
CLIENT_CLOSED = 499  # nginx's status for a client that hung up before the answer
_MAX_VERSION_DIGITS = 18  # an int64 version
_EXAMPLE_METHODS = (classify.CLASSIFY_METHOD, classify.REGRESS_METHOD)

# One encoder, made once: json.dumps with options builds a new encoder on every call.
_RESPONSE_JSON = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


class JSONResponse(_StarletteJSON):
    """JSON with NaN and Infinity written as tokens, as TF Serving does (Starlette refuses)."""

    def render(self, content: Any) -> bytes:
        text = _RESPONSE_JSON.encode(content)
        try:
            return text.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate echoed back: escape it, still valid JSON
            return json.dumps(content, separators=(",", ":")).encode("ascii")


def error_response(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def error_answer(error: Exception) -> JSONResponse:
    """The answer to a request that raised ``error`` (call it in the ``except`` block).

    An error with an HTTP ``status`` (:mod:`evergreen.errors`) is the client's: that status and
    its message. Anything else is a bug or a model failure: 500, logged with its traceback.
    """
    status = error.status if isinstance(error, EvergreenError) else None
    if status is not None:
        return error_response(status, str(error))
    logging.getLogger("evergreen.serving").exception("request failed")
    return error_response(500, f"internal error: {type(error).__name__}: {error}")


async def read_body(request: Request, limit: int) -> bytes:
    """The request body, refused (413) as soon as it is known to be over ``limit`` bytes.

    Raises:
        PayloadTooLarge: a ``Content-Length`` or a body over ``limit``.
        ClientDisconnect: the client hung up before the body was in.
    """
    length = request.headers.get("content-length")
    if length is not None and length.isdigit() and int(length) > limit:
        raise PayloadTooLarge(
            f"the request body has {int(length)} bytes; this server takes at most {limit} "
            "(serving.max_body_bytes). Send fewer rows per request"
        )
    # ASGI messages read directly: Request.stream() is an async generator, dearer per
    # request, and a body is one message in the common case.
    chunks, size, more = [], 0, True
    while more:
        message = await request.receive()
        if message["type"] != "http.request":  # http.disconnect
            raise ClientDisconnect()
        chunk = message.get("body", b"")
        more = message.get("more_body", False)
        size += len(chunk)
        if size > limit:
            raise PayloadTooLarge(
                f"the request body is over {limit} bytes (serving.max_body_bytes); "
                "send fewer rows per request"
            )
        chunks.append(chunk)
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)


def parse_json(raw: bytes, call: Call, log_payloads: bool) -> dict[str, Any]:
    """A JSON object body (:func:`codec.parse_body`), kept on ``call`` for the audit log when
    ``log_payloads``."""
    body = codec.parse_body(raw)
    if log_payloads:
        call.payload = body
    return body


class Held:
    """The version a request goes to, held for an ``async with`` block (a class: cheaper per
    request than an asynccontextmanager generator)."""

    __slots__ = ("lv", "manager")

    def __init__(
        self,
        manager: ModelManager,
        call: Call,
        model: str,
        version: str | None,
        label: str | None,
    ) -> None:
        call.model = model
        self.manager = manager
        self.lv = manager.acquire(model, version_param(model, version), label)
        call.version = self.lv.version

    async def __aenter__(self) -> LoadedVersion:
        return self.lv

    async def __aexit__(self, *exc: object) -> None:
        self.manager.release(self.lv)


def version_param(model: str, version: str | None) -> str | None:
    """A version from a path, checked: ASCII digits only (``"²".isdigit()`` is true, and
    ``int()`` refuses numbers of over 4300 digits), short enough for an int64."""
    if version is None:
        return None
    if not (version.isascii() and version.isdigit()) or len(version) > _MAX_VERSION_DIGITS:
        shown = version if len(version) <= 40 else version[:37] + "..."
        raise BadRequest(
            f"version {shown!r} of model {model!r} is not a number; use e.g. /versions/3"
        )
    return version


def signature_name(value: Any) -> str:
    """A body's ``signature_name``: unset or empty is ``serving_default``."""
    if value is None or value == "":
        return DEFAULT_SIGNATURE
    if not isinstance(value, str):
        raise BadRequest(f"'signature_name' must be a string, got {type(value).__name__}")
    return value


def known_keys(body: dict[str, Any], allowed: tuple[str, ...]) -> None:
    """Refuse a body key not in ``allowed``, with "did you mean" when one is close."""
    for key in body:
        if key not in allowed:
            close = difflib.get_close_matches(key, allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise BadRequest(f"unknown key {key!r} in the request body; {hint}")


def example_signature(lv: LoadedVersion, body: dict[str, Any], preferred: str) -> str:
    """The signature a Classify/Regress request names; unnamed: ``preferred`` when the version
    has it (TF Serving would use serving_default, a predict signature it refuses), else
    serving_default (versions exported before the classification signature)."""
    name = body.get("signature_name")
    if name is None or name == "":
        return preferred if preferred in lv.signatures else DEFAULT_SIGNATURE
    return signature_name(name)


def float_features(lv: LoadedVersion) -> frozenset[str]:
    """Features of ``lv``'s examples parsed as floats (serving_default's float inputs)."""
    default = lv.signatures.get(DEFAULT_SIGNATURE)
    return classify.float_features(default.inputs) if default else frozenset()


async def run_model(
    state: ServingState,
    call: Call,
    lv: LoadedVersion,
    sig: codec.Signature,
    inputs: dict[str, np.ndarray],
) -> dict[str, np.ndarray]:
    """:meth:`ServingState.run_model` for a REST request.

    Only raw-input (predict) signatures' rows go to the request log: the skew checks compare
    raw columns, and a Classify/Regress signature's input is serialized tf.Example (the
    ``:classify`` and ``:regress`` routes log those requests' raw features instead).
    """
    sample = lv.methods.get(sig.name) not in _EXAMPLE_METHODS
    return await state.run_model(call, lv, sig, inputs, sample=sample)
