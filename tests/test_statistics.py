"""Span statistics merge into dataset statistics without re-reading a span."""

from __future__ import annotations

import csv

from evergreen.components.statistics import SpanStatistics, merge_all
from tests.conftest import dataset


def _rows(limit: int | None = None) -> list[dict]:
    with open(dataset("mlc_churn.csv"), newline="") as f:
        rows = list(csv.DictReader(f))[:limit]
    for row in rows:
        row["total_day_minutes"] = float(row["total_day_minutes"])
    return rows


TYPES = {"total_day_minutes": "numeric", "state": "categorical"}


def test_merge_of_parts_equals_the_whole_and_round_trips() -> None:
    rows = _rows()
    whole = SpanStatistics(dict(TYPES), spans=[0])
    whole.add_batch(rows, "churn")
    parts = []
    for i in range(5):
        part = SpanStatistics(dict(TYPES), spans=[i + 1])
        part.add_batch(rows[i * 1000 : (i + 1) * 1000], "churn")
        parts.append(SpanStatistics.from_dict(part.to_dict()))  # as stored and loaded back
    merged = merge_all(parts)
    assert merged.rows == whole.rows == 5000
    assert merged.labels == whole.labels
    assert merged.spans == [1, 2, 3, 4, 5]
    m, w = merged.columns["total_day_minutes"], whole.columns["total_day_minutes"]
    assert (
        m.quantiles.get_min_value()
        == w.quantiles.get_min_value()
        == min(r["total_day_minutes"] for r in rows)
    )
    assert (
        abs(m.quantiles.get_quantile(0.5) - w.quantiles.get_quantile(0.5)) < 3.0
    )  # KLL rank error
    assert abs(m.total / m.present - sum(r["total_day_minutes"] for r in rows) / len(rows)) < 1e-6
    exact_states = len({r["state"] for r in rows})
    assert abs(merged.columns["state"].distinct.get_estimate() - exact_states) <= 2
    assert dict(merged.columns["state"].top(100)) == dict(whole.columns["state"].top(100))
