"""The component runs of one span, after its plan: featurizer → featurize → candidate →
evaluate → push. Trained spans and an adopted model go through the same steps; only where the
featurizer and the candidate come from differ (fitted or the champion's, trained or adopted).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from evergreen.components import statistics as stats_mod
from evergreen.components.adopt import AdoptInputs, AdoptModel
from evergreen.components.evaluate import EvaluateCandidate, EvaluateInputs
from evergreen.components.featurize import (
    FeaturizeInputs,
    FeaturizeSpan,
    FitFeaturizer,
    FitInputs,
    GrowFeaturizer,
    GrowInputs,
    can_grow,
)
from evergreen.components.train import TrainInputs, TrainModel
from evergreen.config import Config
from evergreen.loop.plan import ADOPTED, FULL, INCREMENTAL, SpanPlan
from evergreen.loop.push import PushInputs, PushModel, WarmupSource
from evergreen.metadata import Artifact
from evergreen.models.contract import ModelFamily, SequenceSized
from evergreen.pipeline import RunResult
from evergreen.project import Project
from evergreen.records import Evaluation, Ledger
from evergreen.registry import CHAMPION, Registry


class SpanRun:
    """Runs the components of one planned span and keeps what the record needs.

    Args:
        project: the open project (its store and runner).
        registry: the model registry pushes publish to.
        plan: the span's plan (mode ``full``, ``incremental`` or ``adopted``).
        family: the model family trained (unused when adopting).
        seconds: the record's seconds so far (ingest, statistics, ...); each step adds its own.
    """

    def __init__(
        self,
        project: Project,
        registry: Registry,
        plan: SpanPlan,
        family: ModelFamily | None,
        seconds: dict[str, float],
    ) -> None:
        self.project = project
        self.cfg: Config = project.config
        self.store = project.store
        self.runner = project.runner
        self.registry = registry
        self.plan = plan
        self.family = family
        self.seconds = seconds
        self.ledger = Ledger()
        self.growth: dict[str, Any] | None = None
        self.grown: Artifact | None = None  # the growth made on the new span (its kept tokens)

    def featurizer(self, feature_types: dict[str, str]) -> Artifact:
        """The featurizer of this run: fitted on every span (full, adopted) or the champion's,
        grown with the new span's frequent unknown values when growth is on (incremental).

        An increment grows from the newest growth of the champion's featurizer made for an
        earlier span (see :meth:`_growth_base`), so the spans featurized under an unpublished
        growth stay valid and only the new span is featurized.
        """
        plan = self.plan
        if plan.mode == INCREMENTAL:
            assert plan.champion is not None
            champion = self.store.artifact(int(plan.champion.properties["featurizer"]))
            return self._grow(champion)
        if plan.adoption is not None:
            from evergreen.models.adopted import AdoptedFamily

            family, unfitted = AdoptedFamily(), plan.adoption.featurizer
        else:
            assert self.family is not None
            family = self.family
            unfitted = family.new_featurizer(feature_types, self.cfg.train)
            self._choose_sequence_length(unfitted)
        fit = self.runner.run(
            FitFeaturizer(family, unfitted, plan.labels), FitInputs(plan.examples)
        )
        if plan.adoption is None:  # adopt never booked its pass-through fit (no time to speak of)
            self.seconds["fit_featurizer"] = fit.seconds
            # The fit's tokens, whether this process or a killed earlier attempt computed them
            # (as a full retrain's featurize runs are booked).
            self.ledger.tokens_computed += int(fit.summary.get("tokens_computed", 0))
        return fit.outputs["featurizer"]

    def featurize(self, featurizer: Artifact) -> dict[int, Artifact]:
        """Every span's featurized examples under ``featurizer``, the work booked in the ledger."""
        plan = self.plan
        featurized = {}
        self.seconds["featurize"] = 0.0
        for record in plan.history:
            span = record.span
            reusable = self._compatible_featurized(span, record.version, featurizer)
            if reusable is not None:  # ids of a grown featurizer's ancestor are still valid
                featurized[span] = reusable
                continue
            result = self.runner.run(
                featurize_component(self.cfg, span, record.version),
                FeaturizeInputs(plan.examples[span], featurizer, self._growth_of(span, featurizer)),
                span=span,
            )
            featurized[span] = result.outputs["featurized"]
            self.seconds["featurize"] += result.seconds
            # What this version cost, whether this process or a killed earlier attempt did it;
            # plus an earlier span featurized afresh because it has no shards this featurizer
            # can read (e.g. a refused full retrain's span, featurized only under its own
            # fit), which is work this run did. Adopting books only what this process computed.
            books_cached = plan.mode == FULL or (plan.mode == INCREMENTAL and span == plan.span)
            if books_cached or not result.cached:
                self.ledger.add(result.summary)
        if plan.mode != ADOPTED:
            self.ledger.tokens_computed += plan.policy_tokens  # the policy's look at the new rows
            self.ledger.tokens_full_retrain, self.ledger.rows_full_retrain = full_retrain_cost(
                featurized.values()
            )
        return featurized

    def candidate(self, featurizer: Artifact, featurized: dict[int, Artifact]) -> RunResult:
        """Train the candidate (full or incremental), or adopt the model."""
        plan = self.plan
        if plan.adoption is not None:
            adoption = plan.adoption
            adopted = self.runner.run(
                AdoptModel(adoption.source, plan.labels, sorted(plan.examples), adoption.digest),
                AdoptInputs(featurizer),
                span=plan.span,
            )
            self.seconds["adopt"] = adopted.seconds
            return adopted
        assert self.family is not None
        incremental = plan.mode == INCREMENTAL
        trained = self.runner.run(
            TrainModel(
                self.cfg.train, self.family, mode=plan.mode, reason=plan.reason, new_span=plan.span
            ),
            TrainInputs(featurizer, featurized, plan.champion if incremental else None),
            span=plan.span,
        )
        self.seconds["train"] = trained.seconds
        if incremental:  # history rows read back already featurized: the replay
            self.ledger.rows_reused = int(trained.summary.get("replay_rows", 0))
        return trained

    def evaluate(self, candidate: Artifact) -> tuple[Evaluation, Artifact]:
        """The candidate judged against the plan's champion; the evaluation and its artifact."""
        plan = self.plan
        # An adopted model is evaluated without slices: adopt has always judged it whole.
        slicing = None if plan.adoption is not None else self.cfg.evaluate
        evaluated = self.runner.run(
            EvaluateCandidate(self.cfg.train, plan.span, slicing, challenger=plan.challenging),
            EvaluateInputs(candidate, plan.examples, plan.champion),
            span=plan.span,
        )
        self.seconds["evaluate"] = evaluated.seconds
        return Evaluation.from_dict(evaluated.summary), evaluated.outputs["evaluation"]

    def push(self, candidate: Artifact, evaluation: Artifact, manifest: dict[str, Any]) -> int:
        """Publish the blessed candidate as the next version and champion; its version."""
        examples = self.plan.examples[self.plan.span]
        warmup = WarmupSource(self.cfg.root / "serving" / "requests" / self.cfg.name, examples)
        pushed = self.runner.run(
            PushModel(self.registry, self.cfg.name, manifest, warmup),
            PushInputs(candidate, evaluation),
            span=self.plan.span,
        )
        self.seconds["push"] = pushed.seconds
        return int(pushed.summary["version"])

    def manifest(
        self, candidate: Artifact, featurizer: Artifact, evaluation: Evaluation, evaluated: int
    ) -> dict[str, Any]:
        """The registry manifest of the candidate: metrics, lineage, cost (and threshold)."""
        plan = self.plan
        lineage: dict[str, Any] = {
            "candidate": candidate.id,
            "featurizer": featurizer.id,
            "family": featurizer.properties["family"],
            "spans": sorted(plan.examples),
            "mode": plan.mode,
        }
        if plan.adoption is not None:
            lineage.update(
                source=str(plan.adoption.source),
                sha256=candidate.properties["sha256"],
                parent=None,
                reason=ADOPTED,
            )
        else:
            parent = self.registry.alias(self.cfg.name, CHAMPION)
            lineage.update(reason=plan.reason, parent=parent if plan.mode == INCREMENTAL else None)
        lineage["evaluation"] = evaluated
        if self.growth:
            lineage["featurizer_growth"] = self.growth
        manifest = {
            "metrics": evaluation.candidate,
            "lineage": lineage,
            "cost": self.ledger.to_dict(),
        }
        if candidate.properties.get("decision"):  # the binary decision threshold, if any
            manifest["decision"] = candidate.properties["decision"]
        return manifest

    def _growth_of(self, span: int, featurizer: Artifact) -> Artifact | None:
        """The growth made on ``span`` when it is not ``featurizer`` itself (it added nothing):
        featurize reads its kept tokens (a growth that is the featurizer is read as such)."""
        grown = self.grown
        return grown if span == self.plan.span and grown and grown.id != featurizer.id else None

    def _grow(self, champion: Artifact) -> Artifact:
        """The champion's featurizer, or its latest growth, grown with the new span's frequent
        unknown values.

        Returns the champion's featurizer when growth is off or impossible for the family; the
        base (:meth:`_growth_base`) when the new span adds nothing; otherwise the grown
        featurizer. The growth is kept for the lineage (:meth:`_record_growth`).
        """
        cfg = self.cfg.train
        if not cfg.grow_vocabulary or not can_grow(champion):
            return champion
        parent = self._growth_base(champion)
        new_examples = self.plan.examples[self.plan.span]
        result = self.runner.run(
            GrowFeaturizer(cfg.grow_min_count, cfg.grow_limit),
            GrowInputs(parent, new_examples),
            span=new_examples.span,
        )
        self.seconds["grow_featurizer"] = result.seconds
        # The growth pass tokenized the new span's train texts: this span's work, cached or not.
        self.ledger.tokens_computed += int(result.summary.get("tokens_computed", 0))
        grown = self.grown = result.outputs["featurizer"]
        chosen = grown if any(grown.properties["added"].values()) else parent
        self._record_growth(champion, parent, chosen)
        return chosen

    def _growth_base(self, champion: Artifact) -> Artifact:
        """The newest featurizer grown (append-only) from the champion's for an earlier span,
        or the champion's own when there is none.

        An increment that is not published leaves its grown featurizer, and the span it
        featurized under it, behind. Growing from the champion's featurizer again would start a
        new line that cannot read those shards, so every span since the champion would be
        featurized again (issue: days 3-5 of ``make demo`` featurized 888, 1,330 and 1,769
        rows). A descendant is one whose ``compatible`` list holds the champion featurizer's
        fingerprint: only growths have that list, so a refused full retrain's fitted
        featurizer (not a descendant: its ids differ) is never grown from. Growths made for
        this span or a later one are left out, so a resumed or repeated run of the span picks
        the same base, and the runner's cache gives the same grown featurizer.
        """
        fingerprint = champion.properties["fingerprint"]
        for artifact in reversed(self.store.artifacts(type="Featurizer")):
            if artifact.id <= champion.id:  # growths come after what they grew from
                break
            if fingerprint not in artifact.properties.get("compatible", []):
                continue
            producer = self.store.producer(artifact.id)
            if (
                producer is not None
                and producer.span is not None
                and producer.span < self.plan.span
            ):
                return artifact
        return champion

    def _record_growth(self, champion: Artifact, parent: Artifact, chosen: Artifact) -> None:
        """Keep the growth for the run record and lineage (None: the champion's featurizer).

        ``from``/``to``/``added``/``sample`` describe this span's growth step (``from == to``
        and nothing added when the span brought nothing new to an earlier growth). When the
        step started from an unpublished growth, ``champion`` names the champion's featurizer
        and ``added_since_champion`` counts every id the candidate's featurizer has beyond it
        (the embedding rows the champion model gets), per column.
        """
        if chosen.id == champion.id:
            return
        grew = chosen.id != parent.id
        self.growth = {
            "from": parent.id,
            "to": chosen.id,
            "added": chosen.properties["added"] if grew else {},
            "sample": chosen.properties["added_sample"] if grew else {},
        }
        if parent.id != champion.id:
            self.growth["champion"] = champion.id
            self.growth["added_since_champion"] = self._added_since(champion, chosen)

    def _added_since(self, champion: Artifact, grown: Artifact) -> dict[str, int]:
        """Ids added per column along the growths from ``champion`` to ``grown``."""
        added: dict[str, int] = {}
        artifact = grown
        # By fingerprint: equal fingerprints are equal ids, whichever artifact holds them.
        while artifact.properties["fingerprint"] != champion.properties["fingerprint"]:
            for column, n in artifact.properties["added"].items():
                added[column] = added.get(column, 0) + int(n)
            artifact = self.store.artifact(int(artifact.properties["grown_from"]))
        return added

    def _compatible_featurized(
        self, span: int, version: int, featurizer: Artifact
    ) -> Artifact | None:
        """An earlier span's shards made by an ancestor of a grown ``featurizer`` (None: none).

        A grown featurizer keeps its ancestors' ids, so their shards are reused rather than
        re-featurizing the whole history (a cost in proportion to the history, not the span).
        """
        compatible = set(featurizer.properties.get("compatible", []))
        if span == self.plan.span or not compatible:
            return None
        for artifact in reversed(self.store.artifacts(type="FeaturizedExamples", span=span)):
            if artifact.version == version and artifact.properties.get("featurizer") in compatible:
                return artifact
        return None

    def _choose_sequence_length(self, featurizer: Any) -> None:
        """Text: set the unfitted featurizer's sequence length from the spans' token counts.

        The word CNN's cost grows with the padded length; see :mod:`evergreen.sequence_length`.
        Other families (and a custom module, whose model may expect the configured length) keep
        theirs.
        """
        from evergreen.sequence_length import from_statistics

        if self.cfg.train.family != "text" or not isinstance(featurizer, SequenceSized):
            return
        parts = (
            stats_mod.load(self.store.artifact(r.statistics_id))
            for r in self.plan.history
            if r.statistics_id is not None
        )
        featurizer.sequence_length = from_statistics(
            parts,
            featurizer.text_feature,
            maximum=self.cfg.train.sequence_length,
            minimum=featurizer.min_sequence_length,
            quantile=self.cfg.train.sequence_length_quantile,
        )


