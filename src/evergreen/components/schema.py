"""The schema: what every span is expected to look like. Inferred once, then edited by people.

``schema.json`` lists each feature's type, the fraction of rows in which it must be present,
its domain (categorical) or range (numeric), the label's classes, and columns to ignore. It is
plain, sorted JSON so a reviewer can read and edit it; point ``validation.schema_file`` at an
edited copy to use it instead of the inferred one.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evergreen.components.statistics import SpanStatistics
from evergreen.errors import SchemaError
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext

MAX_DOMAIN = 500  # categorical columns with more distinct values get no domain check
PRESENCE_DECIMALS = 4  # presence floors are stored with this many decimals (0.8974)


def presence_floor(presence: float) -> float:
    """``presence`` rounded *down* to :data:`PRESENCE_DECIMALS` decimals: never above it.

    A floor rounded to nearest could land above the observed value (639/712 = 0.897472 →
    0.8975), and the span it was meant to accept would stay blocked.
    """
    scale = 10**PRESENCE_DECIMALS
    floor = math.floor(presence * scale) / scale
    if floor > presence:  # presence * scale rounded up to a whole number in binary
        floor = (math.floor(presence * scale) - 1) / scale
    return max(floor, 0.0)


@dataclass
class ColumnSchema:
    type: str
    min_presence: float
    domain: list[str] | None = None
    min: float | None = None
    max: float | None = None


@dataclass
class Schema:
    label: str
    label_domain: list[str]
    columns: dict[str, ColumnSchema]
    ignored_columns: list[str] = field(default_factory=list)

    @property
    def types(self) -> dict[str, str]:
        return {name: column.type for name, column in self.columns.items()}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Schema:
        try:
            return cls(
                label=data["label"],
                label_domain=list(data["label_domain"]),
                columns={name: ColumnSchema(**col) for name, col in data["columns"].items()},
                ignored_columns=list(data.get("ignored_columns", [])),
            )
        except (KeyError, TypeError) as e:
            raise SchemaError(
                f"the schema is malformed ({e}); compare it with an inferred schema.json"
            ) from None

    @classmethod
    def read(cls, path: Path) -> Schema:
        try:
            return cls.from_dict(json.loads(path.read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise SchemaError(
                f"schema file {path} does not exist; fix validation.schema_file"
            ) from None
        except json.JSONDecodeError as e:
            raise SchemaError(
                f"schema file {path} is not valid JSON: {e}; fix it, or copy an inferred "
                "schema.json there again"
            ) from None
        except SchemaError as e:
            raise SchemaError(f"schema file {path}: {e}") from None


def infer(stats: SpanStatistics, label: str, min_presence: float) -> Schema:
    """A schema that the given statistics satisfy, with presence floors from config."""
    columns = {}
    for name, col in stats.columns.items():
        floor = min(min_presence, presence_floor(col.presence))
        schema = ColumnSchema(type=col.kind, min_presence=floor)
        if col.kind == "categorical" and col.present and col.distinct.get_estimate() <= MAX_DOMAIN:
            schema.domain = sorted(item for item, _ in col.top(MAX_DOMAIN))
        elif col.kind == "numeric" and col.present:
            schema.min = col.quantiles.get_min_value()
            schema.max = col.quantiles.get_max_value()
        columns[name] = schema
    return Schema(label=label, label_domain=sorted(stats.labels), columns=columns)


def load(artifact: Artifact) -> Schema:
    return Schema.read(Path(artifact.uri) / "schema.json")


class InferSchema:
    """Pipeline component: the first span's ``statistics`` → a ``schema`` artifact."""

    name: ClassVar[str] = "schema"
    version: ClassVar[str] = "1"

    def __init__(self, label: str, min_presence: float, split_key: str = "") -> None:
        self.label = label
        self.min_presence = min_presence
        self.split_key = split_key  # a column used only to split: expected, never a feature

    def parameters(self) -> dict[str, Any]:
        return {"label": self.label, "min_presence": self.min_presence, "split_key": self.split_key}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        from evergreen.components import statistics

        schema = infer(statistics.load(ctx.inputs["statistics"]), self.label, self.min_presence)
        if self.split_key and self.split_key not in schema.columns:
            schema.ignored_columns.append(self.split_key)
        ctx.output("schema", "Schema").write_json("schema.json", schema.to_dict())
        return {"columns": schema.types}

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass


class ImportSchema:
    """Pipeline component: a user-edited schema file → a ``schema`` artifact (TFX's ImportSchemaGen)."""

    name: ClassVar[str] = "schema-import"
    version: ClassVar[str] = "1"

    def __init__(self, schema: Schema, source: str) -> None:
        self.schema = schema
        self.source = source

    def parameters(self) -> dict[str, Any]:
        return {"schema": self.schema.to_dict(), "source": self.source}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        ctx.output("schema", "Schema").write_json("schema.json", self.schema.to_dict())
        return {"source": self.source}

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
