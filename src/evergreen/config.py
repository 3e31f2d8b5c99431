"""The pipeline config: one TOML file, validated once at load.

Precedence for the few settings that can come from several places is, highest first:
command-line flag → environment variable (``EVERGREEN_ROOT``, ``EVERGREEN_METADATA_URL``) →
config file → default. Nothing here is read at import time.

Every error names the key, the value that came and what to write instead.
"""

from __future__ import annotations

import difflib
import importlib.util
import ipaddress
import math
import os
import re
import tomllib
import unicodedata
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, NoReturn

from evergreen.errors import ConfigError, RegistryError
from evergreen.registry import check_name as check_registry_name

FEATURE_TYPES = ("text", "categorical", "numeric", "image")
FAMILIES = ("text", "tabular", "image", "custom")
BASE_FAMILIES = ("text", "tabular", "image")
FORMATS = ("csv", "jsonl", "parquet", "tfrecord", "images")
# Label values that mean "no label" (compared case-insensitively): such rows are quarantined.
DEFAULT_MISSING_LABELS = ("", "NA", "N/A", "NaN", "null", "None")
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
# Metadata stores Evergreen supports: SQLAlchemy backend -> drivers that are installed with it
# ("" is the backend's default; plain postgresql:// is rewritten to psycopg by metadata.py).
METADATA_DIALECTS = {"sqlite": ("", "pysqlite"), "postgresql": ("", "psycopg")}
SPLIT_SUM_TOLERANCE = 1e-6
MAX_INT = 2**31 - 1  # larger counts and sizes overflow TensorFlow's int32 shapes and seeds
MAX_NAME_LENGTH = 100  # pipeline.name is a folder name in the registry
MAX_POLL_SECONDS = 86_400.0
_HOST_LABEL = re.compile(r"(?!-)[A-Za-z0-9-]{1,63}(?<!-)")
_MAX_DEPTH = 32  # no real config nests this deep; deeper data is refused before it is walked


@dataclass(frozen=True)
class DataConfig:
    """Where spans come from and what their columns mean."""

    pattern: str
    label: str
    format: str = ""  # inferred from the pattern's extension when empty
    features: dict[str, str] = field(default_factory=dict)  # column -> type; inferred when empty
    max_field_bytes: int = 1_000_000
    shard_rows: int = 100_000
    missing_labels: list[str] = field(default_factory=lambda: list(DEFAULT_MISSING_LABELS))


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
    # A span is below a presence floor only when it is more than this many binomial standard
    # errors below it: sqrt(floor * (1 - floor) / rows). 0: compare exactly.
    presence_noise_sigmas: float = 3.0
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
    sequence_length: int = 200  # text: the most ids per text (the cap on the chosen length)
    # text: at a full retrain the length is this quantile of tokens per text (0: always the cap)
    sequence_length_quantile: float = 0.99
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
    # Each epoch and each increment replays other rows of every earlier span (a moving window
    # of its replay sample, redrawn each epoch) instead of the same first rows every time
    # (full-size fine foods, 8 seeds: +0.9 AUC points each, docs/quality.md).
    replay_rotate: bool = True
    class_weights: str = "auto"  # auto: when the largest class > 10x the smallest; balanced; none
    # Featurizers that grow between full retrains (text tokens, tabular categories; append-only).
    grow_vocabulary: bool = True
    grow_min_count: int = 5  # occurrences in the new span's train split a new value needs
    grow_limit: int = 2000  # the most values added per column by one increment
    # Binary tasks: the cut on p(positive) classify uses, chosen on the validation rows.
    decision_threshold: str = "auto"  # auto, argmax, balanced_accuracy or f1 (threshold.py)
    # How an increment starts from the champion (components/schedule.py).
    incremental_schedule: str = "rewarm"  # rewarm (to the peak, cosine decay) or constant
    # rewarm: the peak learning rate, in multiples of learning_rate, or "auto" (the default):
    # 1 + min(1, 2 x the increment's new train rows / the earlier spans' train rows). A span
    # as large as the history re-warms to 2x, a 1 % span to about 1x (docs/quality.md: a
    # fixed 2 closed the drifting text stream's gap but cost tests/test_loop.py's fine foods
    # stream 1.7 accuracy points; "auto" kept both: -0.4 and within the check)
    rewarm_peak: float | str = "auto"
    shrink: float = 1.0  # shrink-and-perturb: weights x shrink (1: off; 0.8 measured worse) ...
    perturb: float = 0.0  # ... + this x N(0, 1) noise (0: off)
    # Quality debt (policy.py): once increments since the last full retrain brought this many
    # times its train rows, a full retrain is trained after the increment and replaces the
    # champion only if its loss is lower (1.0: each time the data doubles, so all full retrains
    # together cost about 2x one on all the data; 0: off).
    full_after_growth: float = 1.0
    # Scale-out (evergreen.training): none, mirrored (Keras fit on all local GPUs), multi_worker
    distribution: str = "none"  # multi_worker: run `evergreen train-worker` on every TF_CONFIG task
    mixed_precision: str = "none"  # mixed_float16 (GPUs), mixed_bfloat16: outputs stay float32
    gpu_memory_growth: bool = True  # allocate GPU memory as needed, not all of it at start


