"""Span statistics merge into dataset statistics without re-reading a span."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from evergreen.components import statistics
from evergreen.components.statistics import SpanStatistics, batch_words, merge_all, words
from tests.conftest import dataset, read_csv


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


EDGE_TEXTS = [
    "",
    "   ",
    "  Leading and trailing\t",
    "Don't buy THIS!! e-mail me_now, 100%",
    "tabs\tand\x0bvertical\x0cfeeds\r\nand\x1cfile\x1dgroup\x1erecord\x1funit separators",
    "ΟΔΟΣ final sigma: ΣΑΣ",  # Python lower-cases a final sigma as ς
    "İstanbul",  # Python: i + combining dot (two code points); one-to-one mappings differ
    "café,crème brûlée\u00a0nbsp\u2003em-space\u3000ideographic",  # Unicode whitespace
    "emoji 😀 and  double  spaces ",
]


@pytest.mark.parametrize(
    "odd",
    [None, "\x00nul\x00 inside", "lone \udc80 surrogate"],
    ids=["vectorized", "nul", "surrogate"],
)
def test_batch_words_counts_exactly_the_featurizer_words(
    odd: str | None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The vectorized word counts equal :func:`words` text by text, counts in first-seen order
    (a batch with a text it cannot take is counted in Python, with the same answers)."""
    _, rows = read_csv(dataset("fine_foods_train.csv"))
    texts = [row[1] for row in rows[:3000]] + EDGE_TEXTS + ([odd] if odd else [])
    if odd is None:  # the vectorized path must take this batch itself

        def refuse(texts: list[str]) -> None:
            raise AssertionError("fell back to Python")

        monkeypatch.setattr(statistics, "_python_batch_words", refuse)
    counts, lengths = batch_words(texts)
    expected: Counter[str] = Counter()
    for text in texts:
        expected.update(words(text))
    assert list(counts.items()) == list(expected.items())
    assert lengths.tolist() == [len(words(text)) for text in texts]
    assert any(not text.isascii() for text in texts[:3000])  # real non-ASCII reviews are in it


# A span's statistics in a fresh process: every sketch but the KLL ones (whose compaction
# draws random bits in the library itself, so they differ between processes anyway).
_STATS_OF_FINE_FOODS = """
import csv, json, sys
from evergreen.components.statistics import SpanStatistics
with open(sys.argv[1], newline="", encoding="utf-8") as f:
    rows = list(csv.DictReader(f))[:3000]
stats = SpanStatistics({"review": "text", "product": "categorical"}, spans=[1])
for i in range(0, len(rows), 1000):
    stats.add_batch(rows[i : i + 1000], "score")
stored = stats.to_dict()
for column in stored["columns"].values():
    del column["quantiles"], column["word_counts"]
print(json.dumps(stored, sort_keys=True))
"""


def test_distinct_counts_do_not_depend_on_the_processs_string_hash_seed() -> None:
    """The HLL's estimate depends on the order of its new items: fed in a set's order (which
    moves with PYTHONHASHSEED), the same span's stored distinct counts differed from one
    process to the next. Fed in input order, the sketches are the same bytes."""
    src = Path(statistics.__file__).resolve().parents[2]
    out = []
    for seed in ("1", "2"):
        env = {**os.environ, "PYTHONHASHSEED": seed, "PYTHONPATH": str(src)}
        result = subprocess.run(
            [sys.executable, "-c", _STATS_OF_FINE_FOODS, str(dataset("fine_foods_train.csv"))],
            env=env,
            capture_output=True,
            text=True,
            check=True,
        )
        out.append(json.loads(result.stdout))
    assert out[0] == out[1]
    columns = out[0]["columns"]
    assert columns["review"]["present"] == columns["product"]["present"] == 3000
