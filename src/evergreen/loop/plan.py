"""The plan of one span's run: which champion, which labels, and the mode with its reasons.

The mode is *full* when there is no champion, when ``--full`` is asked, or when a label class
appears that the champion does not know (:func:`evergreen.policy.hard_rule`, the one place
those rules live); otherwise the retrain policy (:func:`evergreen.policy.decide`) weighs drift, the frozen
featurizer's fit, increments since the last full retrain, data growth and forgetting, and
answers *full*, *incremental* or *block*. Everything here reads the metadata store and the
registry; nothing runs a component except drift (cached).
"""

from __future__ import annotations

import itertools
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evergreen.components import statistics as stats_mod
from evergreen.components.featurize import span_rows
from evergreen.metadata import Artifact, SpanRecord
from evergreen.models.registry import load_featurizer
from evergreen.project import Project
from evergreen.records import Evaluation
from evergreen.registry import CHAMPION, Registry

FULL, INCREMENTAL, BLOCK, ADOPTED = "full", "incremental", "block", "adopted"


@dataclass
class Adoption:
    """A model trained elsewhere, to be adopted (``evergreen adopt``).

    Args:
        source: the model file or SavedModel folder.
        digest: its content hash (part of the adopt run's cache key).
        featurizer: the pass-through featurizer of its inputs (unfitted).
    """

    source: Path
    digest: str
    featurizer: Any


@dataclass
class SpanPlan:
    """What one span's run will do, decided before any training.

    Args:
        span: the span trained on (adopt: the last validated span).
        history: the validated spans up to ``span``, in order.
        examples: their examples artifacts, by span.
        champion: the model this span is trained and judged against (None: none yet).
        labels: the label classes of the model to train.
        mode: ``full``, ``incremental``, ``block`` or ``adopted``.
        reason: why that mode (the policy's reasons joined).
        drift: the span's drift severity (None: drift is off, or not measured).
        policy_tokens: tokens the featurizer-fit check computed (booked in the ledger).
        adoption: the model to adopt (mode ``adopted`` only).
        challenger: incremental: why a full retrain challenges the increment once it has run
            (the policy's quality debt; "": none).
        challenging: this plan is that challenger: a full retrain that replaces the champion
            only if its loss on the evaluation rows is lower.
    """

    span: int
    history: list[SpanRecord]
    examples: dict[int, Artifact]
    champion: Artifact | None
    labels: list[str]
    mode: str = FULL
    reason: str = ""
    drift: str | None = None
    policy_tokens: int = 0
    adoption: Adoption | None = field(default=None)
    challenger: str = ""
    challenging: bool = False

    @property
    def rows_new(self) -> int:
        return sum(self.examples[self.span].properties["splits"].values())

    @property
    def rows_total(self) -> int:
        return sum(sum(a.properties["splits"].values()) for a in self.examples.values())


def hard_rule(champion: Artifact | None, force_full: bool, labels: list[str]) -> tuple[str, str]:
    """:func:`evergreen.policy.hard_rule` for this champion: ``(mode, reason)``, or ``("", "")``."""
    from evergreen.policy import hard_rule as rule

    known = set(champion.properties["labels"]) if champion is not None else set(labels)
    decision = rule(
        has_champion=champion is not None, force_full=force_full, new_labels=set(labels) - known
    )
    return (decision.mode, decision.reason) if decision else ("", "")


