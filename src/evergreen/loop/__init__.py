"""The incremental training loop: ``evergreen run``.

For every validated span not yet trained on, in order::

    decide mode → [fit featurizer] → featurize (new span only, unless full) → train
                → evaluate vs champion (new span + historic holdout) → push if blessed

The mode is *full* when there is no champion, when ``--full`` is asked, after ``full_every``
increments, when the new span's unknown rate under the frozen featurizer (text: unknown tokens;
tabular: unseen categories) exceeds ``max_unknown_rate``, or when a label class appears that the champion does not know; otherwise
*incremental*. Every stage goes through the runner (cached, resumable); every span yields one
record with its cost: rows new/total, tokens computed/reused, seconds per stage.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from evergreen.errors import NotFound
from evergreen.loop.push import PushModel, WarmupSource
from evergreen.loop.span_run import featurize_component
from evergreen.loop.training_loop import TrainingLoop
from evergreen.project import Project
from evergreen.records import RunRecord
from evergreen.registry import CHAMPION, Registry

__all__ = [
    "PushModel",
    "RunRecord",
    "TrainingLoop",
    "WarmupSource",
    "champion_saved_model",
    "dumps",
    "featurize_component",
    "history",
]


def history(project: Project) -> list[dict[str, Any]]:
    """Registry versions with metrics, lineage, cost and which one is champion."""
    registry = Registry(project.config.registry_dir)
    champion = registry.alias(project.config.name, CHAMPION)
    out = []
    for v in registry.versions(project.config.name):
        m = v.manifest
        out.append(
            {
                "version": v.version,
                "champion": v.version == champion,
                "created_at": m.get("created_at"),
                "mode": m.get("lineage", {}).get("mode"),
                "reason": m.get("lineage", {}).get("reason"),
                "spans": m.get("lineage", {}).get("spans"),
                "metrics": m.get("metrics"),
                "cost": m.get("cost"),
            }
        )
    return out


def champion_saved_model(project: Project, version: int | None = None) -> Path:
    registry = Registry(project.config.registry_dir)
    if version is None:
        version = registry.alias(project.config.name, CHAMPION)
        if version is None:
            raise NotFound(
                f"pipeline {project.config.name!r} has no champion yet; run `evergreen run` first"
            )
    return registry.get(project.config.name, version).path


def dumps(records: list[dict[str, Any]]) -> str:
    return json.dumps(records, default=str)
