"""Metrics of a scored evaluation set, and the guards that compare two models on one.

The evaluator (:mod:`evergreen.components.evaluate`) and sliced evaluation
(:mod:`evergreen.components.slices`) both use them; the module docstring of ``evaluate`` says
how each guard's noise allowance is computed.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from statistics import NormalDist
from typing import Any

import numpy as np

from evergreen.components.threshold import thresholded_metrics


def metrics(
    scores: np.ndarray, truth: list[str], labels: list[str], threshold: float | None = None
) -> dict[str, float]:
    """accuracy, loss (cross-entropy), macro-F1; for two classes also AUC and F1 of labels[1].

    Two classes also get the imbalance-aware metrics: PR-AUC (average precision of labels[1])
    and balanced accuracy, F1, precision and recall at the model's decision ``threshold``
    (0.5, argmax, when it has none; :mod:`evergreen.components.threshold`).
    """
    if not truth:
        return {}
    index = {label: i for i, label in enumerate(labels)}
    y = np.array([index.get(t, -1) for t in truth])
    known = y >= 0
    predicted = scores.argmax(axis=1)
    out = {
        "rows": float(len(truth)),
        "accuracy": float(np.mean(predicted == y)),
        "loss": float(-np.mean(np.log(np.clip(scores[known, y[known]], 1e-7, 1.0))))
        if known.any()
        else float("nan"),
    }
    f1s = [_f1(predicted == c, y == c) for c in range(len(labels))]
    out["macro_f1"] = float(np.mean(f1s))
    out["balanced_accuracy"] = balanced_accuracy(predicted == y, y)
    if len(labels) == 2:
        out["f1"] = f1s[1]
        out["auc"] = _auc(scores[:, 1], y == 1)
        out["pr_auc"] = average_precision(scores[:, 1], y == 1)
        cut = 0.5 if threshold is None else threshold
        out.update(thresholded_metrics(scores[:, 1], y == 1, cut))
    return out


def average_precision(score: np.ndarray, positive: np.ndarray) -> float:
    """PR-AUC as average precision: the mean precision at each positive's rank (NaN: none)."""
    if not positive.any():
        return float("nan")
    order = np.argsort(-score, kind="mergesort")
    hits = positive[order].astype(float)
    precision = np.cumsum(hits) / np.arange(1, len(hits) + 1)
    return float(np.sum(precision * hits) / hits.sum())


def paired_regression(
    champion_correct: np.ndarray,
    candidate_correct: np.ndarray,
    threshold: float,
    confidence: float,
    max_noise: float | None = None,
) -> dict[str, Any]:
    """Is the candidate's accuracy drop on the same rows beyond ``threshold`` plus noise?

    Args:
        champion_correct: per row, did the champion get it right.
        candidate_correct: the same for the candidate, on the same rows.
        threshold: the drop allowed (fraction, e.g. 0.02 = 2 points).
        confidence: one-sided level of the noise allowance (0: no allowance).
        max_noise: cap on the allowance (None: uncapped).

    Returns:
        The drop (champion accuracy − candidate accuracy), the noise allowance (z × the
        standard error of the per-row paired difference, capped), the uncapped allowance,
        ``threshold``, ``rows`` and ``regressed``.
    """
    difference = champion_correct.astype(float) - candidate_correct.astype(float)
    drop = float(difference.mean()) if len(difference) else 0.0
    se = float(difference.std(ddof=1)) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return _judged(drop, se, threshold, confidence, max_noise, len(difference))


def _judged(
    drop: float,
    standard_error: float,
    threshold: float,
    confidence: float,
    max_noise: float | None,
    rows: int,
) -> dict[str, Any]:
    """A guard's result: the drop, its capped noise allowance, and whether it regressed."""
    raw = NormalDist().inv_cdf(confidence) * standard_error if confidence > 0 else 0.0
    raw = 0.0 if not np.isfinite(raw) else float(raw)
    noise = min(raw, max_noise) if max_noise is not None else raw
    return {
        "drop": drop,
        "noise": noise,
        "noise_uncapped": raw,
        "threshold": threshold,
        "rows": rows,
        "regressed": bool(drop > threshold + noise),
    }