class Planner:
    """Plans each span's run from the store and the registry of one project."""

    def __init__(self, project: Project, registry: Registry) -> None:
        self.project = project
        self.cfg = project.config
        self.store = project.store
        self.registry = registry

    def plan(self, record: SpanRecord, history: list[SpanRecord], force_full: bool) -> SpanPlan:
        """The plan of ``record``'s span trained on ``history`` (``record`` last)."""
        plan = SpanPlan(
            span=record.span,
            history=history,
            examples={r.span: self.store.artifact(r.examples_id) for r in history},
            champion=self.champion_for(record.span),
            labels=self.label_classes(history),
        )
        self._decide(plan, force_full)
        return plan

    def challenger_plan(self, record: SpanRecord, history: list[SpanRecord], why: str) -> SpanPlan:
        """The full retrain that challenges ``record``'s increment (run after it): judged
        against the champion the increment left, whether or not that was published."""
        return SpanPlan(
            span=record.span,
            history=history,
            examples={r.span: self.store.artifact(r.examples_id) for r in history},
            champion=self.champion_for(record.span),
            labels=self.label_classes(history),
            mode=FULL,
            reason=why,
            drift=None,
            challenging=True,
        )

    def champion_model(self) -> Artifact | None:
        """The registry champion's ``Model`` artifact (None: no champion yet)."""
        version = self.registry.alias(self.cfg.name, CHAMPION)
        if version is None:
            return None
        manifest = self.registry.get(self.cfg.name, version).manifest
        candidate = manifest.get("lineage", {}).get("candidate")
        return self.store.artifact(int(candidate)) if candidate else None

    def champion_for(self, span: int) -> Artifact | None:
        """The champion that ``span`` is trained and judged against.

        Normally the registry's champion. A run killed after the alias moved but before its
        push was recorded left the alias on this span's own candidate; its evaluation recorded
        the champion it was judged against, and that one is used again so that every finished
        step is reused from the cache and the push completes.
        """
        for evaluation in reversed(self.store.artifacts(type="ModelEvaluation", span=span)):
            if not evaluation.properties.get("blessed") or self._pushed(evaluation):
                continue
            producer = self.store.producer(evaluation.id)
            if producer is not None:
                return self.store.run_inputs(producer.id).get("champion")
        return self.champion_model()

    def label_classes(self, history: list[SpanRecord]) -> list[str]:
        """The schema's label domain plus every class the spans so far hold.

        Validation only warns about a new class by default, so the schema alone can miss one;
        a class outside the model's outputs would have no label id and wedge every later run.
        """
        schema = self.project.current_schema()
        classes = set(schema.label_domain) if schema else set()
        for record in history:
            if record.statistics_id is not None:
                classes.update(stats_mod.load(self.store.artifact(record.statistics_id)).labels)
        return sorted(classes)

    def _pushed(self, evaluation: Artifact) -> bool:
        return any(
            run.component == "push" and run.status == "succeeded"
            for run in self.store.consumers(evaluation.id)
        )

    def _decide(self, plan: SpanPlan, force_full: bool) -> None:
        """Set the plan's mode, reasons, drift severity and the policy's token cost.

        Hard rules first (:func:`hard_rule`); then the retrain policy weighs the rest.
        """
        from evergreen.policy import decide

        cfg = self.cfg.train
        # The featurizer of the champion this span is judged against (not necessarily the
        # registry's: see champion_for), so a resumed run computes the same drift.
        drift = (
            self.project.drift(plan.span, featurizer=self._text_featurizer(plan.champion))
            if self.cfg.drift.enabled
            else None
        )
        plan.drift = drift.severity if drift is not None else None
        plan.mode, plan.reason = hard_rule(plan.champion, force_full, plan.labels)
        if plan.mode:
            return
        assert plan.champion is not None  # hard_rule answers when there is none
        # Does the champion's frozen featurizer still fit? (text: unknown tokens; tabular: unseen
        # categories; image: always.) The family answers; the policy weighs it with the rest.
        rate, rate_name, plan.policy_tokens = self._unknown_rate(
            plan.champion, drift, plan.examples[plan.span]
        )
        decision = decide(
            drift,
            cfg=self.cfg.drift,
            unknown_rate=rate,
            max_unknown_rate=cfg.max_unknown_rate,
            rate_name=rate_name,
            increments_since_full=self._increments_since_full(),
            full_every=cfg.full_every,
            historic_regression=self._last_forgetting(),
            max_historic_regression=cfg.max_historic_regression,
            data_growth=self._data_growth(plan.span) if cfg.full_after_growth else None,
            full_after_growth=cfg.full_after_growth,
        )
        plan.mode, plan.reason = decision.mode, "; ".join(decision.reasons)
        plan.challenger = decision.challenger

    def _unknown_rate(
        self, champion: Artifact, drift: Any, new_examples: Artifact
    ) -> tuple[float, str, int]:
        """The new span's unknown rate under the champion's frozen featurizer, its name, and
        the tokens computed to know it (0 when the drift report already had it).

        Text: the drift report's, from the span's word sketch against the champion's vocabulary
        (statistics already counted the words; tokenizing the rows again cost a quarter of a
        second per update, issue 13). Other families, or drift off: the family measures it on
        up to 2,000 of the span's train rows.
        """
        if drift is not None and drift.unknown_rate is not None:
            return drift.unknown_rate, "unknown-token rate", 0
        featurizer = load_featurizer(
            self.store.artifact(int(champion.properties["featurizer"])).uri
        )
        rate, tokens = measured_unknown_rate(
            featurizer, list(itertools.islice(span_rows(new_examples, "train"), 2000))
        )
        name = "unknown-token rate" if featurizer.family == "text" else "unknown-value rate"
        return rate, name, tokens

    def _text_featurizer(self, champion: Artifact | None) -> Artifact | None:
        """The champion's featurizer artifact when it is a text one (drift's unknown rate)."""
        if champion is None:
            return None
        featurizer = self.store.artifact(int(champion.properties["featurizer"]))
        return featurizer if featurizer.properties["family"] == "text" else None

    def _last_full(self) -> tuple[int, Artifact | None]:
        """Models trained since the last full retrain (or adoption), and that model."""
        since = 0
        for artifact in reversed(self.store.artifacts(type="Model")):
            if artifact.properties.get("mode") in (FULL, ADOPTED):
                return since, artifact
            since += 1
        return since, None

    def _increments_since_full(self) -> int:
        return self._last_full()[0]

    def _data_growth(self, span: int) -> float | None:
        """Train rows since the last full retrain (``span`` included) over the rows it saw."""
        last_full = self._last_full()[1]
        if last_full is None:
            return None
        seen = set(last_full.properties.get("spans") or [])
        rows = {
            r.span: int(self.store.artifact(r.examples_id).properties["splits"].get("train", 0))
            for r in self.store.spans()
            if r.status == "validated" and r.span <= span and r.examples_id is not None
        }
        base = sum(n for s, n in rows.items() if s in seen)
        return sum(n for s, n in rows.items() if s not in seen) / base if base else None

    def _last_forgetting(self) -> float | None:
        """How far beyond noise the last candidate fell on the historic holdout (None: unknown).

        A challenger's evaluation is not counted: a full retrain that lost its challenge left
        the champion in place, and the champion forgot nothing by it.
        """
        evaluations = [
            e
            for e in self.store.artifacts(type="ModelEvaluation")
            if not e.properties.get("challenger")
        ]
        if not evaluations:
            return None
        path = Path(evaluations[-1].uri) / "evaluation.json"
        if not path.is_file():
            return None
        return Evaluation.from_dict(json.loads(path.read_text(encoding="utf-8"))).forgetting()


def measured_unknown_rate(featurizer: Any, rows: list[dict[str, Any]]) -> tuple[float, int]:
    """The frozen featurizer's unknown rate on ``rows``, and the tokens computed to know it.

    A text featurizer tokenizes the rows: that work is counted in the ledger like any other.
    """
    if featurizer.family != "text" or not rows:
        return featurizer.unknown_rate(rows), 0
    _, counts = featurizer.featurize(rows, None)
    tokens = counts["tokens_computed"]
    return (counts["unknown_tokens"] / tokens if tokens else 0.0), tokens
