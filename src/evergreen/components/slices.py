"""Sliced evaluation: candidate and champion metrics per value of chosen columns (TFMA-style).

``[evaluate] slices = ["column", ...]`` cuts each evaluation set (the new eval rows and the
historic holdout) by the values of each column: the ``max_slice_values`` most frequent values
get a slice each, the rest pool as ``(other)`` and blanks as ``(missing)``. Each slice carries
its row count, both models' metrics and — when at least ``min_slice_rows`` rows — the same
guards as the whole set (primary metric and loss, capped noise allowance). Smaller slices are
reported with ``small: true`` and never judged: on a few dozen rows a guard cannot tell noise
from harm. With ``guard_slices = true`` a regressed slice refuses the candidate, and the
verdict line names the slice: a candidate better overall that collapses on one segment is
caught.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import replace
from typing import Any

import numpy as np

from evergreen.components.guards import describe_guard, metrics
from evergreen.config import EvaluateConfig

OTHER = "(other)"
MISSING = "(missing)"

Guards = Callable[..., dict[str, dict[str, Any]]]


def slice_values(rows: Sequence[Mapping[str, Any]], column: str, keep: int) -> list[str]:
    """Each row's slice of ``column``: its value, ``(other)`` beyond the top ``keep``, or
    ``(missing)``."""
    values = [MISSING if row.get(column) in (None, "") else str(row[column]) for row in rows]
    top = {v for v, _ in Counter(v for v in values if v != MISSING).most_common(keep)}
    return [v if v in top or v == MISSING else OTHER for v in values]


class SliceEvaluation:
    """Computes the slices of one evaluation and the guard's verdict on them.

    Args:
        cfg: the ``[evaluate]`` settings.
        guards: the evaluator's guard function, ``(scored, truths, labels, metric) → guards``
            (:meth:`EvaluateCandidate._guards`), applied to each slice's rows.
    """

    def __init__(self, cfg: EvaluateConfig, guards: Guards) -> None:
        self.cfg = cfg
        self.guards = guards

    def evaluate(
        self,
        sets: Mapping[str, Sequence[Mapping[str, Any]]],
        raw: Mapping[tuple[str, str], tuple[np.ndarray, list[str], float | None]],
        scored: Mapping[tuple[str, str], Any],
        truths: Mapping[str, list[str]],
        labels: list[str],
        metric: str,
    ) -> dict[str, dict[str, dict[str, Any]]]:
        """``{column: {value: {set: {rows, small, candidate, champion, guards}}}}``."""
        out: dict[str, dict[str, dict[str, Any]]] = {}
        for column in self.cfg.slices:
            per_value: dict[str, dict[str, Any]] = {}
            for name, rows in sets.items():
                if not rows or name not in truths:
                    continue
                keys = np.array(slice_values(rows, column, self.cfg.max_slice_values))
                for value in sorted(set(keys)):
                    mask = keys == value
                    entry: dict[str, Any] = {"rows": int(mask.sum())}
                    entry["small"] = entry["rows"] < self.cfg.min_slice_rows
                    truth = [t for t, m in zip(truths[name], mask, strict=True) if m]
                    for side in ("candidate", "champion"):
                        if (side, name) in raw:
                            scores, model_labels, cut = raw[side, name]
                            entry[side] = metrics(scores[mask], truth, model_labels, cut)
                    if not entry["small"] and ("champion", name) in scored:
                        part = {
                            (side, name): _subset(scored[side, name], mask)
                            for side in ("candidate", "champion")
                        }
                        entry["guards"] = {
                            key: guard
                            for key, guard in self.guards(
                                part, {name: truth}, labels, metric
                            ).items()
                            if key.removesuffix("_loss") == name
                        }
                    per_value.setdefault(value, {})[name] = entry
            out[column] = per_value
        return out

    def refusals(self, slices: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> list[str]:
        """Verdict lines of the slices whose guard regressed (empty: every slice holds)."""
        lines = []
        for column, values in slices.items():
            for value, sets in values.items():
                for name, entry in sets.items():
                    local = {
                        "candidate": {name: entry.get("candidate", {})},
                        "champion": {name: entry.get("champion", {})},
                    }
                    for key, guard in entry.get("guards", {}).items():
                        if guard["regressed"]:
                            lines.append(
                                f"slice {column}={value} ({entry['rows']} rows): "
                                + describe_guard(key, guard, local)
                            )
        return lines


def _subset(answers: Any, mask: np.ndarray) -> Any:
    """One model's per-row answers restricted to a slice's rows."""
    return replace(
        answers,
        correct=answers.correct[mask],
        predicted=answers.predicted[mask],
        loss=answers.loss[mask],
        positive=answers.positive[mask] if len(answers.positive) else answers.positive,
    )
