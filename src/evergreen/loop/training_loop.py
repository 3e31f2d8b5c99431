"""``TrainingLoop``: every validated span not trained on yet, in order, one run each.

A span's run is planned (:mod:`evergreen.loop.plan`), its components run
(:mod:`evergreen.loop.span_run`) and its record assembled (:mod:`evergreen.loop.assemble`).
``adopt`` goes the same way with a plan of its own.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evergreen.errors import EvergreenError
from evergreen.loop import assemble
from evergreen.loop.plan import ADOPTED, BLOCK, Adoption, Planner, SpanPlan
from evergreen.loop.span_run import SpanRun
from evergreen.metadata import Artifact, SpanRecord
from evergreen.models.contract import ModelFamily
from evergreen.models.registry import family
from evergreen.project import Project
from evergreen.records import Evaluation, RunRecord
from evergreen.registry import CHAMPION, Registry


class TrainingLoop:
    """Runs the loop for one project; see :mod:`evergreen.loop`."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self.cfg = project.config
        self.registry = Registry(self.cfg.registry_dir)
        self.store = project.store
        self.runner = project.runner
        self.planner = Planner(project, self.registry)

    def family(self) -> ModelFamily:
        """The configured model family (``train.family``); a custom module is loaded here."""
        return family(self.cfg.train.family, self.cfg.train, self.cfg.base_dir)

    def feature_types(self) -> dict[str, str]:
        schema = self.project.current_schema()
        return schema.types if schema else dict(self.cfg.data.features)

    def champion_model(self) -> Artifact | None:
        """The registry champion's ``Model`` artifact (None: no champion yet)."""
        return self.planner.champion_model()

    def run(self, *, full: bool = False, progress: Any = None) -> list[RunRecord]:
        """Train on every validated span whose verdict is not recorded yet, in order.

        With ``full``, one full retrain on all spans so far replaces the per-span runs. A span
        the policy or validation blocks stops the run there (later spans wait); its record says
        why. Each record is also saved with its HTML report under ``<root>/reports/``
        (``record.report``). The whole run holds the pipeline's writer lock.

        Raises:
            PipelineBusy: another process is writing to the pipeline.
        """
        with self.project.writing("evergreen run" + (" --full" if full else "")):
            return self._run(full=full, progress=progress)

    def _run(self, *, full: bool, progress: Any) -> list[RunRecord]:
        completed = self._completed_spans()
        imported = self._import_tensorflow() if full or self._has_work(completed) else 0.0
        self.project.ingest(progress=progress)
        current = self.store.spans()
        stop = next((r.span for r in current if r.status == "blocked"), None)
        usable = [r for r in current if r.status == "validated" and (stop is None or r.span < stop)]
        pending = [r for r in usable if r.span not in completed]
        if full and usable:
            pending = [pending[-1] if pending else usable[-1]]
        records = self._save_staged_records()
        records += [] if full else self._resume_challenge(usable, completed)
        for record in pending:
            history = [r for r in usable if r.span <= record.span]
            for result in self._one_span(record, history, force_full=full):
                if imported:  # this process's start-up cost, booked once, on its first record
                    result.seconds["import_tensorflow"] = round(imported, 3)
                    imported = 0.0
                self._publish_record(result, track=True)
                records.append(result)
                if result.mode == BLOCK:
                    return records
        if stop is not None:
            result = self._validation_blocked(next(r for r in current if r.span == stop))
            self._publish_record(result, track=False)
            records.append(result)
        return records

    def _save_staged_records(self) -> list[RunRecord]:
        """Records a killed run staged before a push that committed, completed and saved now.

        A blessed span's record is staged before its push (:meth:`_execute`); a run killed after
        the push committed but before the record was saved left a published version without a
        decision. Its record gets the version the push made; a staged record whose push never
        committed is dropped (the span is not completed, so it runs again and decides anew).
        """
        from evergreen.decision_log import DecisionLog

        log = DecisionLog(self.store)
        staged = log.staged()
        if not staged:
            return []
        pushed: dict[int, Any] = {}
        for run in self.store.runs(component="push", limit=1_000_000):
            candidate = self.store.run_inputs(run.id).get("candidate")
            if run.status == "succeeded" and candidate is not None:
                pushed[candidate.id] = run
        saved = []
        for candidate, data in staged:
            push = pushed.get(candidate)
            if push is None:
                log.drop_staged(candidate)
                continue
            record = RunRecord.from_dict(data)
            record.version = int(push.summary["version"])
            if push.seconds is not None:
                record.seconds["push"] = round(push.seconds, 3)
            self._publish_record(record, track=True)
            saved.append(record)
        return saved

    def _resume_challenge(self, usable: list[SpanRecord], completed: set[int]) -> list[RunRecord]:
        """The challenge a killed run owed, run now (before any later span): [its record] or [].

        An increment the quality debt challenges saves its record before its challenger trains
        (:meth:`_one_span`); when that is still the last record saved, the run died before the
        challenger's record, and the challenge runs again — whatever of it had committed (its
        featurizer, featurized spans, trained model, evaluation) is reused from the cache.
        """
        from evergreen.decision_log import DecisionLog

        last = DecisionLog(self.store).last()
        if not last or not last.get("challenge") or last.get("challenger"):
            return []
        span = int(last["span"])
        record = next((r for r in usable if r.span == span), None)
        if record is None or span not in completed:
            return []
        history = [r for r in usable if r.span <= span]
        plan = self.planner.challenger_plan(record, history, str(last["challenge"]))
        result = self._execute(SpanRun(self.project, self.registry, plan, self.family(), {}))
        self._publish_record(result, track=True)
        return [result]

    def _publish_record(self, record: RunRecord, *, track: bool) -> None:
        """Save the record with its HTML report (``record.report``); log it to tracking."""
        from evergreen.report import save_run_report
        from evergreen.tracking import record_run

        record.report = str(save_run_report(self.project, record.to_dict()))
        if track:
            record_run(self.project, record.to_dict())

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

    def _validation_blocked(self, record: SpanRecord) -> RunRecord:
        """The record of a span that validation blocked: nothing trained, and how to go on."""
        anomalies = self.project.span_status(record.span).get("anomalies", [])
        described = "; ".join(a["message"] for a in anomalies if a["severity"] == "error")
        reason = (
            f"blocked by validation ({described or 'see `evergreen status`'}); fix the span's "
            f"data, or accept it into the schema with `evergreen ingest --accept {record.span}`"
        )
        examples = {record.span: self.store.artifact(record.examples_id)}
        plan = SpanPlan(record.span, [record], examples, champion=None, labels=[])
        return assemble.not_trained(plan, reason, self._data_seconds(record.span))

    def _one_span(
        self, record: SpanRecord, history: list[SpanRecord], *, force_full: bool
    ) -> Iterator[RunRecord]:
        """The span's run record; then, when the policy asks, its challenger's.

        Lazy, so the caller saves the increment's record (which names the challenge) before
        the challenger trains: a run killed during the challenge keeps the increment, and the
        next run resumes the challenge (:meth:`_resume_challenge`).
        """
        seconds = self._data_seconds(record.span)  # before planning runs drift: not its time
        plan = self.planner.plan(record, history, force_full)
        if plan.mode == BLOCK:
            reason = plan.reason + "; change the span's data or the [drift] config and run again"
            yield assemble.not_trained(plan, reason, seconds)
            return
        yield self._execute(SpanRun(self.project, self.registry, plan, self.family(), seconds))
        if plan.challenger:
            challenge = self.planner.challenger_plan(record, history, plan.challenger)
            yield self._execute(SpanRun(self.project, self.registry, challenge, self.family(), {}))

    def _execute(self, run: SpanRun) -> RunRecord:
        """Featurizer → featurize → candidate → evaluate → push if blessed → the record."""
        plan = run.plan
        featurizer = run.featurizer(self.feature_types())
        featurized = run.featurize(featurizer)
        produced = run.candidate(featurizer, featurized)
        candidate = produced.outputs["model"]
        if plan.champion is not None and candidate.id == plan.champion.id:
            version = self.registry.alias(self.cfg.name, CHAMPION)
            return assemble.already_champion(plan, run.seconds, version)
        evaluation, evaluated = run.evaluate(candidate)
        epoch_losses = produced.summary.get("epoch_losses", {})
        if not evaluation.blessed:
            return self._record(run, evaluation, None, epoch_losses)
        from evergreen.decision_log import DecisionLog

        manifest = run.manifest(candidate, featurizer, evaluation, evaluated.id)
        if plan.adoption is None:  # an adoption's record is not a span's decision (not saved)
            # Staged first: a kill after the push commits still leaves the record to save.
            staged = self._record(run, evaluation, None, epoch_losses)
            DecisionLog(self.store).stage(staged.to_dict(), candidate.id)
        version = run.push(candidate, evaluated, manifest)
        return self._record(run, evaluation, version, epoch_losses)

    @staticmethod
    def _record(
        run: SpanRun,
        evaluation: Evaluation,
        version: int | None,
        epoch_losses: dict[str, list[float]],
    ) -> RunRecord:
        if run.plan.adoption is not None:
            return assemble.adopted(run.plan, run.ledger, run.seconds, evaluation, version)
        return assemble.trained(
            run.plan,
            run.ledger,
            run.seconds,
            evaluation,
            version,
            growth=run.growth,
            epoch_losses=epoch_losses,
        )

    def adopt(self, source: Path, labels: list[str] | None = None) -> RunRecord:
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
            record = self._adopt(Path(source).resolve(), labels)
            record_run(self.project, record.to_dict())
            return record

    def _adopt(self, source: Path, labels: list[str] | None) -> RunRecord:
        from evergreen.components.adopt import source_digest
        from evergreen.errors import DataError
        from evergreen.models.adopted import PassThroughFeaturizer, inputs_of, load_model

        self.project.ingest()
        usable = [r for r in self.store.spans() if r.status == "validated"]
        if not usable:
            raise DataError("no validated span to evaluate the adopted model on; ingest data first")
        schema = self.project.current_schema()
        labels = list(labels) if labels else sorted(schema.label_domain) if schema else []
        last = usable[-1].span
        seconds = self._data_seconds(last)
        featurizer = PassThroughFeaturizer(inputs_of(load_model(source), self.feature_types()))
        plan = SpanPlan(
            span=last,
            history=usable,
            examples={r.span: self.store.artifact(r.examples_id) for r in usable},
            champion=None,
            labels=labels,
            mode=ADOPTED,
            reason=f"adopted from {source}",
            adoption=Adoption(source, source_digest(source), featurizer),
        )
        return self._execute(SpanRun(self.project, self.registry, plan, None, seconds))

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
