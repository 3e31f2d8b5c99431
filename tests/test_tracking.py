"""Tracking on a real text stream: TensorBoard scalars with a continuous step, and MLflow.

Two spans of fine-foods reviews, a tiny word CNN, a lenient guard so each run publishes (the
guard is tested elsewhere). MLflow runs for real against a SQLite store in ``tmp_path``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.errors import ConfigError
from evergreen.loop import TrainingLoop
from evergreen.project import Project
from evergreen.registry import Registry
from evergreen.tracking.tensorboard import STEPS_FILE, log_dir
from tests.conftest import dataset, read_csv, write_config, write_csv

TRAIN = """
[train]
epochs = 2
max_tokens = 3000
sequence_length = 48
max_historic_regression = 1.0
max_new_regression = 1.0
max_loss_increase = 1.0

[drift]
full_retrain_on = "never"
"""


def _project(tmp_path: Path, extra: str = "") -> Path:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-1" / "reviews.csv", header, rows[:400])
    return write_config(
        tmp_path,
        label="score",
        features={"product": "categorical", "review": "text"},
        extra=TRAIN + extra,
    )


def _add_span_2(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(tmp_path / "data" / "span-2" / "reviews.csv", header, rows[400:700])


def _run(config: Path, *, full: bool = False) -> list[dict]:
    with Project(config_mod.load(config)) as project:
        return TrainingLoop(project).run(full=full)


def _scalars(folder: Path) -> dict[str, list[tuple[int, float]]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(folder))
    events.Reload()
    return {
        tag: [(e.step, e.value) for e in events.Scalars(tag)] for tag in events.Tags()["scalars"]
    }


def test_tensorboard_step_continues_across_versions(tmp_path: Path) -> None:
    config = _project(tmp_path)
    [first] = _run(config)
    _add_span_2(tmp_path)
    [second] = _run(config)
    cfg = config_mod.load(config)
    folder = log_dir(cfg.root, cfg.name)
    assert folder == cfg.root / "tensorboard" / cfg.name and (folder / STEPS_FILE).is_file()
    scalars = _scalars(folder)

    losses = scalars["train/loss"]
    epochs_1 = len(first.epoch_losses["loss"])
    epochs_2 = len(second.epoch_losses["loss"])
    assert epochs_1 == 2 and epochs_2 >= 1
    # One continuous step: the second version's epochs follow the first's.
    assert [s for s, _ in losses] == list(range(epochs_1 + epochs_2))
    assert [round(v, 5) for _, v in losses[:epochs_1]] == [
        round(v, 5) for v in first.epoch_losses["loss"]
    ]
    assert len(scalars["train/val_loss"]) == epochs_1 + epochs_2
    # Per-version scalars sit at each run's last step.
    accuracy = scalars["candidate/new/accuracy"]
    assert [s for s, _ in accuracy] == [epochs_1 - 1, epochs_1 + epochs_2 - 1]
    assert accuracy[0][1] == pytest.approx(first.metrics["candidate"]["new"]["accuracy"])
    assert [s for s, _ in scalars["champion/new/accuracy"]] == [epochs_1 + epochs_2 - 1]
    assert [v for _, v in scalars["cost/rows_new"]] == [first.rows_new, second.rows_new]
    assert scalars["cost/tokens_computed"][1][1] == second.ledger.tokens_computed > 0
    assert "seconds/train" in scalars and "seconds/evaluate" in scalars
    drift = [tag for tag in scalars if tag.startswith("drift/")]
    assert any("/review/" in tag for tag in drift), drift  # span 2 drift against span 1

    _run(config)  # nothing new: nothing logged twice
    assert _scalars(folder)["train/loss"] == losses


@pytest.mark.slow
def test_mlflow_runs_model_versions_and_aliases(tmp_path: Path) -> None:
    import mlflow
    import pandas as pd
    from mlflow import MlflowClient

    from evergreen.models.saved_model import feed_saved_model

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    config = _project(
        tmp_path, f'\n[mlflow]\ntracking_uri = "{uri}"\nregistered_model = "reviews-m"\n'
    )
    [first] = _run(config)
    _add_span_2(tmp_path)
    [second] = _run(config, full=True)
    assert (first.version, second.version) == (1, 2)

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    experiment = client.get_experiment_by_name(config_mod.load(config).name)
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 2
    latest = max(runs, key=lambda r: r.info.start_time)
    assert latest.data.params["mode"] == "full" and latest.data.params["family"] == "text"
    assert latest.data.metrics["candidate/new/accuracy"] == pytest.approx(
        second.metrics["candidate"]["new"]["accuracy"]
    )
    assert latest.data.metrics["cost/tokens_computed"] == second.ledger.tokens_computed
    artifacts = [a.path for a in client.list_artifacts(latest.info.run_id)]
    assert "run_record.json" in artifacts

    versions = client.search_model_versions("name='reviews-m'")
    assert sorted(v.tags["evergreen_version"] for v in versions) == ["1", "2"]
    champion = client.get_model_version_by_alias("reviews-m", "champion")
    assert champion.tags["evergreen_version"] == "2"

    rolled = subprocess.run(
        [sys.executable, "-m", "evergreen", "rollback", "1", "-c", str(config)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert rolled.returncode == 0, rolled.stderr
    champion = client.get_model_version_by_alias("reviews-m", "champion")
    assert champion.tags["evergreen_version"] == "1"

    mlflow.set_tracking_uri(uri)
    mlflow.set_registry_uri(uri)
    model = mlflow.pyfunc.load_model("models:/reviews-m@champion")
    texts = [r[1] for r in read_csv(dataset("fine_foods_test.csv"))[1][:40]]
    predicted = model.predict(pd.DataFrame({"text": texts}))
    cfg = config_mod.load(config)
    ours, labels = feed_saved_model(Registry(cfg.registry_dir).get(cfg.name, 1).path, texts)
    assert list(predicted.columns) == labels
    assert abs(predicted.to_numpy() - ours).max() < 1e-6


@pytest.mark.slow
def test_mlflow_failure_never_breaks_the_run_and_is_made_up_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A tracking server nobody listens on: every MLflow call fails; the run publishes anyway.
    config = _project(tmp_path, '\n[mlflow]\ntracking_uri = "http://127.0.0.1:9"\n')
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "2")
    [record] = _run(config)
    assert record.version == 1 and record.blessed

    # The server is back (a SQLite store here): the next published version brings version 1 too.
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    text = config.read_text().replace("http://127.0.0.1:9", uri)
    config.write_text(text)
    _add_span_2(tmp_path)
    [second] = _run(config, full=True)
    assert second.version == 2

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    name = config_mod.load(config).name
    versions = client.search_model_versions(f"name='{name}'")
    assert sorted(v.tags["evergreen_version"] for v in versions) == ["1", "2"]
    assert client.get_model_version_by_alias(name, "champion").tags["evergreen_version"] == "2"


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ('[mlflow]\ntracking_uri = "mlflow.db"\n', "mlflow.tracking_uri"),
        ("[mlflow]\ntracking_uri = 3\n", "mlflow.tracking_uri"),
        ('[mlflow]\nexperiment = "x"\n', "no tracking_uri"),
        (
            '[mlflow]\ntracking_uri = "sqlite:///m.db"\nregistered_model = "a/b"\n',
            "registered_model",
        ),
        ('[mlflow]\ntracking_url = "sqlite:///m.db"\n', "did you mean 'tracking_uri'"),
        ("[tensorboard]\nenabled = 1\n", "tensorboard.enabled"),
    ],
)
def test_tracking_config_is_validated_at_load(tmp_path: Path, section: str, message: str) -> None:
    config = write_config(tmp_path, label="score", extra=section)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("(", r"\(")):
        config_mod.load(config)


def test_tracking_config_defaults(tmp_path: Path) -> None:
    cfg = config_mod.load(write_config(tmp_path, label="score"))
    assert cfg.tracking.tensorboard and not cfg.tracking.mlflow_tracking_uri
    cfg = config_mod.load(
        write_config(tmp_path, label="score", extra='[mlflow]\ntracking_uri = "sqlite:///m.db"\n')
    )
    assert cfg.tracking.mlflow_tracking_uri == "sqlite:///m.db"
    assert config_mod.from_dict(cfg.to_dict(), base_dir=tmp_path).tracking == cfg.tracking
