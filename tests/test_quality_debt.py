"""The policy's quality debt: once increments brought enough new data, a full retrain
challenges the increment and replaces the champion only if its loss is lower."""

from __future__ import annotations

import csv
import json
from pathlib import Path

from evergreen import config as config_mod
from evergreen.components.evaluate import challenge_verdict
from evergreen.config import DriftConfig
from evergreen.loop import TrainingLoop
from evergreen.policy import decide
from evergreen.project import Project
from tests.conftest import dataset, write_config


def test_growth_beyond_the_budget_asks_for_a_challenger() -> None:
    calm = decide(None, cfg=DriftConfig(), data_growth=0.75, full_after_growth=1.0)
    assert calm.mode == "incremental" and not calm.challenger
    due = decide(None, cfg=DriftConfig(), data_growth=1.0, full_after_growth=1.0)
    assert due.mode == "incremental"
    assert due.challenger.startswith("quality debt: ") and due.reasons[-1] == due.challenger
    off = decide(None, cfg=DriftConfig(), data_growth=5.0, full_after_growth=0.0)
    assert off.mode == "incremental" and not off.challenger
    # A span that needs a full retrain anyway gets one, and no challenger beside it.
    forced = decide(
        None, cfg=DriftConfig(), data_growth=2.0, full_after_growth=1.0, unknown_rate=0.9
    )
    assert forced.mode == "full" and not forced.challenger


def test_a_challenger_must_have_the_lower_loss() -> None:
    def result(new: float, historic: float) -> dict[str, object]:
        return {
            "candidate": {
                "new": {"loss": new, "auc": 0.9, "rows": 100.0},
                "historic": {"loss": historic, "auc": 0.9, "rows": 300.0},
            },
            "champion": {
                "new": {"loss": 0.50, "auc": 0.7, "rows": 100.0},
                "historic": {"loss": 0.50, "auc": 0.7, "rows": 300.0},
            },
        }

    better, line = challenge_verdict(result(0.54, 0.48))  # 0.135 + 0.36 < 0.5: row-weighted
    assert better and line.startswith("challenger: loss 0.4950 vs the champion's 0.5000")
    worse, line = challenge_verdict(result(0.40, 0.54))  # 0.1 + 0.405 > 0.5, whatever the AUC
    assert not worse and line.endswith("not lower; the champion stays")
    tie, _ = challenge_verdict(result(0.50, 0.50))
    assert not tie


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
        challenger_evaluations = [
            e
            for e in project.store.artifacts(type="ModelEvaluation")
            if e.properties.get("challenger")
        ]
    # 300 / 600 rows: incremental; 600 / 600: the data doubled, so span 3's increment is
    # followed by a full retrain on spans 1-3 that challenges it; then 300 / 1200 again.
    assert [(r.span, r.mode) for r in records] == [
        (1, "full"),
        (2, "incremental"),
        (3, "incremental"),
        (3, "full"),
        (4, "incremental"),
    ]
    assert records[2].reason.endswith("a full retrain challenges the increment")
    challenger = records[3]
    assert challenger.reason.startswith("quality debt: increments since the last full retrain")
    assert challenger.verdict[0].startswith("challenger: ")
    lower, line = challenge_verdict(challenger.metrics)
    assert challenger.verdict[0] == line
    assert lower or not challenger.blessed  # a challenger that does not beat the loss never lands
    assert (challenger.version is not None) == challenger.blessed
    assert len(challenger_evaluations) == 1 and challenger_evaluations[0].span == 3
    assert "quality debt" not in records[4].reason  # the challenger paid the debt
    # Both of span 3's records are kept for people: the challenger's report beside the
    # increment's, neither overwriting the other.
    assert challenger.challenger and not records[2].challenger
    assert Path(records[2].report).name == "span-3.html"
    assert Path(challenger.report).name == "span-3-challenger.html"
    assert "a full retrain challenges the increment" in Path(records[2].report).read_text("utf-8")
    saved = json.loads(Path(challenger.report).with_suffix(".json").read_text("utf-8"))
    assert saved["challenger"] is True and saved["version"] == challenger.version
