"""The text featurizer's sequence length, chosen from the data at a full retrain.

A fixed ``sequence_length = 200`` pads one-line texts whose longest has 19 tokens: the word CNN
then spends most of its compute on padding (issue 13 measured 2x the training throughput at 64
on the same data). At a full retrain the length is taken from the token-count sketch that
statistics already keep for every text column (``word_counts``: a KLL sketch of tokens per
text, merged over the spans trained on): the ``train.sequence_length_quantile`` quantile
(default 0.99), never above ``train.sequence_length`` (the configured maximum) and never below
the Conv1D kernel. The chosen length is part of the frozen featurizer (``featurizer.json`` and
its fingerprint), so incremental runs reuse it unchanged.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from evergreen.components.statistics import SpanStatistics, merge_all


def from_statistics(
    parts: Iterable[SpanStatistics],
    column: str,
    *,
    maximum: int,
    minimum: int,
    quantile: float,
) -> int:
    """The sequence length for ``column``: a quantile of its tokens per text, clamped.

    Args:
        parts: the statistics of the spans the featurizer is fitted on (merged here).
        column: the text column the model reads.
        maximum: the configured ``train.sequence_length`` (the cap).
        minimum: the shortest length the model accepts (its Conv1D kernel).
        quantile: e.g. 0.99; 0 keeps ``maximum`` (a fixed length, the old behaviour).

    Returns:
        ``maximum`` when ``quantile`` is 0 or the statistics have no tokens of ``column``;
        otherwise ``ceil(quantile of tokens per text)`` clamped to ``[minimum, maximum]``.
    """
    if quantile <= 0:
        return maximum
    merged = merge_all(parts)
    stats = merged.columns.get(column) if merged is not None else None
    if stats is None or stats.word_counts.is_empty():
        return maximum
    tokens = float(stats.word_counts.get_quantile(min(quantile, 1.0)))
    return max(minimum, min(maximum, math.ceil(tokens)))
