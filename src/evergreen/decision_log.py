"""The training loop's record of each span (its decision, cost, metrics and verdict), kept in
the pipeline's metadata database.

`evergreen status` and the HTML report read decisions from here, never back from the
``reports/span-N.json`` files the loop also writes for people to read: a file can be edited,
deleted or copied without its pipeline, the database is the pipeline's memory. The table
shares the metadata store's database and pipeline name, not its lineage schema.

A blessed span's record is *staged* before its push (``staged_decisions``: the record less its
version, keyed by the candidate) and saved once the push committed. A run killed in between
leaves a published version whose record was never saved; the next run finds the staged
record, completes it with the version the push made and saves it (``TrainingLoop``), so the
span's decision, and a challenge it names, survive the kill.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import sqlalchemy as sa

from evergreen.metadata import MetadataStore, utcnow

_meta = sa.MetaData()

decisions_table = sa.Table(
    "decisions",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(200), nullable=False, index=True),
    sa.Column("span", sa.Integer, nullable=False),
    sa.Column("mode", sa.String(16), nullable=False),  # incremental, full, block, adopted
    sa.Column("record", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


staged_table = sa.Table(
    "staged_decisions",
    _meta,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column("pipeline", sa.String(200), nullable=False, index=True),
    sa.Column("span", sa.Integer, nullable=False),
    sa.Column("candidate", sa.Integer, nullable=False),  # the Model artifact being pushed
    sa.Column("record", sa.JSON, nullable=False),
    sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
)


class DecisionLog:
    """Every record the training loop saved for one pipeline; the latest per span counts."""

    def __init__(self, store: MetadataStore) -> None:
        self.store = store
        _meta.create_all(store.engine)

    def save(self, record: Mapping[str, Any]) -> dict[str, Any]:
        """Store a loop record (its JSON form: what ``span-N.json`` holds); returns that form.

        Any record staged for the same span is dropped in the same transaction: this one
        supersedes it.
        """
        data: dict[str, Any] = json.loads(json.dumps(record, default=str))
        with self.store.transaction() as conn:
            conn.execute(
                staged_table.delete().where(
                    staged_table.c.pipeline == self.store.pipeline,
                    staged_table.c.span == int(data["span"]),
                )
            )
            conn.execute(
                decisions_table.insert().values(
                    pipeline=self.store.pipeline,
                    span=int(data["span"]),
                    mode=str(data["mode"]),
                    record=data,
                    created_at=utcnow(),
                )
            )
        return data

    def latest(self, span: int) -> dict[str, Any] | None:
        """The last record saved for ``span`` (None: the loop never decided on it)."""
        t = decisions_table
        query = (
            sa.select(t.c.record)
            .where(t.c.pipeline == self.store.pipeline, t.c.span == span)
            .order_by(t.c.id.desc())
            .limit(1)
        )
        with self.store.engine.connect() as conn:
            record = conn.execute(query).scalar_one_or_none()
        return None if record is None else dict(record)

    def last(self) -> dict[str, Any] | None:
        """The last record saved, whatever its span (None: none yet)."""
        t = decisions_table
        query = (
            sa.select(t.c.record)
            .where(t.c.pipeline == self.store.pipeline)
            .order_by(t.c.id.desc())
            .limit(1)
        )
        with self.store.engine.connect() as conn:
            record = conn.execute(query).scalar_one_or_none()
        return None if record is None else dict(record)

    def all_latest(self) -> dict[int, dict[str, Any]]:
        """The last record saved for each span, by span."""
        t = decisions_table
        query = sa.select(t.c.span, t.c.record).where(t.c.pipeline == self.store.pipeline)
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.c.id)).all()
        return {int(r.span): dict(r.record) for r in rows}

    def stage(self, record: Mapping[str, Any], candidate: int) -> None:
        """Keep ``record`` (its version not known yet) while ``candidate`` is being pushed."""
        data: dict[str, Any] = json.loads(json.dumps(record, default=str))
        with self.store.transaction() as conn:
            conn.execute(
                staged_table.insert().values(
                    pipeline=self.store.pipeline,
                    span=int(data["span"]),
                    candidate=candidate,
                    record=data,
                    created_at=utcnow(),
                )
            )

    def staged(self) -> list[tuple[int, dict[str, Any]]]:
        """Records staged and not saved since: [(candidate artifact id, record)], oldest first."""
        t = staged_table
        query = sa.select(t.c.candidate, t.c.record).where(t.c.pipeline == self.store.pipeline)
        with self.store.engine.connect() as conn:
            rows = conn.execute(query.order_by(t.c.id)).all()
        return [(int(r.candidate), dict(r.record)) for r in rows]

    def drop_staged(self, candidate: int) -> None:
        """Forget what was staged for ``candidate`` (its push never committed)."""
        t = staged_table
        with self.store.transaction() as conn:
            conn.execute(
                t.delete().where(t.c.pipeline == self.store.pipeline, t.c.candidate == candidate)
            )
