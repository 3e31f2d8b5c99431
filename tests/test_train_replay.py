"""Replay over the whole history, class weights for skewed labels, and the guard in the loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.components.featurize import ReplaySample
from evergreen.components.ingest import split_bucket
from evergreen.components.train import TrainModel, class_weights
from evergreen.config import TrainConfig
from evergreen.examples import iter_records
from evergreen.loop import TrainingLoop
from evergreen.metadata import Artifact
from evergreen.models.registry import family
from evergreen.project import Project
from tests.conftest import dataset, write_config


def _featurized(span: int, train: int) -> Artifact:
    return Artifact(span, "FeaturizedExamples", "/nowhere", span, 1, "", {"rows": {"train": train}})


@pytest.mark.parametrize(
    ("cfg", "sizes", "expected"),
    [
        # The old code gave min(2000, 500) // 2 = 250 to each earlier span, whatever its size.
        (TrainConfig(), {1: 2000, 2: 500, 3: 500}, {1: 400, 2: 100}),
        # No hidden cap of 2,000 rows: 5,000 new rows at ratio 1 replay 5,000.
        (TrainConfig(), {1: 8000, 2: 2000, 3: 5000}, {1: 4000, 2: 1000}),
        (TrainConfig(replay_ratio=0.5), {1: 3000, 2: 1000}, {1: 500}),
        (TrainConfig(replay_rows=300), {1: 2000, 2: 1000, 3: 1000}, {1: 200, 2: 100}),
    ],
    ids=["proportional", "no-hidden-cap", "ratio", "explicit-cap"],
)
def test_replay_is_the_configured_ratio_spread_over_the_whole_history(
    cfg: TrainConfig, sizes: dict[int, int], expected: dict[int, int]
) -> None:
    new_span = max(sizes)
    trainer = TrainModel(
        cfg, family("tabular"), mode="incremental", reason="test", new_span=new_span
    )
    spans = {s: _featurized(s, n) for s, n in sizes.items()}
    assert trainer.replay_quotas(spans, sizes[new_span]) == expected


def test_replay_sample_keeps_the_smallest_hash_keys_in_key_order(tmp_path: Path) -> None:
    hashes = [f"row-{i}" for i in range(1000)]
    sample = ReplaySample(keep=100)
    for h in hashes:
        sample.offer(h, h.encode())
    assert sample.write(tmp_path / "replay", shard_rows=64) == 100
    written = [r.decode() for r in iter_records(tmp_path / "replay")]
    keys = [split_bucket("replay" + h) for h in written]
    assert keys == sorted(keys)  # any prefix is a uniform sample
    assert set(written) == set(sorted(hashes, key=lambda h: split_bucket("replay" + h))[:100])
    positions = sorted(int(h.split("-")[1]) for h in written[:30])
    assert positions[0] < 200 and positions[-1] > 700  # spread over the file, not its head


def test_replay_sample_keeps_every_row_of_a_small_span(tmp_path: Path) -> None:
    sample = ReplaySample(keep=50_000)
    for i in range(300):
        sample.offer(f"r{i}", b"x%d" % i)
    assert sample.write(tmp_path / "replay", shard_rows=1000) == 300


@pytest.mark.parametrize(
    ("counts", "setting", "expected"),
    [
        ({"bad": 57, "good": 943}, "auto", {0: 1000 / 114, 1: 1000 / 1886}),  # the loan table
        ({"no": 3435, "yes": 565}, "auto", None),  # churn, 6 to 1: unweighted (measured)
        ({"no": 3435, "yes": 565}, "balanced", {0: 4000 / 6870, 1: 4000 / 1130}),
        ({"great": 2600, "other": 1400}, "balanced", {0: 4000 / 5200, 1: 4000 / 2800}),
        ({"no": 3435, "yes": 565}, "none", None),
        ({"a": 50, "b": 50}, "balanced", None),  # already balanced
        ({"no": 100}, "balanced", None),  # one class seen: nothing to balance
        ({"a": 1, "b": 50, "c": 0}, "auto", {0: 51 / 2, 1: 51 / 100, 2: 1.0}),
    ],
    ids=[
        "heavy-skew",
        "moderate-skew",
        "balanced",
        "balanced-mild",
        "off",
        "even",
        "one-class",
        "absent-class",
    ],
)
def test_class_weights_only_when_labels_are_skewed(
    counts: dict[str, int], setting: str, expected: dict[int, float] | None
) -> None:
    labels = sorted(counts)
    weights = class_weights(counts, labels, setting)
    if expected is None:
        assert weights is None
    else:
        assert weights == pytest.approx(expected)


def _churn_spans(project: Path, sizes: list[int]) -> None:
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    start = 0
    for number, size in enumerate(sizes, start=1):
        folder = project / "data" / f"span-{number}"
        folder.mkdir(parents=True)
        with open(folder / "churn.csv", "w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f)
            writer.writerow(header)
            writer.writerows(rows[start : start + size])
        start += size


@pytest.mark.slow
def test_churn_increments_replay_the_ratio_weigh_classes_and_guard_auc_and_loss(
    tmp_path: Path,
) -> None:
    project_dir = tmp_path / "churn"
    _churn_spans(project_dir, [1500, 500, 500])
    config = write_config(
        project_dir,
        label="churn",
        extra='[train]\nfamily = "tabular"\nclass_weights = "balanced"\n',
    )
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        assert [r.mode for r in records] == ["full", "incremental", "incremental"]
        store = project.store
        featurized = {a.span: a for a in store.artifacts(type="FeaturizedExamples")}
        for artifact in featurized.values():  # every train row is kept for replay
            rows = artifact.properties["rows"]
            assert rows["replay"] == rows["train"]
            assert sum(artifact.properties["labels"]["train"].values()) == rows["train"]
        runs = {r.span: r.summary for r in store.runs(component="train") if r.status == "succeeded"}
        new_train = featurized[3].properties["rows"]["train"]
        assert runs[3]["replay_rows"] == new_train  # replay_ratio 1.0: one old row per new one
        for summary in runs.values():  # churn is 6 to 1: weighted when asked
            assert summary["class_weights"]["yes"] > 1 > summary["class_weights"]["no"]
        for record in records[1:]:
            evaluation = next(
                a for a in store.artifacts(type="ModelEvaluation") if a.span == record.span
            )
            result = json.loads((Path(evaluation.uri) / "evaluation.json").read_text())
            assert result["primary_metric"] == "auc"
            assert set(result["guards"]) == {"new", "historic", "new_loss", "historic_loss"}
            assert all(g["noise"] <= 0.02 for g in result["guards"].values())  # capped
            assert "balanced_accuracy" in result["candidate"]["new"]
            # The new span's 100 eval rows are too few: pooled with the latest spans' rows.
            assert len(result["new_spans"]) > 1
            assert result["guards"]["new"]["rows"] >= 200
            # Every verdict line names the allowance it used.
            assert all("noise allowance" in line for line in record.verdict), record.verdict
