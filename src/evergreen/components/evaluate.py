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
from typing import Any, ClassVar

import numpy as np

from evergreen import examples
from evergreen.components.featurize import span_rows
from evergreen.components.guards import (  # noqa: F401 (re-exported)
    auc_regression,
    average_precision,
    balanced_accuracy,
    balanced_regression,
    describe_guard,
    loss_regression,
    macro_f1_regression,
    metrics,
    paired_regression,
    primary_metric,
)
from evergreen.components.ingest import split_bucket
from evergreen.components.known_scores import KnownScores, score_once
from evergreen.components.slices import SliceEvaluation
from evergreen.components.threshold import read_threshold
from evergreen.config import EvaluateConfig, TrainConfig
from evergreen.metadata import Artifact
from evergreen.models.saved_model import feed_saved_model
from evergreen.pipeline import ExecutionContext, Inputs, per_span
from evergreen.records import Evaluation

NO_IMPROVEMENT = "no improvement over the champion"


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


@dataclass(frozen=True)
class EvaluateInputs(Inputs):
    """What the evaluator reads: the candidate, every span's examples so far, the champion.

    Args:
        candidate: the trained (or adopted) model.
        examples: examples by span; the new span's eval rows and the earlier spans' holdout.
        champion: the model the candidate is judged against (None: no champion yet).
    """

    candidate: Artifact
    examples: dict[int, Artifact] = per_span("examples")
    champion: Artifact | None = None


class _Scores:
    """Both models' scores on the evaluation sets: metrics, per-row answers, raw scores.

    Args:
        labels: the candidate's classes (its output order; empty: the first model's).
    """

    def __init__(self, labels: list[str]) -> None:
        self.labels = labels
        self.metrics: dict[str, dict[str, Any]] = {"candidate": {}, "champion": {}}
        self.scored: dict[tuple[str, str], Answers] = {}
        self.truths: dict[str, list[str]] = {}
        self.raw: dict[tuple[str, str], tuple[np.ndarray, list[str], float | None]] = {}
        self.rows_scored: dict[str, int] = {}  # rows each model scored (not known already)
        self.every: dict[str, tuple[list[str], np.ndarray, list[str]]] = {}

    def add(
        self,
        side: str,
        saved: Path,
        sets: Mapping[str, list[dict[str, Any]]],
        label: str,
        known: KnownScores | None = None,
    ) -> None:
        """Score every set with one model (one SavedModel load: all rows in one call); rows
        whose scores ``known`` keeps are not scored again."""
        every = [row for rows in sets.values() for row in rows]
        all_scores, model_labels, self.rows_scored[side] = (
            score_once(every, lambda rows: score_saved_model(saved, rows), known)
            if every
            else (np.zeros((0, 0)), [], 0)
        )
        self.every[side] = ([str(r[examples.ROW_HASH]) for r in every], all_scores, model_labels)
        start = 0
        for name, rows in sets.items():
            if not rows:
                continue
            scores, start = all_scores[start : start + len(rows)], start + len(rows)
            self.labels = self.labels or list(model_labels)
            self.truths[name] = [row[label] for row in rows]
            threshold = read_threshold(saved)
            self.raw[side, name] = (scores, list(model_labels), threshold)
            self.metrics[side][name] = metrics(scores, self.truths[name], model_labels, threshold)
            self.scored[side, name] = answers(
                scores, list(model_labels), self.truths[name], self.labels
            )


