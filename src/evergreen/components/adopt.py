"""Adopt a model trained elsewhere as a candidate ``Model`` artifact (see models/adopted.py).

The source file (or SavedModel folder) is copied into the artifact, loaded, re-saved as
``model.keras`` for later warm starts, and exported with the pass-through featurizer as a
raw-input SavedModel like any other candidate. Its cache key includes the source's content
hash, so adopting a changed file is a new artifact.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from evergreen.errors import ConfigError
from evergreen.metadata import Artifact
from evergreen.models.adopted import load_model
from evergreen.models.registry import load_featurizer
from evergreen.models.serving_export import export_serving_model
from evergreen.pipeline import ExecutionContext, Inputs


def source_digest(path: Path) -> str:
    """sha256 of a file, or of every file in a folder (relative names included)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


@dataclass(frozen=True)
class AdoptInputs(Inputs):
    """What adopting reads: the fitted pass-through featurizer (the model file is a parameter)."""

    featurizer: Artifact


class AdoptModel:
    """Pipeline component: ``featurizer`` (pass-through) + a model file → a ``Model`` artifact."""

    name: ClassVar[str] = "adopt"
    version: ClassVar[str] = "1"

    def __init__(self, source: Path, labels: list[str], spans: list[int], digest: str) -> None:
        self.source = source
        self.labels = labels
        self.spans = spans
        self.digest = digest

    def parameters(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "sha256": self.digest,
            "labels": self.labels,
            "spans": self.spans,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        inputs: AdoptInputs = ctx.declared  # type: ignore[assignment]
        fitted = inputs.featurizer
        writer = ctx.output("model", "Model", span=max(self.spans))
        copy = writer.path / "source" / self.source.name
        copy.parent.mkdir(parents=True)
        if self.source.is_dir():
            shutil.copytree(self.source, copy)
        else:
            shutil.copy2(self.source, copy)
        model = load_model(copy)
        if int(model.output_shape[-1]) != len(self.labels):
            raise ConfigError(
                f"the adopted model {self.source} has {model.output_shape[-1]} outputs but the data has {len(self.labels)} labels {self.labels}; pass --labels in the model's output order"
            )
        model.save(writer.path / "model.keras")
        export_serving_model(
            load_featurizer(fitted.uri), model, self.labels, writer.path / "saved_model"
        )
        summary = {
            "mode": "adopted",
            "reason": f"adopted from {self.source}",
            "source": str(self.source),
            "sha256": self.digest,
            "epochs": 0,
            "replay_rows": 0,
        }
        ctx.set_properties(
            "model",
            {
                **summary,
                "labels": self.labels,
                "featurizer": fitted.id,
                "family": "adopted",
                "spans": self.spans,
                "new_span": max(self.spans),
            },
        )
        return summary
