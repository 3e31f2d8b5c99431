"""Publishing a blessed candidate: the push component, its warm-up rows, its manifest."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evergreen.components.featurize import span_rows
from evergreen.metadata import Artifact
from evergreen.pipeline import ExecutionContext, Inputs
from evergreen.registry import CHAMPION, Registry


@dataclass(frozen=True)
class PushInputs(Inputs):
    """What a push publishes: the blessed candidate, and the evaluation that blessed it."""

    candidate: Artifact
    evaluation: Artifact


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
        inputs: PushInputs = ctx.declared  # type: ignore[assignment]
        candidate = inputs.candidate
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
