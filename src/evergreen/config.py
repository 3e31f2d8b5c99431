"""The pipeline config: one TOML file, validated once at load.

Precedence for the few settings that can come from several places is, highest first:
command-line flag → environment variable (``EVERGREEN_ROOT``, ``EVERGREEN_METADATA_URL``) →
config file → default. Nothing here is read at import time.

Every error names the key, the value that came and what to write instead.
"""

from __future__ import annotations

import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from evergreen.errors import ConfigError

FEATURE_TYPES = ("text", "categorical", "numeric", "image")
FAMILIES = ("text", "tabular", "image", "custom")
BASE_FAMILIES = ("text", "tabular", "image")
FORMATS = ("csv", "jsonl", "parquet", "tfrecord", "images")
SEVERITIES = ("error", "warning", "ignore")
CONFLICT_POLICIES = ("quarantine", "keep")
ANOMALY_KINDS = (
    "missing_column",
    "new_column",
    "type_change",
    "out_of_domain",
    "out_of_range",
    "low_presence",
    "empty_span",
)
DEFAULT_SEVERITY = {
    "missing_column": "error",
    "new_column": "warning",
    "type_change": "error",
    "out_of_domain": "warning",
    "out_of_range": "warning",
    "low_presence": "error",
    "empty_span": "error",
}
_EXTENSIONS = {
    ".csv": "csv",
    ".jsonl": "jsonl",
    ".json": "jsonl",
    ".parquet": "parquet",
    ".tfrecord": "tfrecord",
    ".tfrecords": "tfrecord",
    ".png": "images",  # folders per label: data/span-{SPAN}/*/*.png, columns image and label
    ".jpg": "images",
    ".jpeg": "images",
}


@dataclass(frozen=True)
class DataConfig:
    """Where spans come from and what their columns mean."""

    pattern: str
    label: str
    format: str = ""  # inferred from the pattern's extension when empty
    features: dict[str, str] = field(default_factory=dict)  # column -> type; inferred when empty
    max_field_bytes: int = 1_000_000
    shard_rows: int = 100_000


@dataclass(frozen=True)
class SplitConfig:
    """Deterministic hash split: each row's bucket comes from its key, never from randomness."""

    ratios: dict[str, float] = field(default_factory=lambda: {"train": 0.8, "eval": 0.2})
    key: str = ""  # a column; empty means the row's input content


@dataclass(frozen=True)
class DedupeConfig:
    label_conflicts: str = "quarantine"  # quarantine the later row, or keep both (reported)


@dataclass(frozen=True)
class ValidationConfig:
    min_presence: float = 0.9  # fraction of rows in which a feature must be present
    max_type_error_fraction: float = 0.05  # above this, wrong-typed values are a type change
    severity: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_SEVERITY))
    schema_file: str = ""  # a user-curated schema to use instead of the inferred one


@dataclass(frozen=True)
class TrainConfig:
    """Model family, featurizer and the incremental-training policy ([train] in the file)."""

    family: str = "text"  # text, tabular, image, or custom (a module file: train.module)
    module: str = ""  # custom family: a Python file defining build_model(schema, hparams)
    base_family: str = ""  # custom family: whose featurizer it uses (default: from the features)
    hparams: dict[str, Any] = field(default_factory=dict)  # custom family: given to build_model
    text_feature: str = ""  # the text column the model reads; default: the only text feature
    max_tokens: int = 20_000
    sequence_length: int = 200
    max_categories: int = 1000  # tabular: vocabulary cap per categorical column (rest: OOV bucket)
    hidden_units: int = 64  # tabular: width of the deep part's first layer (second: half)
    image_size: int = 32  # image: images are resized to image_size x image_size in-graph
    image_channels: int = 3  # image: 1 (grayscale) or 3 (RGB)
    epochs: int = 5  # full retrain
    incremental_epochs: int = 3  # cap for an incremental run (early stopping may end it sooner)
    batch_size: int = 64
    learning_rate: float = 1e-3
    incremental_learning_rate: float = 3e-4
    replay_rows: int = 2000  # cap on rows of earlier spans replayed (never more than the new rows)
    freeze_lower_layers: int = 0
    full_every: int = 0  # a full retrain after this many increments (0: never by count)
    max_unknown_rate: float = 0.25  # above this unknown-token rate on a new span: full retrain
    holdout_rows: int = 2000  # cap on the historic holdout (eval splits of earlier spans)
    max_historic_regression: float = 0.005  # the forgetting guard, in accuracy
    max_new_regression: float = 0.02  # guard on the new span's eval split, in accuracy
    seed: int = 0


