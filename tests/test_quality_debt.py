"""The policy's quality debt: a full retrain once increments brought enough new data."""

from __future__ import annotations

import csv
from pathlib import Path

from evergreen import config as config_mod
from evergreen.config import DriftConfig
from evergreen.loop import TrainingLoop
from evergreen.policy import decide
from evergreen.project import Project
from tests.conftest import dataset, write_config


def test_growth_beyond_the_budget_asks_for_a_full_retrain() -> None:
    calm = decide(None, cfg=DriftConfig(), data_growth=0.75, full_after_growth=1.0)
    assert calm.mode == "incremental"
    due = decide(None, cfg=DriftConfig(), data_growth=1.0, full_after_growth=1.0)
    assert due.mode == "full" and due.reasons[0].startswith("quality debt: ")
    off = decide(None, cfg=DriftConfig(), data_growth=5.0, full_after_growth=0.0)
    assert off.mode == "incremental"


def test_the_loop_retrains_in_full_when_the_data_doubled(tmp_path: Path) -> None:
    project_dir = tmp_path / "churn"
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    for number, (start, end) in enumerate([(0, 600), (600, 900), (900, 1200), (1200, 1500)], 1):
        folder = project_dir / "data" / f"span-{number}"
        folder.mkdir(parents=True)
        with open(folder / "churn.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *rows[start:end]])
    extra = (
        '[train]\nfamily = "tabular"\nepochs = 1\nincremental_epochs = 1\nfull_after_growth = 1.0\n'
        "\n[drift]\nenabled = false\n"
    )
    config = write_config(project_dir, label="churn", extra=extra)
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
    # 300 / 600 rows: incremental; 600 / 600: the data doubled, full; then 300 / 1200 again.
    assert [r.mode for r in records] == ["full", "incremental", "full", "incremental"]
    assert records[2].reason.startswith("quality debt: increments since the last full retrain")