def balanced_accuracy(correct: np.ndarray, y: np.ndarray) -> float:
    """Mean recall over the classes present in ``y`` (rows with an unknown label, -1, skipped)."""
    classes = [c for c in np.unique(y) if c >= 0]
    if not classes:
        return float("nan")
    return float(np.mean([correct[y == c].mean() for c in classes]))


def balanced_regression(
    champion_correct: np.ndarray,
    candidate_correct: np.ndarray,
    y: np.ndarray,
    threshold: float,
    confidence: float,
    max_noise: float | None = None,
) -> dict[str, Any]:
    """:func:`paired_regression` for balanced accuracy: per-class paired differences, averaged.

    The variance of a mean of per-class means is the sum of each class's paired variance over
    its rows, divided by the number of classes squared.
    """
    classes = [c for c in np.unique(y) if c >= 0]
    difference = champion_correct.astype(float) - candidate_correct.astype(float)
    parts = [difference[y == c] for c in classes]
    drop = float(np.mean([d.mean() for d in parts])) if parts else 0.0
    variance = sum(d.var(ddof=1) / len(d) for d in parts if len(d) > 1) / max(len(parts), 1) ** 2
    return _judged(drop, float(np.sqrt(variance)), threshold, confidence, max_noise, len(y))


def auc_regression(
    champion_score: np.ndarray,
    candidate_score: np.ndarray,
    positive: np.ndarray,
    threshold: float,
    confidence: float,
    max_noise: float | None = None,
) -> dict[str, Any]:
    """Is the candidate's ROC AUC drop beyond ``threshold`` plus noise? (Hanley & McNeil.)

    Each AUC's standard error is Hanley & McNeil's (1982) formula; the two are correlated (the
    same rows), so the difference's variance is se1² + se2² − 2·r·se1·se2, with r the mean of
    the Pearson correlations of the two models' scores within positives and within negatives.
    """
    a_champ, a_cand = _auc(champion_score, positive), _auc(candidate_score, positive)
    drop = a_champ - a_cand if np.isfinite(a_champ) and np.isfinite(a_cand) else 0.0
    n_pos, n_neg = int(positive.sum()), int((~positive).sum())
    se1, se2 = _hanley_mcneil(a_champ, n_pos, n_neg), _hanley_mcneil(a_cand, n_pos, n_neg)
    r = np.nanmean(
        [
            _correlation(champion_score[positive], candidate_score[positive]),
            _correlation(champion_score[~positive], candidate_score[~positive]),
        ]
    )
    r = 0.0 if not np.isfinite(r) else float(r)
    variance = max(se1**2 + se2**2 - 2 * r * se1 * se2, 0.0)
    return _judged(
        float(drop), float(np.sqrt(variance)), threshold, confidence, max_noise, len(positive)
    )


def _hanley_mcneil(auc: float, n_pos: int, n_neg: int) -> float:
    if not n_pos or not n_neg or not np.isfinite(auc):
        return 0.0
    q1, q2 = auc / (2 - auc), 2 * auc**2 / (1 + auc)
    variance = (auc * (1 - auc) + (n_pos - 1) * (q1 - auc**2) + (n_neg - 1) * (q2 - auc**2)) / (
        n_pos * n_neg
    )
    return float(np.sqrt(max(variance, 0.0)))


def _correlation(a: np.ndarray, b: np.ndarray) -> float:
    if len(a) < 2 or a.std() == 0 or b.std() == 0:
        return float("nan")
    return float(np.corrcoef(a, b)[0, 1])


