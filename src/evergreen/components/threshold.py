"""The decision threshold of a binary classifier, chosen on the eval rows training judged on.

At argmax a binary model says "positive" when p(positive) > 0.5. Under class imbalance that
almost never happens (the issue's loan table: 5.7 % positives, 0-0.1 % predicted positive,
balanced accuracy 0.50 although AUC was 0.72-0.75), so the threshold is chosen instead on the
validation rows to maximise a metric users expect (``train.decision_threshold``):

- ``balanced_accuracy``: the mean of the two recalls (Youden's J point of the ROC curve);
- ``f1``: F1 of the positive class (``labels[1]``);
- ``argmax``: 0.5, no choice;
- ``auto`` (default): ``balanced_accuracy`` when the training labels are skewed beyond
  :data:`SKEWED` (the smaller class under 25 % of rows), else ``argmax`` — on a mild mix
  (fine foods, 35 % "other") argmax is already near the balanced optimum and a threshold
  chosen on a few hundred rows would only add noise.

The threshold is stored with the model (artifact properties, registry manifest) and exported in
the SavedModel: ``classify`` uses it, and ``assets.extra/evergreen_decision.json`` carries it for
callers that read ``scores`` (``evergreen predict``, the evaluator's thresholded metrics).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

# The exported file's one reader and writer live below the families (models/decision.py);
# re-exported here for the components that choose and apply the threshold.
from evergreen.models.decision import (  # noqa: F401
    DECISION_FILE,
    decide,
    read_threshold,
    write_decision,
)

OBJECTIVES = ("auto", "argmax", "balanced_accuracy", "f1")
SKEWED = 0.25  # auto: choose a threshold when the smaller class has under this share of rows


def objective_for(setting: str, counts: Mapping[str, float], labels: Sequence[str]) -> str:
    """The objective ``setting`` means for these training label counts (``auto`` resolved)."""
    if len(labels) != 2:
        return "argmax"
    if setting != "auto":
        return setting
    total = sum(float(counts.get(label, 0)) for label in labels)
    smaller = min(float(counts.get(label, 0)) for label in labels)
    return "balanced_accuracy" if total and smaller / total < SKEWED else "argmax"


def choose_threshold(score: np.ndarray, positive: np.ndarray, objective: str) -> float:
    """The cut on p(positive) that maximises ``objective`` on these rows (0.5 for argmax).

    Candidates are the midpoints between consecutive distinct scores; among equally good
    cuts the one closest to 0.5 wins, so a threshold moves only when it pays. With no
    positive or no negative row there is nothing to choose: 0.5.
    """
    score, positive = np.asarray(score, dtype=float), np.asarray(positive, dtype=bool)
    if objective == "argmax" or positive.all() or not positive.any():
        return 0.5
    values = np.unique(score)
    if len(values) > 2000:  # quantiles: enough resolution, and linear rather than quadratic
        values = np.unique(np.quantile(score, np.linspace(0, 1, 2001)))
    cuts = np.concatenate([[0.5], (values[:-1] + values[1:]) / 2]) if len(values) > 1 else [0.5]
    best, best_value = 0.5, -1.0
    for cut in cuts:
        value = _objective(score >= cut, positive, objective)
        if value > best_value + 1e-12 or (
            abs(value - best_value) <= 1e-12 and abs(cut - 0.5) < abs(best - 0.5)
        ):
            best, best_value = float(cut), value
    return best


def thresholded_metrics(score: np.ndarray, positive: np.ndarray, cut: float) -> dict[str, float]:
    """Imbalance-aware metrics of ``p(positive) >= cut``: balanced accuracy, F1, precision,
    recall (of the positive class), and the share of rows predicted positive."""
    predicted = np.asarray(score, dtype=float) >= cut
    positive = np.asarray(positive, dtype=bool)
    tp = float(np.sum(predicted & positive))
    return {
        "threshold": float(cut),
        "balanced_accuracy_at_threshold": _objective(predicted, positive, "balanced_accuracy"),
        "f1_at_threshold": _objective(predicted, positive, "f1"),
        "precision_at_threshold": tp / float(predicted.sum()) if predicted.any() else 0.0,
        "recall_at_threshold": tp / float(positive.sum()) if positive.any() else 0.0,
        "predicted_positive_share": float(predicted.mean()) if len(predicted) else 0.0,
    }


def _objective(predicted: np.ndarray, positive: np.ndarray, objective: str) -> float:
    tp = float(np.sum(predicted & positive))
    if objective == "f1":
        denominator = float(predicted.sum() + positive.sum())
        return 2 * tp / denominator if denominator else 0.0
    recalls = [tp / positive.sum() if positive.any() else np.nan]
    negative = ~positive
    recalls.append(
        float(np.sum(~predicted & negative)) / negative.sum() if negative.any() else np.nan
    )
    return float(np.nanmean(recalls))
