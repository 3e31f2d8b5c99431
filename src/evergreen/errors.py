"""Evergreen's exception tree.

Every error a user can cause or fix derives from :class:`EvergreenError`; the CLI prints its
message on one line and exits with its ``exit_code``. Anything else is a bug and is reported
as an internal error with its traceback.

The model server answers the same classes: an error with a ``status`` becomes that HTTP status
(and its ``grpc_code`` over gRPC) with its message as ``{"error": ...}``; any other error is a
500 "internal error" (gRPC ``INTERNAL``). The codes are TF Serving's mapping of its canonical
errors.

::

    EvergreenError                 exit 1, "error"; while serving: 500 INTERNAL
    ├── ConfigError                the config file is wrong: names the key, the value, the fix
    ├── DataError                  a span cannot be read at all (missing files, unknown format)
    │   └── NoSpanFiles            data.pattern matches no file yet
    ├── SpanBlocked                validation found blocking anomalies in a span
    ├── SchemaError                the schema cannot be applied or updated as asked
    ├── MetadataError              the lineage store is unreachable or inconsistent
    ├── NotFound                   an artifact, run, span, model, version, label or route that
    │                              does not exist; while serving: 404 NOT_FOUND
    ├── PipelineBusy               another writer holds the pipeline's lock
    ├── RegistryError              a registry file is damaged, or a name, alias or manifest is refused
    │   └── IntegrityError         a version's files or signature do not match its manifest
    ├── WorkerLost                 exit 75: a worker of a multi-worker training stopped; retry
    ├── BeamError                  a Beam pipeline's output does not account for its input
    └── ServingError               a request the model server refuses (never reaches the CLI)
        ├── BadRequest             400 INVALID_ARGUMENT: the body, an input, a signature name
        ├── Unauthorized           401 UNAUTHENTICATED: missing or wrong API key
        ├── PayloadTooLarge        413 RESOURCE_EXHAUSTED: over serving.max_body_bytes or rows
        ├── Unavailable            503 UNAVAILABLE: queue full, not loaded yet, shutting down
        └── DeadlineExceeded       504 DEADLINE_EXCEEDED: serving.request_timeout_ms passed
"""

from __future__ import annotations


class EvergreenError(Exception):
    """Base class of every error a user can act on."""

    exit_code = 1
    headline = "error"
    # How the model server answers it: an HTTP status and the name of a grpc.StatusCode (a
    # name, so that importing this module does not import grpc). None: not the client's
    # doing; the server answers 500 "internal error" with the class name.
    status: int | None = None
    grpc_code: str | None = None


class ConfigError(EvergreenError):
    headline = "config error"


class DataError(EvergreenError):
    headline = "data error"


class SpanBlocked(EvergreenError):
    headline = "span blocked"


class SchemaError(EvergreenError):
    headline = "schema error"


class MetadataError(EvergreenError):
    headline = "metadata error"


class NotFound(EvergreenError):
    headline = "not found"
    status = 404
    grpc_code = "NOT_FOUND"


class PipelineBusy(EvergreenError):
    headline = "pipeline busy"


class RegistryError(EvergreenError):
    headline = "registry error"


class IntegrityError(RegistryError):
    headline = "integrity error"


class WorkerLost(EvergreenError):
    """A worker of a multi-worker training stopped (preempted, killed): restart them all.

    Exit code 75 (EX_TEMPFAIL): retrying is the fix; training resumes from the checkpoint.
    """

    headline = "worker lost"
    exit_code = 75


class NoSpanFiles(DataError):
    """``data.pattern`` matches no file: nothing has been delivered yet."""


class BeamError(EvergreenError):
    """A Beam pipeline's output does not account for its input (nothing was committed)."""

    headline = "beam error"


class ServingError(EvergreenError):
    """A request the model server refuses; the server answers it, so it never reaches the CLI."""

    headline = "serving error"
    status = 500
    grpc_code = "INTERNAL"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class BadRequest(ServingError):
    status, grpc_code = 400, "INVALID_ARGUMENT"


class Unauthorized(ServingError):
    status, grpc_code = 401, "UNAUTHENTICATED"


class PayloadTooLarge(ServingError):
    status, grpc_code = 413, "RESOURCE_EXHAUSTED"


class Unavailable(ServingError):
    status, grpc_code = 503, "UNAVAILABLE"


class DeadlineExceeded(ServingError):
    status, grpc_code = 504, "DEADLINE_EXCEEDED"