def macro_f1_regression(
    champion_predicted: np.ndarray,
    candidate_predicted: np.ndarray,
    y: np.ndarray,
    n_classes: int,
    threshold: float,
    confidence: float,
    max_noise: float | None = None,
) -> dict[str, Any]:
    """Is the candidate's macro-F1 drop beyond ``threshold`` plus noise? (Paired bootstrap.)"""

    def macro(predicted: np.ndarray, truth: np.ndarray) -> float:
        return float(np.mean([_f1(predicted == c, truth == c) for c in range(n_classes)]))

    drop = macro(champion_predicted, y) - macro(candidate_predicted, y)
    rng = np.random.default_rng(0)
    drops = []
    for _ in range(200 if len(y) > 1 else 0):
        i = rng.integers(0, len(y), len(y))
        drops.append(macro(champion_predicted[i], y[i]) - macro(candidate_predicted[i], y[i]))
    se = float(np.std(drops, ddof=1)) if len(drops) > 1 else 0.0
    return _judged(float(drop), se, threshold, confidence, max_noise, len(y))


def loss_regression(
    champion_loss: np.ndarray,
    candidate_loss: np.ndarray,
    threshold: float,
    confidence: float,
    max_noise: float | None = None,
) -> dict[str, Any]:
    """Is the candidate's mean cross-entropy higher than the champion's beyond a relative limit?

    ``drop`` is the relative rise ((candidate − champion) / champion), so one threshold fits
    every task; the noise allowance is the paired standard error, relative too.
    """
    base = float(champion_loss.mean()) if len(champion_loss) else 0.0
    if base <= 0:
        return _judged(0.0, 0.0, threshold, confidence, max_noise, len(champion_loss))
    difference = candidate_loss - champion_loss
    se = float(difference.std(ddof=1)) / np.sqrt(len(difference)) if len(difference) > 1 else 0.0
    return _judged(
        float(difference.mean()) / base,
        se / base,
        threshold,
        confidence,
        max_noise,
        len(difference),
    )


def primary_metric(name: str, labels: Sequence[str]) -> str:
    """The guarded metric: ``name``, or for ``auto`` AUC (two classes) or balanced accuracy."""
    if name != "auto":
        return name
    return "auc" if len(labels) == 2 else "balanced_accuracy"


def _f1(predicted: np.ndarray, actual: np.ndarray) -> float:
    tp = float(np.sum(predicted & actual))
    denominator = float(np.sum(predicted) + np.sum(actual))
    return 2 * tp / denominator if denominator else 0.0


def _auc(score: np.ndarray, positive: np.ndarray) -> float:
    """ROC AUC as the Mann–Whitney statistic (ties count half)."""
    pos, neg = score[positive], score[~positive]
    if not len(pos) or not len(neg):
        return float("nan")
    order = np.argsort(np.concatenate([pos, neg]), kind="mergesort")
    ranks = np.empty(len(order))
    ranks[order] = np.arange(1, len(order) + 1)
    values = np.concatenate([pos, neg])
    for v in np.unique(values):  # average ranks of ties
        tied = values == v
        ranks[tied] = ranks[tied].mean()
    return float((ranks[: len(pos)].sum() - len(pos) * (len(pos) + 1) / 2) / (len(pos) * len(neg)))


def describe_guard(name: str, guard: Mapping[str, Any], result: Mapping[str, Any]) -> str:
    """One verdict line: the metric of both models, the drop, and the allowance used."""
    data_set = name.removesuffix("_loss")
    metric = guard["metric"]
    cand = result["candidate"].get(data_set, {}).get(metric, float("nan"))
    champ = result["champion"].get(data_set, {}).get(metric, float("nan"))
    unit = "% (relative)" if metric == "loss" else " points"
    word = "rose" if metric == "loss" else "fell"
    capped = (
        f", capped from {guard['noise_uncapped'] * 100:.1f}"
        if guard["noise_uncapped"] > guard["noise"]
        else ""
    )
    allowance = (
        f"limit {guard['threshold'] * 100:.1f} + noise allowance {guard['noise'] * 100:.1f}"
        f"{capped} on {guard['rows']} rows"
    )
    change = abs(guard["drop"]) * 100
    if guard["regressed"]:
        return f"{data_set} {metric} {word} {change:.1f}{unit} ({cand:.3f} vs champion {champ:.3f}; {allowance})"
    return f"{data_set} {metric} {cand:.3f} vs champion {champ:.3f}, within {allowance}"
