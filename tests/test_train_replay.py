"""Replay over the whole history, class weights for skewed labels, and the guard in the loop."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.components.evaluate import NO_IMPROVEMENT
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
            # Every guard line names the allowance it used (an increment that did not beat the
            # champion starts with the "no improvement" note, which is not a guard line).
            guards = [line for line in record.verdict if not line.startswith(NO_IMPROVEMENT)]
            assert guards and all("noise allowance" in line for line in guards), record.verdict


class _CountingFeaturizer:
    """A featurizer of one int64 feature that counts how often its input function is traced."""

    def __init__(self) -> None:
        self.traces = 0

    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        return {"x": ([], "int64")}

    def model_inputs(self, parsed: dict) -> object:
        self.traces += 1
        return parsed["x"]


def _write_folder(folder: Path, values: range, shard_rows: int) -> None:
    import tensorflow as tf

    from evergreen.examples import ShardWriter

    writer = ShardWriter(folder, shard_rows)
    for v in values:
        feature = {
            "x": tf.train.Feature(int64_list=tf.train.Int64List(value=[v])),
            "label": tf.train.Feature(bytes_list=tf.train.BytesList(value=[b"ab"[v % 2 :][:1]])),
        }
        writer.write(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    writer.close()


def test_replay_over_many_spans_is_one_pipeline_reading_each_folders_prefix(
    tmp_path: Path,
) -> None:
    """An update's input is one pipeline whatever the number of spans (a pipeline per span
    traced its input function per span: a warm update slowed as spans piled up, issue 13):
    the new span's train rows, then each earlier span's replay prefix, shard after shard."""
    spans = {}
    for span in range(1, 9):  # several shards each: the prefixes cross shard boundaries
        root = tmp_path / f"span-{span}"
        _write_folder(root / "train", range(span * 1000, span * 1000 + 30), shard_rows=7)
        _write_folder(root / "replay", range(span * 1000 + 500, span * 1000 + 530), shard_rows=7)
        rows = {"train": 30, "replay": 30}
        spans[span] = Artifact(span, "FeaturizedExamples", str(root), span, 1, "", {"rows": rows})
    # 7 replayed rows: 1 from each earlier span, the prefix (train.replay_rotate off)
    cfg = TrainConfig(replay_ratio=7 / 30, seed=3, replay_rotate=False)
    job = TrainModel(cfg, family("text"), mode="incremental", reason="test", new_span=8)
    featurizer = _CountingFeaturizer()
    data = job._incremental_data(spans, ["a", "b"], featurizer)
    values = sorted(int(v) for batch, _ in data.train.as_numpy_iterator() for v in batch)
    assert values == sorted(list(range(8000, 8030)) + [s * 1000 + 500 for s in range(1, 8)])
    assert (data.rows_per_epoch, data.replayed) == (37, 7)
    assert featurizer.traces == 1


def _replayed(data: object, new_rows: range) -> set[int]:
    """The replayed values of one epoch (an iteration of the pipeline): all but the new rows."""
    values = [int(v) for batch, _ in data.train.as_numpy_iterator() for v in batch]
    assert set(new_rows) <= set(values)
    return {v for v in values if v not in new_rows}


def test_rotating_replay_draws_other_rows_each_epoch_and_each_increment(tmp_path: Path) -> None:
    """``train.replay_rotate``: span 1 replays a window of quota x epochs rows, a fresh draw
    each epoch, and the next increment's window is the next rows of the folder (the prefix
    replays the same rows every time)."""
    spans = {}
    for span in range(1, 5):
        root = tmp_path / f"span-{span}"
        _write_folder(root / "train", range(span * 1000, span * 1000 + 10), shard_rows=4)
        _write_folder(root / "replay", range(span * 1000, span * 1000 + 60), shard_rows=7)
        rows = {"train": 10 if span > 1 else 60, "replay": 60}
        spans[span] = Artifact(span, "FeaturizedExamples", str(root), span, 1, "", {"rows": rows})
    span1 = range(1000, 1060)

    def replayed(new_span: int, rotate: bool) -> list[set[int]]:
        cfg = TrainConfig(replay_rotate=rotate, incremental_epochs=3, seed=5)
        job = TrainModel(cfg, family("text"), mode="incremental", reason="t", new_span=new_span)
        featurizer = _CountingFeaturizer()
        data = job._incremental_data(
            {s: spans[s] for s in range(1, new_span + 1)}, ["a", "b"], featurizer
        )
        assert data.replayed == 10  # the cost is the ratio's, rotating or not
        assert featurizer.traces == 1  # still one pipeline
        new = range(new_span * 1000, new_span * 1000 + 10)
        return [{v for v in _replayed(data, new) if v in span1} for _ in range(3)]

    prefix = replayed(2, rotate=False)
    assert prefix == [set(range(1000, 1010))] * 3  # the same first rows every epoch
    first = replayed(2, rotate=True)  # span 1's quota: 10 rows, window rows 0-29
    assert all(len(epoch) == 10 and epoch <= set(range(1000, 1030)) for epoch in first)
    assert len(set.union(*first)) > 10  # other rows in other epochs
    # span 3's increment: span 1 gives 9 of the 10 rows (60 of 70 history rows), window 27-53
    second = replayed(3, rotate=True)
    assert all(len(epoch) == 9 and epoch <= set(range(1027, 1054)) for epoch in second)
    # span 4's: 8 rows (60 of 80), window rows 48-71, wrapping round to rows 0-11
    third = replayed(4, rotate=True)
    assert all(len(epoch) == 8 for epoch in third)
    assert set.union(*third) <= set(range(1048, 1060)) | set(range(1000, 1012))
