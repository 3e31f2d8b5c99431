"""The pipeline config: one TOML file, validated once at load.

Precedence for the few settings that can come from several places is, highest first:
command-line flag → environment variable (``EVERGREEN_ROOT``, ``EVERGREEN_METADATA_URL``) →
config file → default. Nothing here is read at import time.

Every error names the key, the value that came and what to write instead.
"""

from __future__ import annotations

import difflib
import math
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
# Drift metrics and their default (minor, major) thresholds. A score above "minor" raises an
# alarm; above "major" it is heavy drift (by default: a full retrain). See components/drift.py.
DRIFT_METRICS = {
    "linf": (0.1, 0.2),  # categorical and label: largest change in one value's share
    "js_distance": (0.1, 0.3),  # categorical, label, text words: Jensen-Shannon distance (base 2)
    "ks": (0.1, 0.2),  # numeric: Kolmogorov-Smirnov statistic
    "wasserstein": (0.2, 0.5),  # numeric: Wasserstein-1 (central 98%) / reference std
    "psi": (0.1, 0.25),  # numeric: population stability index over reference deciles
    "length_ks": (0.1, 0.2),  # text: KS statistic of words per text
    "unknown_rate": (0.1, 0.25),  # text: share of word occurrences outside the frozen vocabulary
}
DRIFT_LEVELS = ("minor", "major", "never")
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
    replay_rows: int = 0  # cap on rows of earlier spans replayed in an incremental run (0: none)
    replay_ratio: float = (
        1.0  # replayed rows per new row (the cost stays proportional to the new data)
    )
    freeze_lower_layers: int = 0
    full_every: int = 0  # a full retrain after this many increments (0: never by count)
    max_unknown_rate: float = 0.25  # above this unknown-token rate on a new span: full retrain
    holdout_rows: int = 2000  # cap on the historic holdout (eval splits of earlier spans)
    max_historic_regression: float = 0.005  # the forgetting guard, in accuracy
    max_new_regression: float = 0.02  # guard on the new span's eval split, in accuracy
    guard_confidence: float = (
        0.95  # a drop counts only beyond the eval sets' noise at this level (0: exact)
    )
    seed: int = 0
    # Early stopping on val_loss (incremental runs: the champion's val_loss is the baseline).
    patience: int = 0  # epochs without improvement before stopping (0: the family's default)
    min_delta: float = 0.0  # an epoch must beat the best (or the champion) by more than this
    # The guard: loss and a primary metric on the new eval rows and the historic holdout.
    primary_metric: str = (
        "auto"  # auto (binary: auc, else balanced_accuracy) or one of PRIMARY_METRICS
    )
    max_noise_allowance: float = 0.02  # cap on the noise allowance added to a guard's threshold
    max_loss_increase: float = 0.05  # loss guard: relative rise of cross-entropy allowed
    min_eval_rows: int = 200  # fewer new eval rows: pooled with the latest spans' (0: never)
    replay_class_balanced: bool = False  # replay the same number of rows of every class
    class_weights: str = "auto"  # auto: when the largest class > 10x the smallest; balanced; none


PRIMARY_METRICS = ("auto", "accuracy", "auc", "macro_f1", "balanced_accuracy")
CLASS_WEIGHTS = ("auto", "balanced", "none")


def _default_thresholds() -> dict[str, dict[str, float]]:
    return {m: {"minor": lo, "major": hi} for m, (lo, hi) in DRIFT_METRICS.items()}


@dataclass(frozen=True)
class DriftConfig:
    """Drift and skew detection ([drift] in the file): on by default, thresholds per metric.

    ``thresholds`` maps a metric to ``{"minor": x, "major": y}``; ``features`` holds per-feature
    overrides, ``{"enabled": False}`` or ``{metric: {"minor": x, "major": y}}``.
    """

    enabled: bool = True
    thresholds: dict[str, dict[str, float]] = field(default_factory=_default_thresholds)
    features: dict[str, dict[str, Any]] = field(default_factory=dict)
    full_retrain_on: str = "major"  # drift of this severity (or worse) forces a full retrain
    block_on: str = "never"  # drift of this severity (or worse) blocks training on the span
    block_on_single_label: bool = True  # a span whose labels collapsed to one class is blocked
    min_item_share: float = 0.005  # values/words rarer than this on both sides pool as "other"

    def threshold(self, feature: str, metric: str) -> tuple[float, float]:
        """The (minor, major) thresholds of ``metric`` for ``feature``, overrides applied."""
        given = self.features.get(feature, {}).get(metric) or self.thresholds[metric]
        return float(given["minor"]), float(given["major"])

    def feature_enabled(self, feature: str) -> bool:
        return bool(self.features.get(feature, {}).get("enabled", True))


