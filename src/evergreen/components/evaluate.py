"""Evaluate a candidate against the champion on the new span and on the historic holdout.

Both models are scored through their exported SavedModels on raw rows (text, columns, image
bytes), so a champion with an older featurizer is compared fairly, on two sets of rows:

* **new**: the new span's eval split; when it has fewer than ``min_eval_rows`` rows, pooled
  with the first rows of the latest earlier spans' eval splits, up to ``min_eval_rows``
  (:func:`pooled_eval_take`, the same rows training's early stopping judged on);
* **historic** (the forgetting guard): a uniform, stable sample of all earlier spans' eval rows,
  stratified by span and class (:func:`historic_holdout`), at most ``holdout_rows``.

On each set two guards hold: the **primary metric** (``primary_metric``; ``auto`` is AUC for two
classes and balanced accuracy otherwise — accuracy cannot see a model that never predicts the
minority class) must not drop beyond its threshold, and the **loss** (cross-entropy) must not
rise by more than ``max_loss_increase`` (relative). A drop counts only beyond its threshold
plus a noise allowance: z at ``guard_confidence`` (one-sided) × the standard error of the
paired difference, *capped* at ``max_noise_allowance`` so a tiny eval set cannot excuse a large
drop. The standard error is, per metric: accuracy and loss — the per-row paired difference;
balanced accuracy — the same, stratified by class; AUC — Hanley & McNeil (1982) per model,
combined with the correlation of the two models' scores within each class (the idea of Hanley &
McNeil 1983, with Pearson's r in place of their table); macro-F1 — a paired bootstrap (200
resamples, fixed seed). Every verdict line prints the allowance it used.
"""

from __future__ import annotations

import itertools
import json
import os
import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from evergreen import examples
from evergreen.components.featurize import span_rows
from evergreen.components.ingest import split_bucket
from evergreen.components.slices import SliceEvaluation
from evergreen.components.threshold import read_threshold, thresholded_metrics
from evergreen.config import EvaluateConfig, TrainConfig
from evergreen.metadata import Artifact
from evergreen.models.saved_model import feed_saved_model
from evergreen.pipeline import ExecutionContext

NO_IMPROVEMENT = "no improvement over the champion"


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


def pooled_eval_spans(new_span: int, eval_rows: Mapping[int, int], min_rows: int) -> list[int]:
    """The spans whose eval rows judge ``new_span``: itself, plus the latest earlier ones.

    A split of a few dozen rows cannot tell two models apart, so while the rows gathered are
    fewer than ``min_rows`` the next most recent earlier span's eval split is added (whole, so
    that training's early stopping and the evaluator see the same rows).

    Args:
        new_span: the span being trained on.
        eval_rows: eval rows per span (spans after ``new_span`` are ignored).
        min_rows: the fewest rows to judge on (0: the new span alone).

    Returns:
        Span numbers, ``new_span`` first, then earlier spans newest first.
    """
    chosen, total = [new_span], int(eval_rows.get(new_span, 0))
    for span in sorted((s for s in eval_rows if s < new_span), reverse=True):
        if total >= min_rows:
            break
        chosen.append(span)
        total += int(eval_rows[span])
    return chosen


def pooled_eval_take(new_span: int, eval_rows: Mapping[int, int], min_rows: int) -> dict[int, int]:
    """How many eval rows each of :func:`pooled_eval_spans` gives: the new span all of its own,
    earlier spans only the first rows (file order) still missing to reach ``min_rows``.

    Pooling whole earlier spans made the judged set as large as the largest span: with a 48k
    history and a 480-row span, 9,600 eval rows were scored every update, where 200 are asked
    for (issue 13). Training's early stopping and the evaluator take the same rows.

    Returns:
        ``{span: rows}``, in :func:`pooled_eval_spans` order (the new span first).
    """
    spans = pooled_eval_spans(new_span, eval_rows, min_rows)
    take = {new_span: int(eval_rows.get(new_span, 0))}
    missing = max(min_rows - take[new_span], 0)
    for span in spans[1:]:
        take[span] = min(int(eval_rows[span]), missing)
        missing -= take[span]
    return take


