"""The incremental training loop: ``evergreen run``.

For every validated span not yet trained on, in order::

    decide mode → [fit featurizer] → featurize (new span only, unless full) → train
                → evaluate vs champion (new span + historic holdout) → push if blessed

The mode is *full* when there is no champion, when ``--full`` is asked, after ``full_every``
increments, when the new span's unknown rate under the frozen featurizer (text: unknown tokens;
tabular: unseen categories) exceeds ``max_unknown_rate``, or when a label class appears that the champion does not know; otherwise
*incremental*. Every stage goes through the runner (cached, resumable); every span yields one
record with its cost: rows new/total, tokens computed/reused, seconds per stage.
"""

from __future__ import annotations

import itertools
import json
import logging
from collections.abc import Iterable
from pathlib import Path
from typing import Any, ClassVar

from evergreen.components import statistics as stats_mod
from evergreen.components.evaluate import EvaluateCandidate
from evergreen.components.featurize import (
    FeaturizeSpan,
    FitFeaturizer,
    GrowFeaturizer,
    can_grow,
    span_rows,
)
from evergreen.components.train import TrainModel
from evergreen.config import Config
from evergreen.errors import EvergreenError, NotFound
from evergreen.metadata import Artifact
from evergreen.models.contract import ModelFamily, SequenceSized
from evergreen.models.registry import family, load_featurizer
from evergreen.pipeline import ExecutionContext
from evergreen.project import Project
from evergreen.registry import CHAMPION, Registry


class PushModel:
    """Pipeline component: a blessed candidate → the next registry version; champion moves."""

    name: ClassVar[str] = "push"
    version: ClassVar[str] = "1"

    def __init__(
        self,
        registry: Registry,
        model_name: str,
        manifest: dict[str, Any],
        warmup: WarmupSource | None = None,
    ) -> None:
        self.registry = registry
        self.model_name = model_name
        self.manifest = manifest
        self.warmup = warmup  # rows for TF Serving's warm-up file (not a parameter: no cache key)

    def parameters(self) -> dict[str, Any]:
        return {"model": self.model_name, "registry": str(self.registry.root)}

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        candidate = ctx.inputs["candidate"]
        warmup = self.warmup
        published = self.registry.publish(
            self.model_name,
            Path(candidate.uri) / "saved_model",
            self.manifest,
            add_files=(lambda folder: warmup.write(folder, self.model_name)) if warmup else None,
        )
        # A push resumed after a kill may find the alias already moved: no second history line.
        if self.registry.alias(self.model_name, CHAMPION) != published.version:
            self.registry.set_alias(
                self.model_name,
                CHAMPION,
                published.version,
                reason=f"blessed candidate a{candidate.id}",
            )
        writer = ctx.output("pushed", "PushedModel", span=candidate.span)
        writer.write_json(
            "pushed.json", {"version": published.version, "path": str(published.path)}
        )
        ctx.set_properties("pushed", {"version": published.version, "path": str(published.path)})
        return {"version": published.version}

    def registered(self, ctx: ExecutionContext, outputs: Any) -> None:
        pass


class WarmupSource:
    """Where a pushed version's warm-up rows come from: the request log, else eval rows.

    Args:
        request_dir: the model's request log folder (``<root>/serving/requests/<model>``).
        examples: the span's examples artifact (its ``eval`` split is the fallback).
    """

    def __init__(self, request_dir: Path, examples: Artifact) -> None:
        self.request_dir = request_dir
        self.examples = examples

    def write(self, folder: Path, model: str) -> None:
        """Write ``assets.extra/tf_serving_warmup_requests`` into a version folder."""
        from evergreen import warmup
        from evergreen.models.saved_model import raw_inputs_of

        inputs = warmup.signature_inputs(folder)
        rows = warmup.logged_rows(self.request_dir, inputs) if self.request_dir.is_dir() else []
        if not rows:
            columns = raw_inputs_of(folder) or {name: name for name in inputs}
            rows = warmup.eval_rows(span_rows(self.examples, "eval"), columns)
        try:
            warmup.write_warmup_requests(folder, model, rows)
        except (ValueError, TypeError, OverflowError) as e:  # best effort: never blocks a push
            logging.getLogger("evergreen").warning(
                "no TF Serving warm-up requests for %s: rows did not convert (%s)", model, e
            )