REWARM_AUTO_CAP = 2.0  # the most train.rewarm_peak = "auto" re-warms to, x learning_rate
PRIMARY_METRICS = ("auto", "accuracy", "auc", "macro_f1", "balanced_accuracy")
CLASS_WEIGHTS = ("auto", "balanced", "none")
DISTRIBUTIONS = ("none", "mirrored", "multi_worker")
MIXED_PRECISION = ("none", "mixed_float16", "mixed_bfloat16")


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
    # gRPC (TF Serving's PredictionService/ModelService, KServe V2's GRPCInferenceService);
    # 0: any free port, -1: off. Off here so that servers made in code (tests, notebooks)
    # open no fixed port unless asked; a config file and `evergreen serve` default to 8500.
    grpc_port: int = -1
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
    verify_key: str = ""  # Ed25519 public key (PEM): only versions it signed are served
    max_rows_per_request: int = 4096  # rows (instances, examples, batch axis); more: 413
    max_header_bytes: int = 16 * 1024  # request line + headers; more: 431
    read_timeout_seconds: float = 30.0  # a request's headers and body must arrive within this
    keep_alive_seconds: float = 5.0  # an idle keep-alive connection is closed after this
    max_connections: int = 1024  # open connections (or requests in flight); beyond: 503


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


# One in-process worker: with more than one, DirectRunner's FnApiRunner merges the workers'
# bundle results without their residuals, so work a splittable DoFn defers is dropped without
# an error (docs/beam.md, "One worker by default"); 1,000,000-row ingests with 2 worker
# processes lost rows in 3 of 4 runs on a loaded 2-core machine.
DEFAULT_BEAM_ARGS = (
    "--runner=DirectRunner",
    "--direct_num_workers=1",
    "--direct_running_mode=in_memory",
)


@dataclass(frozen=True)
class BeamConfig:
    """Data stages on Apache Beam ([beam] in the file; absent: the embedded path, the default).

    ``pipeline_args`` go to Beam's ``PipelineOptions`` unchanged, so any runner works by its
    options (``--runner=FlinkRunner --flink_master=...``, ``--runner=DataflowRunner
    --project=... --region=... --temp_location=gs://...``).
    """

    pipeline_args: list[str] = field(default_factory=lambda: list(DEFAULT_BEAM_ARGS))


@dataclass(frozen=True)
class EvaluateConfig:
    """Sliced evaluation ([evaluate] in the file): metrics per value of chosen columns.

    ``slices`` names feature columns; the candidate and the champion are measured on each of
    their values (new eval rows and the historic holdout). With ``guard_slices`` the guard also
    holds on every slice of at least ``min_slice_rows`` rows (smaller ones are reported,
    flagged ``small``, and not judged).
    """

    slices: tuple[str, ...] = ()
    guard_slices: bool = False
    min_slice_rows: int = 50
    max_slice_values: int = 20  # the most frequent values of a column are sliced; the rest pooled


@dataclass(frozen=True)
class TrackingConfig:
    """Experiment tracking: ``[tensorboard]`` and ``[mlflow]`` in the file.

    TensorBoard scalars go to ``<root>/tensorboard/<name>/`` unless ``tensorboard = false``.
    MLflow is off until ``mlflow_tracking_uri`` is set (``[mlflow] tracking_uri``); its
    failures are warnings, never a failed run.
    """

    tensorboard: bool = True
    mlflow_tracking_uri: str = ""
    mlflow_experiment: str = ""  # empty: the pipeline's name
    mlflow_registered_model: str = ""  # empty: the pipeline's name


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
    beam: BeamConfig | None = None  # None: data stages run embedded
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    base_dir: Path = Path(".")  # the config file's folder; relative paths resolve against it

    @property
    def artifacts_dir(self) -> Path:
        return self.root / "artifacts"

    @property
    def registry_dir(self) -> Path:
        return self.root / "registry"

    def resolve(self, path: str) -> Path:
        return _resolve(self.base_dir, path)

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
            **({"beam": asdict(self.beam)} if self.beam is not None else {}),
            "evaluate": {**asdict(self.evaluate), "slices": list(self.evaluate.slices)},
            "tensorboard": {"enabled": self.tracking.tensorboard},
            "mlflow": {
                "tracking_uri": self.tracking.mlflow_tracking_uri,
                "experiment": self.tracking.mlflow_experiment,
                "registered_model": self.tracking.mlflow_registered_model,
            },
        }


# The tables a config file may hold (``[tensorboard]`` and ``[mlflow]`` fill ``tracking``).
SECTIONS = (
    "pipeline",
    "data",
    "split",
    "dedupe",
    "validation",
    "train",
    "drift",
    "serving",
    "watch",
    "beam",
    "evaluate",
    "tensorboard",
    "mlflow",
)


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
    raw = _read_toml(path)
    return from_dict(
        raw, base_dir=path.resolve().parent, root=root, metadata_url=metadata_url, source=str(path)
    )


