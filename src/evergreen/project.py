"""A pipeline project: its config, metadata store and runner, and the data stages as one DAG.

``Project.ingest()`` is what ``evergreen ingest`` does:

    for every span not yet ingested (or whose files changed):
        ingest → statistics → [schema, from the first span] → validate → drift

Drift compares the span's statistics with the previous validated span's and with the merge of
all earlier validated spans' (the training window); it opens statistics artifacts only.

Each stage is a component run through :class:`~evergreen.pipeline.Runner`, so finished work is
cached and a killed run resumes where it stopped.

This module is the write side (discover, ingest, drift, accept, digests). The read side
(status, span status, lineage, schema, statistics) is :class:`~evergreen.queries.Queries`,
reachable as ``project.queries``; the few read methods kept on :class:`Project` return its
answers in their JSON form for existing callers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evergreen import examples as examples_mod
from evergreen import readers, spans
from evergreen.artifacts import remove_stale_temporaries
from evergreen.components import drift as drift_mod
from evergreen.components import ingest as ingest_mod
from evergreen.components import schema as schema_mod
from evergreen.components import statistics as stats_mod
from evergreen.components import validate as validate_mod
from evergreen.config import Config, check_columns
from evergreen.errors import DataError, NoSpanFiles, NotFound, SchemaError
from evergreen.file_digests import FileDigests
from evergreen.lock import PipelineLock
from evergreen.metadata import Artifact, MetadataStore
from evergreen.pipeline import Runner, RunResult
from evergreen.queries import Queries

ProgressFactory = Callable[[str], Callable[[int, int], None]]
CHAMPIONS = object()  # Project.drift's default featurizer: whichever the registry champion has


@dataclass
class SpanOutcome:
    """What one ``ingest`` did to one span."""

    span: int
    version: int
    status: str  # validated, blocked, or unchanged
    ingested: bool
    report: dict[str, Any] = field(default_factory=dict)
    anomalies: list[dict[str, Any]] = field(default_factory=list)


class Project:
    """Everything Evergreen knows about one pipeline, opened from its config."""

    def __init__(self, config: Config) -> None:
        self.config = config
        self.store = MetadataStore(config.metadata_url, config.name)
        self.digests = FileDigests(self.store.engine)
        self.queries = Queries(config, self.store, self.champion_featurizer)
        self.runner = Runner(self.store, config.artifacts_dir)
        self._lock = PipelineLock(self.store, "evergreen")

    def close(self) -> None:
        self._lock.release()
        self.store.close()

    @contextmanager
    def writing(self, command: str) -> Iterator[None]:
        """Hold the pipeline's single-writer lock while the block runs (re-entrant).

        The first entry also clears what killed writers left behind: runs still marked
        running, temporary artifact folders, and half-published registry versions. Under the
        lock nobody else can own them.

        Args:
            command: what this writer does, shown to a writer refused meanwhile.

        Raises:
            PipelineBusy: another process holds the lock.
        """
        first = not self._lock.held
        if first:
            self._lock.command = command
        with self._lock:
            if first:
                self._recover()
            yield

    def _recover(self) -> None:
        from evergreen.registry import Registry

        self.store.abandon_running()
        remove_stale_temporaries(self.config.artifacts_dir)
        Registry(self.config.registry_dir).sweep(self.config.name)

    def __enter__(self) -> Project:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- ingest -----------------------------------------------------------------------------
    def discover(self) -> list[spans.SpanFiles]:
        pattern = self.config.resolve(self.config.data.pattern)
        found = spans.discover(pattern)
        if not found:
            raise NoSpanFiles(
                f"no files match data.pattern {self.config.data.pattern!r} (looked for {pattern}); put each span's files there"
            )
        return found

    def ingest(
        self, *, accept: list[int] | None = None, progress: ProgressFactory | None = None
    ) -> list[SpanOutcome]:
        """Ingest, describe and validate every new or changed span; accept the listed spans.

        Raises:
            DataError: no span files, a file that cannot be read at all, or a new span numbered
                below one already ingested.
            SchemaError: ``accept`` names a span that cannot be accepted.
            PipelineBusy: another process is writing to the pipeline.
        """
        with self.writing("evergreen ingest"):
            return self._ingest(accept, progress)

    def _ingest(
        self, accept: list[int] | None, progress: ProgressFactory | None
    ) -> list[SpanOutcome]:
        outcomes = []
        current = {r.span: r for r in self.store.spans()}
        all_versions: dict[int, int] = {}
        for r in self.store.spans(include_superseded=True):
            all_versions[r.span] = max(all_versions.get(r.span, 0), r.version)
        found = self.discover()
        _refuse_late_spans(found, all_versions)
        types = self.feature_types(found[0])
        for span_files in found:
            fingerprint = span_files.fingerprint(self.digests.digest)
            record = current.get(span_files.span)
            if (
                record is not None
                and record.fingerprint == fingerprint
                and record.anomalies_id is not None
            ):
                outcomes.append(SpanOutcome(record.span, record.version, "unchanged", False))
                continue
            version = (
                record.version
                if record is not None and record.fingerprint == fingerprint
                else all_versions.get(span_files.span, 0) + 1
            )
            callback = progress(f"span {span_files.span}") if progress else None
            outcomes.append(self._ingest_span(span_files, version, fingerprint, types, callback))
        for span in accept or []:
            outcomes.append(self._accept(span))
        return outcomes

    def feature_types(self, first: spans.SpanFiles) -> dict[str, str]:
        """Feature types: from the config if given, else the current schema, else inferred."""
        fmt = self.config.data.format
        columns = readers.header(first.files[0], fmt)
        if not columns:
            raise DataError(
                f"{first.files[0]} has no columns (it is empty); span {first.span}'s first "
                "file must name the columns: fix it or move it out of data.pattern"
            )
        if self.config.data.label not in columns:
            raise DataError(
                f"data.label={self.config.data.label!r} is not a column of span {first.span} "
                f"({first.files[0]}). Columns: {', '.join(columns)}"
            )
        check_columns(self.config, columns, f"span {first.span} ({first.files[0]})")
        if self.config.data.features:
            return _no_reserved(dict(self.config.data.features))
        schema = self.current_schema()
        if schema is not None:
            return schema.types
        records = (r for path in first.files for r in readers.read(path, fmt))
        return _no_reserved(ingest_mod.infer_types(records, self.config.data.label))

    def _ingest_span(
        self,
        span_files: spans.SpanFiles,
        version: int,
        fingerprint: str,
        types: dict[str, str],
        progress: Callable[[int, int], None] | None,
    ) -> SpanOutcome:
        span = span_files.span
        ingest_component, stats_component = _data_components(self.config)
        ingested = self.runner.run(
            ingest_component(
                self.config,
                span_files,
                version=version,
                fingerprint=fingerprint,
                types=types,
                progress=progress,
            ),
            span=span,
        )
        examples = ingested.outputs["examples"]
        stats = self.runner.run(
            stats_component(span, version), {"examples": examples}, span=span
        ).outputs["statistics"]
        schema = self._schema_artifact(stats)
        validated = self.runner.run(
            validate_mod.ValidateSpan(span, version, self.config.validation),
            {"examples": examples, "statistics": stats, "schema": schema},
            span=span,
        )
        blocked = validated.summary["blocked"]
        if self.config.drift.enabled:
            self._run_drift(span, version, stats, self.champion_featurizer())
        return SpanOutcome(
            span,
            version,
            "blocked" if blocked else "validated",
            not ingested.cached,
            ingest_mod.read_report(examples).to_dict(),
            [vars(a) for a in validate_mod.load(validated.outputs["anomalies"])],
        )

    # -- drift ------------------------------------------------------------------------------
    def drift(
        self, span: int, *, featurizer: Artifact | None | object = CHAMPIONS
    ) -> drift_mod.DriftResult:
        """Drift of ``span`` against the previous validated span and all earlier ones.

        Computed from statistics artifacts only (cached: a second call costs a lookup). With a
        text ``featurizer`` artifact (default ``CHAMPIONS``: the registry champion's, when there
        is one; None: no featurizer) the report includes the unknown-token rate under its
        frozen vocabulary.

        Raises:
            NotFound: the span has not been ingested.
        """
        record = next((r for r in self.store.spans() if r.span == span), None)
        if record is None or record.statistics_id is None:
            raise NotFound(f"span {span} has not been ingested; run `evergreen ingest` first")
        statistics = self.store.artifact(record.statistics_id)
        if featurizer is CHAMPIONS:
            featurizer = self.champion_featurizer()
        assert featurizer is None or isinstance(featurizer, Artifact)
        result = self._run_drift(span, record.version, statistics, featurizer)
        return drift_mod.load(result.outputs["drift"])

    def _run_drift(
        self, span: int, version: int, statistics: Artifact, featurizer: Artifact | None
    ) -> RunResult:
        earlier = [
            r
            for r in self.store.spans()
            if r.span < span and r.status == "validated" and r.statistics_id is not None
        ]
        inputs = drift_mod.DriftInputs(
            statistics,
            {r.span: self.store.artifact(r.statistics_id) for r in earlier},
            featurizer,
        )
        component = drift_mod.ComputeDrift(span, version, self.config.drift, self.config.data.label)
        return self.runner.run(component, inputs, span=span)

    def champion_featurizer(self) -> Artifact | None:
        """The champion's text featurizer artifact (its frozen vocabulary), or None."""
        from evergreen.registry import CHAMPION, Registry

        registry = Registry(self.config.registry_dir)
        try:
            version = registry.alias(self.config.name, CHAMPION)
            if version is None:
                return None
            lineage = registry.get(self.config.name, version).manifest.get("lineage", {})
            featurizer = lineage.get("featurizer")
            if featurizer is None:
                return None
            artifact = self.store.artifact(int(featurizer))
            # Only a text featurizer has a vocabulary (older ones carry no family: text).
            return artifact if artifact.properties.get("family", "text") == "text" else None
        except NotFound:
            return None

    def _schema_artifact(self, first_statistics: Artifact) -> Artifact:
        if self.config.validation.schema_file:
            path = self.config.resolve(self.config.validation.schema_file)
            component: Any = schema_mod.ImportSchema(schema_mod.Schema.read(path), str(path))
            return self.runner.run(component).outputs["schema"]
        existing = self.store.artifacts(type="Schema")
        if existing:
            return existing[-1]
        component = schema_mod.InferSchema(
            self.config.data.label, self.config.validation.min_presence, self.config.split.key
        )
        return self.runner.run(component, {"statistics": first_statistics}).outputs["schema"]

    def _accept(self, span: int) -> SpanOutcome:
        record = next((r for r in self.store.spans() if r.span == span), None)
        if (
            record is None
            or record.anomalies_id is None
            or record.statistics_id is None
            or record.examples_id is None
        ):
            raise NotFound(f"span {span} has not been ingested; run `evergreen ingest` first")
        if record.status != "blocked":
            raise SchemaError(
                f"span {span} is not blocked (status: {record.status}); there is nothing to accept"
            )
        schema_art = self.store.artifacts(type="Schema")[-1]
        examples = self.store.artifact(record.examples_id)
        stats = self.store.artifact(record.statistics_id)
        updated = validate_mod.accept(
            schema_mod.load(schema_art),
            stats_mod.load(stats),
            ingest_mod.read_report(examples),
            validate_mod.load(self.store.artifact(record.anomalies_id)),
        )
        new_schema = self.runner.run(
            schema_mod.ImportSchema(updated, f"accepted span {span}")
        ).outputs["schema"]
        validated = self.runner.run(
            validate_mod.ValidateSpan(span, record.version, self.config.validation),
            {"examples": examples, "statistics": stats, "schema": new_schema},
            span=span,
        )
        return SpanOutcome(
            span,
            record.version,
            "blocked" if validated.summary["blocked"] else "validated",
            False,
            ingest_mod.read_report(examples).to_dict(),
            [vars(a) for a in validate_mod.load(validated.outputs["anomalies"])],
        )

    def digest(self, path: Path) -> str:
        """A span file's content digest, reused while its size and mtime are unchanged."""
        return self.digests.digest(path)

    # -- reading back (see :mod:`evergreen.queries`) ---------------------------------------
    def current_schema(self) -> schema_mod.Schema | None:
        return self.queries.current_schema()

    def dataset_statistics(self) -> stats_mod.SpanStatistics | None:
        """Statistics of every usable span: a merge of span sketches (no span is re-read)."""
        return self.queries.dataset_statistics()

    def status(self) -> dict[str, Any]:
        """Everything `evergreen status` shows, as JSON-ready data."""
        return self.queries.status()

    def span_status(self, span: int) -> dict[str, Any]:
        """One row of :meth:`status` for the current version of ``span``.

        Raises:
            NotFound: the span has not been ingested.
        """
        return self.queries.span_status(span).to_dict()

    @property
    def reports_dir(self) -> Path:
        """Where run records (``span-N.json``) and HTML reports (``span-N.html``) live."""
        return self.queries.reports_dir

    def lineage(self, ident: str) -> dict[str, Any]:
        """Where an artifact (``a12``) or run (``r5``) came from and what used it."""
        return self.queries.lineage(ident).to_dict()


