"""Experiment tracking for every ``evergreen run``: TensorBoard scalars and MLflow (optional).

:func:`record_run` is called by the loop once per span record (a publish also moves MLflow's
aliases); :func:`aliases_moved` after ``evergreen rollback``. TensorBoard failures and MLflow failures are logged as
warnings: tracking never fails a pipeline run that trained and published correctly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

log = logging.getLogger(__name__)

# The loop record's cost ledger, logged as cost/<key>.
COST_KEYS = (
    "rows_new",
    "rows_total",
    "rows_featurized",
    "rows_reused",
    "tokens_computed",
    "tokens_reused",
)


def record_run(project: Any, record: Mapping[str, Any]) -> None:
    """Log one loop record (a span's run) to TensorBoard and, when configured, MLflow."""
    tracking = project.config.tracking
    if tracking.tensorboard:
        try:
            from evergreen.tracking.tensorboard import write_record

            write_record(project, record)
        except Exception as e:  # noqa: BLE001  (tracking must not fail the run)
            log.warning("TensorBoard logging failed for span %s: %s", record.get("span"), e)
    if tracking.mlflow_tracking_uri:
        try:
            from evergreen.tracking.mlflow_sink import log_record
        except ImportError as e:  # checked at config load; an install broken since then
            log.warning("MLflow is configured but cannot be imported: %s", e)
            return
        log_record(project, record)


def aliases_moved(config: Any) -> None:
    """Make MLflow's ``champion``/``canary`` aliases follow the registry's (when configured)."""
    if config.tracking.mlflow_tracking_uri:
        try:
            from evergreen.tracking.mlflow_sink import sync_aliases
        except ImportError as e:
            log.warning("MLflow is configured but cannot be imported: %s", e)
            return
        sync_aliases(config)


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