def _read_toml(path: Path) -> dict[str, Any]:
    """The parsed file; every way a file can fail to be a TOML config is a ConfigError."""
    if _is_dir(path):
        raise ConfigError(f"config path {path} is a folder; give the TOML file inside it")
    if not _is_file(path):
        raise ConfigError(
            f"config file {path} does not exist; create one with `evergreen init NAME`"
        )
    try:
        data = path.read_bytes()
    except OSError as e:
        raise ConfigError(f"cannot read config file {path}: {e.strerror}") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as e:
        line = data[: e.start].count(b"\n") + 1
        raise ConfigError(
            f"{path} is not UTF-8 text: byte {e.start} (line {line}) is {data[e.start : e.start + 1]!r}; "
            "save the file as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise ConfigError(f"{path} is not valid TOML: {e}") from None
    except RecursionError:  # tomllib recurses once per nested array or inline table
        raise ConfigError(
            f"{path} nests arrays or tables too deeply to parse; no Evergreen key needs more "
            f"than {_MAX_DEPTH} levels"
        ) from None


def from_dict(
    raw: Mapping[str, Any],
    *,
    base_dir: Path = Path("."),
    root: str | None = None,
    metadata_url: str | None = None,
    source: str = "config",
) -> Config:
    """Validate TOML-shaped data into a :class:`Config` (see :func:`load`).

    Raises:
        ConfigError: the first wrong key or value, named with the value and the fix.
    """
    v = _Validator(source)
    _check_plain(v, raw, "")
    v.known_keys("", raw, SECTIONS)
    pipeline = _pipeline(v, v.table(raw, "pipeline"), base_dir, root, metadata_url)
    data = _data(v, v.table(raw, "data", required=True))
    return Config(
        **pipeline,
        data=data,
        split=_split(v, v.table(raw, "split"), data),
        dedupe=_dedupe(v, v.table(raw, "dedupe")),
        validation=_validation(v, v.table(raw, "validation"), base_dir),
        train=_train(v, v.table(raw, "train"), data),
        drift=_drift(v, v.table(raw, "drift")),
        serving=serving_from_dict(v.table(raw, "serving"), source=source, base_dir=base_dir),
        watch=_watch(v, v.table(raw, "watch")),
        beam=_beam(v, raw),
        evaluate=_evaluate(v, v.table(raw, "evaluate"), data),
        tracking=_tracking(v, v.table(raw, "tensorboard"), v.table(raw, "mlflow")),
        base_dir=base_dir,
    )


def _pipeline(
    v: _Validator,
    pipeline: Mapping[str, Any],
    base_dir: Path,
    root: str | None,
    metadata_url: str | None,
) -> dict[str, Any]:
    """``[pipeline]``: ``name``, ``root`` and ``metadata_url``, flags and environment applied."""
    v.known_keys("pipeline", pipeline, ("name", "root", "metadata_url"))
    name = _pipeline_name(v, v.string(pipeline, "pipeline.name", required=True))
    root_path, root_key, root_value = _root(v, pipeline, base_dir, root)
    _check_location(v, root_key, root_value, root_path)
    url_key = "--metadata-url" if metadata_url else "pipeline.metadata_url"
    if not metadata_url and os.environ.get("EVERGREEN_METADATA_URL"):
        url_key = "pipeline.metadata_url (from EVERGREEN_METADATA_URL)"
    url = (
        metadata_url
        or os.environ.get("EVERGREEN_METADATA_URL")
        or v.string(pipeline, "pipeline.metadata_url")
        or f"sqlite:///{root_path / 'metadata.db'}"
    )
    _check_metadata_url(v, url_key, url)
    return {"name": name, "root": root_path, "metadata_url": url}


def _dedupe(v: _Validator, raw: Mapping[str, Any]) -> DedupeConfig:
    v.known_keys("dedupe", raw, ("label_conflicts",))
    return DedupeConfig(
        label_conflicts=v.choice(raw, "dedupe.label_conflicts", CONFLICT_POLICIES, "quarantine")
    )


MLFLOW_URI_SCHEMES = ("file", "sqlite", "http", "https", "postgresql", "mysql", "databricks")


def _tracking(
    v: _Validator, tensorboard: Mapping[str, Any], mlflow: Mapping[str, Any]
) -> TrackingConfig:
    """``[tensorboard]`` and ``[mlflow]``: checked here so a typo fails at load, not mid-run."""
    v.known_keys("tensorboard", tensorboard, ("enabled",))
    v.known_keys("mlflow", mlflow, ("tracking_uri", "experiment", "registered_model"))
    uri = v.string(mlflow, "mlflow.tracking_uri")
    scheme = uri.split(":", 1)[0].split("+", 1)[0] if ":" in uri else ""
    if uri and scheme not in MLFLOW_URI_SCHEMES:
        v.fail(
            "mlflow.tracking_uri",
            uri,
            f"use a URI starting with one of {', '.join(s + ':' for s in MLFLOW_URI_SCHEMES)} "
            "(e.g. sqlite:///mlflow.db or http://mlflow:5000)",
        )
    if uri and importlib.util.find_spec("mlflow") is None:  # a lookup, not an import
        v.fail(
            "mlflow.tracking_uri",
            uri,
            "MLflow is not installed: `pip install evergreen[mlflow]`, or remove [mlflow]",
        )
    model = v.string(mlflow, "mlflow.registered_model")
    if model and (model.strip() != model or "/" in model or ":" in model):
        v.fail("mlflow.registered_model", model, "use a name without '/', ':' or edge spaces")
    if (mlflow.get("experiment") or model) and not uri:
        raise ConfigError(
            f"{v.source}: [mlflow] sets experiment or registered_model but no tracking_uri; "
            'add tracking_uri = "sqlite:///mlflow.db" (or your server\'s URL)'
        )
    return TrackingConfig(
        tensorboard=v.boolean(tensorboard, "tensorboard.enabled", True),
        mlflow_tracking_uri=uri,
        mlflow_experiment=v.string(mlflow, "mlflow.experiment"),
        mlflow_registered_model=model,
    )


def _check_plain(v: _Validator, value: Any, key: str, depth: int = 0) -> None:
    """Refuse nan and inf anywhere, NUL in strings, and nesting deeper than any key needs.

    One walk over the raw data, before any section is read, so that no later check (``x <= 0``
    is False for nan) can let a non-finite number through to training or serving.
    """
    if depth > _MAX_DEPTH:
        shown = key if len(key) <= 60 else key[:60] + "..."
        raise ConfigError(
            f"{v.source}: {shown} nests more than {_MAX_DEPTH} levels of arrays or tables; "
            "no Evergreen key needs that, remove the nesting"
        )
    if isinstance(value, float) and not math.isfinite(value):
        v.fail(key, value, "use a finite number; nan and inf are not allowed")
    elif isinstance(value, str) and "\x00" in value:  # no path, name or column can hold one
        v.fail(key, value, "remove the NUL character (\\u0000)")
    elif isinstance(value, Mapping):
        for k, item in value.items():
            _check_plain(v, item, f"{key}.{k}" if key else str(k), depth + 1)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_plain(v, item, f"{key}[{i}]", depth + 1)


def _pipeline_name(v: _Validator, name: str) -> str:
    """``pipeline.name`` names the model in the registry: the registry's own rule applies."""
    try:
        check_registry_name(name, "model")
    except RegistryError as e:
        v.fail("pipeline.name", name, f"it becomes the registry's model name, and {e}")
    if len(name) > MAX_NAME_LENGTH:
        v.fail("pipeline.name", name, f"use at most {MAX_NAME_LENGTH} characters")
    return name


def safe_name(text: str) -> str:
    """``text`` made into a valid ``pipeline.name`` (for ``evergreen init``'s folder name).

    Accents are dropped (``café`` → ``cafe``), other characters the registry refuses become
    ``-``, leading punctuation goes.
    """
    ascii_text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode()
    name = re.sub(r"[^A-Za-z0-9_.-]", "-", ascii_text).lstrip("-_.")[:MAX_NAME_LENGTH]
    name = name or "pipeline"
    check_registry_name(name, "model")  # the registry's rule is the one that counts
    return name


def _root(
    v: _Validator, pipeline: Mapping[str, Any], base_dir: Path, flag: str | None
) -> tuple[Path, str, str]:
    """The root folder (flag → env → file → default), the key to name in an error, the value."""
    if flag:
        value, key = flag, "--root"
    elif os.environ.get("EVERGREEN_ROOT"):
        value, key = os.environ["EVERGREEN_ROOT"], "pipeline.root (from EVERGREEN_ROOT)"
    else:
        value, key = v.string(pipeline, "pipeline.root") or ".evergreen", "pipeline.root"
    path = Path(value).expanduser()
    return (path if path.is_absolute() else base_dir / path), key, value


def _check_location(v: _Validator, key: str, value: str, path: Path) -> None:
    """``path`` is a folder Evergreen creates on demand (parents too): it must be creatable.

    Raises:
        ConfigError: ``path`` or one of its parents is a file, or the nearest existing folder
            is not writable, or the path cannot be looked at (too long, no permission).
    """
    _check_name_lengths(v, key, value, path)
    try:
        existing = path
        while not existing.exists() and existing.parent != existing:
            existing = existing.parent
        if not existing.is_dir():
            v.fail(key, value, f"{existing} is a file, not a folder; choose a path under a folder")
        if not os.access(existing, os.W_OK | os.X_OK):
            v.fail(key, value, f"{existing} is not writable; choose a folder you can write to")
    except OSError as e:
        v.fail(key, value, f"the path cannot be used ({e.strerror}); choose another one")


def _check_name_lengths(v: _Validator, key: str, value: str, path: Path) -> None:
    """No folder or file name in ``path`` is longer than the file system allows (255 bytes)."""
    for part in path.parts:
        if len(os.fsencode(part)) > 255:
            v.fail(key, value, "a folder or file name in it is over 255 bytes; shorten it")


def _check_metadata_url(v: _Validator, key: str, url: str) -> None:
    """A URL SQLAlchemy parses, for a supported backend and driver; a SQLite file's folder."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    examples = "use sqlite:///PATH or postgresql://USER@HOST/DB"
    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError) as e:
        v.fail(key, url, f"it is not a database URL ({e}); {examples}")
    backend, _, driver = parsed.drivername.partition("+")
    if parsed.drivername == "postgres":  # metadata.normalize_url rewrites postgres:// as well
        backend = "postgresql"
    if backend not in METADATA_DIALECTS:
        v.fail(key, url, f"{backend!r} is not a supported database; {examples}")
    if driver not in METADATA_DIALECTS[backend]:
        drivers = ", ".join(f"{backend}+{d}" for d in METADATA_DIALECTS[backend] if d)
        v.fail(key, url, f"the driver {driver!r} is not installed; use {backend}:// or {drivers}")
    database = parsed.database or ""
    if backend == "sqlite" and database and database != ":memory:":
        if _is_dir(Path(database)):
            v.fail(key, url, f"{database} is a folder; name the database file inside it")
        _check_location(v, key, url, Path(database).parent)


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
    missing_labels = raw.get("missing_labels", list(DEFAULT_MISSING_LABELS))
    if not isinstance(missing_labels, list) or not all(isinstance(m, str) for m in missing_labels):
        v.fail("data.missing_labels", missing_labels, 'use a list of strings, e.g. ["NA", "null"]')
    return DataConfig(
        pattern=pattern,
        label=label,
        format=fmt,
        features=dict(features),
        max_field_bytes=max_field,
        shard_rows=shard_rows,
        missing_labels=list(missing_labels),
    )


def _split(v: _Validator, raw: Mapping[str, Any], data: DataConfig) -> SplitConfig:
    v.known_keys("split", raw, ("ratios", "key"))
    example = "e.g. {train = 0.8, eval = 0.2}"
    ratios = dict(v.table(raw, "split.ratios")) if "ratios" in raw else {"train": 0.8, "eval": 0.2}
    if "train" not in ratios or "eval" not in ratios:
        v.fail("split.ratios", ratios, f"name at least a 'train' and an 'eval' split, {example}")
    for name in ratios:
        v.positive(ratios, f"split.ratios.{name}", 1.0, leaf=name)
    total = sum(ratios.values())
    if abs(total - 1.0) > SPLIT_SUM_TOLERANCE:
        v.fail(
            "split.ratios",
            ratios,
            f"the fractions sum to {total:g}, not 1; give each split its share of the rows, {example}",
        )
    key = v.string(raw, "split.key")
    if key == data.label:
        v.fail(
            "split.key",
            key,
            "splitting by the label would put each class in one split; use an id column or leave it empty",
        )
    return SplitConfig(ratios={k: float(r) / total for k, r in ratios.items()}, key=key)


def check_columns(config: Config, columns: list[str], where: str) -> None:
    """The columns the config names exist in a span's files (called when a span is read).

    ``split.key`` may name a column that is not a feature (an id), so only the data can tell
    whether it exists: without it every row would hash the same empty key and land in one split.

    Args:
        config: the loaded config.
        columns: the columns of the span's first file.
        where: the span and file, for the message, e.g. ``"span 1 (data/span-1/a.csv)"``.

    Raises:
        ConfigError: ``split.key`` is set and is not one of ``columns``.
    """
    key = config.split.key
    if key and key not in columns:
        close = difflib.get_close_matches(key, columns, n=1)
        hint = f"did you mean {close[0]!r}? " if close else ""
        raise ConfigError(
            f"split.key = {key!r} is not a column of {where}; {hint}use one of "
            f"{', '.join(columns)}, or leave split.key empty to split by the row's content"
        )


def _beam(v: _Validator, raw: Mapping[str, Any]) -> BeamConfig | None:
    """The [beam] section, or None when the file has none (the embedded path)."""
    if "beam" not in raw:
        return None
    section = v.table(raw, "beam")
    v.known_keys("beam", section, tuple(f.name for f in fields(BeamConfig)))
    args = section.get("pipeline_args", list(DEFAULT_BEAM_ARGS))
    if not isinstance(args, list) or not all(isinstance(a, str) and a for a in args):
        v.fail(
            "beam.pipeline_args",
            args,
            'use a list of Beam pipeline options, e.g. ["--runner=DirectRunner", '
            '"--direct_num_workers=2"]',
        )
    return BeamConfig(pipeline_args=list(args))


def _evaluate(v: _Validator, raw: Mapping[str, Any], data: DataConfig) -> EvaluateConfig:
    v.known_keys("evaluate", raw, tuple(f.name for f in fields(EvaluateConfig)))
    slices = raw.get("slices", [])
    if not isinstance(slices, list) or not all(isinstance(c, str) and c for c in slices):
        v.fail("evaluate.slices", slices, 'use a list of column names, e.g. ["country"]')
    if len(set(slices)) != len(slices):
        v.fail("evaluate.slices", slices, "name each column once")
    for column in slices:
        if column == data.label:
            v.fail("evaluate.slices", slices, f"{column!r} is the label; slice by a feature")
        if data.features and column not in data.features:
            v.fail(
                "evaluate.slices", column, f"use a column of data.features: {list(data.features)}"
            )
    return EvaluateConfig(
        slices=tuple(slices),
        guard_slices=v.boolean(raw, "evaluate.guard_slices", False),
        min_slice_rows=v.integer(raw, "evaluate.min_slice_rows", 50, minimum=1),
        max_slice_values=v.integer(raw, "evaluate.max_slice_values", 20, minimum=1),
    )


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
    if seconds["poll_seconds"] > MAX_POLL_SECONDS:  # Event.wait overflows on absurd values
        v.fail(
            "watch.poll_seconds",
            seconds["poll_seconds"],
            f"use at most {MAX_POLL_SECONDS:g} (a day)",
        )
    port = _port(v, raw, "watch.metrics_port", 9464)
    return WatchConfig(
        min_rows=v.integer(raw, "watch.min_rows", 1, minimum=1),
        metrics_host=_host(
            v, v.string(raw, "watch.metrics_host") or "127.0.0.1", "watch.metrics_host"
        ),
        metrics_port=port,
        **seconds,
    )


def _validation(v: _Validator, raw: Mapping[str, Any], base_dir: Path) -> ValidationConfig:
    allowed = tuple(f.name for f in fields(ValidationConfig))
    v.known_keys("validation", raw, allowed)
    min_presence = v.fraction(raw, "validation.min_presence", 0.9)
    sigmas = v.number(raw, "validation.presence_noise_sigmas", 3.0, minimum=0.0)
    max_type = v.fraction(raw, "validation.max_type_error_fraction", 0.05)
    severity = dict(DEFAULT_SEVERITY)
    given = v.table(raw, "validation.severity") if "severity" in raw else {}
    v.known_keys("validation.severity", given, ANOMALY_KINDS)
    for kind, level in given.items():
        if level not in SEVERITIES:
            v.fail(f"validation.severity.{kind}", level, f"use one of {', '.join(SEVERITIES)}")
        severity[kind] = level
    schema_file = v.string(raw, "validation.schema_file")
    if schema_file and not _is_file(_resolve(base_dir, schema_file)):
        v.fail(
            "validation.schema_file",
            schema_file,
            f"no such file ({_resolve(base_dir, schema_file)}); copy an inferred schema.json there and edit it",
        )
    return ValidationConfig(
        min_presence=min_presence,
        presence_noise_sigmas=sigmas,
        max_type_error_fraction=max_type,
        severity=severity,
        schema_file=schema_file,
    )


def _resolve(base_dir: Path, path: str) -> Path:
    """A path from the config: relative ones are relative to the config file's folder."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base_dir / p


_ZERO_OK = ("full_every", "freeze_lower_layers", "seed", "replay_rows", "patience", "min_eval_rows")


def _train(v: _Validator, raw: Mapping[str, Any], data: DataConfig) -> TrainConfig:
    values = _train_values(v, raw)
    _check_train_model(v, values, data)
    _check_train_policy(v, values)
    train = TrainConfig(**values)
    _family_constraints(v, train)
    return train


def _rewarm_peak(v: _Validator, raw: Mapping[str, Any], default: float | str) -> float | str:
    """``train.rewarm_peak``: ``"auto"`` or a positive multiple of ``learning_rate``."""
    if raw.get("rewarm_peak") == "auto" or ("rewarm_peak" not in raw and default == "auto"):
        return "auto"
    if isinstance(raw.get("rewarm_peak"), str):
        v.fail("train.rewarm_peak", raw["rewarm_peak"], 'use "auto" or a number > 0, e.g. 1.0')
    return v.positive(raw, "train.rewarm_peak", default)


def _train_values(v: _Validator, raw: Mapping[str, Any]) -> dict[str, Any]:
    """Every ``[train]`` key read with the check its default's type and name call for."""
    defaults = TrainConfig()
    allowed = tuple(f.name for f in fields(TrainConfig))
    v.known_keys("train", raw, allowed)
    values: dict[str, Any] = {}
    for name in allowed:
        default = getattr(defaults, name)
        key = f"train.{name}"
        if name == "rewarm_peak":  # "auto" or a number, whichever the default is
            values[name] = _rewarm_peak(v, raw, default)
        elif isinstance(default, dict):
            values[name] = dict(v.table(raw, key)) if name in raw else {}
        elif isinstance(default, bool):
            values[name] = v.boolean(raw, key, default)
        elif isinstance(default, str):
            values[name] = v.string(raw, key) or default
        elif isinstance(default, int):
            values[name] = v.integer(raw, key, default, minimum=0 if name in _ZERO_OK else 1)
        elif (
            name.startswith("max_")
            or name in ("guard_confidence", "sequence_length_quantile")
            or name.endswith("_rate")
            and "learning" not in name
        ):
            values[name] = v.fraction(raw, key, default)
        elif name in ("shrink", "perturb", "full_after_growth"):
            values[name] = v.number(raw, key, default, 0.0)
        elif name == "min_delta":
            value = raw.get(name, default)
            if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
                v.fail(key, value, "use a number ≥ 0 (a val_loss difference)")
            values[name] = float(value)
        else:
            values[name] = v.positive(raw, key, default)
    return values


def _check_train_model(v: _Validator, values: Mapping[str, Any], data: DataConfig) -> None:
    """The family, its module, the learning rates, the guard's confidence, the inputs."""
    if values["family"] not in FAMILIES:
        v.fail("train.family", values["family"], f"use one of {', '.join(FAMILIES)}")
    if values["base_family"] not in ("", *BASE_FAMILIES):
        v.fail("train.base_family", values["base_family"], f"use one of {', '.join(BASE_FAMILIES)}")
    if values["family"] == "custom" and not values["module"]:
        raise ConfigError(
            f"{v.source}: train.family = 'custom' needs train.module = 'path/to/module.py' (a file defining build_model(schema, hparams))"
        )
    for name in ("learning_rate", "incremental_learning_rate"):
        if values[name] > 1:  # Adam diverges to NaN weights long before that
            v.fail(f"train.{name}", values[name], "use a rate of at most 1, e.g. 0.001")
    peak = values["rewarm_peak"]  # "auto" keeps its rate at most 1 itself (rewarm_multiple)
    if peak != "auto" and peak * values["learning_rate"] > 1:
        v.fail(
            "train.rewarm_peak",
            values["rewarm_peak"],
            f"the peak rate {peak * values['learning_rate']:g} "
            "(x train.learning_rate) must be at most 1",
        )
    confidence = values["guard_confidence"]
    if confidence >= 1 or 0 < confidence < 0.5:  # z = inv_cdf(confidence): inf at 1, < 0 below 0.5
        v.fail(
            "train.guard_confidence",
            confidence,
            "use 0 (compare exactly) or a confidence from 0.5 up to, not including, 1, e.g. 0.95",
        )
    if values["image_channels"] not in (1, 3):
        v.fail("train.image_channels", values["image_channels"], "use 1 (grayscale) or 3 (RGB)")
    text_feature = values["text_feature"]
    if text_feature and data.features and data.features.get(text_feature) != "text":
        texts = [c for c, t in data.features.items() if t == "text"] or "none"
        v.fail("train.text_feature", text_feature, f"name a text column of data.features: {texts}")


def _check_train_policy(v: _Validator, values: Mapping[str, Any]) -> None:
    """The guard's metric, class weights, the increment's start, the threshold, scale-out."""
    from evergreen.components.threshold import OBJECTIVES

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
    if not 0 < values["shrink"] <= 1:
        v.fail("train.shrink", values["shrink"], "use a factor above 0, at most 1 (1: off)")
    if values["incremental_schedule"] not in ("rewarm", "constant"):
        v.fail(
            "train.incremental_schedule",
            values["incremental_schedule"],
            "use rewarm or constant",
        )
    if values["decision_threshold"] not in OBJECTIVES:
        v.fail(
            "train.decision_threshold",
            values["decision_threshold"],
            f"use one of {', '.join(OBJECTIVES)}",
        )
    _scale_out(v, values)


def _scale_out(v: _Validator, values: Mapping[str, Any]) -> None:
    """``train.distribution`` and ``train.mixed_precision`` are one of their known settings."""
    for key, choices in (("distribution", DISTRIBUTIONS), ("mixed_precision", MIXED_PRECISION)):
        if values[key] not in choices:
            v.fail(f"train.{key}", values[key], f"use one of {', '.join(choices)}")


def _family_constraints(v: _Validator, train: TrainConfig) -> None:
    """What the chosen model family needs of ``[train]`` (e.g. texts at least a kernel long)."""
    from evergreen.models.registry import config_problem

    problem = config_problem(train)
    if problem is not None:
        key, value, fix = problem
        v.fail(key, value, fix)


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
        overrides = v.table(table, section, leaf=feature)
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
            out[level] = v.number(value, f"{key}.{level}", 0.0, minimum=0.0)
    if "major" not in value:  # a raised minor lifts the default major with it
        out["major"] = max(out["major"], out["minor"])
    if out["major"] < out["minor"]:
        v.fail(key, dict(value), f"major ({out['major']}) must be at least minor ({out['minor']})")
    return out


def serving_from_dict(
    raw: Mapping[str, Any], *, source: str = "config", base_dir: Path | None = None
) -> ServingConfig:
    """Validate a ``[serving]`` table (also used for ``evergreen serve --registry`` flags).

    Args:
        raw: the table, or the command line's serving flags.
        source: the file or command, for messages.
        base_dir: what relative TLS file paths are relative to (default: the working folder).

    Raises:
        ConfigError: a key is unknown or a value is out of range; the TLS files are missing or
            are not a PEM certificate and its key. The message names the key.
    """
    v = _Validator(source)
    _check_plain(v, raw, "serving")
    v.known_keys("serving", raw, tuple(f.name for f in fields(ServingConfig)))
    d = ServingConfig()
    host = _host(v, v.string(raw, "serving.host") or d.host)
    api_key_env = raw.get("api_key_env", d.api_key_env)
    if not isinstance(api_key_env, str):
        v.fail("serving.api_key_env", api_key_env, "use the quoted name of an environment variable")
    tls_cert, tls_key, audit_log = _serving_files(v, raw, base_dir or Path.cwd())
    port = _port(v, raw, "serving.port", d.port)
    grpc_port = _grpc_port(v, raw, port)
    canary = raw.get("canary_percent", d.canary_percent)
    if not _is_number(canary) or not 0 <= canary <= 100:
        v.fail("serving.canary_percent", canary, "use a percentage between 0 and 100, e.g. 10")
    timeouts = _serving_timeouts(v, raw, d)
    log_payloads = v.boolean(raw, "serving.log_payloads", d.log_payloads)
    return ServingConfig(
        host=host,
        port=port,
        grpc_port=grpc_port,
        api_key_env=api_key_env,
        tls_cert=tls_cert,
        tls_key=tls_key,
        canary_percent=float(canary),
        audit_log=audit_log,
        log_payloads=log_payloads,
        **timeouts,
        **_serving_limits(v, raw, d),
    )


def _serving_timeouts(v: _Validator, raw: Mapping[str, Any], d: ServingConfig) -> dict[str, Any]:
    """The batch wait, the polling and connection timeouts, and the request timeout."""
    values: dict[str, Any] = {}
    for key, minimum in (
        ("batch_timeout_ms", 0.0),
        ("poll_seconds", 0.05),
        ("read_timeout_seconds", 0.05),
        ("keep_alive_seconds", 0.05),
    ):
        values[key] = v.number(raw, f"serving.{key}", getattr(d, key), minimum=minimum)
    for key in ("poll_seconds", "read_timeout_seconds", "keep_alive_seconds"):
        if values[key] > MAX_POLL_SECONDS:  # asyncio's timers overflow on absurd values
            v.fail(f"serving.{key}", values[key], f"use at most {MAX_POLL_SECONDS:g} (a day)")
    request_timeout = v.integer(raw, "serving.request_timeout_ms", d.request_timeout_ms, minimum=1)
    if values["batch_timeout_ms"] >= request_timeout:
        v.fail(
            "serving.batch_timeout_ms",
            values["batch_timeout_ms"],
            f"use less than serving.request_timeout_ms ({request_timeout}): a request would time out waiting for its batch",
        )
    values["request_timeout_ms"] = request_timeout
    return values


def _serving_limits(v: _Validator, raw: Mapping[str, Any], d: ServingConfig) -> dict[str, Any]:
    """Batch sizes, queue and request limits, the request log's sample rate, the verify key."""
    return {
        "max_batch_size": v.integer(raw, "serving.max_batch_size", d.max_batch_size, minimum=1),
        "batch_threads": v.integer(raw, "serving.batch_threads", d.batch_threads, minimum=1),
        "max_queue": v.integer(raw, "serving.max_queue", d.max_queue, minimum=1),
        "max_body_bytes": v.integer(raw, "serving.max_body_bytes", d.max_body_bytes, minimum=1),
        "request_log_sample_rate": v.fraction(
            raw, "serving.request_log_sample_rate", d.request_log_sample_rate
        ),
        "verify_key": v.string(raw, "serving.verify_key"),
        "max_rows_per_request": v.integer(
            raw, "serving.max_rows_per_request", d.max_rows_per_request, minimum=1
        ),
        "max_header_bytes": v.integer(
            raw, "serving.max_header_bytes", d.max_header_bytes, minimum=1024
        ),
        "max_connections": v.integer(raw, "serving.max_connections", d.max_connections, minimum=1),
    }


def _port(v: _Validator, raw: Mapping[str, Any], key: str, default: int) -> int:
    """A TCP port to listen on; 0 lets the system pick a free one."""
    port = v.integer(raw, key, default, minimum=0)
    if port > 65535:
        v.fail(key, port, "use a port number from 0 to 65535 (0: any free port)")
    return port


DEFAULT_GRPC_PORT = 8500  # TF Serving's gRPC port


def _grpc_port(v: _Validator, raw: Mapping[str, Any], rest_port: int) -> int:
    """``serving.grpc_port``: 8500 unless set; -1 turns gRPC off, 0 picks any free port."""
    grpc_port = v.integer(raw, "serving.grpc_port", DEFAULT_GRPC_PORT, minimum=-1)
    if grpc_port > 65535:
        v.fail(
            "serving.grpc_port",
            grpc_port,
            "use a port number from 0 to 65535 (0: any free port, -1: no gRPC server)",
        )
    if grpc_port == rest_port and grpc_port > 0:
        v.fail(
            "serving.grpc_port",
            grpc_port,
            "it is serving.port too; give gRPC its own port (TF Serving: 8500, REST 8501)",
        )
    return grpc_port


def _serving_files(v: _Validator, raw: Mapping[str, Any], base_dir: Path) -> tuple[str, str, str]:
    """``tls_cert``, ``tls_key`` and ``audit_log`` as given, checked against the file system."""
    tls_cert, tls_key = v.string(raw, "serving.tls_cert"), v.string(raw, "serving.tls_key")
    if bool(tls_cert) != bool(tls_key):
        v.fail(
            "serving.tls_cert" if tls_key else "serving.tls_key",
            "",
            "set both tls_cert and tls_key (PEM files) for HTTPS, or neither for plain HTTP",
        )
    if tls_cert:
        _check_tls(v, tls_cert, tls_key, base_dir)
    audit_log = v.string(raw, "serving.audit_log")
    if audit_log:
        _check_name_lengths(v, "serving.audit_log", audit_log, _resolve(base_dir, audit_log))
        if _is_dir(_resolve(base_dir, audit_log)):
            v.fail(
                "serving.audit_log", audit_log, "it is a folder; name a file, e.g. 'audit.jsonl'"
            )
        _check_location(v, "serving.audit_log", audit_log, _resolve(base_dir, audit_log).parent)
    return tls_cert, tls_key, audit_log


def _host(v: _Validator, host: str, key: str = "serving.host") -> str:
    """An IP address or a syntactically valid host name (no lookup: that happens at bind)."""
    try:
        ipaddress.ip_address(host.strip("[]"))
        return host
    except ValueError:
        pass
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        v.fail(
            key,
            host,
            "use an IP address or a host name of letters, digits, '-' and '.', e.g. 127.0.0.1 or 0.0.0.0",
        )
    return host


def _is_file(path: Path) -> bool:
    """``path.is_file()``, False where the path cannot even be looked at (too long, no access)."""
    try:
        return path.is_file()
    except OSError:
        return False


def _is_dir(path: Path) -> bool:
    try:
        return path.is_dir()
    except OSError:
        return False


def _check_tls(v: _Validator, cert: str, key: str, base_dir: Path) -> None:
    """The certificate and key exist, hold PEM blocks, and load together as a TLS server's.

    Checked at load so that ``evergreen serve`` fails before it binds, naming the file.
    """
    import ssl

    paths = {}
    for name, value, marker, what in (
        ("serving.tls_cert", cert, b"-----BEGIN CERTIFICATE-----", "a PEM certificate"),
        ("serving.tls_key", key, b"PRIVATE KEY-----", "a PEM private key"),
    ):
        path = _resolve(base_dir, value)
        if not _is_file(path):
            v.fail(name, value, f"no such file ({path}); give {what}")
        try:
            content = path.read_bytes()
        except OSError as e:
            v.fail(name, value, f"cannot read {path} ({e.strerror})")
        if marker not in content:
            v.fail(name, value, f"{path} is not {what} (no {marker.decode()} block)")
        paths[name] = path
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    try:
        # No passphrase prompt at load: an encrypted key fails here instead of blocking serve.
        context.load_cert_chain(paths["serving.tls_cert"], paths["serving.tls_key"], password=b"")
    except ssl.SSLError as e:
        v.fail(
            "serving.tls_key",
            key,
            f"{paths['serving.tls_key']} does not load with {paths['serving.tls_cert']} "
            f"({e.reason or e}); give the unencrypted private key of that certificate",
        )


def _is_number(value: Any) -> bool:
    """An int or a finite float (TOML booleans are ints in Python; they are not numbers here)."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


class _Validator:
    """Small helpers that turn a wrong value into one clear ConfigError."""

    def __init__(self, source: str) -> None:
        self.source = source

    def fail(self, key: str, value: Any, fix: str) -> NoReturn:
        shown = repr(value)
        if len(shown) > 80:  # one readable line, even for a 100 KB string
            shown = shown[:60] + f"... ({len(shown)} characters)"
        raise ConfigError(f"{self.source}: {key} = {shown} is not valid: {fix}")

    def known_keys(self, section: str, raw: Mapping[str, Any], allowed: tuple[str, ...]) -> None:
        for key in raw:
            if key not in allowed:
                where = f"{section}.{key}" if section else key
                close = difflib.get_close_matches(key, allowed, n=1)
                hint = (
                    f"did you mean '{close[0]}'?" if close else f"known keys: {', '.join(allowed)}"
                )
                raise ConfigError(f"{self.source}: unknown key '{where}'; {hint}")

    def table(
        self, raw: Mapping[str, Any], key: str, required: bool = False, leaf: str | None = None
    ) -> Mapping[str, Any]:
        leaf = key.rsplit(".", 1)[-1] if leaf is None else leaf
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
        if value > MAX_INT:
            self.fail(key, value, f"use a whole number from {minimum} to {MAX_INT}")
        return value

    def number(self, raw: Mapping[str, Any], key: str, default: float, minimum: float) -> float:
        """A finite number ≥ ``minimum``."""
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if not _is_number(value) or value < minimum:
            self.fail(key, value, f"use a number ≥ {minimum:g}")
        return float(value)

    def positive(
        self, raw: Mapping[str, Any], key: str, default: float, leaf: str | None = None
    ) -> float:
        """A finite number > 0 (``leaf``: the key in ``raw`` when it holds a dot itself)."""
        value = raw.get(key.rsplit(".", 1)[-1] if leaf is None else leaf, default)
        if not _is_number(value) or value <= 0:
            self.fail(key, value, "use a positive number")
        return float(value)

    def fraction(self, raw: Mapping[str, Any], key: str, default: float) -> float:
        value = raw.get(key.rsplit(".", 1)[-1], default)
        if not _is_number(value) or not 0 <= value <= 1:
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
