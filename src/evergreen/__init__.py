"""Evergreen keeps TensorFlow models fresh: the cost of an update follows the new data."""

from evergreen.config import Config
from evergreen.config import load as load_config
from evergreen.errors import (
    ConfigError,
    DataError,
    EvergreenError,
    MetadataError,
    NotFound,
    SchemaError,
    SpanBlocked,
)
from evergreen.metadata import MetadataStore
from evergreen.project import Project, SpanOutcome

__all__ = [
    "Config",
    "ConfigError",
    "DataError",
    "EvergreenError",
    "MetadataError",
    "MetadataStore",
    "NotFound",
    "Project",
    "SchemaError",
    "SpanBlocked",
    "SpanOutcome",
    "load_config",
]
