"""Drift between a new span and its references, from the mergeable sketches alone.

Each new span is compared with two references: the **previous** validated span and the
**window** (every earlier validated span, merged from their statistics). No span's examples
are read: only statistics artifacts, so the cost does not grow with the data.

Scores per feature kind (thresholds in :class:`~evergreen.config.DriftConfig`):

* categorical — ``linf`` (largest change of one value's share) and ``js_distance``
  (Jensen-Shannon distance, base 2, in [0, 1]) over the frequent values; values whose share is
  below ``min_item_share`` on both sides are pooled as one "other" value, so id-like columns
  (every value new) do not read as drift;
* numeric — ``ks`` (Kolmogorov-Smirnov) and ``wasserstein`` (Wasserstein-1 divided by the
  reference's standard deviation) from the KLL sketches, and ``psi`` over the reference's deciles;
* text — ``js_distance`` over word frequencies, ``length_ks`` (KS of words per text) and, when a
  frozen vocabulary is given, ``unknown_rate`` (share of word occurrences outside it);
* the label — ``linf`` and ``js_distance`` over exact class counts.

The JS distance is **debiased for sample size**: two samples of one distribution are never
identical, and their expected JS divergence, ``(k - 1) / 8 · (1/n + 1/m)`` nats for ``k``
values, is subtracted before the square root. Without it a 51-value column compared over
1,000-row spans reads about 0.13 when nothing changed.

Scores are always computed and stored; an alarm is a score above its ``minor`` threshold, heavy
drift one above ``major``. :func:`compute_drift` is the pure core; :class:`ComputeDrift` is the
pipeline component that writes a ``DriftReport`` artifact (``drift.json``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import datasketches as ds

from evergreen.components.statistics import ColumnStatistics, SpanStatistics, merge_all
from evergreen.config import DriftConfig
from evergreen.metadata import Artifact, MetadataStore
from evergreen.pipeline import ExecutionContext, Inputs, per_span

SEVERITIES = ("none", "minor", "major")
OTHER = "(other)"
_QUANTILE_POINTS = 200  # ranks at which KLL sketches are compared
_CHART_BARS = 12  # values shown per bar chart
_CHART_BINS = 20  # bins per histogram
_PSI_FLOOR = 1e-4  # share given to an empty bin, so PSI stays finite


def severity_of(value: float | None, minor: float, major: float) -> str:
    """``major`` above the major threshold, ``minor`` above the minor one, else ``none``."""
    if value is None or math.isnan(value):
        return "none"
    if value > major:
        return "major"
    if value > minor:
        return "minor"
    return "none"


def worst(severities: Iterable[str]) -> str:
    return max(severities, key=SEVERITIES.index, default="none")


def at_least(severity: str, level: str) -> bool:
    """Whether ``severity`` reaches ``level`` (a config level: minor, major, or never)."""
    return level != "never" and SEVERITIES.index(severity) >= SEVERITIES.index(level)


# -- results ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class MetricScore:
    metric: str
    value: float
    minor: float
    major: float
    severity: str


@dataclass(frozen=True)
class FeatureDrift:
    """One feature against one reference: every score, and charts of both distributions."""

    feature: str
    kind: str  # categorical, numeric, text, or label
    scores: list[MetricScore]
    charts: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return worst(s.severity for s in self.scores)

    def score(self, metric: str) -> float | None:
        return next((s.value for s in self.scores if s.metric == metric), None)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "severity": self.severity}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> FeatureDrift:
        return cls(
            feature=data["feature"],
            kind=data["kind"],
            scores=[MetricScore(**s) for s in data["scores"]],
            charts=list(data.get("charts", [])),
            notes=list(data.get("notes", [])),
        )


@dataclass(frozen=True)
class Comparison:
    """The new data against one reference (``previous``, ``window``, or ``training`` for skew)."""

    reference: str
    spans: list[int]
    rows_new: int
    rows_reference: int
    features: list[FeatureDrift]

    @property
    def severity(self) -> str:
        return worst(f.severity for f in self.features)

    def feature(self, name: str) -> FeatureDrift | None:
        return next((f for f in self.features if f.feature == name), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "reference": self.reference,
            "spans": self.spans,
            "rows_new": self.rows_new,
            "rows_reference": self.rows_reference,
            "severity": self.severity,
            "features": [f.to_dict() for f in self.features],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Comparison:
        return cls(
            reference=data["reference"],
            spans=list(data["spans"]),
            rows_new=data["rows_new"],
            rows_reference=data["rows_reference"],
            features=[FeatureDrift.from_dict(f) for f in data["features"]],
        )


@dataclass(frozen=True)
class Alarm:
    feature: str
    reference: str
    metric: str
    value: float
    threshold: float
    severity: str

    def describe(self) -> str:
        return (
            f"{self.feature}: {self.metric} {self.value:.3f} > {self.threshold:g} "
            f"vs {self.reference} ({self.severity})"
        )


@dataclass(frozen=True)
class DriftResult:
    """Drift of one span (or of the serving inputs: ``span`` None) against its references."""

    span: int | None
    comparisons: list[Comparison]
    unknown_rate: float | None = None
    labels: dict[str, int] = field(default_factory=dict)  # the new data's label counts
    reference_labels: dict[str, int] = field(default_factory=dict)  # the window's
    notes: list[str] = field(default_factory=list)

    @property
    def severity(self) -> str:
        return worst(c.severity for c in self.comparisons)

    @property
    def alarms(self) -> list[Alarm]:
        """Every score above its minor threshold, worst first."""
        found = []
        for comparison in self.comparisons:
            for f in comparison.features:
                for s in f.scores:
                    if s.severity != "none":
                        threshold = s.major if s.severity == "major" else s.minor
                        found.append(
                            Alarm(
                                f.feature,
                                comparison.reference,
                                s.metric,
                                s.value,
                                threshold,
                                s.severity,
                            )
                        )
        return sorted(found, key=lambda a: (-SEVERITIES.index(a.severity), -a.value))

    def features_at(self, level: str) -> list[str]:
        """Features with drift of severity ``level`` or worse, in order of first appearance."""
        names: list[str] = []
        for alarm in self.alarms:
            if at_least(alarm.severity, level) and alarm.feature not in names:
                names.append(alarm.feature)
        return names

    def comparison(self, reference: str) -> Comparison | None:
        return next((c for c in self.comparisons if c.reference == reference), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "span": self.span,
            "severity": self.severity,
            "alarms": [asdict(a) for a in self.alarms],
            "unknown_rate": self.unknown_rate,
            "labels": self.labels,
            "reference_labels": self.reference_labels,
            "notes": self.notes,
            "comparisons": [c.to_dict() for c in self.comparisons],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DriftResult:
        return cls(
            span=data["span"],
            comparisons=[Comparison.from_dict(c) for c in data["comparisons"]],
            unknown_rate=data.get("unknown_rate"),
            labels=dict(data.get("labels", {})),
            reference_labels=dict(data.get("reference_labels", {})),
            notes=list(data.get("notes", [])),
        )


# -- the core --------------------------------------------------------------------------------


def compute_drift(
    new: SpanStatistics,
    references: Mapping[str, SpanStatistics | None],
    cfg: DriftConfig,
    *,
    label: str | None,
    span: int | None,
    vocabulary: set[str] | None = None,
) -> DriftResult:
    """Drift of ``new`` against each named reference (e.g. ``previous``, ``window``).

    Args:
        new: the new span's statistics (or the serving inputs' statistics).
        references: reference name → statistics; a None reference is skipped.
        cfg: thresholds and per-feature overrides.
        label: the label column (compared too), or None when ``new`` has no labels.
        span: the new span's number, recorded in the result.
        vocabulary: the champion's frozen vocabulary, for the unknown-token rate of text.
    """
    comparisons = [
        compare(new, ref, cfg, name, label=label, vocabulary=vocabulary)
        for name, ref in references.items()
        if ref is not None and ref.rows
    ]
    notes = [] if comparisons else ["no earlier validated span to compare with"]
    unknown = None
    if vocabulary is not None:
        rates = [
            unknown_rate(col, vocabulary)
            for name, col in new.columns.items()
            if col.kind == "text" and col.present and cfg.feature_enabled(name)
        ]
        unknown = max(rates) if rates else None
    window = references.get("window")
    return DriftResult(
        span=span,
        comparisons=comparisons,
        unknown_rate=unknown,
        labels=dict(new.labels),
        reference_labels=dict(window.labels) if window is not None else {},
        notes=notes,
    )


def compare(
    new: SpanStatistics,
    ref: SpanStatistics,
    cfg: DriftConfig,
    reference: str,
    *,
    label: str | None,
    vocabulary: set[str] | None = None,
) -> Comparison:
    """Every enabled feature of ``new`` that ``ref`` also has, scored against ``ref``."""
    features = []
    for name, col in new.columns.items():
        other = ref.columns.get(name)
        if other is None or not cfg.feature_enabled(name) or col.kind == "image":
            continue
        if not col.present or not other.present:
            continue
        features.append(column_drift(name, col, other, cfg, vocabulary))
    if label is not None and cfg.feature_enabled(label) and new.labels and ref.labels:
        features.append(
            _distribution_drift(label, "label", new.labels, ref.labels, cfg, min_share=0.0)
        )
    return Comparison(reference, list(ref.spans), new.rows, ref.rows, features)


def column_drift(
    name: str,
    new: ColumnStatistics,
    ref: ColumnStatistics,
    cfg: DriftConfig,
    vocabulary: set[str] | None = None,
) -> FeatureDrift:
    """Scores of one column against its reference (see the module docstring)."""
    if new.kind == "numeric":
        return _numeric_drift(name, new.quantiles, ref.quantiles, ref, cfg)
    new_items, ref_items = _items(new.frequent), _items(ref.frequent)
    totals = (new.frequent.total_weight, ref.frequent.total_weight)
    if new.kind != "text":
        return _distribution_drift(
            name, new.kind, new_items, ref_items, cfg, min_share=cfg.min_item_share, totals=totals
        )
    words = _distribution_drift(
        name, "text", new_items, ref_items, cfg, min_share=cfg.min_item_share, totals=totals
    )
    scores = list(words.scores)
    ks, chart = (
        _ks(new.word_counts, ref.word_counts),
        _histogram(new.word_counts, ref.word_counts, "words per text"),
    )
    scores.append(_score(cfg, name, "length_ks", ks))
    notes = []
    if vocabulary is not None:
        scores.append(_score(cfg, name, "unknown_rate", unknown_rate(new, vocabulary)))
        notes.append("unknown_rate: word occurrences outside the champion's frozen vocabulary")
    return FeatureDrift(name, "text", scores, [*words.charts, chart], notes)


def unknown_rate(col: ColumnStatistics, vocabulary: set[str]) -> float:
    """Share of the column's word occurrences that are not in ``vocabulary``.

    Approximate: words the sketch tracks are checked one by one; occurrences it no longer
    tracks (only once a span has more than 6,144 distinct words) count as unknown, since rare
    words are the ones a capped vocabulary leaves out. It counts all words of a text, where the
    model sees only the first ``sequence_length``.
    """
    items = _items(col.frequent)
    total = col.frequent.total_weight
    if not total:
        return 0.0
    known = sum(n for word, n in items.items() if word in vocabulary)
    return max(0.0, min(1.0, (total - known) / total))


def _items(sketch: Any) -> dict[str, float]:
    rows = sketch.get_frequent_items(ds.frequent_items_error_type.NO_FALSE_NEGATIVES)
    return {item: float(estimate) for item, estimate, _lb, _ub in rows}


def _score(cfg: DriftConfig, feature: str, metric: str, value: float) -> MetricScore:
    minor, major = cfg.threshold(feature, metric)
    value = round(float(value), 6)
    return MetricScore(metric, value, minor, major, severity_of(value, minor, major))


def _distribution_drift(
    name: str,
    kind: str,
    new: Mapping[str, float],
    ref: Mapping[str, float],
    cfg: DriftConfig,
    *,
    min_share: float,
    totals: tuple[float, float] | None = None,
) -> FeatureDrift:
    """Scores of two count tables; ``totals`` are the true counts when the tables are partial."""
    n, m = totals or (sum(new.values()), sum(ref.values()))
    p, q = _shares(new, ref, n, m, min_share)
    linf = max((abs(p[k] - q[k]) for k in p), default=0.0)
    scores = [_score(cfg, name, "js_distance", js_distance(p, q, n, m))]
    if kind != "text":  # one word's share moves little even when the topic changes
        scores.insert(0, _score(cfg, name, "linf", linf))
    shown = sorted(p, key=lambda k: -(p[k] + q[k]))
    shown = [k for k in shown if k != OTHER][:_CHART_BARS] + ([OTHER] if OTHER in p else [])
    chart = {
        "type": "bars",
        "title": "words" if kind == "text" else "values",
        "labels": shown,
        "new": [round(p[k], 5) for k in shown],
        "reference": [round(q[k], 5) for k in shown],
    }
    return FeatureDrift(name, kind, scores, [chart])


def _shares(
    new: Mapping[str, float], ref: Mapping[str, float], n: float, m: float, min_share: float
) -> tuple[dict[str, float], dict[str, float]]:
    """Shares of the values at least ``min_share`` on one side; the rest pooled as OTHER."""
    keep = {k for k, v in new.items() if v / n >= min_share} | {
        k for k, v in ref.items() if v / m >= min_share
    }
    p = {k: new.get(k, 0.0) / n for k in keep}
    q = {k: ref.get(k, 0.0) / m for k in keep}
    rest_p, rest_q = max(0.0, 1 - sum(p.values())), max(0.0, 1 - sum(q.values()))
    if rest_p > 1e-9 or rest_q > 1e-9:
        p[OTHER], q[OTHER] = rest_p, rest_q
    return p, q


def js_distance(p: Mapping[str, float], q: Mapping[str, float], n: float, m: float) -> float:
    """Jensen-Shannon distance (base 2) of shares ``p`` (n draws) and ``q`` (m draws), debiased.

    What sampling alone gives between two samples of one distribution, ``(k-1)/8 · (1/n + 1/m)``
    nats on average for ``k`` values, plus two standard deviations, is subtracted from the
    divergence before the square root, so equal distributions read 0 in all but ~2% of cases.
    """
    divergence = 0.0
    for key in set(p) | set(q):
        a, b = p.get(key, 0.0), q.get(key, 0.0)
        mid = (a + b) / 2
        if a > 0:
            divergence += 0.5 * a * math.log(a / mid)
        if b > 0:
            divergence += 0.5 * b * math.log(b / mid)
    k = sum(1 for key in set(p) | set(q) if p.get(key, 0.0) + q.get(key, 0.0) > 0)
    # 8·nm/(n+m)·JS is about chi-squared with k-1 degrees of freedom when nothing changed:
    # subtract its mean plus two standard deviations.
    noise = (k - 1 + 2 * math.sqrt(2 * (k - 1))) / 8 * (1 / max(n, 1) + 1 / max(m, 1))
    return math.sqrt(max(0.0, divergence - noise) / math.log(2))


def _ranks() -> list[float]:
    return [(i + 0.5) / _QUANTILE_POINTS for i in range(_QUANTILE_POINTS)]


def _ks(new: Any, ref: Any) -> float:
    if new.is_empty() or ref.is_empty():
        return 0.0
    points = sorted(
        set(new.get_quantiles(_ranks(), inclusive=True))
        | set(ref.get_quantiles(_ranks(), inclusive=True))
        | {new.get_min_value(), ref.get_min_value()}
    )
    a = new.get_cdf(points, inclusive=True)[:-1]
    b = ref.get_cdf(points, inclusive=True)[:-1]
    return max(abs(x - y) for x, y in zip(a, b, strict=True))


def _wasserstein(new: Any, ref: Any, ref_col: ColumnStatistics) -> float:
    # Over the central 98%: the sketch's rank error (about 1.7% at k=200) moves the extreme
    # quantiles of a span of a few thousand rows far more than any real shift would.
    ranks = [0.01 + 0.98 * r for r in _ranks()]
    qa = new.get_quantiles(ranks, inclusive=True)
    qb = ref.get_quantiles(ranks, inclusive=True)
    distance = 0.98 * sum(abs(x - y) for x, y in zip(qa, qb, strict=True)) / len(ranks)
    mean = ref_col.total / ref_col.present
    std = max(ref_col.total_squares / ref_col.present - mean * mean, 0.0) ** 0.5
    scale = std or (ref.get_max_value() - ref.get_min_value()) or 1.0
    return distance / scale


def _psi(new: Any, ref: Any) -> float:
    edges = sorted(set(ref.get_quantiles([i / 10 for i in range(1, 10)], inclusive=True)))
    a = _bin_shares(new, edges)
    b = _bin_shares(ref, edges)
    return sum((x - y) * math.log(x / y) for x, y in zip(a, b, strict=True))


def _bin_shares(sketch: Any, edges: Sequence[float]) -> list[float]:
    cdf = sketch.get_cdf(list(edges), inclusive=True)  # len(edges) + 1 values, last is 1.0
    shares = [cdf[0]] + [cdf[i] - cdf[i - 1] for i in range(1, len(cdf))]
    return [max(s, _PSI_FLOOR) for s in shares]


def _histogram(new: Any, ref: Any, title: str) -> dict[str, Any]:
    low = min(new.get_quantile(0.01), ref.get_quantile(0.01))
    high = max(new.get_quantile(0.99), ref.get_quantile(0.99))
    if high <= low:
        high = low + 1.0
    width = (high - low) / _CHART_BINS
    edges = [low + i * width for i in range(_CHART_BINS + 1)]
    inner = edges[1:-1]

    def shares(sketch: Any) -> list[float]:
        cdf = sketch.get_cdf(inner, inclusive=True)
        return [round(cdf[0], 5)] + [round(cdf[i] - cdf[i - 1], 5) for i in range(1, len(cdf))]

    return {
        "type": "histogram",
        "title": title,
        "edges": [round(e, 6) for e in edges],
        "new": shares(new),
        "reference": shares(ref),
    }


def _numeric_drift(
    name: str, new: Any, ref: Any, ref_col: ColumnStatistics, cfg: DriftConfig
) -> FeatureDrift:
    scores = [
        _score(cfg, name, "ks", _ks(new, ref)),
        _score(cfg, name, "wasserstein", _wasserstein(new, ref, ref_col)),
        _score(cfg, name, "psi", _psi(new, ref)),
    ]
    return FeatureDrift(name, "numeric", scores, [_histogram(new, ref, "values")])


# -- artifacts -------------------------------------------------------------------------------


def load(artifact: Artifact) -> DriftResult:
    data = json.loads((Path(artifact.uri) / "drift.json").read_text(encoding="utf-8"))
    return DriftResult.from_dict(data)


def find_report(store: MetadataStore, span: int) -> DriftResult | None:
    """The latest ``DriftReport`` of ``span`` in the store, or None when there is none."""
    artifact = find_artifact(store, span)
    return load(artifact) if artifact is not None else None


def find_artifact(store: MetadataStore, span: int) -> Artifact | None:
    found = store.artifacts(type="DriftReport", span=span)
    return found[-1] if found else None


@dataclass(frozen=True)
class DriftInputs(Inputs):
    """What drift compares: the new span's statistics with the earlier spans'.

    Args:
        statistics: the new span's statistics.
        window: the statistics of each earlier validated span, by span (the highest is the
            previous span).
        featurizer: the champion's featurizer (its frozen vocabulary), optional.
    """

    statistics: Artifact
    window: dict[int, Artifact] = per_span("window")
    featurizer: Artifact | None = None


class ComputeDrift:
    """Pipeline component: the span's statistics + reference statistics → a ``DriftReport``.

    Inputs: :class:`DriftInputs`. Only statistics artifacts and the vocabulary file are opened.
    """

    name: ClassVar[str] = "drift"
    version: ClassVar[str] = "1"

    def __init__(self, span: int, version: int, cfg: DriftConfig, label: str) -> None:
        self.span = span
        self.span_version = version
        self.cfg = cfg
        self.label = label

    def parameters(self) -> dict[str, Any]:
        return {"drift": asdict(self.cfg), "label": self.label}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        from evergreen.components import statistics

        inputs: DriftInputs = ctx.declared  # type: ignore[assignment]
        new = statistics.load(inputs.statistics)
        window_parts = [statistics.load(a) for _, a in sorted(inputs.window.items())]
        vocabulary = None
        if inputs.featurizer is not None:
            vocabulary = read_vocabulary(inputs.featurizer)
        result = compute_drift(
            new,
            {
                "previous": window_parts[-1] if window_parts else None,
                "window": merge_all(window_parts),
            },
            self.cfg,
            label=self.label,
            span=self.span,
            vocabulary=vocabulary,
        )
        writer = ctx.output("drift", "DriftReport", span=self.span, version=self.span_version)
        writer.write_json("drift.json", result.to_dict())
        alarms = result.features_at("minor")
        ctx.set_properties(
            "drift",
            {"severity": result.severity, "alarms": alarms, "unknown_rate": result.unknown_rate},
        )
        return {"severity": result.severity, "alarms": alarms}


def read_vocabulary(featurizer: Artifact) -> set[str] | None:
    """The frozen vocabulary of a featurizer artifact's text column (None: it has no text)."""
    from evergreen.models.registry import load_featurizer

    return load_featurizer(featurizer.uri).text_vocabulary()
