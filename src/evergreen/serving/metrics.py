"""Prometheus metrics of one server, in its own ``CollectorRegistry`` (two apps never share)."""

from __future__ import annotations

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

__all__ = ["CONTENT_TYPE_LATEST", "ServingMetrics"]

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)


# Every metric the server exports: (attribute, type, name, help, labels, histogram buckets).
_METRICS: tuple[tuple[str, type, str, str, tuple[str, ...], tuple[float, ...] | None], ...] = (
    (
        "requests",
        Counter,
        "evergreen_requests",
        "Requests answered, by model, version, API (v1, v2, grpc_v1, grpc_v2) and status "
        "(HTTP code; gRPC status name such as OK or NOT_FOUND).",
        ("model", "version", "api", "status"),
        None,
    ),
    (
        "latency",
        Histogram,
        "evergreen_request_latency_seconds",
        "Time from request received to response ready.",
        ("model", "api"),
        _LATENCY_BUCKETS,
    ),
    (
        "batch_size",
        Histogram,
        "evergreen_batch_size",
        "Rows per model call (1 when batching is off or traffic is light).",
        ("model", "version", "signature"),
        _BATCH_BUCKETS,
    ),
    (
        "queue_depth",
        Gauge,
        "evergreen_queue_depth",
        "Requests waiting for a model call.",
        ("model",),
        None,
    ),
    (
        "load_seconds",
        Gauge,
        "evergreen_model_load_seconds",
        "Seconds spent loading and warming up a version.",
        ("model", "version"),
        None,
    ),
    (
        "loaded",
        Gauge,
        "evergreen_model_loaded",
        "1 for each version in memory (old versions stay until their last request ends).",
        ("model", "version"),
        None,
    ),
    (
        "label_version",
        Gauge,
        "evergreen_model_label_version",
        "The version each label (champion, canary) routes to.",
        ("model", "label"),
        None,
    ),
    (
        "swaps",
        Counter,
        "evergreen_model_swaps",
        "Alias moves applied (a new champion or canary taking traffic).",
        ("model",),
        None,
    ),
    (
        "registry_problem",
        Gauge,
        "evergreen_registry_problem",
        "1 while the registry has a problem the server works around (kind: aliases, missing, "
        "integrity, load); version is empty for the whole model. The log says what it is.",
        ("model", "version", "kind"),
        None,
    ),
)


class ServingMetrics:
    """Every metric the server exports (:data:`_METRICS`); ``render()`` is the ``/metrics`` body."""

    requests: Counter
    latency: Histogram
    batch_size: Histogram
    queue_depth: Gauge
    load_seconds: Gauge
    loaded: Gauge
    label_version: Gauge
    swaps: Counter
    registry_problem: Gauge

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        # process_* (CPU seconds, resident memory, open files...) and python_info, as the
        # default registry has them; this registry is the server's own.
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        for attribute, kind, name, documentation, labels, buckets in _METRICS:
            extra = {"buckets": buckets} if buckets else {}
            metric = kind(name, documentation, list(labels), registry=self.registry, **extra)
            setattr(self, attribute, metric)

    def render(self) -> bytes:
        return generate_latest(self.registry)
