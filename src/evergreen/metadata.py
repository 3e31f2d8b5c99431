"""The lineage store: artifacts, runs, the edges between them, and spans.

One SQLAlchemy schema, two engines: a SQLite file under the pipeline root by default, or a
PostgreSQL URL for a team. Writes that must land together (a run's outputs, its span record and
its status) share one transaction handed out by :meth:`MetadataStore.transaction`.

Per-row data lives elsewhere: the dedupe index in parquet files beside each span's examples
(:mod:`evergreen.dedupe_index`), span file digests in :mod:`evergreen.file_digests` (the same
database, its own table).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import os
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from evergreen.errors import MetadataError, NotFound

_meta = sa.MetaData()

artifacts_table = sa.Table(
    "artifacts",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(200), nullable=False, index=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("uri", sa.Text, nullable=False),
    sa.Column("span", sa.Integer, nullable=True),
    sa.Column("version", sa.Integer, nullable=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("properties", sa.JSON, nullable=False, default=dict),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

runs_table = sa.Table(
    "runs",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(200), nullable=False, index=True),
    sa.Column("component", sa.String(64), nullable=False),
    sa.Column("span", sa.Integer, nullable=True),
    sa.Column("cache_key", sa.String(64), nullable=False, index=True),
    sa.Column("parameters", sa.JSON, nullable=False, default=dict),
    sa.Column("status", sa.String(16), nullable=False),  # running, succeeded, failed, abandoned
    sa.Column("host", sa.String(255), nullable=True),
    sa.Column("pid", sa.Integer, nullable=True),
    sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
    sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
    sa.Column("seconds", sa.Float, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.Column("summary", sa.JSON, nullable=False, default=dict),
)

events_table = sa.Table(
    "events",
    _meta,
    sa.Column("run_id", sa.Integer, sa.ForeignKey("runs.id"), primary_key=True),
    sa.Column("artifact_id", sa.Integer, sa.ForeignKey("artifacts.id"), primary_key=True),
    sa.Column("kind", sa.String(8), primary_key=True),  # input or output
    sa.Column("name", sa.String(64), nullable=False),
)

spans_table = sa.Table(
    "spans",
    _meta,
    sa.Column("pipeline", sa.String(200), primary_key=True),
    sa.Column("span", sa.Integer, primary_key=True),
    sa.Column("version", sa.Integer, primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("files", sa.JSON, nullable=False),
    # ingested -> validated | blocked; accepted (blocked, then accepted); superseded (newer version)
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("examples_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=True),
    sa.Column("statistics_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=True),
    sa.Column("anomalies_id", sa.Integer, sa.ForeignKey("artifacts.id"), nullable=True),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)

# Who holds the pipeline's single-writer lock (see :mod:`evergreen.lock`): only read to tell a
# refused writer whom it waits for; the lock itself is a flock or a PostgreSQL advisory lock.
writer_locks_table = sa.Table(
    "writer_locks",
    _meta,
    sa.Column("pipeline", sa.String(200), primary_key=True),
    sa.Column("role", sa.String(16), primary_key=True),  # writer, or watcher
    sa.Column("host", sa.String(255), nullable=False),
    sa.Column("pid", sa.Integer, nullable=False),
    sa.Column("command", sa.String(200), nullable=False),
    sa.Column("acquired_at", sa.DateTime(timezone=True), nullable=False),
)


_Row = TypeVar("_Row")


def utcnow() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _from_row(cls: type[_Row], row: Any) -> _Row:
    """A record dataclass from a database row with the same column names (JSON columns copied:
    a record never shares a dict with SQLAlchemy's row cache)."""
    values = {}
    for f in dataclasses.fields(cls):  # type: ignore[arg-type]
        value = getattr(row, f.name)
        if f.type == "dict[str, Any]":
            value = dict(value or {})
        elif f.type == "list[str]":
            value = list(value)
        values[f.name] = value
    return cls(**values)


@dataclass(frozen=True)
class Artifact:
    """An artifact: a folder of files at ``uri`` with its type, span and properties."""

    id: int
    type: str
    uri: str
    span: int | None
    version: int | None
    fingerprint: str
    properties: dict[str, Any]


@dataclass(frozen=True)
class Run:
    """One execution of a component: its cache key, parameters, status and summary."""

    id: int
    component: str
    span: int | None
    cache_key: str
    parameters: dict[str, Any]
    status: str
    seconds: float | None
    error: str | None
    summary: dict[str, Any]


@dataclass(frozen=True)
class SpanRecord:
    """One version of a span: its files, status and the artifacts ingest made of it."""

    span: int
    version: int
    fingerprint: str
    files: list[str]
    status: str
    examples_id: int | None
    statistics_id: int | None
    anomalies_id: int | None


def normalize_url(url: str) -> str:
    """Use the psycopg 3 driver for plain ``postgresql://`` URLs (psycopg2 is not a dependency)."""
    if url.startswith("postgresql://") or url.startswith("postgres://"):
        return "postgresql+psycopg://" + url.split("://", 1)[1]
    return url


class MetadataStore:
    """Lineage store for one pipeline, over any SQLAlchemy URL (SQLite or PostgreSQL)."""

    def __init__(self, url: str, pipeline: str) -> None:
        self.url = normalize_url(url)
        self.pipeline = pipeline
        if self.url.startswith("sqlite:///"):
            from pathlib import Path

            Path(self.url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        try:
            self.engine: Engine = sa.create_engine(self.url, future=True)
            if self.engine.dialect.name == "sqlite":
                sa.event.listen(self.engine, "connect", _sqlite_pragmas)
            _meta.create_all(self.engine)
        except sa.exc.OperationalError as e:
            raise MetadataError(
                f"cannot open the metadata store at {_redact(self.url)}: {e.orig}; check pipeline.metadata_url"
            ) from None

    def close(self) -> None:
        self.engine.dispose()

    @contextmanager
    def transaction(self) -> Iterator[Connection]:
        """One database transaction: committed on success, rolled back on any exception."""
        with self.engine.begin() as conn:
            yield conn

    # -- runs ---------------------------------------------------------------------------
    def start_run(
        self, component: str, cache_key: str, parameters: dict[str, Any], span: int | None
    ) -> int:
        with self.transaction() as conn:
            result = conn.execute(
                runs_table.insert().values(
                    pipeline=self.pipeline,
                    component=component,
                    span=span,
                    cache_key=cache_key,
                    parameters=parameters,
                    status="running",
                    host=socket.gethostname(),
                    pid=os.getpid(),
                    started_at=utcnow(),
                    summary={},
                )
            )
            return int(result.inserted_primary_key[0])

    def finish_run(
        self,
        conn: Connection,
        run_id: int,
        *,
        status: str,
        seconds: float,
        summary: dict[str, Any] | None = None,
        error: str | None = None,
    ) -> None:
        conn.execute(
            runs_table.update()
            .where(runs_table.c.id == run_id)
            .values(
                status=status,
                finished_at=utcnow(),
                seconds=seconds,
                summary=summary or {},
                error=error,
            )
        )

    def fail_run(self, run_id: int, seconds: float, error: str) -> None:
        with self.transaction() as conn:
            self.finish_run(conn, run_id, status="failed", seconds=seconds, error=error)

    def mark_abandoned(self, host: str, alive: Callable[[int], bool]) -> int:
        """Runs still 'running' whose process on this host is gone were killed: say so."""
        t = runs_table
        with self.transaction() as conn:
            rows = conn.execute(
                sa.select(t.c.id, t.c.pid).where(
                    t.c.pipeline == self.pipeline, t.c.status == "running", t.c.host == host
                )
            ).all()
            dead = [r.id for r in rows if r.pid is not None and not alive(r.pid)]
            if dead:
                conn.execute(
                    t.update()
                    .where(t.c.id.in_(dead))
                    .values(status="abandoned", error="process ended without finishing (killed?)")
                )
        return len(dead)

    def abandon_running(self) -> int:
        """Mark every run still 'running' as abandoned; only safe under the writer lock.

        Whoever holds :class:`evergreen.lock.PipelineLock` is the only writer, so a run another
        process left 'running' (on any host) was killed.
        """
        t = runs_table
        with self.transaction() as conn:
            result = conn.execute(
                t.update()
                .where(t.c.pipeline == self.pipeline, t.c.status == "running")
                .where(sa.not_(sa.and_(t.c.host == socket.gethostname(), t.c.pid == os.getpid())))
                .values(status="abandoned", error="process ended without finishing (killed?)")
            )
        return int(result.rowcount or 0)

    def succeeded_run(self, cache_key: str) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(runs_table)
                .where(runs_table.c.pipeline == self.pipeline, runs_table.c.cache_key == cache_key)
                .where(runs_table.c.status == "succeeded")
                .order_by(runs_table.c.id.desc())
                .limit(1)
            ).first()
        return _from_row(Run, row) if row else None

    def run(self, run_id: int) -> Run:
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(runs_table).where(runs_table.c.id == run_id)).first()
        if row is None:
            raise NotFound(f"run r{run_id} does not exist; `evergreen status` lists recent runs")
        return _from_row(Run, row)

    def runs(self, component: str | None = None, limit: int = 1000) -> list[Run]:
        query = sa.select(runs_table).where(runs_table.c.pipeline == self.pipeline)
        if component:
            query = query.where(runs_table.c.component == component)
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(runs_table.c.id.desc()).limit(limit)).all()
        return [_from_row(Run, r) for r in rows]

    # -- artifacts and events --------------------------------------------------------------
    def register_artifact(
        self,
        conn: Connection,
        *,
        type: str,
        uri: str,
        fingerprint: str,
        span: int | None = None,
        version: int | None = None,
        properties: dict[str, Any] | None = None,
    ) -> Artifact:
        values = dict(
            pipeline=self.pipeline,
            type=type,
            uri=uri,
            span=span,
            version=version,
            fingerprint=fingerprint,
            properties=properties or {},
            created_at=utcnow(),
        )
        result = conn.execute(artifacts_table.insert().values(**values))
        return Artifact(
            int(result.inserted_primary_key[0]),
            type,
            uri,
            span,
            version,
            fingerprint,
            properties or {},
        )

    def link(self, conn: Connection, run_id: int, artifact_id: int, kind: str, name: str) -> None:
        conn.execute(
            events_table.insert().values(
                run_id=run_id, artifact_id=artifact_id, kind=kind, name=name
            )
        )

    def artifact(self, artifact_id: int) -> Artifact:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(artifacts_table).where(artifacts_table.c.id == artifact_id)
            ).first()
        if row is None:
            raise NotFound(
                f"artifact a{artifact_id} does not exist; `evergreen status` lists artifacts"
            )
        return _from_row(Artifact, row)

    def artifacts(self, type: str | None = None, span: int | None = None) -> list[Artifact]:
        query = sa.select(artifacts_table).where(artifacts_table.c.pipeline == self.pipeline)
        if type:
            query = query.where(artifacts_table.c.type == type)
        if span is not None:
            query = query.where(artifacts_table.c.span == span)
        with self.engine.connect() as conn:
            return [
                _from_row(Artifact, r)
                for r in conn.execute(query.order_by(artifacts_table.c.id)).all()
            ]

    def run_outputs(self, run_id: int) -> dict[str, Artifact]:
        return {name: art for name, art in self._edges(events_table.c.run_id == run_id, "output")}

    def producer(self, artifact_id: int) -> Run | None:
        with self.engine.connect() as conn:
            row = conn.execute(
                sa.select(runs_table)
                .join(events_table, events_table.c.run_id == runs_table.c.id)
                .where(events_table.c.artifact_id == artifact_id, events_table.c.kind == "output")
            ).first()
        return _from_row(Run, row) if row else None

    def run_inputs(self, run_id: int) -> dict[str, Artifact]:
        return {name: art for name, art in self._edges(events_table.c.run_id == run_id, "input")}

    def consumers(self, artifact_id: int) -> list[Run]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(runs_table)
                .join(events_table, events_table.c.run_id == runs_table.c.id)
                .where(events_table.c.artifact_id == artifact_id, events_table.c.kind == "input")
                .order_by(runs_table.c.id)
            ).all()
        return [_from_row(Run, r) for r in rows]

    def _edges(self, where: Any, kind: str) -> list[tuple[str, Artifact]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                sa.select(events_table.c.name, artifacts_table)
                .join(artifacts_table, artifacts_table.c.id == events_table.c.artifact_id)
                .where(where, events_table.c.kind == kind)
                .order_by(artifacts_table.c.id)
            ).all()
        return [(r.name, _from_row(Artifact, r)) for r in rows]

    # -- spans --------------------------------------------------------------------------------
    def spans(self, include_superseded: bool = False) -> list[SpanRecord]:
        query = sa.select(spans_table).where(spans_table.c.pipeline == self.pipeline)
        if not include_superseded:
            query = query.where(spans_table.c.status != "superseded")
        with self.engine.connect() as conn:
            rows = conn.execute(query.order_by(spans_table.c.span, spans_table.c.version)).all()
        return [_from_row(SpanRecord, r) for r in rows]

    def add_span_version(
        self,
        conn: Connection,
        span: int,
        version: int,
        fingerprint: str,
        files: list[str],
        examples_id: int,
    ) -> None:
        conn.execute(
            spans_table.update()
            .where(spans_table.c.pipeline == self.pipeline, spans_table.c.span == span)
            .where(spans_table.c.status != "superseded")
            .values(status="superseded")
        )
        conn.execute(
            spans_table.insert().values(
                pipeline=self.pipeline,
                span=span,
                version=version,
                fingerprint=fingerprint,
                files=files,
                status="ingested",
                examples_id=examples_id,
                created_at=utcnow(),
            )
        )

    def update_span(self, conn: Connection, span: int, version: int, **values: Any) -> None:
        conn.execute(
            spans_table.update()
            .where(spans_table.c.pipeline == self.pipeline, spans_table.c.span == span)
            .where(spans_table.c.version == version)
            .values(**values)
        )

    def current_examples(self, conn: Connection) -> list[tuple[int, int, str]]:
        """(span, examples artifact id, its folder) of every span's current version, in
        ingest order: where the dedupe index files are (see :mod:`evergreen.dedupe_index`)."""
        s, a = spans_table, artifacts_table
        rows = conn.execute(
            sa.select(s.c.span, a.c.id, a.c.uri)
            .join(a, a.c.id == s.c.examples_id)
            .where(s.c.pipeline == self.pipeline, s.c.status != "superseded")
            .order_by(a.c.id)
        ).all()
        return [(int(r.span), int(r.id), str(r.uri)) for r in rows]


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL lets `evergreen status` read while an ingest holds the write lock; the busy timeout
    # makes a second writer wait instead of failing at once.
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.close()


def _redact(url: str) -> str:
    return sa.engine.make_url(url).render_as_string(hide_password=True)
