"""The retrain policy on drift computed from real spans: incremental, full retrain, or block."""

from __future__ import annotations

import csv
import random
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.components import drift as drift_mod
from evergreen.components.statistics import SpanStatistics, merge_all
from evergreen.config import DriftConfig
from evergreen.policy import Decision, decide, find_drift_report, hard_rule
from evergreen.project import Project
from tests.conftest import dataset
from tests.test_drift import NEW_VALUES, SHIFTED_NUMERIC, churn_project

FOODS = {"product": "categorical", "review": "text"}


@pytest.fixture(scope="module")
def churn_drift(tmp_path_factory: pytest.TempPathFactory) -> dict[int, drift_mod.DriftResult]:
    """Drift of spans 2-4 of the churn stream whose span 4 is shifted (see test_drift)."""
    config = churn_project(tmp_path_factory.mktemp("policy") / "churn", shifted=True)
    with Project(config_mod.load(config)) as project:
        project.ingest()
        return {span: find_drift_report(project.store, span) for span in (2, 3, 4)}


def _foods_drift(new_rows: list[dict], reference_rows: list[dict]) -> drift_mod.DriftResult:
    def stats(rows: list[dict], span: int) -> SpanStatistics:
        s = SpanStatistics(dict(FOODS), spans=[span])
        s.add_batch(rows, "score")
        return s

    ref = stats(reference_rows, 1)
    return drift_mod.compute_drift(
        stats(new_rows, 2),
        {"previous": ref, "window": merge_all([ref])},
        DriftConfig(),
        label="score",
        span=2,
    )


def _foods_rows() -> list[dict]:
    with open(dataset("fine_foods_train.csv"), newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_heavy_drift_forces_a_full_retrain_naming_the_features(churn_drift: dict) -> None:
    decision = decide(churn_drift[4], cfg=DriftConfig())
    assert decision.mode == "full"
    assert SHIFTED_NUMERIC in decision.reasons[0] and NEW_VALUES in decision.reasons[0]
    assert "drift.full_retrain_on = 'major'" in decision.reasons[0]
    assert f"'{SHIFTED_NUMERIC}' (psi " in decision.reason  # the largest score, with its value


def test_no_drift_stays_incremental(churn_drift: dict) -> None:
    for span in (2, 3):
        decision = decide(churn_drift[span], cfg=DriftConfig(), unknown_rate=0.02)
        assert decision == Decision(
            "incremental", ["the champion fits the new span (unknown-token rate 0.02)"]
        )


def test_settings_move_the_boundary(churn_drift: dict) -> None:
    assert decide(churn_drift[4], cfg=DriftConfig(full_retrain_on="never")).mode == "incremental"
    blocked = decide(churn_drift[4], cfg=DriftConfig(block_on="major"))
    assert blocked.mode == "block" and "drift.block_on = 'major'" in blocked.reasons[0]
    # with drift off (no report) nothing drift-related fires
    assert decide(None, cfg=DriftConfig()).mode == "incremental"


def test_label_collapse_blocks_and_minor_drift_is_named() -> None:
    rows = _foods_rows()
    only_great = [r for r in rows[800:] if r["score"] == "great"][:800]
    collapsed = decide(_foods_drift(only_great, rows[:800]), cfg=DriftConfig())
    assert collapsed.mode == "block"
    assert "collapsed to one class ('great'" in collapsed.reasons[0]
    allowed = decide(
        _foods_drift(only_great, rows[:800]), cfg=DriftConfig(block_on_single_label=False)
    )
    assert allowed.mode == "full" and "'score'" in allowed.reasons[0]

    # A mild shift of the label balance (65% → 50% great) is minor: named, not a retrain.
    rng = random.Random(0)
    great = [r for r in rows[800:] if r["score"] == "great"]
    other = [r for r in rows[800:] if r["score"] == "other"]
    mild = great[:400] + other[:400]
    rng.shuffle(mild)
    decision = decide(_foods_drift(mild, rows[:800]), cfg=DriftConfig())
    assert decision.mode == "incremental"
    assert any("minor drift in 'score'" in r for r in decision.reasons)


def test_unknown_tokens_increments_and_forgetting() -> None:
    cfg = DriftConfig()
    high = decide(None, cfg=cfg, unknown_rate=0.4, max_unknown_rate=0.25)
    assert high.mode == "full" and "unknown-token rate 0.40" in high.reason
    counted = decide(None, cfg=cfg, increments_since_full=3, full_every=3)
    assert counted.mode == "full" and "3 increments since the last full retrain" in counted.reason
    assert decide(None, cfg=cfg, increments_since_full=2, full_every=3).mode == "incremental"
    forgot = decide(None, cfg=cfg, historic_regression=0.02, max_historic_regression=0.005)
    assert forgot.mode == "full" and forgot.reason.startswith("forgetting")
    several = decide(None, cfg=cfg, unknown_rate=0.5, increments_since_full=3, full_every=3)
    assert several.mode == "full" and len(several.reasons) == 2
    assert Decision.from_dict(several.to_dict()) == several


def test_hard_rules_come_before_any_measurement() -> None:
    assert hard_rule(has_champion=False, force_full=True).reasons == ["no champion yet"]
    assert hard_rule(has_champion=True, force_full=True).reasons == ["requested with --full"]
    assert hard_rule(has_champion=True, new_labels={"b", "a"}).reasons == [
        "new label classes ['a', 'b']"
    ]
    assert hard_rule(has_champion=True) is None


def test_the_drift_report_supplies_the_unknown_rate() -> None:
    report = drift_mod.DriftResult(span=3, comparisons=[], unknown_rate=0.6)
    decision = decide(report, cfg=DriftConfig(), max_unknown_rate=0.25)
    assert decision.mode == "full" and "unknown-token rate 0.60" in decision.reason


def test_find_drift_report_is_none_for_unknown_span(tmp_path: Path, churn_drift: dict) -> None:
    assert churn_drift[4].span == 4
    config = churn_project(tmp_path / "empty", shifted=False, spans=1)
    with Project(config_mod.load(config)) as project:
        project.ingest()
        assert find_drift_report(project.store, 7) is None
        first = find_drift_report(project.store, 1)
    assert first.comparisons == [] and first.notes == ["no earlier validated span to compare with"]