@dataclass(frozen=True)
class Config:
    """The whole pipeline config, as validated at load."""

    name: str
    data: DataConfig
    root: Path
    metadata_url: str
    split: SplitConfig = field(default_factory=SplitConfig)
    dedupe: DedupeConfig = field(default_factory=DedupeConfig)
    validation: ValidationConfig = field(default_factory=ValidationConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    base_dir: Path = Path(".")  # the config file's folder; relative paths resolve against it

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    def resolve(self, path: str) -> Path:
        p = Path(path).expanduser()
        return p if p.is_absolute() else self.base_dir / p

    def to_dict(self) -> dict[str, Any]:
        """The config as TOML-shaped data (round-trips through :func:`from_dict`)."""
        return {
            "pipeline": {
                "name": self.name,
                "root": str(self.root),
                "metadata_url": self.metadata_url,
            },
            "data": asdict(self.data),
            "split": asdict(self.split),
            "dedupe": asdict(self.dedupe),
            "validation": asdict(self.validation),
            "train": asdict(self.train),
        }


def load(
    path: str | os.PathLike[str], *, root: str | None = None, metadata_url: str | None = None
) -> Config:
    """Read and validate a config file.

    Args:
        path: the TOML file.
        root: overrides ``pipeline.root`` (flag tier of the precedence).
        metadata_url: overrides ``pipeline.metadata_url`` (flag tier).

    Raises:
        ConfigError: the file is missing, is not TOML, or a key or value is wrong.
    """
    path = Path(path)
    if not path.is_file():
        raise ConfigError(
            f"config file {path} does not exist; create one with `evergreen init NAME`"
        )
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    return from_dict(
        raw, base_dir=path.resolve().parent, root=root, metadata_url=metadata_url, source=str(path)
    )


def from_dict(
    raw: Mapping[str, Any],
    *,
    base_dir: Path = Path("."),
    root: str | None = None,
    metadata_url: str | None = None,
    source: str = "config",
) -> Config:
    """Validate TOML-shaped data into a :class:`Config` (see :func:`load`)."""
    v = _Validator(source)
    v.known_keys("", raw, ("pipeline", "data", "split", "dedupe", "validation", "train"))
    pipeline = v.table(raw, "pipeline")
    v.known_keys("pipeline", pipeline, ("name", "root", "metadata_url"))
    name = v.string(pipeline, "pipeline.name", required=True)
    if not name.replace("-", "").replace("_", "").isalnum():
        v.fail("pipeline.name", name, "use letters, digits, '-' and '_' only")

    root_value = (
        root
        or os.environ.get("EVERGREEN_ROOT")
        or v.string(pipeline, "pipeline.root")
        or ".evergreen"
    )
    root_path = Path(root_value).expanduser()
    if not root_path.is_absolute():
        root_path = base_dir / root_path
    url = (
        metadata_url
        or os.environ.get("EVERGREEN_METADATA_URL")
        or v.string(pipeline, "pipeline.metadata_url")
        or f"sqlite:///{root_path / 'metadata.db'}"
    )
    if not url.split(":", 1)[0].startswith(("sqlite", "postgresql")):
        v.fail("pipeline.metadata_url", url, "use sqlite:///PATH or postgresql://USER@HOST/DB")

    data = _data(v, v.table(raw, "data", required=True))
    split = _split(v, v.table(raw, "split"), data)
    dedupe_raw = v.table(raw, "dedupe")
    v.known_keys("dedupe", dedupe_raw, ("label_conflicts",))
    dedupe = DedupeConfig(
        label_conflicts=v.choice(
            dedupe_raw, "dedupe.label_conflicts", CONFLICT_POLICIES, "quarantine"
        )
    )
    validation = _validation(v, v.table(raw, "validation"))
    train = _train(v, v.table(raw, "train"))
    return Config(
        name=name,
        data=data,
        root=root_path,
        metadata_url=url,
        split=split,
        dedupe=dedupe,
        validation=validation,
        train=train,
        base_dir=base_dir,
    )


def _data(v: _Validator, raw: Mapping[str, Any]) -> DataConfig:
    allowed = tuple(f.name for f in fields(DataConfig))
    v.known_keys("data", raw, allowed)
    pattern = v.string(raw, "data.pattern", required=True)
    if "{SPAN}" not in pattern and "{DATE}" not in pattern:
        v.fail(
            "data.pattern",
            pattern,
            "put {SPAN} (an integer) or {DATE} (YYYY-MM-DD) where the span number goes, e.g. 'data/span-{SPAN}/*.csv'",
        )
    fmt = v.string(raw, "data.format")
    if not fmt:
        fmt = _EXTENSIONS.get(Path(pattern.replace("*", "x")).suffix.lower(), "")
        if not fmt:
            v.fail(
                "data.format",
                "(missing)",
                f"the pattern has no known extension; set data.format to one of {', '.join(FORMATS)}",
            )
    elif fmt not in FORMATS:
        v.fail("data.format", fmt, f"use one of {', '.join(FORMATS)}")
    label = v.string(raw, "data.label", required=True)
    features = v.table(raw, "data.features") if "features" in raw else {}
    for column, kind in features.items():
        if kind not in FEATURE_TYPES:
            v.fail(f"data.features.{column}", kind, f"use one of {', '.join(FEATURE_TYPES)}")
    if label in features:
        v.fail(
            f"data.features.{label}",
            features[label],
            "the label column is not a feature; remove it from data.features",
        )
    max_field = v.integer(raw, "data.max_field_bytes", 1_000_000, minimum=1)
    shard_rows = v.integer(raw, "data.shard_rows", 100_000, minimum=1)
    return DataConfig(
        pattern=pattern,
        label=label,
        format=fmt,
        features=dict(features),
        max_field_bytes=max_field,
        shard_rows=shard_rows,
    )


def _split(v: _Validator, raw: Mapping[str, Any], data: DataConfig) -> SplitConfig:
    v.known_keys("split", raw, ("ratios", "key"))
    ratios = dict(raw.get("ratios", {"train": 0.8, "eval": 0.2}))
    if "train" not in ratios or "eval" not in ratios:
        v.fail(
            "split.ratios",
            ratios,
            "name at least a 'train' and an 'eval' split, e.g. {train = 0.8, eval = 0.2}",
        )
    for name, ratio in ratios.items():
        if not isinstance(ratio, int | float) or isinstance(ratio, bool) or ratio <= 0:
            v.fail(f"split.ratios.{name}", ratio, "use a positive number")
    total = sum(ratios.values())
    key = v.string(raw, "split.key")
    if key == data.label:
        v.fail(
            "split.key",
            key,
            "splitting by the label would put each class in one split; use an id column or leave it empty",
        )
    return SplitConfig(ratios={k: float(r) / total for k, r in ratios.items()}, key=key)


def _validation(v: _Validator, raw: Mapping[str, Any]) -> ValidationConfig:
    v.known_keys(
        "validation", raw, ("min_presence", "max_type_error_fraction", "severity", "schema_file")
    )
    min_presence = v.fraction(raw, "validation.min_presence", 0.9)
    max_type = v.fraction(raw, "validation.max_type_error_fraction", 0.05)
    severity = dict(DEFAULT_SEVERITY)
    given = v.table(raw, "validation.severity") if "severity" in raw else {}
    v.known_keys("validation.severity", given, ANOMALY_KINDS)
    for kind, level in given.items():
        if level not in SEVERITIES:
            v.fail(f"validation.severity.{kind}", level, f"use one of {', '.join(SEVERITIES)}")
        severity[kind] = level
    return ValidationConfig(
        min_presence=min_presence,
        max_type_error_fraction=max_type,
        severity=severity,
        schema_file=v.string(raw, "validation.schema_file"),
    )


def _train(v: _Validator, raw: Mapping[str, Any]) -> TrainConfig:
    defaults = TrainConfig()
    allowed = tuple(f.name for f in fields(TrainConfig))
    v.known_keys("train", raw, allowed)
    values: dict[str, Any] = {}
    for name in allowed:
        default = getattr(defaults, name)
        key = f"train.{name}"
        if isinstance(default, dict):
            values[name] = dict(v.table(raw, key)) if name in raw else {}
        elif isinstance(default, str):
            values[name] = v.string(raw, key) or default
        elif isinstance(default, int):
            values[name] = v.integer(raw, key, default, minimum=0 if name in ("full_every", "freeze_lower_layers", "seed", "replay_rows") else 1)
        elif name.startswith("max_") or name.endswith("_rate") and "learning" not in name:
            values[name] = v.fraction(raw, key, default)
        else:
            value = raw.get(name, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value <= 0:
                v.fail(key, value, "use a positive number")
            values[name] = float(value)
    if values["family"] not in FAMILIES:
        v.fail("train.family", values["family"], f"use one of {', '.join(FAMILIES)}")
    if values["base_family"] not in ("", *BASE_FAMILIES):
        v.fail("train.base_family", values["base_family"], f"use one of {', '.join(BASE_FAMILIES)}")
    if values["family"] == "custom" and not values["module"]:
        raise ConfigError(f"{v.source}: train.family = 'custom' needs train.module = 'path/to/module.py' (a file defining build_model(schema, hparams))")
    if values["image_channels"] not in (1, 3):
        v.fail("train.image_channels", values["image_channels"], "use 1 (grayscale) or 3 (RGB)")
    return TrainConfig(**values)


class _Validator:
    """Small helpers that turn a wrong value into one clear ConfigError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, fix: str) -> None:
        raise ConfigError(f"{self.source}: {key} = {value!r} is not valid: {fix}")

    def known_keys(self, section: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in raw:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
                )
                raise ConfigError(f"{self.source}: unknown key '{where}'; {hint}")

    def table(self, raw: Mapping[str, Any], key: str, required: bool = False) -> Mapping[str, Any]:
        leaf = key.rsplit(".", 1)[-1]
        if leaf not in raw:
            if required:
                raise ConfigError(
                    f"{self.source}: missing table [{key}]; see `evergreen init` for a commented example"
                )
            return {}
        value = raw[leaf]
        if not isinstance(value, Mapping):
            self.fail(key, value, f"make it a table: [{key}]")
        return value

    def string(self, raw: Mapping[str, Any], key: str, required: bool = False) -> str:
        leaf = key.rsplit(".", 1)[-1]
        value = raw.get(leaf, "")
        if not isinstance(value, str):
            self.fail(key, value, "use a quoted string")
        if required and not value:
            raise ConfigError(f"{self.source}: missing key {key}; it is required")
        return value

    def integer(self, raw: Mapping[str, Any], key: str, default: int, minimum: int) -> int:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
            self.fail(key, value, f"use a whole number ≥ {minimum}")
        return value

    def fraction(self, raw: Mapping[str, Any], key: str, default: float) -> float:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, int | float) or isinstance(value, bool) or not 0 <= value <= 1:
            self.fail(key, value, "use a number between 0 and 1")
        return float(value)

    def choice(
        self, raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if value not in choices:
            self.fail(key, value, f"use one of {', '.join(choices)}")
        return value
