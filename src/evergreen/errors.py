"""Evergreen's exception tree.

Every error a user can cause or fix derives from :class:`EvergreenError`; the CLI prints its
message on one line and exits with its ``exit_code``. Anything else is a bug and is reported
as an internal error with its traceback.

::

    EvergreenError                 exit 1, "error"
    ├── ConfigError                the config file is wrong: names the key, the value, the fix
    ├── DataError                  a span cannot be read at all (missing files, unknown format)
    │   └── NoSpanFiles            data.pattern matches no file yet
    ├── SpanBlocked                validation found blocking anomalies in a span
    ├── SchemaError                the schema cannot be applied or updated as asked
    ├── MetadataError              the lineage store is unreachable or inconsistent
    ├── NotFound                   an artifact, run or span id that does not exist
    ├── PipelineBusy               another writer holds the pipeline's lock
    └── RegistryError              a registry file is damaged (aliases.json, a manifest)
        └── IntegrityError         a version's files or signature do not match its manifest
"""

from __future__ import annotations


class EvergreenError(Exception):
    """Base class of every error a user can act on."""

    exit_code = 1
    headline = "error"


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
