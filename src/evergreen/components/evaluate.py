"""Evaluate a candidate against the champion on the new span and on the historic holdout.

Both models are scored through their exported SavedModels on raw rows (text, columns, image bytes), so a champion with an
older featurizer is compared fairly. The historic holdout — eval splits of earlier spans, capped
at ``holdout_rows`` — is the forgetting guard: the candidate is blessed only if no guarded metric
regresses beyond its threshold.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from evergreen.components.featurize import span_rows
from evergreen.config import TrainConfig
from evergreen.metadata import Artifact
from evergreen.models.family import feed_saved_model
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
        "loss": float(-np.mean(np.log(np.clip(scores[known, y[known]], 1e-7, 1.0)))) if known.any() else float("nan"),
    }
    f1s = [_f1(predicted == c, y == c) for c in range(len(labels))]
    out["macro_f1"] = float(np.mean(f1s))
    if len(labels) == 2:
        out["f1"] = f1s[1]
        out["auc"] = _auc(scores[:, 1], y == 1)
    return out


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


def score_saved_model(saved_model: Path, rows: Sequence[Mapping[str, Any]] | Sequence[str], columns: Mapping[str, str] | None = None) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of raw ``rows`` (or texts) from a SavedModel, and its label order."""
    return feed_saved_model(saved_model, rows, columns=columns)


class EvaluateCandidate:
    """Pipeline component: candidate (+ champion) × new eval split + historic holdout → verdict."""

    name: ClassVar[str] = "evaluate"
    version: ClassVar[str] = "2"

    def __init__(self, cfg: TrainConfig, new_span: int) -> None:
        self.cfg = cfg
        self.new_span = new_span

    def parameters(self) -> dict[str, Any]:
        return {
            "holdout_rows": self.cfg.holdout_rows,
            "max_historic_regression": self.cfg.max_historic_regression,
            "max_new_regression": self.cfg.max_new_regression,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        spans = sorted((int(k.split("-")[1]), a) for k, a in ctx.inputs.items() if k.startswith("examples-"))
        new_span = dict(spans)[self.new_span]
        label = new_span.properties["label"]
        new_rows = list(span_rows(new_span, "eval"))
        earlier = [a for s, a in spans if s != self.new_span]
        hist_rows: list[dict[str, Any]] = []
        per_span = self.cfg.holdout_rows // max(len(earlier), 1)
        for artifact in earlier:
            hist_rows += list(itertools.islice(span_rows(artifact, "eval"), per_span))
        result: dict[str, Any] = {"candidate": {}, "champion": {}}
        for side in ("candidate", "champion"):
            if side not in ctx.inputs:
                continue
            saved = Path(ctx.inputs[side].uri) / "saved_model"
            columns = self._legacy_columns(ctx, ctx.inputs[side])
            for name, rows in (("new", new_rows), ("historic", hist_rows)):
                if rows:
                    scores, labels = score_saved_model(saved, rows, columns)
                    result[side][name] = metrics(scores, [row[label] for row in rows], labels)
        result["blessed"], result["reasons"] = self._verdict(result)
        writer = ctx.output("evaluation", "ModelEvaluation", span=self.new_span)
        writer.write_json("evaluation.json", result)
        ctx.set_properties("evaluation", {"blessed": result["blessed"], "candidate": ctx.inputs["candidate"].id})
        return result

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
        guards = (("historic", self.cfg.max_historic_regression), ("new", self.cfg.max_new_regression))
        for name, threshold in guards:
            cand, champ = result["candidate"].get(name), result["champion"].get(name)
            if not cand or not champ:
                continue
            drop = champ["accuracy"] - cand["accuracy"]
            if drop > threshold:
                blessed = False
                reasons.append(f"{name} accuracy fell {drop * 100:.1f} points (limit {threshold * 100:.1f})")
            else:
                reasons.append(f"{name} accuracy {cand['accuracy']:.3f} vs champion {champ['accuracy']:.3f}")
        return blessed, reasons

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
