"""The incremental loop on fine foods: 2,000 rows then 4 × 500, against a full retrain."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.components.evaluate import score_saved_model
from evergreen.loop import TrainingLoop, champion_saved_model
from evergreen.models.text import TextFeaturizer, predict_texts
from evergreen.project import Project
from evergreen.registry import Registry
from evergreen.training import data as training_data
from tests.conftest import dataset, read_csv, write_config, write_csv

SIZES = [2000, 500, 500, 500, 500]


def _spans(project: Path) -> Path:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    start = 0
    for number, size in enumerate(SIZES, start=1):
        write_csv(
            project / "data" / f"span-{number}" / "reviews.csv", header, rows[start : start + size]
        )
        start += size
    return write_config(
        project, label="score", features={"product": "categorical", "review": "text"}
    )


def _test_accuracy(saved_model: Path) -> float:
    with open(dataset("fine_foods_test.csv"), newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    scores, labels = score_saved_model(saved_model, [r["review"] for r in rows])
    return float(
        np.mean([labels[i] == r["score"] for i, r in zip(scores.argmax(axis=1), rows, strict=True)])
    )


def _independent_token_count(featurizer_dir: str, texts: list[str]) -> int:
    ids = TextFeaturizer.load(featurizer_dir).transform(texts)
    return int(np.count_nonzero(ids))


@pytest.mark.slow
def test_incremental_loop_matches_full_retrain(tmp_path: Path) -> None:
    config = _spans(tmp_path / "reviews")
    with Project(config_mod.load(config)) as project:
        loop = TrainingLoop(project)
        records = loop.run()
        assert [r.mode for r in records] == ["full"] + ["incremental"] * 4
        assert records[0].reason == "no champion yet"

        featurizer = project.store.artifact(int(loop.champion_model().properties["featurizer"]))
        trained = {
            r.span: r.summary["rows_trained"]
            for r in project.store.runs(component="train")
            if r.status == "succeeded"
        }
        for record in records[1:]:
            # Only the new span's rows are tokenized: checked against an independent count.
            examples = next(
                a for a in project.store.artifacts(type="Examples") if a.span == record.span
            )
            from evergreen.components.featurize import span_texts

            train = span_texts(examples, "train", "review")[0]
            evaluation = span_texts(examples, "eval", "review")[0]
            # The span's own featurize run is its first (a later span featurizes it again only
            # when it has no shards the later featurizer can read).
            run = min(
                (r for r in project.store.runs(component="featurize") if r.span == record.span),
                key=lambda r: r.id,
            )
            ledger = run.summary
            # Each new text is tokenized once: the growth pass tokenized the train texts and
            # kept their tokens beside the grown featurizer, so featurize tokenized the eval
            # texts only and looked the train texts' ids up (the policy's unknown-token rate
            # comes from the drift report's word sketch); all of it is checked in the sum below.
            assert ledger["tokens_computed"] == _independent_token_count(featurizer.uri, evaluation)
            assert ledger["tokens_reused"] == _independent_token_count(featurizer.uri, train) > 0
            assert record.ledger.tokens_computed >= ledger["tokens_computed"]
            assert ledger["rows_featurized"] == len(train) + len(evaluation)
            assert record.ledger.tokens_full_retrain > record.ledger.tokens_computed
            assert 0 < record.ledger.rows_reused < record.rows_total  # the replay, not history
            # Less work than the first full training: fewer rows seen (not seconds: a busy
            # machine makes timings noise).
            assert trained[record.span] < trained[1]
        # Every tokenization is counted once, by the version whose run did it: the featurize
        # passes, the full run's vocabulary fit and each increment's growth pass.
        tokenizing_runs = [
            r
            for component in ("featurize", "fit-featurizer", "grow-featurizer")
            for r in project.store.runs(component=component)
            if r.status == "succeeded"
        ]
        assert {r.component for r in tokenizing_runs} == {
            "featurize",
            "fit-featurizer",
            "grow-featurizer",
        }
        assert sum(r.summary["tokens_computed"] for r in tokenizing_runs) == sum(
            r.ledger.tokens_computed for r in records
        )
        incremental = _test_accuracy(champion_saved_model(project))
        champion = champion_saved_model(project)

        # Raw strings through plain tf.saved_model.load give what `predict` gives.
        sample = ["This tea is wonderful, I buy it every month.", "Stale, broken and overpriced."]
        served, _ = score_saved_model(champion, sample)
        predicted = predict_texts(champion, sample)
        assert [p["label"] for p in predicted] == [_[i] for i in served.argmax(axis=1)]
        assert np.allclose([max(p["scores"].values()) for p in predicted], served.max(axis=1))

    full_config = _spans(tmp_path / "full")
    with Project(config_mod.load(full_config)) as project:
        project.ingest()
        # One full retrain: the featurizer is refit and the model trained from scratch on all five.
        [record] = TrainingLoop(project).run(full=True)
        assert record.mode == "full" and record.span == 5
        [model] = project.store.artifacts(type="Model")
        assert model.properties["mode"] == "full" and model.properties["spans"] == [1, 2, 3, 4, 5]
        full = _test_accuracy(champion_saved_model(project))
    print(
        f"fine foods test accuracy: incremental champion {incremental:.4f}, full retrain {full:.4f}"
    )
    assert incremental >= 0.75
    assert abs(full - incremental) <= 0.015


@pytest.mark.slow
def test_candidate_trained_on_shuffled_labels_is_not_blessed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = _spans(tmp_path / "reviews")
    (tmp_path / "reviews" / "data" / "span-3").rename(tmp_path / "later-3")
    for n in (4, 5):
        (tmp_path / "reviews" / "data" / f"span-{n}").rename(tmp_path / f"later-{n}")
    with Project(config_mod.load(config)) as project:
        loop = TrainingLoop(project)
        loop.run()
        registry = Registry(project.config.registry_dir)
        champion_before = registry.alias(project.config.name, "champion")
        versions_before = len(registry.versions(project.config.name))
        (tmp_path / "later-3").rename(tmp_path / "reviews" / "data" / "span-3")
        # A broken trainer, injected here: it sees every batch's labels shuffled, so the
        # candidate retrained from scratch learns nothing real.
        monkeypatch.setattr(training_data, "featurized_dataset", _with_shuffled_labels)
        [bad] = loop.run(full=True)
        assert bad.mode == "full" and bad.span == 3
        assert not bad.blessed and bad.version is None, bad.verdict
        assert any(r.startswith("historic ") and " fell " in r for r in bad.verdict)
        assert registry.alias(project.config.name, "champion") == champion_before
        assert len(registry.versions(project.config.name)) == versions_before


def _with_shuffled_labels(*args: Any, **kwargs: Any) -> Any:
    import tensorflow as tf

    dataset = _real_featurized_dataset(*args, **kwargs)
    if dataset is None:
        return None
    return dataset.map(lambda x, y: (x, tf.random.shuffle(y, seed=0)))


_real_featurized_dataset = training_data.featurized_dataset


@pytest.mark.slow
def test_heavy_drift_switches_the_loop_to_a_full_retrain(tmp_path: Path) -> None:
    from tests.test_drift import ticket_rows

    header, rows = read_csv(dataset("fine_foods_train.csv"))
    project_dir = tmp_path / "reviews"
    for number in (1, 2, 3):
        write_csv(
            project_dir / "data" / f"span-{number}" / "reviews.csv",
            header,
            rows[(number - 1) * 800 : number * 800],
        )
    # Span 4 changes domain: support tickets, a vocabulary the reviews never used.
    write_csv(project_dir / "data" / "span-4" / "reviews.csv", header, ticket_rows(800, 0.65))
    config = write_config(
        project_dir,
        label="score",
        features={"product": "categorical", "review": "text"},
        extra="[train]\nfull_after_growth = 0\n",  # drift alone decides (no debt challenger)
    )
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
    assert [r.mode for r in records] == ["full", "incremental", "incremental", "full"]
    assert all(r.drift != "major" for r in records[1:3])  # same-domain spans: no heavy drift
    last = records[-1]
    assert last.drift == "major"
    assert "major drift in 'review'" in last.reason  # the reason names the feature
    report = Path(last.report)
    assert report.is_file() and "major drift in" in report.read_text(encoding="utf-8")
