"""A loop record's numbers as scalars (``tag → value``), and a span's drift scores.

What the TensorBoard and MLflow sinks log; below :mod:`evergreen.tracking` and its sinks.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# The loop record's cost ledger, logged as cost/<key>.
COST_KEYS = (
    "rows_new",
    "rows_total",
    "rows_featurized",
    "rows_reused",
    "tokens_computed",
    "tokens_reused",
)


def _flatten(prefix: str, value: Any, out: dict[str, float]) -> None:
    if isinstance(value, Mapping):
        for key, inner in value.items():
            _flatten(f"{prefix}/{key}", inner, out)
    elif isinstance(value, int | float) and not isinstance(value, bool) and value == value:
        out[prefix] = float(value)


def record_scalars(record: Mapping[str, Any]) -> dict[str, float]:
    """A loop record's numbers as ``tag → value`` (``candidate/new/accuracy``, ``cost/…``).

    Candidate and champion metrics (nested by row set), rows and tokens computed and reused,
    seconds per stage, whether it was blessed and the version published.
    """
    out: dict[str, float] = {}
    for who in ("candidate", "champion"):
        _flatten(who, (record.get("metrics") or {}).get(who) or {}, out)
    for key in COST_KEYS:
        _flatten(f"cost/{key}", record.get(key), out)
    _flatten("seconds", record.get("seconds") or {}, out)
    out["run/blessed"] = 1.0 if record.get("blessed") else 0.0
    if record.get("version") is not None:
        out["run/version"] = float(record["version"])
    return out


def drift_scores(store: Any, span: int) -> dict[str, float]:
    """The span's latest recorded drift scores, ``drift/<reference>/<feature>/<metric>``.

    Read from the stored report, never recomputed: computing drift here could use another
    champion's featurizer than the run did.
    """
    from evergreen.components import drift as drift_mod

    reports = store.artifacts(type="DriftReport", span=span)
    if not reports:
        return {}
    result = drift_mod.load(reports[-1])
    out: dict[str, float] = {}
    for comparison in result.comparisons:
        for feature in comparison.features:
            for score in feature.scores:
                tag = f"drift/{comparison.reference}/{feature.feature}/{score.metric}"
                out[tag] = float(score.value)
    if result.unknown_rate is not None:
        out["drift/unknown_rate"] = float(result.unknown_rate)
    return out