def full_retrain_cost(featurized: Iterable[Artifact]) -> tuple[int, int]:
    """What a full retrain on every span computes: tokens (its fit and its featurize) and rows.

    From the spans' featurized artifacts: the featurize pass's tokens (artifacts of the
    token-cache era split their count into computed and reused; both are work a full retrain
    does), plus the fit pass's, each span's ``fit_tokens`` (its train texts' tokens before the
    cut to the sequence length, as the fit counts them). An artifact made before that count
    was recorded has its train share of the featurize tokens instead (its train rows over its
    rows): an estimate, below the fit's count when texts were cut.
    """
    tokens = rows = 0
    for artifact in featurized:
        props = artifact.properties
        featurize_tokens = props.get("tokens_computed", 0) + props.get("tokens_reused", 0)
        featurize_rows = props.get("rows_featurized", 0) + props.get("rows_reused", 0)
        fit_tokens = props.get("fit_tokens")
        if fit_tokens is None:
            train = (props.get("rows") or {}).get("train", 0)
            fit_tokens = featurize_tokens * train // featurize_rows if featurize_rows else 0
        tokens += featurize_tokens + fit_tokens
        rows += featurize_rows
    return tokens, rows


def featurize_component(cfg: Config, span: int, version: int) -> Any:
    """Featurize of one span: on Beam when the config has [beam], else embedded."""
    if cfg.beam is None:
        return FeaturizeSpan(span, version, cfg.data.shard_rows)
    from evergreen.beam import beam

    beam()  # a clear ConfigError when the extra is not installed
    from evergreen.beam.featurize import BeamFeaturizeSpan

    return BeamFeaturizeSpan(span, version, cfg.data.shard_rows, cfg.beam)