def score_saved_model(
    saved_model: Path,
    rows: Sequence[Mapping[str, Any]] | Sequence[str],
    columns: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of raw ``rows`` (or texts) from a SavedModel, and its label order."""
    return feed_saved_model(saved_model, rows, columns=columns)


@dataclass(frozen=True)
class Answers:
    """One model's per-row answers on one set of rows, in the candidate's label order."""

    correct: np.ndarray  # bool: argmax is the true label
    predicted: np.ndarray  # int: predicted class index (-1: a class the candidate lacks)
    loss: np.ndarray  # float: -log p(true label), clipped at 1e-7
    positive: np.ndarray  # float: p(labels[1]) for two classes, else empty


def answers(
    scores: np.ndarray, model_labels: list[str], truth: list[str], labels: list[str]
) -> Answers:
    """Per-row answers of a model whose outputs are ``model_labels``, mapped onto ``labels``."""
    index = {label: i for i, label in enumerate(labels)}
    argmax = scores.argmax(axis=1)
    predicted = np.array([index.get(model_labels[i], -1) for i in argmax], dtype=int)
    y = np.array([index.get(t, -1) for t in truth], dtype=int)
    own = {label: i for i, label in enumerate(model_labels)}
    true_p = np.array(
        [scores[r, own[t]] if t in own else 0.0 for r, t in enumerate(truth)], dtype=float
    )
    positive = (
        scores[:, own[labels[1]]] if len(labels) == 2 and labels[1] in own else np.zeros(len(truth))
    )
    return Answers(
        correct=(predicted == y) & (y >= 0),
        predicted=predicted,
        loss=-np.log(np.clip(true_p, 1e-7, 1.0)),
        positive=np.asarray(positive, dtype=float) if len(labels) == 2 else np.array([]),
    )


def allocate(total: int, sizes: Mapping[Any, int]) -> dict[Any, int]:
    """Split ``total`` over groups in proportion to their sizes (largest remainder), ≤ each size."""
    available = sum(sizes.values())
    if available <= total:
        return dict(sizes)
    exact = {k: total * n / available for k, n in sizes.items()}
    out = {k: int(v) for k, v in exact.items()}
    for k in sorted(exact, key=lambda k: (out[k] - exact[k], str(k)))[: total - sum(out.values())]:
        out[k] += 1
    return out


def stratified_sample(
    rows: Iterable[Mapping[str, Any]], k: int, label: str, salt: str
) -> list[dict[str, Any]]:
    """A stable uniform sample of ``k`` rows, stratified by class (proportional allocation).

    Each row's place comes from the hash of its row hash and ``salt``, so the same rows are
    chosen every time, whatever the file order; the sample is returned in that hashed order.
    """
    by_class: dict[str, list[tuple[float, dict[str, Any]]]] = {}
    for row in rows:
        key = split_bucket(salt + str(row[examples.ROW_HASH]))
        by_class.setdefault(str(row[label]), []).append((key, dict(row)))
    quotas = allocate(k, {c: len(v) for c, v in by_class.items()})
    chosen = [
        kv for c, v in by_class.items() for kv in sorted(v, key=lambda kv: kv[0])[: quotas[c]]
    ]
    return [row for _, row in sorted(chosen, key=lambda kv: kv[0])]


def historic_holdout(earlier: Sequence[Artifact], cap: int) -> list[dict[str, Any]]:
    """The forgetting guard's rows: a uniform sample of every earlier span's eval rows.

    Stratified by span (each span in proportion to its eval split) and by class within a span;
    stable (hash-chosen, so the same rows every run). At most ``cap`` rows; all when fewer.
    The same rows as :func:`stratified_sample` over each span's whole eval split, read from the
    span's :func:`holdout_candidates` (at most ``cap`` rows per class) instead of decoding the
    whole split on every run: the cost no longer grows with the history.
    """
    quotas = allocate(cap, {a.id: int(a.properties["splits"].get("eval", 0)) for a in earlier})
    out: list[dict[str, Any]] = []
    for artifact in earlier:
        if not quotas[artifact.id]:
            continue
        counts, ranked = holdout_candidates(artifact, cap)
        per_class = allocate(quotas[artifact.id], counts)
        chosen = [kv for c, rows in ranked.items() for kv in rows[: per_class.get(c, 0)]]
        out += [row for _, row in sorted(chosen, key=lambda kv: kv[0])]
    return out


HOLDOUT_CACHE = "holdout-cache"


def holdout_candidates(
    artifact: Artifact, cap: int
) -> tuple[dict[str, int], dict[str, list[tuple[float, dict[str, Any]]]]]:
    """A span's eval rows per class, and each class's ``cap`` rows with the smallest keys.

    That is all :func:`historic_holdout` can take from the span (a class's quota is at most
    ``cap``). Computed once per examples artifact (its rows never change) and kept beside its
    folder in ``holdout-cache-<name>/cap-N/`` (the chosen records, in key order, and the counts);
    written to a temporary folder and renamed, so a killed run leaves no half-written cache.

    Returns:
        ``({class: eval rows}, {class: [(key, row), …] in key order})``.
    """
    # Beside the artifact's folder, not in it: a subfolder of an examples artifact is a split.
    uri = Path(artifact.uri)
    folder = uri.parent / f"{HOLDOUT_CACHE}-{uri.name}" / f"cap-{cap}"
    types, label = artifact.properties["types"], artifact.properties["label"]
    if not (folder / "counts.json").is_file():
        _write_holdout_candidates(artifact, cap, folder)
    counts = json.loads((folder / "counts.json").read_text(encoding="utf-8"))
    ranked: dict[str, list[tuple[float, dict[str, Any]]]] = {c: [] for c in counts}
    for record in examples.iter_records(folder):
        row = examples.decode(record, types, label)
        key = split_bucket("holdout" + str(row[examples.ROW_HASH]))
        ranked.setdefault(str(row[label]), []).append((key, row))
    return counts, ranked


def _write_holdout_candidates(artifact: Artifact, cap: int, folder: Path) -> None:
    label = artifact.properties["label"]
    by_class: dict[str, list[tuple[float, bytes]]] = {}
    for record in examples.iter_records(Path(artifact.uri) / "eval"):
        row = examples.decode(record, artifact.properties["types"], label)
        key = split_bucket("holdout" + str(row[examples.ROW_HASH]))
        by_class.setdefault(str(row[label]), []).append((key, record))
    partial = folder.parent / f".partial-{os.getpid()}-{folder.name}"
    shutil.rmtree(partial, ignore_errors=True)
    writer = examples.ShardWriter(partial, 100_000)
    for rows in by_class.values():
        for _, record in sorted(rows, key=lambda kv: kv[0])[:cap]:
            writer.write(record)
    writer.close()
    counts = {c: len(rows) for c, rows in by_class.items()}
    (partial / "counts.json").write_text(json.dumps(counts), encoding="utf-8")
    try:
        os.replace(partial, folder)
    except OSError:  # another process wrote it first: the same rows
        shutil.rmtree(partial, ignore_errors=True)


class EvaluateCandidate:
    """Pipeline component: candidate (+ champion) × new eval rows + historic holdout → verdict."""

    name: ClassVar[str] = "evaluate"
    version: ClassVar[str] = "3"

    def __init__(
        self, cfg: TrainConfig, new_span: int, slicing: EvaluateConfig | None = None
    ) -> None:
        self.cfg = cfg
        self.new_span = new_span
        self.slicing = slicing or EvaluateConfig()

    def parameters(self) -> dict[str, Any]:
        return {
            "holdout_rows": self.cfg.holdout_rows,
            "max_historic_regression": self.cfg.max_historic_regression,
            "max_new_regression": self.cfg.max_new_regression,
            "guard_confidence": self.cfg.guard_confidence,
            "primary_metric": self.cfg.primary_metric,
            "max_noise_allowance": self.cfg.max_noise_allowance,
            "max_loss_increase": self.cfg.max_loss_increase,
            "min_eval_rows": self.cfg.min_eval_rows,
            "holdout": "stratified-hash-1",
            # Only when slicing is asked, so that existing evaluations stay cached.
            **({"slicing": asdict(self.slicing)} if self.slicing.slices else {}),
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        spans = dict(
            sorted(
                (int(k.split("-")[1]), a)
                for k, a in ctx.inputs.items()
                if k.startswith("examples-")
            )
        )
        label = spans[self.new_span].properties["label"]
        take = pooled_eval_take(
            self.new_span,
            {s: int(a.properties["splits"].get("eval", 0)) for s, a in spans.items()},
            self.cfg.min_eval_rows,
        )
        pooled = list(take)
        sets = {
            "new": [
                row
                for s, n in take.items()
                for row in itertools.islice(span_rows(spans[s], "eval"), n)
            ],
            "historic": historic_holdout(
                [a for s, a in spans.items() if s < self.new_span], self.cfg.holdout_rows
            ),
        }
        labels = list(ctx.inputs["candidate"].properties.get("labels") or [])
        result: dict[str, Any] = {"candidate": {}, "champion": {}, "new_spans": pooled}
        scored: dict[tuple[str, str], Answers] = {}
        truths: dict[str, list[str]] = {}
        raw: dict[tuple[str, str], tuple[np.ndarray, list[str], float | None]] = {}
        for side in ("candidate", "champion"):
            if side not in ctx.inputs:
                continue
            saved = Path(ctx.inputs[side].uri) / "saved_model"
            columns = self._legacy_columns(ctx, ctx.inputs[side])
            # One SavedModel load per model: both sets are scored in one call, then split.
            every = [row for rows in sets.values() for row in rows]
            all_scores, model_labels = (
                score_saved_model(saved, every, columns) if every else ([], [])
            )
            start = 0
            for name, rows in sets.items():
                if not rows:
                    continue
                scores, start = all_scores[start : start + len(rows)], start + len(rows)
                labels = labels or list(model_labels)
                truths[name] = [row[label] for row in rows]
                raw[side, name] = (scores, list(model_labels), read_threshold(saved))
                result[side][name] = metrics(
                    scores, truths[name], model_labels, read_threshold(saved)
                )
                scored[side, name] = answers(scores, list(model_labels), truths[name], labels)
        metric = primary_metric(self.cfg.primary_metric, labels)
        if metric == "auc" and len(labels) != 2:
            metric = "balanced_accuracy"  # AUC here is binary; more classes: the balanced mean
        result["primary_metric"] = metric
        result["guards"] = self._guards(scored, truths, labels, metric)
        result["blessed"], result["reasons"] = self._verdict(result)
        if self.slicing.slices:
            slicer = SliceEvaluation(self.slicing, self._guards)
            result["slices"] = slicer.evaluate(sets, raw, scored, truths, labels, metric)
            if self.slicing.guard_slices and result["champion"]:
                refused = slicer.refusals(result["slices"])
                result["blessed"] = result["blessed"] and not refused
                result["reasons"] += refused
        trained = ctx.inputs["candidate"].properties
        if "champion" in ctx.inputs and trained.get("improved") is False:
            # Training kept the champion's weights: publishing them would be a no-op version.
            result["blessed"] = False
            result["reasons"] = [trained.get("note") or NO_IMPROVEMENT] + result["reasons"]
        writer = ctx.output("evaluation", "ModelEvaluation", span=self.new_span)
        writer.write_json("evaluation.json", result)
        ctx.set_properties(
            "evaluation", {"blessed": result["blessed"], "candidate": ctx.inputs["candidate"].id}
        )
        return result

    def _guards(
        self,
        scored: Mapping[tuple[str, str], Answers],
        truths: Mapping[str, list[str]],
        labels: list[str],
        metric: str,
    ) -> dict[str, dict[str, Any]]:
        """The primary-metric guard (``new``, ``historic``) and loss guard of each set."""
        cfg = self.cfg
        thresholds = {"historic": cfg.max_historic_regression, "new": cfg.max_new_regression}
        index = {label: i for i, label in enumerate(labels)}
        out: dict[str, dict[str, Any]] = {}
        for name, threshold in thresholds.items():
            if ("champion", name) not in scored or ("candidate", name) not in scored:
                continue
            champ, cand = scored["champion", name], scored["candidate", name]
            y = np.array([index.get(t, -1) for t in truths[name]], dtype=int)
            judge = (cfg.guard_confidence, cfg.max_noise_allowance)
            if metric == "auc":
                guard = auc_regression(champ.positive, cand.positive, y == 1, threshold, *judge)
            elif metric == "balanced_accuracy":
                guard = balanced_regression(champ.correct, cand.correct, y, threshold, *judge)
            elif metric == "macro_f1":
                guard = macro_f1_regression(
                    champ.predicted, cand.predicted, y, len(labels), threshold, *judge
                )
            else:
                guard = paired_regression(champ.correct, cand.correct, threshold, *judge)
            out[name] = {"metric": metric, **guard}
            out[f"{name}_loss"] = {
                "metric": "loss",
                **loss_regression(champ.loss, cand.loss, cfg.max_loss_increase, *judge),
            }
        return out

    @staticmethod
    def _legacy_columns(ctx: ExecutionContext, model: Artifact) -> dict[str, str]:
        # A text champion exported before model families has no inputs map: its one input
        # `text` reads the featurizer's text column.
        featurizer = model.properties.get("featurizer")
        if featurizer is None:
            return {}
        column = ctx.store.artifact(int(featurizer)).properties.get("text_feature")
        return {"text": column} if column else {}

    def _verdict(self, result: dict[str, Any]) -> tuple[bool, list[str]]:
        if not result["champion"]:
            return True, ["no champion yet"]
        reasons, blessed = [], True
        for name, guard in result["guards"].items():
            blessed &= not guard["regressed"]
            reasons.append(describe_guard(name, guard, result))
        return blessed, reasons

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