class EvaluateCandidate:
    """Pipeline component: candidate (+ champion) × new eval rows + historic holdout → verdict."""

    name: ClassVar[str] = "evaluate"
    version: ClassVar[str] = "3"

    def __init__(
        self,
        cfg: TrainConfig,
        new_span: int,
        slicing: EvaluateConfig | None = None,
        *,
        challenger: bool = False,
    ) -> None:
        self.cfg = cfg
        self.new_span = new_span
        self.slicing = slicing or EvaluateConfig()
        # A challenger (the policy's quality debt) must beat the champion's loss, not merely
        # pass the guards: it replaces a champion that is not known to be worse.
        self.challenger = challenger

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
            **({"challenger": True} if self.challenger else {}),
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        inputs: EvaluateInputs = ctx.declared  # type: ignore[assignment]
        spans = dict(sorted(inputs.examples.items()))
        label = spans[self.new_span].properties["label"]
        take = pooled_eval_take(
            self.new_span,
            {s: int(a.properties["splits"].get("eval", 0)) for s, a in spans.items()},
            self.cfg.min_eval_rows,
        )
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
        scores = _Scores(list(inputs.candidate.properties.get("labels") or []))
        scores.add("candidate", Path(inputs.candidate.uri) / "saved_model", sets, label)
        if inputs.champion is not None:  # its scores on rows it was evaluated on are kept
            champion = inputs.champion
            known = KnownScores(champion)
            scores.add("champion", Path(champion.uri) / "saved_model", sets, label, known)
        result = Evaluation(scores.metrics["candidate"], scores.metrics["champion"], list(take))
        self._judge(result, scores, sets, inputs)
        if result.blessed:  # the next champion: the next evaluation reuses these scores
            KnownScores(inputs.candidate).add(*scores.every["candidate"])
        writer = ctx.output("evaluation", "ModelEvaluation", span=self.new_span)
        writer.write_json("evaluation.json", result.to_dict())
        ctx.set_properties(
            "evaluation",
            {
                "blessed": result.blessed,
                "candidate": inputs.candidate.id,
                "rows_scored": scores.rows_scored,
                **({"challenger": True} if self.challenger else {}),
            },
        )
        return result.to_dict()

    def _judge(
        self,
        result: Evaluation,
        scores: _Scores,
        sets: Mapping[str, list[dict[str, Any]]],
        inputs: EvaluateInputs,
    ) -> None:
        """Fill ``result``'s guards and verdict (slices' refusals and training's note too)."""
        labels = scores.labels
        metric = primary_metric(self.cfg.primary_metric, labels)
        if metric == "auc" and len(labels) != 2:
            metric = "balanced_accuracy"  # AUC here is binary; more classes: the balanced mean
        result.primary_metric = metric
        result.guards = self._guards(scores.scored, scores.truths, labels, metric)
        result.blessed, result.reasons = self._verdict(result.to_dict())
        if self.slicing.slices:
            slicer = SliceEvaluation(self.slicing, self._guards)
            result.slices = slicer.evaluate(
                sets, scores.raw, scores.scored, scores.truths, labels, metric
            )
            if self.slicing.guard_slices and result.champion:
                refused = slicer.refusals(result.slices)
                result.blessed = result.blessed and not refused
                result.reasons += refused
        if self.challenger and result.champion:
            better, line = challenge_verdict(result.to_dict())
            result.blessed = result.blessed and better
            result.reasons = [line] + result.reasons
        trained = inputs.candidate.properties
        if inputs.champion is not None and trained.get("improved") is False:
            # Training kept the champion's weights: publishing them would be a no-op version.
            result.blessed = False
            result.reasons = [trained.get("note") or NO_IMPROVEMENT] + result.reasons

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

    def _verdict(self, result: dict[str, Any]) -> tuple[bool, list[str]]:
        if not result["champion"]:
            return True, ["no champion yet"]
        reasons, blessed = [], True
        for name, guard in result["guards"].items():
            blessed &= not guard["regressed"]
            reasons.append(describe_guard(name, guard, result))
        return blessed, reasons


def challenge_verdict(result: Mapping[str, Any]) -> tuple[bool, str]:
    """Does a challenger beat the champion? And the line that says so.

    It must have the lower cross-entropy on the evaluation rows (the new eval rows and the
    historic holdout, row-weighted), as an increment's epoch must beat the champion's val_loss
    to count. The loss, a proper scoring rule, varies far less between two models on a few
    hundred rows than AUC or accuracy do (quick fine foods, seed 3: AUC said -0.2 points on
    495 rows where the loss said -0.012 on both sets, and the held-out test rows +2.9 points).
    """
    losses = {"candidate": 0.0, "champion": 0.0}
    rows, parts = 0.0, []
    for name in ("new", "historic"):
        candidate, champion = result["candidate"].get(name), result["champion"].get(name)
        if not candidate or not champion:
            continue
        n = float(candidate.get("rows", 0.0))
        losses["candidate"] += n * candidate["loss"]
        losses["champion"] += n * champion["loss"]
        rows += n
        parts.append(f"{name} {candidate['loss']:.4f} vs {champion['loss']:.4f} on {n:.0f} rows")
    if not rows:
        return False, "challenger: no evaluation rows to compare with the champion; not published"
    candidate_loss, champion_loss = losses["candidate"] / rows, losses["champion"] / rows
    said = f"loss {candidate_loss:.4f} vs the champion's {champion_loss:.4f} ({', '.join(parts)})"
    if candidate_loss < champion_loss:
        return True, f"challenger: {said}, lower"
    return False, f"challenger: {said}, not lower; the champion stays"