class TrainingLoop:
    """Runs the loop for one project; see the module docstring."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.cfg = project.config
        self.registry = Registry(self.cfg.registry_dir)
        self.store = project.store
        self.runner = project.runner

    def _warmup(self, examples: Artifact) -> WarmupSource:
        return WarmupSource(self.cfg.root / "serving" / "requests" / self.cfg.name, examples)

    def family(self) -> ModelFamily:
        """The configured model family (``train.family``); a custom module is loaded here."""
        return family(self.cfg.train.family, self.cfg.train, self.cfg.base_dir)

    def feature_types(self) -> dict[str, str]:
        schema = self.project.current_schema()
        return schema.types if schema else dict(self.cfg.data.features)

    def champion_model(self) -> Artifact | None:
        version = self.registry.alias(self.cfg.name, CHAMPION)
        if version is None:
            return None
        candidate = (
            self.registry.get(self.cfg.name, version).manifest.get("lineage", {}).get("candidate")
        )
        return self.store.artifact(int(candidate)) if candidate else None

    def run(self, *, full: bool = False, progress: Any = None) -> list[dict[str, Any]]:
        """Train on every validated span whose verdict is not recorded yet, in order.

        With ``full``, one full retrain on all spans so far replaces the per-span runs. A span
        the policy or validation blocks stops the run there (later spans wait); its record says
        why. Each record is also saved with its HTML report under ``<root>/reports/``
        (``record["report"]``). The whole run holds the pipeline's writer lock.

        Raises:
            PipelineBusy: another process is writing to the pipeline.
        """
        with self.project.writing("evergreen run" + (" --full" if full else "")):
            return self._run(full=full, progress=progress)

    def _run(self, *, full: bool, progress: Any) -> list[dict[str, Any]]:
        from evergreen.report import save_run_report
        from evergreen.tracking import record_run

        completed = self._completed_spans()
        imported = self._import_tensorflow() if full or self._has_work(completed) else 0.0
        self.project.ingest(progress=progress)
        current = self.store.spans()
        stop = next((r.span for r in current if r.status == "blocked"), None)
        usable = [r for r in current if r.status == "validated" and (stop is None or r.span < stop)]
        pending = [r for r in usable if r.span not in completed]
        if full and usable:
            pending = [pending[-1] if pending else usable[-1]]
        records = []
        for record in pending:
            history = [r for r in usable if r.span <= record.span]
            result = self._one_span(record, history, force_full=full)
            if imported:  # this process's start-up cost, booked once, on its first record
                result["seconds"]["import_tensorflow"] = round(imported, 3)
                imported = 0.0
            result["report"] = str(save_run_report(self.project, result))
            record_run(self.project, result)
            records.append(result)
            if result["mode"] == "block":
                return records
        if stop is not None:
            result = self._validation_blocked(next(r for r in current if r.span == stop))
            result["report"] = str(save_run_report(self.project, result))
            records.append(result)
        return records

    def _has_work(self, completed: set[int]) -> bool:
        """Span files not ingested as they are now, or ingested spans without a verdict."""
        try:
            found = self.project.discover()
        except EvergreenError:
            return False  # no data yet (or a bad layout: ingest says so, without TensorFlow)
        ingested = {r.span: r for r in self.store.spans()}
        return any(
            f.span not in ingested
            or ingested[f.span].fingerprint != f.fingerprint(self.project.digest)
            or ingested[f.span].status == "validated"
            and f.span not in completed
            for f in found
        )

    @staticmethod
    def _import_tensorflow() -> float:
        """Import TensorFlow now; the seconds it took (0: already imported, e.g. in ``watch``).

        Ingest would otherwise import it on first use, and the run record would book
        TensorFlow's start-up (seconds) as ingest's.
        """
        from evergreen import tf

        if tf.import_seconds:
            return 0.0
        tf.tensorflow()
        return tf.import_seconds

    def _choose_sequence_length(self, featurizer: Any, history: list[Any]) -> None:
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
            for r in history
            if r.statistics_id is not None
        )
        featurizer.sequence_length = from_statistics(
            parts,
            featurizer.text_feature,
            maximum=self.cfg.train.sequence_length,
            minimum=featurizer.min_sequence_length,
            quantile=self.cfg.train.sequence_length_quantile,
        )

    def _completed_spans(self) -> set[int]:
        """Spans whose verdict is final: their candidate was published, or judged not blessed.

        A blessed evaluation alone does not complete a span: until the push run commits, a
        killed run is resumed (cached up to the push) by the next ``run``.
        """
        completed: set[int] = set()
        for run in self.store.runs(component="push", limit=1_000_000):
            candidate = self.store.run_inputs(run.id).get("candidate")
            if run.status == "succeeded" and candidate is not None:
                completed.update(candidate.properties.get("spans") or [candidate.span])
        for evaluation in self.store.artifacts(type="ModelEvaluation"):
            if not evaluation.properties.get("blessed"):
                candidate = self.store.artifact(int(evaluation.properties["candidate"]))
                completed.update(candidate.properties.get("spans") or [evaluation.span])
        return completed

    def _champion_for(self, span: int) -> Artifact | None:
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

    def _label_classes(self, history: list[Any]) -> list[str]:
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

    def _validation_blocked(self, record: Any) -> dict[str, Any]:
        """The record of a span that validation blocked: nothing trained, and how to go on."""
        examples = {record.span: self.store.artifact(record.examples_id)}
        anomalies = self.project.span_status(record.span).get("anomalies", [])
        described = "; ".join(a["message"] for a in anomalies if a["severity"] == "error")
        reason = (
            f"blocked by validation ({described or 'see `evergreen status`'}); fix the span's "
            f"data, or accept it into the schema with `evergreen ingest --accept {record.span}`"
        )
        return self._blocked(record, reason, examples, self._data_seconds(record.span), None)

    def _one_span(self, record: Any, history: list[Any], *, force_full: bool) -> dict[str, Any]:
        cfg = self.cfg.train
        examples = {r.span: self.store.artifact(r.examples_id) for r in history}
        seconds = self._data_seconds(record.span)
        champion = self._champion_for(record.span)
        labels = self._label_classes(history)
        mode, reason, drift, policy_tokens = self._decide(
            record, champion, force_full, examples[record.span], labels
        )
        if mode == "block":
            reason += "; change the span's data or the [drift] config and run again"
            return self._blocked(record, reason, examples, seconds, drift)
        model_family = self.family()

        ledger = {"tokens_computed": 0, "tokens_reused": 0, "rows_featurized": 0, "rows_reused": 0}
        growth: dict[str, Any] | None = None
        if mode == "full":
            unfitted = model_family.new_featurizer(self.feature_types(), cfg)
            self._choose_sequence_length(unfitted, history)
            fit = self.runner.run(
                FitFeaturizer(model_family, unfitted, labels),
                {f"span-{s}": a for s, a in examples.items()},
            )
            featurizer = fit.outputs["featurizer"]
            seconds["fit_featurizer"] = fit.seconds
            to_featurize = list(examples)
        else:
            featurizer = self.store.artifact(int(champion.properties["featurizer"]))
            featurizer, growth = self._grow(featurizer, examples[record.span], seconds)
            to_featurize = [s for s in examples if s < record.span] + [record.span]
        featurized = {}
        seconds["featurize"] = 0.0
        for span in to_featurize:
            r = next(r for r in history if r.span == span)
            reusable = self._compatible_featurized(span, r.version, featurizer, record.span)
            if reusable is not None:  # ids of a grown featurizer's ancestor are still valid
                featurized[span] = reusable
                continue
            result = self.runner.run(
                featurize_component(self.cfg, span, r.version),
                {"examples": examples[span], "featurizer": featurizer},
                span=span,
            )
            featurized[span] = result.outputs["featurized"]
            seconds["featurize"] += result.seconds
            # What this version cost, whether this process or a killed earlier attempt did it;
            # plus an earlier span featurized afresh for a featurizer grown in another line
            # (an unpublished growth), which is work this run did.
            if mode == "full" or span == record.span or not result.cached:
                for key in ledger:
                    ledger[key] += result.summary[key]
        ledger["tokens_computed"] += policy_tokens  # the policy's look at the new rows
        ledger.update(_full_retrain_cost(featurized.values()))
        inputs = {"featurizer": featurizer, **{f"span-{s}": a for s, a in featurized.items()}}
        if mode == "incremental":
            inputs["champion"] = champion
        trained = self.runner.run(
            TrainModel(
                cfg,
                model_family,
                mode=mode,
                reason=reason,
                new_span=record.span,
            ),
            inputs,
            span=record.span,
        )
        seconds["train"] = trained.seconds
        if mode == "incremental":  # history rows read back already featurized: the replay
            ledger["rows_reused"] = int(trained.summary.get("replay_rows", 0))
        candidate = trained.outputs["model"]
        if champion is not None and candidate.id == champion.id:
            return self._already_champion(record, mode, reason, examples, seconds, drift)
        eval_inputs = {"candidate": candidate, **{f"examples-{s}": a for s, a in examples.items()}}
        if champion is not None:
            eval_inputs["champion"] = champion
        evaluated = self.runner.run(
            EvaluateCandidate(cfg, record.span, self.cfg.evaluate), eval_inputs, span=record.span
        )
        seconds["evaluate"] = evaluated.seconds
        verdict = evaluated.summary
        version = None
        if verdict["blessed"]:
            manifest = {
                "metrics": verdict["candidate"],
                "lineage": {
                    "candidate": candidate.id,
                    "featurizer": featurizer.id,
                    "family": featurizer.properties.get("family", "text"),
                    "spans": sorted(examples),
                    "mode": mode,
                    "reason": reason,
                    "parent": self.registry.alias(self.cfg.name, CHAMPION)
                    if mode == "incremental"
                    else None,
                    "evaluation": evaluated.outputs["evaluation"].id,
                },
                "cost": ledger,
            }
            if growth:
                manifest["lineage"]["featurizer_growth"] = growth
            if candidate.properties.get("decision"):  # the binary decision threshold, if any
                manifest["decision"] = candidate.properties["decision"]
            pushed = self.runner.run(
                PushModel(
                    self.registry, self.cfg.name, manifest, self._warmup(examples[record.span])
                ),
                {"candidate": candidate, "evaluation": evaluated.outputs["evaluation"]},
                span=record.span,
            )
            seconds["push"] = pushed.seconds
            version = pushed.summary["version"]
        rows_new = sum(examples[record.span].properties["splits"].values())
        rows_total = sum(sum(a.properties["splits"].values()) for a in examples.values())
        return {
            "span": record.span,
            "mode": mode,
            "reason": reason,
            "rows_new": rows_new,
            "rows_total": rows_total,
            **ledger,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "metrics": {"candidate": verdict["candidate"], "champion": verdict["champion"]},
            "blessed": verdict["blessed"],
            "verdict": verdict["reasons"],
            "version": version,
            "drift": drift,
            "featurizer_growth": growth,
            **({"slices": verdict["slices"]} if "slices" in verdict else {}),
            "epoch_losses": trained.summary.get("epoch_losses", {}),
        }

    def _grow(
        self, parent: Artifact, new_examples: Artifact, seconds: dict[str, float]
    ) -> tuple[Artifact, dict[str, Any] | None]:
        """The champion's featurizer grown with the new span's frequent unknown values.

        Returns:
            The featurizer to use (``parent`` when growth is off, impossible for the family,
            or found nothing to add) and the growth for the lineage (None when none).
        """
        cfg = self.cfg.train
        if not cfg.grow_vocabulary or not can_grow(parent):
            return parent, None
        result = self.runner.run(
            GrowFeaturizer(cfg.grow_min_count, cfg.grow_limit),
            {"featurizer": parent, "examples": new_examples},
            span=new_examples.span,
        )
        seconds["grow_featurizer"] = result.seconds
        grown = result.outputs["featurizer"]
        if not any(grown.properties.get("added", {}).values()):
            return parent, None
        growth = {
            "from": parent.id,
            "to": grown.id,
            "added": grown.properties["added"],
            "sample": grown.properties.get("added_sample", {}),
        }
        return grown, growth

    def _compatible_featurized(
        self, span: int, version: int, featurizer: Artifact, new_span: int
    ) -> Artifact | None:
        """An earlier span's shards made by an ancestor of a grown ``featurizer`` (None: none).

        A grown featurizer keeps its ancestors' ids, so their shards are reused rather than
        re-featurizing the whole history (a cost in proportion to the history, not the span).
        """
        compatible = set(featurizer.properties.get("compatible", []))
        if span == new_span or not compatible:
            return None
        for artifact in reversed(self.store.artifacts(type="FeaturizedExamples", span=span)):
            if artifact.version == version and artifact.properties.get("featurizer") in compatible:
                return artifact
        return None

    def _blocked(
        self,
        record: Any,
        reason: str,
        examples: dict[int, Artifact],
        seconds: dict[str, float],
        drift: str | None,
    ) -> dict[str, Any]:
        return {
            "span": record.span,
            "mode": "block",
            "reason": reason,
            "rows_new": sum(examples[record.span].properties["splits"].values()),
            "rows_total": sum(sum(a.properties["splits"].values()) for a in examples.values()),
            "tokens_computed": 0,
            "tokens_reused": 0,
            "rows_featurized": 0,
            "rows_reused": 0,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "metrics": {"candidate": {}, "champion": {}},
            "blessed": False,
            "verdict": [f"not trained: {reason}"],
            "version": None,
            "drift": drift,
        }

    def _already_champion(
        self,
        record: Any,
        mode: str,
        reason: str,
        examples: dict[int, Artifact],
        seconds: dict[str, float],
        drift: str | None,
    ) -> dict[str, Any]:
        """``run --full`` with nothing new: the training it asks for made the champion itself."""
        result = self._blocked(record, reason, examples, seconds, drift)
        result.update(
            mode=mode,
            verdict=[
                f"nothing new: the champion (version {self.registry.alias(self.cfg.name, CHAMPION)}) "
                f"is already this {mode} training on spans {sorted(examples)}"
            ],
            version=self.registry.alias(self.cfg.name, CHAMPION),
        )
        return result

    def adopt(self, source: Path, labels: list[str] | None = None) -> dict[str, Any]:
        """Adopt a model trained elsewhere as the next version and champion (lineage "adopted").

        Every current span is ingested and featurized once (pass-through: raw values, see
        :mod:`evergreen.models.adopted`); the model is evaluated on the last span's eval split and
        the earlier spans' holdout, published, and made champion. Later ``run`` calls train it
        incrementally on new spans only.

        Raises:
            DataError: no validated span to evaluate on.
            ConfigError: the model's inputs or outputs do not fit the data (the message says how).
            PipelineBusy: another process is writing to the pipeline.
        """
        from evergreen.tracking import record_run

        with self.project.writing("evergreen adopt"):
            result = self._adopt(Path(source).resolve(), labels)
            record_run(self.project, result)
            return result

    def _adopt(self, source: Path, labels: list[str] | None) -> dict[str, Any]:
        from evergreen.components.adopt import AdoptModel, source_digest
        from evergreen.errors import DataError
        from evergreen.models.adopted import (
            AdoptedFamily,
            PassThroughFeaturizer,
            inputs_of,
            load_model,
        )

        self.project.ingest()
        usable = [r for r in self.store.spans() if r.status == "validated"]
        if not usable:
            raise DataError("no validated span to evaluate the adopted model on; ingest data first")
        schema = self.project.current_schema()
        labels = list(labels) if labels else sorted(schema.label_domain) if schema else []
        examples = {r.span: self.store.artifact(r.examples_id) for r in usable}
        last = usable[-1].span
        seconds = self._data_seconds(last)
        featurizer = PassThroughFeaturizer(inputs_of(load_model(source), self.feature_types()))
        fit = self.runner.run(
            FitFeaturizer(AdoptedFamily(), featurizer, labels),
            {f"span-{s}": a for s, a in examples.items()},
        )
        fitted = fit.outputs["featurizer"]
        ledger = {"tokens_computed": 0, "tokens_reused": 0, "rows_featurized": 0, "rows_reused": 0}
        seconds["featurize"] = 0.0
        for record in usable:
            result = self.runner.run(
                featurize_component(self.cfg, record.span, record.version),
                {"examples": examples[record.span], "featurizer": fitted},
                span=record.span,
            )
            seconds["featurize"] += result.seconds
            if not result.cached:
                for key in ledger:
                    ledger[key] += result.summary[key]
        adopted = self.runner.run(
            AdoptModel(source, labels, sorted(examples), source_digest(source)),
            {"featurizer": fitted},
            span=last,
        )
        seconds["adopt"] = adopted.seconds
        candidate = adopted.outputs["model"]
        evaluated = self.runner.run(
            EvaluateCandidate(self.cfg.train, last),
            {"candidate": candidate, **{f"examples-{s}": a for s, a in examples.items()}},
            span=last,
        )
        seconds["evaluate"] = evaluated.seconds
        verdict = evaluated.summary
        manifest = {
            "metrics": verdict["candidate"],
            "lineage": {
                "candidate": candidate.id,
                "featurizer": fitted.id,
                "family": "adopted",
                "spans": sorted(examples),
                "mode": "adopted",
                "source": str(source),
                "sha256": candidate.properties["sha256"],
                "parent": None,
                "reason": "adopted",
                "evaluation": evaluated.outputs["evaluation"].id,
            },
            "cost": ledger,
        }
        pushed = self.runner.run(
            PushModel(self.registry, self.cfg.name, manifest, self._warmup(examples[last])),
            {"candidate": candidate, "evaluation": evaluated.outputs["evaluation"]},
            span=last,
        )
        seconds["push"] = pushed.seconds
        rows_total = sum(sum(a.properties["splits"].values()) for a in examples.values())
        return {
            "span": last,
            "mode": "adopted",
            "reason": f"adopted from {source}",
            "rows_new": rows_total,
            "rows_total": rows_total,
            **ledger,
            "seconds": {k: round(v, 3) for k, v in seconds.items()},
            "metrics": {"candidate": verdict["candidate"], "champion": {}},
            "blessed": True,
            "verdict": ["adopted: evaluated, published and made champion"],
            "version": pushed.summary["version"],
        }

    def _decide(
        self,
        record: Any,
        champion: Artifact | None,
        force_full: bool,
        new_examples: Artifact,
        labels: list[str],
    ) -> tuple[str, str, str | None, int]:
        """The mode (full, incremental or block), its reasons, the span's drift severity, and
        the tokens the featurizer-fit check computed (for the ledger).

        Hard rules first (no champion, ``--full``, new label classes); then the retrain policy
        (:func:`evergreen.policy.decide`) weighs drift, the frozen featurizer's fit, increments
        since the last full retrain and forgetting seen by the last evaluation.
        """
        from evergreen.policy import decide

        cfg = self.cfg.train
        # The featurizer of the champion this span is judged against (not necessarily the
        # registry's: see _champion_for), so a resumed run computes the same drift.
        drift = (
            self.project.drift(record.span, featurizer=self._text_featurizer(champion))
            if self.cfg.drift.enabled
            else None
        )
        severity = drift.severity if drift is not None else None
        if champion is None:
            return "full", "no champion yet", severity, 0
        if force_full:
            return "full", "requested with --full", severity, 0
        if set(labels) - set(champion.properties.get("labels", [])):
            return (
                "full",
                f"new label classes {sorted(set(labels) - set(champion.properties['labels']))}",
                severity,
                0,
            )
        # Does the champion's frozen featurizer still fit? (text: unknown tokens; tabular: unseen
        # categories; image: always.) The family answers; the policy weighs it with the rest.
        rate, rate_name, tokens = self._unknown_rate(champion, drift, new_examples)
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
            data_growth=self._data_growth(record.span) if cfg.full_after_growth else None,
            full_after_growth=cfg.full_after_growth,
        )
        return decision.mode, "; ".join(decision.reasons), severity, tokens

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
        rate, tokens = _measured_unknown_rate(
            featurizer, list(itertools.islice(span_rows(new_examples, "train"), 2000))
        )
        name = "unknown-token rate" if featurizer.family == "text" else "unknown-value rate"
        return rate, name, tokens

    def _text_featurizer(self, champion: Artifact | None) -> Artifact | None:
        """The champion's featurizer artifact when it is a text one (drift's unknown rate)."""
        if champion is None or "featurizer" not in champion.properties:
            return None
        featurizer = self.store.artifact(int(champion.properties["featurizer"]))
        return featurizer if featurizer.properties.get("family", "text") == "text" else None

    def _increments_since_full(self) -> int:
        since = 0
        for artifact in reversed(self.store.artifacts(type="Model")):
            if artifact.properties.get("mode") in ("full", "adopted"):
                break
            since += 1
        return since

    def _data_growth(self, span: int) -> float | None:
        """Train rows since the last full retrain (``span`` included) over the rows it saw."""
        last_full = next(
            (
                a
                for a in reversed(self.store.artifacts(type="Model"))
                if a.properties.get("mode") in ("full", "adopted")
            ),
            None,
        )
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
        """How far beyond noise the last candidate fell on the historic holdout (None: unknown)."""
        evaluations = self.store.artifacts(type="ModelEvaluation")
        if not evaluations:
            return None
        path = Path(evaluations[-1].uri) / "evaluation.json"
        guard = (
            json.loads(path.read_text(encoding="utf-8")).get("guards", {}).get("historic")
            if path.is_file()
            else None
        )
        return guard["drop"] - guard["noise"] if guard else None

    def _data_seconds(self, span: int) -> dict[str, float]:
        seconds: dict[str, float] = {}
        for run in reversed(self.store.runs(limit=10_000)):
            if (
                run.span == span
                and run.status == "succeeded"
                and run.component in ("ingest", "statistics", "validate", "drift")
            ):
                seconds[run.component] = round(run.seconds or 0.0, 3)
        return seconds


def history(project: Project) -> list[dict[str, Any]]:
    """Registry versions with metrics, lineage, cost and which one is champion."""
    registry = Registry(project.config.registry_dir)
    champion = registry.alias(project.config.name, CHAMPION)
    out = []
    for v in registry.versions(project.config.name):
        m = v.manifest
        out.append(
            {
                "version": v.version,
                "champion": v.version == champion,
                "created_at": m.get("created_at"),
                "mode": m.get("lineage", {}).get("mode"),
                "reason": m.get("lineage", {}).get("reason"),
                "spans": m.get("lineage", {}).get("spans"),
                "metrics": m.get("metrics"),
                "cost": m.get("cost"),
            }
        )
    return out


def champion_saved_model(project: Project, version: int | None = None) -> Path:
    registry = Registry(project.config.registry_dir)
    if version is None:
        version = registry.alias(project.config.name, CHAMPION)
        if version is None:
            raise NotFound(
                f"pipeline {project.config.name!r} has no champion yet; run `evergreen run` first"
            )
    return registry.get(project.config.name, version).path


def dumps(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, default=str)


def _measured_unknown_rate(featurizer: Any, rows: list[dict[str, Any]]) -> tuple[float, int]:
    """The frozen featurizer's unknown rate on ``rows``, and the tokens computed to know it.

    A text featurizer tokenizes the rows: that work is counted in the ledger like any other.
    """
    if featurizer.family != "text" or not rows:
        return featurizer.unknown_rate(rows), 0
    _, counts = featurizer.featurize(rows, None)
    tokens = counts["tokens_computed"]
    return (counts["unknown_tokens"] / tokens if tokens else 0.0), tokens


def _full_retrain_cost(featurized: Iterable[Artifact]) -> dict[str, int]:
    """What featurizing every span (a full retrain's featurize) computes: tokens and rows.

    From the spans' featurized artifacts (artifacts of the token-cache era split their count
    into computed and reused; both are work a full retrain does).
    """
    tokens = rows = 0
    for artifact in featurized:
        props = artifact.properties
        tokens += props.get("tokens_computed", 0) + props.get("tokens_reused", 0)
        rows += props.get("rows_featurized", 0) + props.get("rows_reused", 0)
    return {"tokens_full_retrain": tokens, "rows_full_retrain": rows}


def featurize_component(cfg: Config, span: int, version: int) -> Any:
    """Featurize of one span: on Beam when the config has [beam], else embedded."""
    if cfg.beam is None:
        return FeaturizeSpan(span, version, cfg.data.shard_rows)
    from evergreen.beam import beam

    beam()  # a clear ConfigError when the extra is not installed
    from evergreen.beam.featurize import BeamFeaturizeSpan

    return BeamFeaturizeSpan(span, version, cfg.data.shard_rows, cfg.beam)
