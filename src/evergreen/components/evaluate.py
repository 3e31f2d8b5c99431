"""Evaluate a candidate against the champion on the new span and on the historic holdout.

Both models are scored through their exported SavedModels on raw text, so a champion with an
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

from collections.abc import Mapping
from pathlib import Path
from statistics import NormalDist
from typing import Any, ClassVar

import numpy as np

from evergreen.components.featurize import span_texts
from evergreen.config import TrainConfig
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext


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


def score_saved_model(saved_model: Path, texts: list[str]) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of ``texts`` from a raw-text SavedModel, and its label order."""
    from evergreen.tf import tensorflow

    tf = tensorflow()
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
    chunks, labels = [], None
    for start in range(0, len(texts), 1024):
        out = serve(text=tf.constant(texts[start : start + 1024] or [""], dtype=tf.string))
        chunks.append(out["scores"].numpy()[: len(texts[start : start + 1024])])
        labels = [c.decode() for c in out["classes"].numpy()[0]]
    return (np.concatenate(chunks) if chunks else np.zeros((0, 0))), labels or []


class EvaluateCandidate:
    """Pipeline component: candidate (+ champion) × new eval split + historic holdout → verdict."""

    name: ClassVar[str] = "evaluate"
    version: ClassVar[str] = "1"

    def __init__(self, cfg: TrainConfig, new_span: int, text_feature: str) -> None:
        self.cfg = cfg
        self.new_span = new_span
        self.text_feature = text_feature

    def parameters(self) -> dict[str, Any]:
        return {
            "holdout_rows": self.cfg.holdout_rows,
            "max_historic_regression": self.cfg.max_historic_regression,
            "max_new_regression": self.cfg.max_new_regression,
            "guard_confidence": self.cfg.guard_confidence,
            "text_feature": self.text_feature,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        spans = sorted(
            (int(k.split("-")[1]), a) for k, a in ctx.inputs.items() if k.startswith("examples-")
        )
        new_texts, new_truth, _ = span_texts(dict(spans)[self.new_span], "eval", self.text_feature)
        earlier = [a for s, a in spans if s != self.new_span]
        hist_texts: list[str] = []
        hist_truth: list[str] = []
        per_span = self.cfg.holdout_rows // max(len(earlier), 1)
        for artifact in earlier:
            texts, truth, _ = span_texts(artifact, "eval", self.text_feature)
            hist_texts += texts[:per_span]
            hist_truth += truth[:per_span]
        result: dict[str, Any] = {"candidate": {}, "champion": {}}
        correct: dict[tuple[str, str], np.ndarray] = {}
        for side in ("candidate", "champion"):
            if side not in ctx.inputs:
                continue
            saved = Path(ctx.inputs[side].uri) / "saved_model"
            for name, texts, truth in (
                ("new", new_texts, new_truth),
                ("historic", hist_texts, hist_truth),
            ):
                if texts:
                    scores, labels = score_saved_model(saved, texts)
                    result[side][name] = metrics(scores, truth, labels)
                    correct[side, name] = np.array(
                        [labels[i] == t for i, t in zip(scores.argmax(axis=1), truth, strict=True)]
                    )
        result["guards"] = self._guards(correct)
        result["blessed"], result["reasons"] = self._verdict(result)
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
