"""Evaluate a candidate against the champion on the new span and on the historic holdout.

Both models are scored through their exported SavedModels on raw rows (text, columns, image bytes), so a champion with an
older featurizer is compared fairly. The historic holdout — eval splits of earlier spans, capped
at ``holdout_rows`` — is the forgetting guard: the candidate is blessed only if no guarded metric
regresses beyond its threshold.

Eval sets of a few hundred rows are noisy: two equally good models differ by a point or two by
chance. Both models answer the *same* rows, so the guard uses the paired difference: a drop
counts as a regression only when it exceeds its threshold by more than the paired standard
error × z at ``guard_confidence`` (one-sided). A candidate that is really worse — trained on
shuffled labels, or one that forgot — is still refused; a coin flip on six rows is not.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from evergreen.components.featurize import span_rows
from evergreen.config import TrainConfig
from evergreen.metadata import Artifact
from evergreen.models.family import feed_saved_model
from evergreen.pipeline import ExecutionContext

NO_IMPROVEMENT = "no improvement over the champion"


def metrics(scores: np.ndarray, truth: list[str], labels: list[str]) -> dict[str, float]:
    """accuracy, loss (cross-entropy), macro-F1; for two classes also AUC and F1 of labels[1]."""
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
    if len(labels) == 2:
        out["f1"] = f1s[1]
        out["auc"] = _auc(scores[:, 1], y == 1)
    return out


def paired_regression(
    champion_correct: np.ndarray, candidate_correct: np.ndarray, threshold: float, confidence: float
) -> dict[str, Any]:
    """Is the candidate's accuracy drop on the same rows beyond ``threshold`` plus noise?

    Returns the drop (champion accuracy − candidate accuracy), the noise allowance (z × the
    standard error of the per-row paired difference) and ``regressed``.
    """
    difference = champion_correct.astype(float) - candidate_correct.astype(float)
    drop = float(difference.mean()) if len(difference) else 0.0
    noise = 0.0
    if confidence > 0 and len(difference) > 1:
        noise = (
            NormalDist().inv_cdf(confidence)
            * float(difference.std(ddof=1))
            / float(np.sqrt(len(difference)))
        )
    return {
        "drop": drop,
        "noise": noise,
        "threshold": threshold,
        "rows": len(difference),
        "regressed": bool(drop > threshold + noise),
    }


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


def score_saved_model(
    saved_model: Path,
    rows: Sequence[Mapping[str, Any]] | Sequence[str],
    columns: Mapping[str, str] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of raw ``rows`` (or texts) from a SavedModel, and its label order."""
    return feed_saved_model(saved_model, rows, columns=columns)


class EvaluateCandidate:
    """Pipeline component: candidate (+ champion) × new eval split + historic holdout → verdict."""

    name: ClassVar[str] = "evaluate"
    version: ClassVar[str] = "3"

    def __init__(self, cfg: TrainConfig, new_span: int) -> None:
        self.cfg = cfg
        self.new_span = new_span

    def parameters(self) -> dict[str, Any]:
        return {
            "holdout_rows": self.cfg.holdout_rows,
            "max_historic_regression": self.cfg.max_historic_regression,
            "max_new_regression": self.cfg.max_new_regression,
            "guard_confidence": self.cfg.guard_confidence,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        spans = sorted(
            (int(k.split("-")[1]), a) for k, a in ctx.inputs.items() if k.startswith("examples-")
        )
        new_span = dict(spans)[self.new_span]
        label = new_span.properties["label"]
        new_rows = list(span_rows(new_span, "eval"))
        earlier = [a for s, a in spans if s != self.new_span]
        hist_rows: list[dict[str, Any]] = []
        per_span = self.cfg.holdout_rows // max(len(earlier), 1)
        for artifact in earlier:
            hist_rows += list(itertools.islice(span_rows(artifact, "eval"), per_span))
        result: dict[str, Any] = {"candidate": {}, "champion": {}}
        correct: dict[tuple[str, str], np.ndarray] = {}
        for side in ("candidate", "champion"):
            if side not in ctx.inputs:
                continue
            saved = Path(ctx.inputs[side].uri) / "saved_model"
            columns = self._legacy_columns(ctx, ctx.inputs[side])
            for name, rows in (("new", new_rows), ("historic", hist_rows)):
                if rows:
                    scores, labels = score_saved_model(saved, rows, columns)
                    truth = [row[label] for row in rows]
                    result[side][name] = metrics(scores, truth, labels)
                    correct[side, name] = np.array(
                        [labels[i] == t for i, t in zip(scores.argmax(axis=1), truth, strict=True)]
                    )
        result["guards"] = self._guards(correct)
        result["blessed"], result["reasons"] = self._verdict(result)
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

    def _guards(self, correct: dict[tuple[str, str], np.ndarray]) -> dict[str, dict[str, Any]]:
        thresholds = {
            "historic": self.cfg.max_historic_regression,
            "new": self.cfg.max_new_regression,
        }
        return {
            name: paired_regression(
                correct["champion", name],
                correct["candidate", name],
                threshold,
                self.cfg.guard_confidence,
            )
            for name, threshold in thresholds.items()
            if ("champion", name) in correct and ("candidate", name) in correct
        }

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
            cand, champ = result["candidate"][name], result["champion"][name]
            if guard["regressed"]:
                blessed = False
                reasons.append(
                    f"{name} accuracy fell {guard['drop'] * 100:.1f} points (limit {guard['threshold'] * 100:.1f} + noise {guard['noise'] * 100:.1f} on {guard['rows']} rows)"
                )
            else:
                reasons.append(
                    f"{name} accuracy {cand['accuracy']:.3f} vs champion {champ['accuracy']:.3f} (within limit + noise)"
                )
        return blessed, reasons

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
