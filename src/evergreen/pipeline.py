"""The component contract and the runner: caching, atomic outputs, lineage, resumption.

A component is a small object built from typed parameters (construction does no work) with an
``execute(ctx)`` method that reads its input artifacts and writes its outputs through ``ctx``.
The runner wraps every execution the same way:

1. cache key = hash(component name, version, parameters, input fingerprints); a key that already
   succeeded returns the recorded outputs without running anything;
2. outputs are written to temporary folders; the run's database writes share one transaction;
3. on success the folders are renamed into place and the transaction commits — outputs, edges,
   row-index entries and the run's status land together or not at all.

A run killed at any point leaves either a committed run or nothing that the next run trusts:
stale temporaries are swept, and an unregistered final folder is replaced.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Protocol

from sqlalchemy.engine import Connection

from evergreen.artifacts import ArtifactWriter, remove_stale_temporaries, stable_hash
from evergreen.metadata import Artifact, MetadataStore


@dataclass
class _PendingOutput:
    writer: ArtifactWriter
    type: str
    span: int | None
    version: int | None
    properties: dict[str, Any] = field(default_factory=dict)


class ExecutionContext:
    """What a component sees while it runs: its inputs, output folders and the transaction."""

    def __init__(
        self,
        store: MetadataStore,
        conn: Connection,
        run_id: int,
        output_root: Path,
        inputs: Mapping[str, Artifact],
    ) -> None:
        self.store = store
        self.conn = conn
        self.run_id = run_id
        self.output_root = output_root
        self.inputs = dict(inputs)
        self.outputs: dict[str, _PendingOutput] = {}

    def output(
        self, name: str, type: str, *, span: int | None = None, version: int | None = None
    ) -> ArtifactWriter:
        """A temporary folder for output ``name``; it is moved into place when the run succeeds."""
        writer = ArtifactWriter(self.output_root / name)
        self.outputs[name] = _PendingOutput(writer, type, span, version)
        return writer

    def set_properties(self, name: str, properties: dict[str, Any]) -> None:
        self.outputs[name].properties.update(properties)


class Component(Protocol):
    """The contract every pipeline stage follows."""

    name: ClassVar[str]
    version: ClassVar[str]  # bump when the output for the same inputs would change

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters: recorded with the run and part of its cache key."""
        ...

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        """Do the work; return a JSON-serialisable summary recorded with the run."""
        ...

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        """Called inside the run's transaction once outputs have ids (e.g. to update spans)."""
        ...


@dataclass(frozen=True)
class RunResult:
    run_id: int
    outputs: dict[str, Artifact]
    summary: dict[str, Any]
    cached: bool
    seconds: float


class Runner:
    """Runs components against one metadata store and artifact folder."""

    def __init__(self, store: MetadataStore, artifacts_dir: Path) -> None:
        self.store = store
        self.artifacts_dir = artifacts_dir
        self._swept = False

    def cache_key(
        self, component: Component, inputs: Mapping[str, Artifact], span: int | None
    ) -> str:
        fingerprints = {name: art.fingerprint for name, art in sorted(inputs.items())}
        return stable_hash(
            component.name, component.version, component.parameters(), fingerprints, span
        )

    def run(
        self,
        component: Component,
        inputs: Mapping[str, Artifact] | None = None,
        *,
        span: int | None = None,
    ) -> RunResult:
        inputs = dict(inputs or {})
        key = self.cache_key(component, inputs, span)
        previous = self.store.succeeded_run(key)
        if previous is not None:
            return RunResult(
                previous.id, self.store.run_outputs(previous.id), previous.summary, True, 0.0
            )
        self._sweep()

        started = time.perf_counter()
        run_id = self.store.start_run(component.name, key, component.parameters(), span)
        output_root = (
            self.artifacts_dir
            / component.name
            / (f"span-{span}" if span is not None else "all")
            / key[:16]
        )
        try:
            with self.store.transaction() as conn:
                ctx = ExecutionContext(self.store, conn, run_id, output_root, inputs)
                try:
                    summary = component.execute(ctx)
                    registered: dict[str, Artifact] = {}
                    for name, pending in ctx.outputs.items():
                        fingerprint = pending.writer.commit()
                        registered[name] = self.store.register_artifact(
                            conn,
                            type=pending.type,
                            uri=str(pending.writer.final_path),
                            fingerprint=fingerprint,
                            span=pending.span,
                            version=pending.version,
                            properties=pending.properties,
                        )
                        self.store.link(conn, run_id, registered[name].id, "output", name)
                    for name, artifact in inputs.items():
                        self.store.link(conn, run_id, artifact.id, "input", name)
                    component.registered(ctx, registered)
                    seconds = time.perf_counter() - started
                    self.store.finish_run(
                        conn, run_id, status="succeeded", seconds=seconds, summary=summary
                    )
                finally:
                    for pending in ctx.outputs.values():
                        if not pending.writer.committed:
                            pending.writer.abort()
        except BaseException as e:
            self.store.fail_run(run_id, time.perf_counter() - started, _describe(e))
            raise
        return RunResult(run_id, registered, summary, False, seconds)

    def _sweep(self) -> None:
        """Once per runner: clear what killed runs left behind (temp folders, 'running' rows)."""
        if self._swept:
            return
        self._swept = True
        remove_stale_temporaries(self.artifacts_dir)
        self.store.mark_abandoned(socket.gethostname(), _process_alive)


def _describe(e: BaseException) -> str:
    if isinstance(e, KeyboardInterrupt):
        return "interrupted"
    return "".join(traceback.format_exception_only(type(e), e)).strip()


def _process_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
