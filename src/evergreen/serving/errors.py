"""HTTP errors of the model server: each knows its status code; the body is ``{"error": ...}``.

The codes are TF Serving's mapping of its canonical errors::

    ServingError
    ├── BadRequest           400  INVALID_ARGUMENT: the body, an input, a signature name
    ├── Unauthorized         401  missing or wrong API key
    ├── NotFound             404  NOT_FOUND: model, version, label or route
    ├── PayloadTooLarge      413  the body is over serving.max_body_bytes
    ├── Unavailable          503  UNAVAILABLE: queue full, model not loaded yet, shutting down
    └── DeadlineExceeded     504  DEADLINE_EXCEEDED: serving.request_timeout_ms passed

These never reach the command line: the server turns them into responses.
"""

from __future__ import annotations


class ServingError(Exception):
    status = 500

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    status = 400


class Unauthorized(ServingError):
    status = 401


class NotFound(ServingError):
    status = 404


class PayloadTooLarge(ServingError):
    status = 413


class Unavailable(ServingError):
    status = 503


class DeadlineExceeded(ServingError):
    status = 504
