"""Adopting a model trained outside Evergreen, then keeping it fresh on new spans only."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.cli import main
from evergreen.components.evaluate import score_saved_model
from evergreen.errors import ConfigError
from evergreen.loop import TrainingLoop, champion_saved_model, history
from evergreen.project import Project
from evergreen.registry import Registry
from evergreen.tf import tensorflow
from tests.conftest import dataset, write_config

tf = tensorflow()
import keras  # noqa: E402

CATEGORICAL = ["state", "area_code", "international_plan", "voice_mail_plan"]
SPAN_ROWS = 400


def _churn() -> tuple[list[str], list[list[str]]]:
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        return next(reader), list(reader)


def _train_elsewhere(header: list[str], rows: list[list[str]], path: Path) -> Path:
    """A plain Keras model with its own preprocessing, trained with no Evergreen code."""
    keras.utils.set_random_seed(0)
    numeric = [c for c in header if c not in CATEGORICAL and c != "churn"]
    table = {c: [r[header.index(c)] for r in rows] for c in header}
    inputs = {c: keras.Input(shape=(1,), dtype="float32", name=c) for c in numeric}
    inputs |= {c: keras.Input(shape=(1,), dtype="string", name=c) for c in CATEGORICAL}
    numbers = np.array([[float(v) for v in table[c]] for c in numeric], dtype="float32").T
    norm = keras.layers.Normalization()
    norm.adapt(numbers)
    parts = [norm(keras.layers.Concatenate()([inputs[c] for c in numeric]))]
    for c in CATEGORICAL:
        lookup = keras.layers.StringLookup(vocabulary=sorted(set(table[c])), output_mode="one_hot")
        parts.append(lookup(inputs[c]))
    x = keras.layers.Dense(32, activation="relu", name="hidden")(keras.layers.Concatenate()(parts))
    outputs = keras.layers.Dense(2, activation="softmax", name="classifier")(x)
    model = keras.Model(inputs, outputs)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    feed = {c: tf.constant(numbers[:, i : i + 1]) for i, c in enumerate(numeric)} | {
        c: tf.constant([[v] for v in table[c]]) for c in CATEGORICAL
    }
    y = np.array([["no", "yes"].index(v) for v in table["churn"]])
    model.fit(
        tf.data.Dataset.from_tensor_slices((feed, y)).batch(32), epochs=8, shuffle=False, verbose=0
    )
    model.save(path)
    return path


def _write_span(folder: Path, number: int, header: list[str], rows: list[list[str]]) -> None:
    path = folder / "data" / f"span-{number}" / "churn.csv"
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([header, *rows])


@pytest.mark.slow
def test_adopt_then_two_incremental_spans(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    header, rows = _churn()
    model_path = _train_elsewhere(header, rows[3000:4000], tmp_path / "prod_model.keras")
    folder = tmp_path / "churn"
    for n in (1, 2):
        _write_span(folder, n, header, rows[(n - 1) * SPAN_ROWS : n * SPAN_ROWS])
    extra = '\n[train]\nfamily = "tabular"\nincremental_epochs = 3\nincremental_learning_rate = 0.0003\nfreeze_lower_layers = 0\nmax_historic_regression = 0.02\n'
    config = write_config(folder, label="churn", extra=extra)

    main(["adopt", "-c", str(config), "--model", str(model_path), "--json"])  # returns on success
    [adopted] = json.loads(capsys.readouterr().out)
    assert adopted["mode"] == "adopted" and adopted["version"] == 1
    assert (
        adopted["rows_featurized"] == 2 * SPAN_ROWS
    )  # each current row featurized once (pass-through)

    with Project(config_mod.load(config)) as project:
        registry = Registry(project.config.registry_dir)
        v1 = registry.get(project.config.name, 1)
        assert v1.manifest["lineage"]["mode"] == "adopted" and v1.manifest["lineage"][
            "source"
        ] == str(model_path)
        assert registry.alias(project.config.name, "champion") == 1
        # The published SavedModel answers raw rows exactly as the user's model does.
        sample = [dict(zip(header, r, strict=True)) for r in rows[4000:4100]]
        for r in sample:
            r.update({c: float(r[c]) for c in header if c not in CATEGORICAL and c != "churn"})
        scores, labels = score_saved_model(champion_saved_model(project), sample)
        original = keras.models.load_model(model_path)
        expected = original.predict(
            {
                c: tf.constant(
                    [[r[c]] for r in sample], tf.string if c in CATEGORICAL else tf.float32
                )
                for c in header
                if c != "churn"
            },
            verbose=0,
        )
        assert labels == ["no", "yes"] and np.allclose(scores, expected, atol=1e-5)

        for n in (3, 4):
            _write_span(folder, n, header, rows[(n - 1) * SPAN_ROWS : n * SPAN_ROWS])
        records = TrainingLoop(project).run()
        assert [(r.span, r.mode) for r in records] == [
            (3, "incremental"),
            (4, "incremental"),
        ], [r.reason for r in records]
        assert [r.version for r in records] == [2, 3], [r.verdict for r in records]
        for record in records:
            examples = next(
                a for a in project.store.artifacts(type="Examples") if a.span == record.span
            )
            assert record.ledger.rows_featurized == examples.properties["rows"]  # only the new span
        # No historic row is featurized again: one featurize run per span, ever.
        runs = [
            r.span for r in project.store.runs(component="featurize") if r.status == "succeeded"
        ]
        assert sorted(runs) == [1, 2, 3, 4]
        lineage = [(h["version"], h["mode"]) for h in history(project)]
        assert lineage == [(1, "adopted"), (2, "incremental"), (3, "incremental")]
        parents = [
            registry.get(project.config.name, v).manifest["lineage"]["parent"] for v in (1, 2, 3)
        ]
        assert parents == [None, 1, 2]
        # The increments warm-started from the adopted weights: same architecture, moved weights.
        champion = keras.models.load_model(
            Path(TrainingLoop(project).champion_model().uri) / "model.keras"
        )
        assert (
            champion.get_layer("hidden").get_weights()[0].shape
            == original.get_layer("hidden").get_weights()[0].shape
        )
        assert not np.allclose(
            champion.get_layer("hidden").get_weights()[0],
            original.get_layer("hidden").get_weights()[0],
        )


def test_adopt_rejects_a_model_whose_inputs_are_not_columns(tmp_path: Path) -> None:
    header, rows = _churn()
    folder = tmp_path / "churn"
    _write_span(folder, 1, header, rows[:100])
    config = write_config(folder, label="churn")
    inputs = keras.Input(shape=(3,), dtype="float32", name="features")
    model = keras.Model(inputs, keras.layers.Dense(2, activation="softmax")(inputs))
    model.save(tmp_path / "odd.keras")
    with (
        Project(config_mod.load(config)) as project,
        pytest.raises(ConfigError, match="input 'features' is not a feature column"),
    ):
        TrainingLoop(project).adopt(tmp_path / "odd.keras")
    shutil.rmtree(folder / ".evergreen")


def test_pass_through_featurizer_round_trips(tmp_path: Path) -> None:
    from evergreen.models.adopted import PassThroughFeaturizer
    from evergreen.models.registry import load_featurizer

    inputs = [
        {"name": "state", "column": "state", "dtype": "string", "shape": [1]},
        {"name": "calls", "column": "calls", "dtype": "float32", "shape": []},
    ]
    featurizer = PassThroughFeaturizer(inputs).fit([{"state": "KS", "calls": 1.0}])
    assert (
        PassThroughFeaturizer.from_dict(featurizer.to_dict()).fingerprint()
        == featurizer.fingerprint()
    )
    featurizer.save(tmp_path / "f")
    loaded = load_featurizer(tmp_path / "f")
    assert isinstance(loaded, PassThroughFeaturizer) and loaded.to_dict() == featurizer.to_dict()
    arrays, ledger = loaded.featurize(
        [{"state": "KS", "calls": None}, {"state": None, "calls": 2.0}], None
    )
    assert (
        list(arrays["state"]) == [b"KS", b""]
        and np.isnan(arrays["calls"][0])
        and arrays["calls"][1] == 2.0
    )
    assert ledger == {"rows_featurized": 2, "rows_reused": 0}


def test_adopt_refuses_a_saved_model_folder(tmp_path: Path) -> None:
    from evergreen.models.adopted import load_model

    (tmp_path / "sm").mkdir()
    with pytest.raises(ConfigError, match="model.save"):
        load_model(tmp_path / "sm")