@dataclass(frozen=True)
class ServingConfig:
    """The model server (``[serving]`` in the file; ``evergreen serve`` flags override it).

    Secrets never live here: API keys come from the environment variable named by
    ``api_key_env`` (comma-separated ``KEY`` or ``NAME:KEY`` entries) or ``--api-key-file``.
    """

    host: str = "127.0.0.1"
    port: int = 8501
    api_key_env: str = "EVERGREEN_API_KEYS"
    tls_cert: str = ""  # PEM certificate; with tls_key, the server speaks HTTPS
    tls_key: str = ""
    max_batch_size: int = 32  # rows per model call; 1 turns batching off
    batch_timeout_ms: float = (
        2.0  # under load, how long a free model waits for a fuller batch (0: never)
    )
    batch_threads: int = 1  # model calls in flight at once per model version and signature
    max_queue: int = 1024  # requests waiting per model version and signature; beyond: 503
    request_timeout_ms: int = 10_000  # a request still queued or running after this: 504
    max_body_bytes: int = 8 * 1024 * 1024  # larger request bodies: 413
    canary_percent: float = 0.0  # share of unlabelled requests sent to the 'canary' version
    poll_seconds: float = 1.0  # how often the registry's aliases are checked
    request_log_sample_rate: float = 0.0  # fraction of rows written for skew checks (0: off)
    audit_log: str = ""  # JSON Lines file, one line per request; empty: standard error
    log_payloads: bool = False  # put request bodies in the audit log (never by default)


