"""Sliced evaluation: metrics per slice value, and a guard that holds per slice."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.components.evaluate import EvaluateCandidate, answers, metrics
from evergreen.components.slices import OTHER, SliceEvaluation, slice_values
from evergreen.config import EvaluateConfig, TrainConfig
from evergreen.errors import ConfigError
from evergreen.loop import TrainingLoop
from evergreen.project import Project
from tests.conftest import dataset, write_config

LABELS = ["no", "yes"]


def _scores(truth: list[str], right: np.ndarray) -> np.ndarray:
    """Probabilities that put 0.8 on the true label where ``right``, else on the other."""
    p_yes = np.array([0.8 if (t == "yes") == r else 0.2 for t, r in zip(truth, right, strict=True)])
    return np.stack([1 - p_yes, p_yes], axis=1)


def test_a_candidate_better_overall_that_collapses_on_one_slice_is_refused_by_name() -> None:
    rng = np.random.default_rng(1)
    regions = ["north"] * 500 + ["south"] * 100 + ["island"] * 20
    rows = [{"region": r, "label": rng.choice(LABELS)} for r in regions]
    truth = [str(row["label"]) for row in rows]
    champion_right = rng.random(len(rows)) < 0.8  # 80 % everywhere
    candidate_right = np.array([r != "south" for r in regions])  # perfect, but never in the south
    raw, scored, result = {}, {}, {"candidate": {}, "champion": {}}
    for side, right in (("candidate", candidate_right), ("champion", champion_right)):
        scores = _scores(truth, right)
        raw[side, "new"] = (scores, LABELS, None)
        scored[side, "new"] = answers(scores, LABELS, truth, LABELS)
        result[side]["new"] = metrics(scores, truth, LABELS)
    cfg = TrainConfig(primary_metric="accuracy", max_loss_increase=10.0)
    evaluator = EvaluateCandidate(cfg, new_span=2)
    result["guards"] = evaluator._guards(scored, {"new": truth}, LABELS, "accuracy")
    blessed, _ = evaluator._verdict(result)
    assert blessed  # better overall: 520 vs ~496 right
    slicing = SliceEvaluation(
        EvaluateConfig(slices=("region",), min_slice_rows=50), evaluator._guards
    )
    slices = slicing.evaluate({"new": rows}, raw, scored, {"new": truth}, LABELS, "accuracy")
    by_value = slices["region"]
    assert {v: by_value[v]["new"]["rows"] for v in by_value} == {
        "north": 500,
        "south": 100,
        "island": 20,
    }
    assert by_value["island"]["new"]["small"] and "guards" not in by_value["island"]["new"]
    assert by_value["south"]["new"]["candidate"]["accuracy"] == 0.0
    assert by_value["south"]["new"]["champion"]["accuracy"] > 0.6
    refusals = slicing.refusals(slices)
    assert len(refusals) == 1 and refusals[0].startswith(
        "slice region=south (100 rows): new accuracy fell"
    )


def test_rare_values_pool_as_other_and_blanks_as_missing() -> None:
    rows = [{"c": "a"}] * 5 + [{"c": "b"}] * 3 + [{"c": "z"}] + [{"c": None}, {}]
    assert slice_values(rows, "c", keep=2) == ["a"] * 5 + ["b"] * 3 + [OTHER] + ["(missing)"] * 2


def test_slices_must_name_feature_columns(tmp_path: Path) -> None:
    raw = {
        "pipeline": {"name": "p", "root": str(tmp_path)},
        "data": {
            "pattern": "d/span-{SPAN}/*.csv",
            "label": "churn",
            "features": {"state": "categorical"},
        },
        "evaluate": {"slices": ["churn"]},
    }
    with pytest.raises(ConfigError, match="evaluate.slices.*is the label"):
        config_mod.from_dict(raw, base_dir=tmp_path)
    raw["evaluate"] = {"slices": ["stat"]}
    with pytest.raises(ConfigError, match="evaluate.slices"):
        config_mod.from_dict(raw, base_dir=tmp_path)
    raw["evaluate"] = {"slices": ["state"], "guard_slices": True}
    assert config_mod.from_dict(raw, base_dir=tmp_path).evaluate.slices == ("state",)


def test_the_loop_records_slices_in_the_evaluation_record_and_report(tmp_path: Path) -> None:
    project_dir = tmp_path / "churn"
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    for number, (start, end) in enumerate([(0, 1000), (1000, 1600)], start=1):
        folder = project_dir / "data" / f"span-{number}"
        folder.mkdir(parents=True)
        with open(folder / "churn.csv", "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *rows[start:end]])
    extra = (
        '[train]\nfamily = "tabular"\nepochs = 2\nincremental_epochs = 1\n\n[drift]\nenabled = false\n'
        '\n[evaluate]\nslices = ["international_plan"]\nguard_slices = true\nmin_slice_rows = 30\n'
    )
    config = write_config(project_dir, label="churn", extra=extra)
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        assert [r.mode for r in records] == ["full", "incremental"]
        record = records[1]
        plan = record.slices["international_plan"]
        assert set(plan) == {"no", "yes"}
        new_rows = sum(entry["new"]["rows"] for entry in plan.values())
        assert new_rows == record.metrics["candidate"]["new"]["rows"]
        assert all("candidate" in e["new"] and "champion" in e["new"] for e in plan.values())
        evaluation = project.store.artifacts(type="ModelEvaluation")[-1]
        saved = json.loads((Path(evaluation.uri) / "evaluation.json").read_text())
        assert saved["slices"] == json.loads(json.dumps(record.slices))
        judged = [e for v in plan.values() for e in v.values() if not e["small"]]
        assert judged and all("guards" in e for e in judged)
        slice_lines = [line for line in record.verdict if line.startswith("slice ")]
        regressed = any(g["regressed"] for e in judged for g in e["guards"].values())
        assert bool(slice_lines) == regressed
        assert not (regressed and record.blessed)  # a regressed slice refuses the candidate
        assert "Slices" in Path(record.report).read_text(encoding="utf-8")
