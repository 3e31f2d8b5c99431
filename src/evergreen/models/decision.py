"""A binary model's decision threshold, stored beside its exported SavedModel.

Training chooses the threshold (:mod:`evergreen.components.threshold`); the exporter puts it
in-graph in ``classify``, and :func:`write_decision` records it in
``assets.extra/evergreen_decision.json`` for callers that read ``scores`` (``evergreen
predict``, the evaluator's thresholded metrics). This module is the file's one reader and
writer, below both the training components and the families.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np

__all__ = ["DECISION_FILE", "decide", "read_threshold", "write_decision"]

DECISION_FILE = "evergreen_decision.json"  # in <saved_model>/assets.extra


def write_decision(
    saved_model: Path, threshold: float, labels: Sequence[str], objective: str
) -> None:
    """Record the threshold beside an exported SavedModel (``assets.extra``)."""
    extra = Path(saved_model) / "assets.extra"
    extra.mkdir(exist_ok=True)
    decision = {"threshold": threshold, "positive": str(labels[1]), "objective": objective}
    (extra / DECISION_FILE).write_text(json.dumps(decision, indent=2) + "\n", encoding="utf-8")


def read_threshold(saved_model: Path) -> float | None:
    """The decision threshold exported with a SavedModel, or None (argmax)."""
    path = Path(saved_model) / "assets.extra" / DECISION_FILE
    if not path.is_file():
        return None
    return float(json.loads(path.read_text(encoding="utf-8"))["threshold"])


def decide(scores: np.ndarray, labels: Sequence[str], threshold: float | None) -> list[int]:
    """Predicted class index per row: the threshold for two classes when given, else argmax."""
    scores = np.asarray(scores)
    if threshold is None or len(labels) != 2:
        return [int(i) for i in scores.argmax(axis=1)]
    return [int(p >= threshold) for p in scores[:, 1]]