@dataclass(frozen=True)
class WatchConfig:
    """``evergreen watch`` ([watch] in the file): when new data starts a run.

    A run starts once the new spans hold at least ``min_rows`` rows, or when the oldest new
    data has waited ``max_wait_seconds`` whatever its size. The data folder is looked at every
    ``poll_seconds``.
    """

    min_rows: int = 1
    max_wait_seconds: float = 3600.0
    poll_seconds: float = 10.0
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 9464  # Prometheus /metrics of the watcher; 0: any free port


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
    drift: DriftConfig = field(default_factory=DriftConfig)
    serving: ServingConfig = field(default_factory=ServingConfig)
    watch: WatchConfig = field(default_factory=WatchConfig)
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
            "drift": asdict(self.drift),
            "serving": asdict(self.serving),
            "watch": asdict(self.watch),
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
    v.known_keys(
        "",
        raw,
        ("pipeline", "data", "split", "dedupe", "validation", "train", "drift", "serving", "watch"),
    )
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
    drift = _drift(v, v.table(raw, "drift"))
    serving = serving_from_dict(v.table(raw, "serving"), source=source)
    return Config(
        name=name,
        data=data,
        root=root_path,
        metadata_url=url,
        split=split,
        dedupe=dedupe,
        validation=validation,
        train=train,
        drift=drift,
        serving=serving,
        watch=_watch(v, v.table(raw, "watch")),
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


def _watch(v: _Validator, raw: Mapping[str, Any]) -> WatchConfig:
    v.known_keys("watch", raw, tuple(f.name for f in fields(WatchConfig)))
    seconds = {}
    for key, default, minimum in (("max_wait_seconds", 3600.0, 0.0), ("poll_seconds", 10.0, 0.05)):
        value = raw.get(key, default)
        if (
            not isinstance(value, int | float)
            or isinstance(value, bool)
            or not math.isfinite(value)
            or value < minimum
        ):
            v.fail(f"watch.{key}", value, f"use a finite number of seconds ≥ {minimum}")
        seconds[key] = float(value)
    port = v.integer(raw, "watch.metrics_port", 9464, minimum=0)
    if port > 65535:
        v.fail("watch.metrics_port", port, "use a port number from 0 to 65535 (0: any free port)")
    return WatchConfig(
        min_rows=v.integer(raw, "watch.min_rows", 1, minimum=1),
        metrics_host=v.string(raw, "watch.metrics_host") or "127.0.0.1",
        metrics_port=port,
        **seconds,
    )


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
        elif isinstance(default, bool):
            values[name] = v.boolean(raw, key, default)
        elif isinstance(default, str):
            values[name] = v.string(raw, key) or default
        elif isinstance(default, int):
            values[name] = v.integer(
                raw,
                key,
                default,
                minimum=0
                if name in ("full_every", "freeze_lower_layers", "seed", "replay_rows", "patience")
                or name == "min_eval_rows"
                else 1,
            )
        elif (
            name.startswith("max_")
            or name == "guard_confidence"
            or name.endswith("_rate")
            and "learning" not in name
        ):
            values[name] = v.fraction(raw, key, default)
        elif name == "min_delta":
            value = raw.get(name, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                v.fail(key, value, "use a number ≥ 0 (a val_loss difference)")
            values[name] = float(value)
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
        raise ConfigError(
            f"{v.source}: train.family = 'custom' needs train.module = 'path/to/module.py' (a file defining build_model(schema, hparams))"
        )
    if values["image_channels"] not in (1, 3):
        v.fail("train.image_channels", values["image_channels"], "use 1 (grayscale) or 3 (RGB)")
    if values["primary_metric"] not in PRIMARY_METRICS:
        v.fail(
            "train.primary_metric",
            values["primary_metric"],
            f"use one of {', '.join(PRIMARY_METRICS)}",
        )
    if values["class_weights"] not in CLASS_WEIGHTS:
        v.fail(
            "train.class_weights", values["class_weights"], f"use one of {', '.join(CLASS_WEIGHTS)}"
        )
    return TrainConfig(**values)


def _drift(v: _Validator, raw: Mapping[str, Any]) -> DriftConfig:
    allowed = tuple(f.name for f in fields(DriftConfig))
    v.known_keys("drift", raw, allowed)
    thresholds = _default_thresholds()
    given = v.table(raw, "drift.thresholds") if "thresholds" in raw else {}
    v.known_keys("drift.thresholds", given, tuple(DRIFT_METRICS))
    for metric, value in given.items():
        thresholds[metric] = _drift_threshold(
            v, f"drift.thresholds.{metric}", value, thresholds[metric]
        )
    features: dict[str, dict[str, Any]] = {}
    table = v.table(raw, "drift.features") if "features" in raw else {}
    for feature, overrides in table.items():
        section = f"drift.features.{feature}"
        overrides = v.table(table, section)
        v.known_keys(section, overrides, ("enabled", *DRIFT_METRICS))
        entry: dict[str, Any] = {}
        for key, value in overrides.items():
            if key == "enabled":
                entry[key] = v.boolean(overrides, f"{section}.enabled", True)
            else:
                entry[key] = _drift_threshold(v, f"{section}.{key}", value, thresholds[key])
        features[feature] = entry
    block_on = v.choice(raw, "drift.block_on", DRIFT_LEVELS, "never")
    return DriftConfig(
        enabled=v.boolean(raw, "drift.enabled", True),
        thresholds=thresholds,
        features=features,
        full_retrain_on=v.choice(raw, "drift.full_retrain_on", DRIFT_LEVELS, "major"),
        block_on=block_on,
        block_on_single_label=v.boolean(raw, "drift.block_on_single_label", True),
        min_item_share=v.fraction(raw, "drift.min_item_share", 0.005),
    )


def _drift_threshold(
    v: _Validator, key: str, value: Any, default: Mapping[str, float]
) -> dict[str, float]:
    """``{minor = x, major = y}`` (either may be left out: the default stays) → checked dict."""
    if not isinstance(value, Mapping):
        v.fail(key, value, "use a table such as { minor = 0.1, major = 0.25 }")
    v.known_keys(key, value, ("minor", "major"))
    out = {"minor": float(default["minor"]), "major": float(default["major"])}
    for level in ("minor", "major"):
        if level in value:
            number = value[level]
            if not isinstance(number, int | float) or isinstance(number, bool) or number < 0:
                v.fail(f"{key}.{level}", number, "use a number ≥ 0")
            out[level] = float(number)
    if "major" not in value:  # a raised minor lifts the default major with it
        out["major"] = max(out["major"], out["minor"])
    if out["major"] < out["minor"]:
        v.fail(key, dict(value), f"major ({out['major']}) must be at least minor ({out['minor']})")
    return out


def serving_from_dict(raw: Mapping[str, Any], *, source: str = "config") -> ServingConfig:
    """Validate a ``[serving]`` table (also used for ``evergreen serve --registry`` flags).

    Raises:
        ConfigError: a key is unknown or a value is out of range; the message names the key.
    """
    v = _Validator(source)
    allowed = tuple(f.name for f in fields(ServingConfig))
    v.known_keys("serving", raw, allowed)
    d = ServingConfig()
    host = v.string(raw, "serving.host") or d.host
    api_key_env = raw.get("api_key_env", d.api_key_env)
    if not isinstance(api_key_env, str):
        v.fail("serving.api_key_env", api_key_env, "use the quoted name of an environment variable")
    tls_cert, tls_key = v.string(raw, "serving.tls_cert"), v.string(raw, "serving.tls_key")
    if bool(tls_cert) != bool(tls_key):
        v.fail(
            "serving.tls_cert" if tls_key else "serving.tls_key",
            "",
            "set both tls_cert and tls_key (PEM files) for HTTPS, or neither for plain HTTP",
        )
    port = v.integer(raw, "serving.port", d.port, minimum=0)
    if port > 65535:
        v.fail("serving.port", port, "use a port number from 0 to 65535 (0: any free port)")
    canary = raw.get("canary_percent", d.canary_percent)
    if not isinstance(canary, int | float) or isinstance(canary, bool) or not 0 <= canary <= 100:
        v.fail("serving.canary_percent", canary, "use a percentage between 0 and 100, e.g. 10")
    values: dict[str, Any] = {}
    for key, minimum in (("batch_timeout_ms", 0.0), ("poll_seconds", 0.05)):
        value = raw.get(key, getattr(d, key))
        if not isinstance(value, int | float) or isinstance(value, bool) or value < minimum:
            v.fail(f"serving.{key}", value, f"use a number ≥ {minimum}")
        values[key] = float(value)
    log_payloads = raw.get("log_payloads", d.log_payloads)
    if not isinstance(log_payloads, bool):
        v.fail("serving.log_payloads", log_payloads, "use true or false")
    return ServingConfig(
        host=host,
        port=port,
        api_key_env=api_key_env,
        tls_cert=tls_cert,
        tls_key=tls_key,
        max_batch_size=v.integer(raw, "serving.max_batch_size", d.max_batch_size, minimum=1),
        batch_timeout_ms=values["batch_timeout_ms"],
        batch_threads=v.integer(raw, "serving.batch_threads", d.batch_threads, minimum=1),
        max_queue=v.integer(raw, "serving.max_queue", d.max_queue, minimum=1),
        request_timeout_ms=v.integer(
            raw, "serving.request_timeout_ms", d.request_timeout_ms, minimum=1
        ),
        max_body_bytes=v.integer(raw, "serving.max_body_bytes", d.max_body_bytes, minimum=1),
        canary_percent=float(canary),
        poll_seconds=values["poll_seconds"],
        request_log_sample_rate=v.fraction(
            raw, "serving.request_log_sample_rate", d.request_log_sample_rate
        ),
        audit_log=v.string(raw, "serving.audit_log"),
        log_payloads=log_payloads,
    )


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

    def boolean(self, raw: Mapping[str, Any], key: str, default: bool) -> bool:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if not isinstance(value, bool):
            self.fail(key, value, "use true or false")
        return value

    def choice(
        self, raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str
    ) -> str:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if value not in choices:
            self.fail(key, value, f"use one of {', '.join(choices)}")
        return value
