"""Training/serving skew: the sampled request log against the training data's statistics.

The serving layer samples requests into JSON Lines files,
``<root>/serving/requests/<model>/<YYYY-MM-DD>.jsonl``, one object per sampled row::

    {"ts": "2026-11-25T10:00:00Z", "model": "reviews", "version": 3,
     "signature": "serving_default", "inputs": {"text": "where is my parcel"}}

Rows are described with the same sketches as a span (:class:`SpanStatistics`) and compared with
the merge of every validated span's statistics, metric by metric, as drift is. An input named
like a feature column is that feature; an input of another name (the text model's ``text``) is
the pipeline's text feature when there is exactly one.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evergreen.components.drift import DriftResult, compute_drift
from evergreen.components.statistics import SpanStatistics, merge_all
from evergreen.config import DriftConfig

_BATCH = 1024
DEFAULT_DAYS = 7  # status and reports compare the newest week of day files


def request_log_dir(root: Path, model: str) -> Path:
    return root / "serving" / "requests" / model


def log_files(folder: Path, *, last: int | None = None) -> list[Path]:
    """The day files (``YYYY-MM-DD.jsonl``) in ``folder``, oldest first; only the ``last`` N."""
    if not folder.is_dir():
        return []
    files = []
    for path in sorted(folder.glob("*.jsonl")):
        try:
            dt.date.fromisoformat(path.stem)
        except ValueError:
            continue
        files.append(path)
    return files[-last:] if last else files


def serving_statistics(
    files: list[Path], types: dict[str, str], notes: list[str] | None = None
) -> SpanStatistics | None:
    """Statistics of the logged inputs (no labels), or None when no row could be read.

    Lines that are not JSON objects with an ``inputs`` object are skipped and counted in
    ``notes``; a value of the wrong type counts as missing, as ingest would quarantine it.
    """
    texts = [c for c, t in types.items() if t == "text"]
    stats = SpanStatistics(dict(types))
    batch: list[dict[str, Any]] = []
    skipped: list[str] = []
    for path, line_no, row in _rows(files, skipped):
        inputs = row.get("inputs")
        if not isinstance(inputs, dict):
            skipped.append(f"{path.name}:{line_no}")
            continue
        values: dict[str, Any] = {}
        for name, value in inputs.items():
            column = name if name in types else (texts[0] if len(texts) == 1 else None)
            if column is not None and column not in values:
                values[column] = _convert(value, types[column])
        batch.append(values)
        if len(batch) >= _BATCH:
            _add(stats, batch)
            batch = []
    _add(stats, batch)
    if notes is not None and skipped:
        notes.append(
            f"{len(skipped)} request-log lines skipped (not a JSON object with an 'inputs' "
            f"object), e.g. {', '.join(skipped[:3])}"
        )
    return stats if stats.rows else None


def compute_skew(
    training: SpanStatistics | None,
    files: list[Path],
    cfg: DriftConfig,
    *,
    vocabulary: set[str] | None = None,
) -> DriftResult | None:
    """Skew of the logged serving inputs against ``training`` (None: no log, or no training)."""
    if training is None or not files:
        return None
    notes = [f"request log: {len(files)} day file(s), {files[0].name} … {files[-1].name}"]
    serving = serving_statistics(files, dict(training.types), notes)
    if serving is None:
        return None
    result = compute_drift(
        serving, {"training": training}, cfg, label=None, span=None, vocabulary=vocabulary
    )
    return DriftResult(
        span=None,
        comparisons=result.comparisons,
        unknown_rate=result.unknown_rate,
        notes=notes,
    )


def project_skew(project: Any, *, days: int | None = DEFAULT_DAYS) -> DriftResult | None:
    """Skew for a :class:`~evergreen.project.Project`: its model's recent requests vs its spans.

    Args:
        days: how many of the newest day files to read (default 7; None: all).
    """
    from evergreen.components import statistics as stats_mod
    from evergreen.components.drift import read_vocabulary

    cfg = project.config
    files = log_files(request_log_dir(cfg.root, cfg.name), last=days)
    if not files:
        return None
    parts = [
        stats_mod.load(project.store.artifact(r.statistics_id))
        for r in project.store.spans()
        if r.statistics_id is not None and r.status == "validated"
    ]
    featurizer = project.champion_featurizer()
    vocabulary = read_vocabulary(featurizer) if featurizer is not None else None
    return compute_skew(merge_all(parts), files, cfg.drift, vocabulary=vocabulary)


def _add(stats: SpanStatistics, batch: list[dict[str, Any]]) -> None:
    """Like :meth:`SpanStatistics.add_batch`, for rows without a label."""
    stats.rows += len(batch)
    for column, col in stats.columns.items():
        col.add_many([row.get(column) for row in batch])


def _rows(files: list[Path], skipped: list[str]) -> Iterator[tuple[Path, int, dict[str, Any]]]:
    for path in files:
        with open(path, encoding="utf-8", errors="replace") as f:
            for line_no, line in enumerate(f, start=1):
                if not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    skipped.append(f"{path.name}:{line_no}")
                    continue
                if isinstance(row, dict):
                    yield path, line_no, row
                else:
                    skipped.append(f"{path.name}:{line_no}")


def _convert(value: Any, kind: str) -> Any:
    if value is None:
        return None
    if kind == "numeric":
        if isinstance(value, bool):
            return None
        try:
            number = float(value)
        except (TypeError, ValueError):
            return None
        return number if math.isfinite(number) else None
    if isinstance(value, dict | list):
        return None
    return str(value)