def _refuse_late_spans(found: list[spans.SpanFiles], versions: dict[int, int]) -> None:
    """Refuse a never-ingested span numbered below the latest ingested one.

    Training and drift assume spans arrive in order; a span that appears late (a folder that
    was unreadable, or copied in late) would be trained on after its successors.

    Raises:
        DataError: naming the span, its files and the latest ingested span.
    """
    if not versions:
        return
    latest = max(versions)
    for span_files in found:
        if span_files.span < latest and span_files.span not in versions:
            raise DataError(
                f"span {span_files.span} ({span_files.files[0].parent}) is new, but span "
                f"{latest} is already ingested; spans are ingested in order, so a late span "
                f"is refused. Renumber it above {latest}, or move it out of data.pattern"
            )


def _no_reserved(types: dict[str, str]) -> dict[str, str]:
    if examples_mod.ROW_HASH in types:
        raise DataError(
            f"column {examples_mod.ROW_HASH!r} is reserved by Evergreen (it identifies rows in "
            "the examples it writes); rename that column in the data"
        )
    return types


def _data_components(config: Config) -> tuple[Any, Any]:
    """The ingest and statistics components: on Beam when the config has [beam], else embedded.

    Beam is imported only here, and only when asked for (it is an optional extra).
    """
    if config.beam is None:
        return ingest_mod.IngestSpan, stats_mod.ComputeStatistics
    from evergreen.beam import beam

    beam()  # a clear ConfigError when the extra is not installed
    from evergreen.beam.ingest import BeamIngestSpan
    from evergreen.beam.statistics import BeamComputeStatistics

    beam_config = config.beam
    return BeamIngestSpan, lambda span, version: BeamComputeStatistics(span, version, beam_config)
