"""A label class the champion does not know never wedges the pipeline: a full retrain learns it."""

from __future__ import annotations

from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.loop import TrainingLoop
from evergreen.project import Project
from evergreen.registry import Registry
from tests.conftest import dataset, read_csv, write_config, write_csv


@pytest.mark.slow
def test_a_new_label_class_triggers_a_full_retrain_with_it(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:300])
    # Span 2: every third row's score becomes a third class (validation only warns about it).
    span2 = [r[:2] + ["mixed"] if i % 3 == 0 else r for i, r in enumerate(rows[300:500])]
    write_csv(tmp_path / "data" / "span-2" / "reviews.csv", header, span2)
    config = write_config(
        tmp_path,
        label="score",
        features={"product": "categorical", "review": "text"},
        extra='[train]\nepochs = 2\n\n[drift]\nfull_retrain_on = "never"\n',
    )
    cfg = config_mod.load(config)
    with Project(cfg) as project:
        first, second = TrainingLoop(project).run()
        assert first.mode == "full"
        assert second.mode == "full" and "new label classes ['mixed']" in second.reason
        [candidate] = [
            m for m in project.store.artifacts(type="Model") if m.properties["spans"] == [1, 2]
        ]
        # The candidate learned the new class; whether it is published is the guard's call
        # (the relabelled rows are noise here), but the span has its verdict either way.
        assert candidate.properties["labels"] == ["great", "mixed", "other"]
        assert second.metrics["candidate"], second.verdict
        again = TrainingLoop(project).run()  # nothing left pending, nothing crashes
    assert again == []
    registry = Registry(cfg.registry_dir)
    latest = registry.versions(cfg.name)[-1]
    assert latest.manifest["lineage"]["spans"] == ([1, 2] if second.blessed else [1])
