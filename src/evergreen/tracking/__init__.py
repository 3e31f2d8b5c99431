"""Experiment tracking for every ``evergreen run``: TensorBoard scalars and MLflow (optional).

:func:`record_run` is called by the loop once per span record (a publish also moves MLflow's
aliases); :func:`aliases_moved` after ``evergreen rollback``. TensorBoard failures and MLflow failures are logged as
warnings: tracking never fails a pipeline run that trained and published correctly.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

# The record's numbers, shared with the sinks (which this module imports only when needed).
from evergreen.tracking.scalars import (  # noqa: F401 (re-exported)
    COST_KEYS,
    drift_scores,
    record_scalars,
)

log = logging.getLogger(__name__)


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
