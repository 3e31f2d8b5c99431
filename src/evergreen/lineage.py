"""Lineage, typed: where an artifact or a run came from and what used it.

``evergreen lineage a12`` walks the producer of an artifact, that run's inputs, their
producers and so on (:class:`ArtifactLineage`); ``evergreen lineage r5`` shows one run's inputs
and outputs (:class:`RunLineage`). ``to_dict()`` is the ``--json`` output; ``from_dict`` reads
it back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from evergreen.errors import NotFound
from evergreen.metadata import Artifact, MetadataStore, Run


@dataclass(frozen=True)
class ArtifactRef:
    """An artifact as lineage shows it (the fingerprint cut to 16 hex digits)."""

    id: str  # "a12"
    type: str
    span: int | None
    version: int | None
    uri: str
    fingerprint: str

    @classmethod
    def of(cls, a: Artifact) -> ArtifactRef:
        return cls(f"a{a.id}", a.type, a.span, a.version, a.uri, a.fingerprint[:16])

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class RunRef:
    """A run as lineage shows it."""

    id: str  # "r5"
    component: str
    span: int | None
    status: str
    seconds: float | None

    @classmethod
    def of(cls, r: Run) -> RunRef:
        return cls(f"r{r.id}", r.component, r.span, r.status, r.seconds)

    def to_dict(self) -> dict[str, Any]:
        return dict(vars(self))


@dataclass(frozen=True)
class Upstream:
    """The run that produced an artifact, and each of its inputs with their own upstream."""

    run: RunRef
    inputs: dict[str, LineageNode]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.to_dict(),
            "inputs": {name: node.to_dict() for name, node in self.inputs.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Upstream:
        inputs = {name: LineageNode.from_dict(node) for name, node in data["inputs"].items()}
        return cls(RunRef(**data["run"]), inputs)


@dataclass(frozen=True)
class LineageNode:
    """An artifact and where it came from (None: nothing produced it, e.g. an import)."""

    artifact: ArtifactRef
    upstream: Upstream | None

    def to_dict(self) -> dict[str, Any]:
        upstream = None if self.upstream is None else self.upstream.to_dict()
        return {"artifact": self.artifact.to_dict(), "upstream": upstream}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LineageNode:
        upstream = None if data["upstream"] is None else Upstream.from_dict(data["upstream"])
        return cls(ArtifactRef(**data["artifact"]), upstream)


@dataclass(frozen=True)
class ArtifactLineage:
    """An artifact, its upstream tree, and the runs that used it."""

    artifact: ArtifactRef
    upstream: Upstream | None
    consumers: list[RunRef]

    def to_dict(self) -> dict[str, Any]:
        return {
            **LineageNode(self.artifact, self.upstream).to_dict(),
            "consumers": [r.to_dict() for r in self.consumers],
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ArtifactLineage:
        node = LineageNode.from_dict(data)
        return cls(node.artifact, node.upstream, [RunRef(**r) for r in data["consumers"]])


@dataclass(frozen=True)
class RunLineage:
    """A run with its input and output artifacts, by the names the run gave them."""

    run: RunRef
    inputs: dict[str, ArtifactRef]
    outputs: dict[str, ArtifactRef]

    def to_dict(self) -> dict[str, Any]:
        return {
            "run": self.run.to_dict(),
            "inputs": {n: a.to_dict() for n, a in self.inputs.items()},
            "outputs": {n: a.to_dict() for n, a in self.outputs.items()},
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunLineage:
        return cls(
            RunRef(**data["run"]),
            {n: ArtifactRef(**a) for n, a in data["inputs"].items()},
            {n: ArtifactRef(**a) for n, a in data["outputs"].items()},
        )


def lineage_of(store: MetadataStore, ident: str) -> ArtifactLineage | RunLineage:
    """The lineage of artifact ``aN`` or run ``rN``.

    Raises:
        NotFound: ``ident`` is not an id, or names nothing in the store.
    """
    kind, number = parse_id(ident)
    if kind == "r":
        run = store.run(number)
        return RunLineage(
            RunRef.of(run),
            {n: ArtifactRef.of(a) for n, a in store.run_inputs(run.id).items()},
            {n: ArtifactRef.of(a) for n, a in store.run_outputs(run.id).items()},
        )
    artifact = store.artifact(number)
    return ArtifactLineage(
        ArtifactRef.of(artifact),
        upstream_of(store, artifact),
        [RunRef.of(r) for r in store.consumers(artifact.id)],
    )


def upstream_of(store: MetadataStore, artifact: Artifact) -> Upstream | None:
    """The run that produced ``artifact`` and, recursively, its inputs' upstream."""
    producer = store.producer(artifact.id)
    if producer is None:
        return None
    inputs = {
        name: LineageNode(ArtifactRef.of(a), upstream_of(store, a))
        for name, a in store.run_inputs(producer.id).items()
    }
    return Upstream(RunRef.of(producer), inputs)


def parse_id(ident: str) -> tuple[str, int]:
    """``("a", 12)`` for ``a12``, ``("r", 5)`` for ``r5`` (any case, spaces around).

    Raises:
        NotFound: ``ident`` is neither.
    """
    text = ident.strip().lower()
    if len(text) > 1 and text[0] in "ar" and text[1:].isdigit():
        return text[0], int(text[1:])
    raise NotFound(
        f"{ident!r} is not an artifact or run id; use a12 for artifact 12 or r5 for run 5"
    )
