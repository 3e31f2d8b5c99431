"""A binary decision threshold chosen on the eval rows, exported and used by classify."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from evergreen import config as config_mod
from evergreen.components.threshold import choose_threshold, objective_for, thresholded_metrics
from evergreen.loop import TrainingLoop
from evergreen.project import Project
from evergreen.registry import Registry
from evergreen.tf import tensorflow
from tests.conftest import dataset, write_config


def test_threshold_maximises_balanced_accuracy_where_argmax_never_flags() -> None:
    rng = np.random.default_rng(0)
    positive = rng.random(2000) < 0.06  # 6 % positives, like the loan table
    score = np.clip(0.04 + 0.12 * positive + rng.normal(0, 0.05, 2000), 0, 1)  # all below 0.5
    assert thresholded_metrics(score, positive, 0.5)["predicted_positive_share"] == 0.0
    cut = choose_threshold(score, positive, "balanced_accuracy")
    assert 0.05 < cut < 0.2
    chosen = thresholded_metrics(score, positive, cut)
    assert chosen["balanced_accuracy_at_threshold"] > 0.8
    f1_cut = choose_threshold(score, positive, "f1")
    assert (
        thresholded_metrics(score, positive, f1_cut)["f1_at_threshold"] >= chosen["f1_at_threshold"]
    )
    assert choose_threshold(score, positive, "argmax") == 0.5
    assert choose_threshold(score, np.zeros(2000, bool), "f1") == 0.5  # nothing to choose


def test_auto_chooses_a_threshold_only_for_skewed_labels() -> None:
    assert objective_for("auto", {"no": 3435, "yes": 565}, ["no", "yes"]) == "balanced_accuracy"
    assert objective_for("auto", {"great": 2600, "other": 1400}, ["great", "other"]) == "argmax"
    assert objective_for("f1", {"a": 1, "b": 1}, ["a", "b"]) == "f1"
    assert objective_for("auto", {"a": 1, "b": 1, "c": 10}, ["a", "b", "c"]) == "argmax"


def test_the_threshold_is_stored_with_the_version_and_classify_uses_it(tmp_path: Path) -> None:
    project_dir = tmp_path / "churn"
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    folder = project_dir / "data" / "span-1"
    folder.mkdir(parents=True)
    with open(folder / "churn.csv", "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows[:1200]])
    config = write_config(
        project_dir, label="churn", extra='[train]\nfamily = "tabular"\nepochs = 2\n'
    )
    with Project(config_mod.load(config)) as project:
        (record,) = TrainingLoop(project).run()
        manifest = Registry(project.config.registry_dir).get(project.config.name, 1).manifest
        decision = manifest["decision"]
        assert decision["objective"] == "balanced_accuracy"  # churn is 6 to 1: auto chooses
        cut = decision["threshold"]
        saved = Registry(project.config.registry_dir).get(project.config.name, 1).path
        exported = json.loads((saved / "assets.extra" / "evergreen_decision.json").read_text())
        assert exported["threshold"] == cut and exported["positive"] == "yes"
        evaluation = next(iter(project.store.artifacts(type="ModelEvaluation")))
        result = json.loads((Path(evaluation.uri) / "evaluation.json").read_text())
        new = result["candidate"]["new"]
        assert new["threshold"] == cut
        assert {"pr_auc", "balanced_accuracy_at_threshold", "recall_at_threshold"} <= set(new)
    tf = tensorflow()
    loaded = tf.saved_model.load(str(saved))
    columns = [c for c in header if c != "churn"]
    numeric = {c for c in columns if rows[0][header.index(c)].replace(".", "").isdigit()}
    feed = {
        c: tf.constant(
            [float(r[header.index(c)]) for r in rows[1200:1600]]
            if c in numeric
            else [r[header.index(c)] for r in rows[1200:1600]]
        )
        for c in columns
    }
    scores = loaded.signatures["serving_default"](**feed)["scores"].numpy()
    labels = loaded.signatures["classify"](**feed)["label"].numpy()
    expected = np.where(scores[:, 1] >= cut, b"yes", b"no")
    np.testing.assert_array_equal(labels, expected)
    assert cut != 0.5 and (expected != np.where(scores[:, 1] >= 0.5, b"yes", b"no")).any()
