"""The champion is the baseline: an incremental epoch counts only if it beats the champion."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.components.evaluate import pooled_eval_spans
from evergreen.loop import TrainingLoop
from evergreen.models.adopted import load_model
from evergreen.project import Project
from evergreen.registry import Registry
from evergreen.tf import tensorflow
from tests.conftest import dataset, write_config

tf = tensorflow()
import keras  # noqa: E402  (after TensorFlow's logging is set up)

from evergreen.components.early_stopping import ChampionEarlyStopping  # noqa: E402


def _blobs(seed: int, rows: int = 400) -> tuple[np.ndarray, np.ndarray]:
    """Two well-separated Gaussian classes in 4 dimensions."""
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, rows)
    x = rng.normal(size=(rows, 4)).astype("float32") + 2.5 * y[:, None]
    return x, y


def _trained_model() -> keras.Model:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(optimizer=keras.optimizers.Adam(0.05), loss="sparse_categorical_crossentropy")
    x, y = _blobs(0)
    model.fit(x, y, epochs=30, verbose=0)
    return model


def _fit_with(model: keras.Model, callback: keras.callbacks.Callback, lr: float) -> dict:
    model.compile(optimizer=keras.optimizers.SGD(lr), loss="sparse_categorical_crossentropy")
    x, y = _blobs(1)
    xv, yv = _blobs(2)
    return model.fit(
        x, y, validation_data=(xv, yv), epochs=4, callbacks=[callback], verbose=0
    ).history


def _diverging_fit(model: keras.Model, callback: keras.callbacks.Callback) -> dict:
    # Labels flipped and a huge step: every epoch is far worse than the model it starts from.
    model.compile(optimizer=keras.optimizers.SGD(50.0), loss="sparse_categorical_crossentropy")
    x, y = _blobs(1)
    xv, yv = _blobs(2)
    return model.fit(
        x, 1 - y, validation_data=(xv, yv), epochs=3, callbacks=[callback], verbose=0
    ).history


def test_keras_baseline_alone_restores_an_epoch_worse_than_the_baseline() -> None:
    """Why the custom callback exists: Keras 3 restores its first epoch even below baseline."""
    model = _trained_model()
    xv, yv = _blobs(2)
    champion_loss = model.evaluate(xv, yv, verbose=0)
    champion = [w.copy() for w in model.get_weights()]
    plain = keras.callbacks.EarlyStopping(
        monitor="val_loss", patience=1, baseline=champion_loss, restore_best_weights=True
    )
    history = _diverging_fit(model, plain)
    assert min(history["val_loss"]) > champion_loss
    assert not all(np.allclose(a, b) for a, b in zip(model.get_weights(), champion, strict=True))


def test_no_epoch_beats_the_champion_so_its_weights_are_kept() -> None:
    model = _trained_model()
    xv, yv = _blobs(2)
    champion_loss = model.evaluate(xv, yv, verbose=0)
    champion = [w.copy() for w in model.get_weights()]
    stopping = ChampionEarlyStopping(champion_loss, model.get_weights(), patience=1)
    history = _diverging_fit(model, stopping)
    assert min(history["val_loss"]) > champion_loss  # every epoch was worse
    assert len(history["val_loss"]) == 2  # patience 1: stopped after the second epoch
    assert not stopping.improved
    assert all(np.allclose(a, b) for a, b in zip(model.get_weights(), champion, strict=True))


def test_an_epoch_that_beats_the_champion_is_kept() -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")
    xv, yv = _blobs(2)
    untrained_loss = model.evaluate(xv, yv, verbose=0)
    stopping = ChampionEarlyStopping(untrained_loss, model.get_weights(), patience=2)
    history = _fit_with(model, stopping, lr=0.5)
    assert stopping.improved and stopping.best < untrained_loss
    assert model.evaluate(xv, yv, verbose=0) == pytest.approx(min(history["val_loss"]), rel=1e-4)


def test_a_resumed_run_starts_from_the_best_so_far_not_from_the_champion(tmp_path: Path) -> None:
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((4,)), keras.layers.Dense(2, activation="softmax")])
    model.compile(loss="sparse_categorical_crossentropy")
    xv, yv = _blobs(2)
    champion_loss = model.evaluate(xv, yv, verbose=0)
    champion = model.get_weights()
    first = ChampionEarlyStopping(champion_loss, champion, patience=2, state_dir=tmp_path)
    _fit_with(model, first, lr=0.5)  # improves: the best is kept under tmp_path
    assert first.improved
    # A killed run resumed by BackupAndRestore builds a new callback from the same champion.
    resumed = ChampionEarlyStopping(champion_loss, champion, patience=2, state_dir=tmp_path)
    resumed.set_model(model)
    resumed.on_train_begin()
    assert resumed.improved and resumed.best == pytest.approx(first.best)
    assert resumed.best_epoch == first.best_epoch
    assert all(
        np.allclose(a, b) for a, b in zip(resumed.best_weights, first.best_weights, strict=True)
    )
    fresh = ChampionEarlyStopping(champion_loss, champion, patience=2, state_dir=tmp_path / "new")
    fresh.on_train_begin()
    assert not fresh.improved and fresh.best == champion_loss


def test_min_delta_makes_a_tiny_gain_not_count() -> None:
    model = _trained_model()
    xv, yv = _blobs(2)
    champion_loss = model.evaluate(xv, yv, verbose=0)
    champion = [w.copy() for w in model.get_weights()]
    # A tiny learning rate changes the loss by far less than min_delta = 0.5.
    stopping = ChampionEarlyStopping(champion_loss, model.get_weights(), patience=1, min_delta=0.5)
    _fit_with(model, stopping, lr=1e-4)
    assert not stopping.improved
    assert all(np.allclose(a, b) for a, b in zip(model.get_weights(), champion, strict=True))


@pytest.mark.parametrize(
    ("eval_rows", "min_rows", "expected"),
    [
        ({1: 400, 2: 90, 3: 85}, 200, [3, 2, 1]),
        ({1: 400, 2: 150, 3: 85}, 200, [3, 2]),
        ({1: 400, 2: 90, 3: 250}, 200, [3]),
        ({1: 400, 2: 90, 3: 85}, 0, [3]),
        ({1: 50, 2: 60, 3: 70, 4: 10}, 200, [3, 2, 1]),  # a later span is never pooled
    ],
    ids=["pool-two", "pool-one", "enough", "never", "ignores-later"],
)
def test_small_eval_splits_are_pooled_with_the_latest_spans(
    eval_rows: dict[int, int], min_rows: int, expected: list[int]
) -> None:
    assert pooled_eval_spans(3, eval_rows, min_rows) == expected


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
def test_an_increment_that_never_beats_the_champion_is_not_published(tmp_path: Path) -> None:
    project_dir = tmp_path / "churn"
    _churn_spans(project_dir, [1200, 600])
    # A learning rate that wrecks every epoch: no increment can beat the champion.
    config = write_config(
        project_dir,
        label="churn",
        extra='[train]\nfamily = "tabular"\nincremental_learning_rate = 1.0\n'
        'incremental_schedule = "constant"\n',
    )
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        assert [r.mode for r in records] == ["full", "incremental"]
        second = records[1]
        assert not second.blessed and second.version is None
        assert second.verdict[0].startswith("no improvement over the champion")
        [first_model, candidate] = project.store.artifacts(type="Model")
        assert candidate.properties["improved"] is False
        assert candidate.properties["best_val_loss"] > candidate.properties["champion_val_loss"]
        champion_weights = load_model(Path(first_model.uri) / "model.keras").get_weights()
        candidate_weights = load_model(Path(candidate.uri) / "model.keras").get_weights()
        assert all(
            np.allclose(a, b) for a, b in zip(candidate_weights, champion_weights, strict=True)
        )
        registry = Registry(project.config.registry_dir)
        assert [v.version for v in registry.versions(project.config.name)] == [1]
        # The span is done (its verdict is recorded): a second run has nothing to do.
        assert TrainingLoop(project).run() == []


@pytest.mark.parametrize(
    ("extra", "family_name", "expected"),
    [
        ("", "text", 2),
        ("", "tabular", 3),
        ("", "image", 4),
        ("", "custom", 2),
        ("patience = 7\n", "tabular", 7),
    ],
    ids=["text", "tabular", "image", "custom", "configured"],
)
def test_patience_defaults_per_family_and_is_configurable(
    tmp_path: Path, extra: str, family_name: str, expected: int
) -> None:
    from evergreen.components.train import early_stopping_patience

    config = write_config(tmp_path, label="score", extra="[train]\n" + extra)
    assert early_stopping_patience(config_mod.load(config).train, family_name) == expected


def test_quality_settings_have_documented_defaults(tmp_path: Path) -> None:
    cfg = config_mod.load(write_config(tmp_path, label="score")).train
    assert (cfg.patience, cfg.min_delta, cfg.primary_metric) == (0, 0.0, "auto")
    assert (cfg.max_noise_allowance, cfg.max_loss_increase, cfg.min_eval_rows) == (0.02, 0.05, 200)
    assert (cfg.class_weights, cfg.replay_class_balanced, cfg.replay_rows) == ("auto", False, 0)


@pytest.mark.parametrize(
    ("line", "key"),
    [
        ("min_delta = -0.1", "train.min_delta"),
        ('min_delta = "a"', "train.min_delta"),
        ("patience = -1", "train.patience"),
        ('primary_metric = "f2"', "train.primary_metric"),
        ('class_weights = "yes"', "train.class_weights"),
        ("max_noise_allowance = 3", "train.max_noise_allowance"),
        ('replay_class_balanced = "true"', "train.replay_class_balanced"),
        ("min_eval_rows = -5", "train.min_eval_rows"),
    ],
    ids=["negative-delta", "text-delta", "patience", "metric", "weights", "noise", "bool", "rows"],
)
def test_bad_quality_settings_are_refused_naming_the_key(
    tmp_path: Path, line: str, key: str
) -> None:
    from evergreen.errors import ConfigError

    config = write_config(tmp_path, label="score", extra=f"[train]\n{line}\n")
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        config_mod.load(config)
