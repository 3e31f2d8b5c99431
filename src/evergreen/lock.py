"""One writer per pipeline: the lock that ``ingest``, ``run``, ``adopt`` and ``rollback`` take.

Two processes writing one pipeline at once double versions and flip the champion between
lineages, so every writing command holds this lock for its whole length. The lock lives where
the metadata lives, so it works wherever the pipeline's writers can meet:

* **SQLite** (one machine): ``flock`` on ``<database>.<pipeline>.<role>.lock`` beside it.
* **PostgreSQL** (machines sharing one store): a session-level advisory lock
  (``pg_try_advisory_lock``) on a connection held open while the lock is held.

Both are released by the operating system or the database server when their holder dies,
``kill -9`` included, so a lock left by a killed process is taken over by the next writer with
nothing to clean up. Who holds the lock (host, pid, command, since when) is written to the
``writer_locks`` table so that a refused writer can say whom it waited for.

Within one process the lock is re-entrant: ``run`` calls ``ingest`` under the lock it holds.
``evergreen watch`` holds a second lock of the same kind, role ``watcher``, for its whole life,
so a pipeline has one watcher; it takes the writer lock only while a run is in progress, so
``rollback`` and ``status`` still work while it waits for data.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import re
import socket
from pathlib import Path
from typing import IO, Any

import sqlalchemy as sa

from evergreen.errors import PipelineBusy
from evergreen.metadata import MetadataStore, utcnow, writer_locks_table


class PipelineLock:
    """The single-writer lock of one pipeline; use it as a context manager.

    Args:
        store: the pipeline's metadata store (its engine decides the mechanism).
        command: what the holder is doing, shown to a refused writer (e.g. ``"evergreen run"``).
        role: which lock of the pipeline: ``"writer"`` (default) for the commands that write,
            ``"watcher"`` for the one ``evergreen watch`` allowed per pipeline.
    """

    def __init__(self, store: MetadataStore, command: str, role: str = "writer") -> None:
        self.store = store
        self.command = command
        self.role = role
        self._depth = 0
        self._file: IO[str] | None = None
        self._conn: sa.engine.Connection | None = None

    @property
    def held(self) -> bool:
        return self._depth > 0

    def acquire(self) -> None:
        """Take the lock, or raise at once if another process holds it.

        Raises:
            PipelineBusy: another writer holds it; the message names it and what to do.
        """
        if self._depth:
            self._depth += 1
            return
        if self.store.engine.dialect.name == "postgresql":
            got = self._acquire_advisory()
        else:
            got = self._acquire_flock()
        if not got:
            raise PipelineBusy(self._describe_holder())
        self._depth = 1
        self._record_holder()

    def release(self) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth:
            return
        if self._conn is not None:
            # The connection goes back to SQLAlchemy's pool, its session alive: unlock first.
            self._conn.execute(sa.text("SELECT pg_advisory_unlock(:key)"), {"key": self._key()})
            self._conn.commit()
            self._conn.close()
            self._conn = None
        if self._file is not None:
            fcntl.flock(self._file.fileno(), fcntl.LOCK_UN)
            self._file.close()
            self._file = None

    def __enter__(self) -> PipelineLock:
        self.acquire()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()

    # -- mechanisms ------------------------------------------------------------------------
    def _acquire_flock(self) -> bool:
        database = self.store.engine.url.database
        if not database or database == ":memory:":
            return True  # an in-memory store has no second process to exclude
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", self.store.pipeline)
        path = Path(f"{database}.{name}.{self.role}.lock")
        f = open(path, "a", encoding="utf-8")  # noqa: SIM115 - held open while locked
        try:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.close()
            return False
        self._file = f
        return True

    def _acquire_advisory(self) -> bool:
        conn = self.store.engine.connect()
        got = conn.execute(
            sa.text("SELECT pg_try_advisory_lock(:key)"), {"key": self._key()}
        ).scalar()
        conn.commit()  # the session lock outlives the transaction; nothing stays open
        if not got:
            conn.close()
            return False
        self._conn = conn
        return True

    # -- who holds it ----------------------------------------------------------------------
    def _record_holder(self) -> None:
        t = writer_locks_table
        holder = {
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "command": self.command,
            "acquired_at": utcnow(),
        }
        with self.store.transaction() as conn:
            conn.execute(t.delete().where(self._row(t)))
            conn.execute(t.insert().values(pipeline=self.store.pipeline, role=self.role, **holder))

    def _describe_holder(self) -> str:
        t = writer_locks_table
        with self.store.engine.connect() as conn:
            row: Any = conn.execute(sa.select(t).where(self._row(t))).first()
        who = (
            f"`{row.command}` (pid {row.pid} on {row.host}, since "
            f"{row.acquired_at:%Y-%m-%d %H:%M:%S} UTC)"
            if row is not None
            else "another process"
        )
        if self.role == "watcher":
            return (
                f"pipeline {self.store.pipeline!r} is already watched by {who}; one watcher per "
                "pipeline. Stop that one first (SIGTERM lets it finish its current run)"
            )
        return (
            f"pipeline {self.store.pipeline!r} is busy: {who} is writing to it. Wait for it to "
            "finish and run again; if it hangs, stop that process (a killed writer releases "
            "the lock by itself)"
        )

    def _row(self, t: sa.Table) -> Any:
        return sa.and_(t.c.pipeline == self.store.pipeline, t.c.role == self.role)

    def _key(self) -> int:
        """A stable signed 64-bit key per pipeline and role (advisory locks take a bigint)."""
        digest = hashlib.sha256(f"evergreen-{self.role}:{self.store.pipeline}".encode()).digest()
        return int.from_bytes(digest[:8], "big", signed=True)
