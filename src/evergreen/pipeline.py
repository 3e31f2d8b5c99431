"""The component contract and the runner: caching, atomic outputs, lineage, resumption.

A component is a small object built from typed parameters (construction does no work) with an
``execute(ctx)`` method that reads its input artifacts and writes its outputs through ``ctx``.
Its inputs are declared as a dataclass of artifacts (:class:`Inputs`); the runner records them
as named links in the metadata store (:meth:`Inputs.named`, the one place link names are made).
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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Protocol

from sqlalchemy.engine import Connection

from evergreen.artifacts import ArtifactWriter, remove_stale_temporaries, stable_hash
from evergreen.errors import ConfigError, DataError, EvergreenError
from evergreen.metadata import Artifact, MetadataStore


def per_span(link: str) -> Any:
    """A dataclass field of :class:`Inputs` holding ``{span: Artifact}``, linked as ``link-N``."""
    return field(metadata={"link": link})


class Inputs:
    """Base of a component's declared inputs: a dataclass whose fields are artifacts.

    A field holds an :class:`Artifact` (linked under the field's name), None (no such input),
    or ``{span: Artifact}`` declared with :func:`per_span` (linked as ``<link>-<span>``). The
    link names are part of the run's cache key and lineage; they are made here and never
    parsed back: components read the typed fields.
    """

    def named(self) -> dict[str, Artifact]:
        """The inputs as the store records them: link name → artifact."""
        out: dict[str, Artifact] = {}
        for spec in fields(self):  # type: ignore[arg-type]
            value = getattr(self, spec.name)
            if value is None:
                continue
            if "link" in spec.metadata:
                out.update({f"{spec.metadata['link']}-{s}": a for s, a in value.items()})
            else:
                out[spec.name] = value
        return out


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
        declared: Inputs | None = None,
    ) -> None:
        self.store = store
        self.conn = conn
        self.run_id = run_id
        self.output_root = output_root
        self.inputs = dict(inputs)  # by link name, as the store records them
        self.declared = declared  # the component's typed inputs, when it declares them
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
    """The contract every pipeline stage follows.

    A component may also define ``registered(ctx, outputs)``: called inside the run's
    transaction once the outputs have ids (e.g. to update spans). Most have nothing to do then
    and leave it out.
    """

    name: ClassVar[str]
    version: ClassVar[str]  # bump when the output for the same inputs would change

    def parameters(self) -> dict[str, Any]:
        """JSON-serialisable parameters: recorded with the run and part of its cache key."""
        ...

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        """Do the work; return a JSON-serialisable summary recorded with the run."""
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
        inputs: Inputs | Mapping[str, Artifact] | None = None,
        *,
        span: int | None = None,
    ) -> RunResult:
        """Run ``component`` on ``inputs`` (typed, or by link name), or reuse its cached run."""
        declared = inputs if isinstance(inputs, Inputs) else None
        inputs = declared.named() if declared is not None else dict(inputs or {})
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
                ctx = ExecutionContext(self.store, conn, run_id, output_root, inputs, declared)
                try:
                    summary = component.execute(ctx)
                    registered = self._register(component, ctx)
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
            known = user_error(component.name, e)
            if known is not None:
                raise known from e
            raise
        return RunResult(run_id, registered, summary, False, seconds)

    def _register(self, component: Component, ctx: ExecutionContext) -> dict[str, Artifact]:
        """Move the outputs into place and record them, their links and the inputs' links."""
        registered: dict[str, Artifact] = {}
        for name, pending in ctx.outputs.items():
            fingerprint = pending.writer.commit()
            registered[name] = self.store.register_artifact(
                ctx.conn,
                type=pending.type,
                uri=str(pending.writer.final_path),
                fingerprint=fingerprint,
                span=pending.span,
                version=pending.version,
                properties=pending.properties,
            )
            self.store.link(ctx.conn, ctx.run_id, registered[name].id, "output", name)
        for name, artifact in ctx.inputs.items():
            self.store.link(ctx.conn, ctx.run_id, artifact.id, "input", name)
        after = getattr(component, "registered", None)
        if after is not None:
            after(ctx, registered)
        return registered

    def _sweep(self) -> None:
        """Once per runner: clear what killed runs left behind (temp folders, 'running' rows)."""
        if self._swept:
            return
        self._swept = True
        remove_stale_temporaries(self.artifacts_dir)
        self.store.mark_abandoned(socket.gethostname(), _process_alive)


# TensorFlow errors a user can cause (a batch too large for the device, inputs whose shapes
# or values the model cannot take), by class name: mapping them needs no TensorFlow import.
_TF_ERRORS: dict[str, tuple[type[EvergreenError], str]] = {
    "ResourceExhaustedError": (
        ConfigError,
        "ran out of memory; lower train.batch_size (or the model's size) and run again",
    ),
    "InvalidArgumentError": (
        DataError,
        "TensorFlow rejected its inputs (a shape or value the model cannot take); check the "
        "data against the model's inputs",
    ),
}


def user_error(component: str, e: BaseException) -> EvergreenError | None:
    """The Evergreen error for a TensorFlow error a user can cause in ``component`` (or None).

    Without it such errors end as "internal error" (exit 3) with a traceback, though the fix
    is the user's: a smaller batch, data that fits the model.
    """
    if isinstance(e, EvergreenError) or not type(e).__module__.startswith("tensorflow"):
        return None
    for cls in type(e).__mro__:
        if cls.__name__ in _TF_ERRORS:
            error, advice = _TF_ERRORS[cls.__name__]
            detail = str(getattr(e, "message", "") or e).strip().splitlines()
            first = detail[0] if detail else type(e).__name__
            return error(f"{component}: {advice} ({type(e).__name__}: {first})")
    return None


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
