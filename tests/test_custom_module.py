"""Custom model modules: the user's build_model inside the whole loop; errors name file and line."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.cli import main
from evergreen.components.evaluate import score_saved_model
from evergreen.errors import ConfigError
from evergreen.loop import TrainingLoop, champion_saved_model
from evergreen.models.custom import CustomFamily
from evergreen.project import Project
from evergreen.tf import tensorflow
from tests.conftest import dataset, write_config

tf = tensorflow()
import keras  # noqa: E402

MODULE = """\
import keras

HPARAMS = {"units": 8, "dropout": 0.1}
BASE_FAMILY = "tabular"


def build_model(schema, hparams):
    inputs = schema.inputs()
    parts = [inputs["numeric"], inputs["missing"]]
    for name in sorted(inputs):
        if name.startswith("cat_"):
            parts.append(keras.layers.Flatten()(keras.layers.Embedding(64, 4)(inputs[name])))
    x = keras.layers.Concatenate()(parts)
    x = keras.layers.Dense(hparams["units"], activation="relu", name="hidden")(x)
    x = keras.layers.Dropout(hparams["dropout"])(x)
    outputs = keras.layers.Dense(schema.num_classes, activation="softmax")(x)
    return keras.Model(inputs, outputs, name="my_churn_model")
"""


FEATURIZER_MODULE = '''\
import hashlib
import json
import math
from pathlib import Path

import keras
import numpy as np
import tensorflow as tf

COLUMNS = ["total_day_minutes", "number_customer_service_calls", "total_intl_calls"]


class LogScaler:
    """log1p of three columns, divided by their maximum on the fit rows."""

    family = "custom"

    def __init__(self, columns, scale=None):
        self.columns, self.scale_ = list(columns), scale

    def to_dict(self):
        return {"columns": self.columns}

    def fit(self, rows):
        top = [1.0] * len(self.columns)
        for row in rows:
            top = [max(t, math.log1p(row[c] or 0.0)) for t, c in zip(top, self.columns)]
        self.scale_ = top
        return self

    def fingerprint(self):
        return hashlib.sha256(json.dumps([self.columns, self.scale_]).encode()).hexdigest()

    def save(self, directory):
        Path(directory).mkdir(parents=True, exist_ok=True)
        (Path(directory) / "log.json").write_text(json.dumps({"columns": self.columns, "scale": self.scale_}))

    def feature_spec(self):
        return {"x": ([len(self.columns)], "float32")}

    def featurize(self, rows, cache):
        x = np.array([[math.log1p(r[c] or 0.0) / s for c, s in zip(self.columns, self.scale_)] for r in rows], "float32")
        return {"x": x}, {"rows_featurized": len(rows), "rows_reused": 0}

    def model_inputs(self, parsed):
        return parsed["x"]

    def keras_inputs(self):
        return keras.Input(shape=(len(self.columns),), name="x")

    def raw_signature(self):
        return {c: tf.float32 for c in self.columns}

    def raw_columns(self):
        return {c: c for c in self.columns}

    def feature_types(self):
        return {c: "numeric" for c in self.columns}

    def raw_to_model_inputs(self, raw):
        clean = [tf.where(tf.math.is_nan(raw[c]), 0.0, raw[c]) for c in self.columns]
        return tf.stack([tf.math.log1p(v) / s for v, s in zip(clean, self.scale_)], axis=1)

    def unknown_rate(self, rows):
        return 0.0


def make_featurizer(types, hparams):
    return LogScaler(COLUMNS)


def load_featurizer(directory):
    state = json.loads((Path(directory) / "log.json").read_text())
    return LogScaler(state["columns"], state["scale"])


def build_model(schema, hparams):
    inputs = schema.inputs()
    x = keras.layers.Dense(8, activation="relu")(inputs)
    return keras.Model(inputs, keras.layers.Dense(schema.num_classes, activation="softmax")(x), name="log_model")
'''


def _churn_project(folder: Path, module: str, spans: int = 2, rows: int = 300) -> Path:
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header, data = next(reader), list(reader)
    for n in range(spans):
        path = folder / "data" / f"span-{n + 1}" / "churn.csv"
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "w", newline="", encoding="utf-8") as f:
            csv.writer(f).writerows([header, *data[n * rows : (n + 1) * rows]])
    (folder / "my_model.py").write_text(module, encoding="utf-8")
    extra = '\n[train]\nfamily = "custom"\nmodule = "my_model.py"\nepochs = 3\nincremental_epochs = 2\n\n[train.hparams]\nunits = 12\n'
    return write_config(folder, label="churn", extra=extra)


def test_config_validates_the_custom_family(tmp_path: Path) -> None:
    raw = {
        "pipeline": {"name": "x"},
        "data": {"pattern": "d/{SPAN}/*.csv", "label": "y"},
        "train": {"family": "custom", "module": "m.py", "hparams": {"units": 3}},
    }
    cfg = config_mod.from_dict(raw)
    assert cfg.train.family == "custom" and cfg.train.hparams == {"units": 3}
    assert config_mod.from_dict(cfg.to_dict()).train == cfg.train  # round trip
    with pytest.raises(ConfigError, match="train.module"):
        config_mod.from_dict({**raw, "train": {"family": "custom"}})
    with pytest.raises(ConfigError, match="train.family = 'tabulr'"):
        config_mod.from_dict({**raw, "train": {"family": "tabulr"}})


@pytest.mark.slow
def test_custom_module_runs_the_loop(tmp_path: Path) -> None:
    config = _churn_project(tmp_path / "custom", MODULE)
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        assert [r.mode for r in records] == ["full", "incremental"]
        assert all(r.blessed for r in records)
        model = keras.models.load_model(
            Path(TrainingLoop(project).champion_model().uri) / "model.keras"
        )
        assert model.name == "my_churn_model"
        assert (
            model.get_layer("hidden").units == 12
        )  # [train.hparams] overrides the module's HPARAMS
        saved = champion_saved_model(project)
        with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))[4000:4200]
        numeric = [
            c
            for c in rows[0]
            if c not in ("state", "area_code", "international_plan", "voice_mail_plan", "churn")
        ]
        scores, labels = score_saved_model(
            saved, [{k: float(v) if k in numeric else v for k, v in r.items()} for r in rows]
        )
        assert labels == ["no", "yes"] and scores.shape == (200, 2)
        assert (
            np.mean(
                [labels[i] == r["churn"] for i, r in zip(scores.argmax(axis=1), rows, strict=True)]
            )
            >= 0.8
        )


@pytest.mark.slow
def test_a_module_can_bring_its_own_featurizer(tmp_path: Path) -> None:
    config = _churn_project(tmp_path / "own", FEATURIZER_MODULE, rows=200)
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        assert [r.mode for r in records] == ["full", "incremental"]
        [featurizer] = project.store.artifacts(type="Featurizer")
        assert (
            featurizer.properties["family"] == "custom" and records[1].ledger.rows_featurized == 200
        )
        serve = tf.saved_model.load(str(champion_saved_model(project))).signatures[
            "serving_default"
        ]
        assert set(serve.structured_input_signature[1]) == {
            "total_day_minutes",
            "number_customer_service_calls",
            "total_intl_calls",
        }
        out = serve(
            total_day_minutes=tf.constant([265.1]),
            number_customer_service_calls=tf.constant([float("nan")]),
            total_intl_calls=tf.constant([3.0]),
        )
        assert out["scores"].shape == (1, 2)


@pytest.mark.parametrize(
    ("source", "line", "what"),
    [
        ("import keras\n\ndef build_model(schema, hparams)\n    return None\n", 3, "syntax error"),
        (
            "import keras\nUNITS = 1 / 0\n\ndef build_model(schema, hparams):\n    pass\n",
            2,
            "ZeroDivisionError",
        ),
        (
            "import keras\n\ndef build_model(schema, hparams):\n    x = schema.inputs()\n    return keras.Model(x, undefined_name)\n",
            5,
            "NameError",
        ),
    ],
    ids=["syntax", "import-time", "inside-build_model"],
)
def test_a_broken_module_names_its_file_and_line(
    tmp_path: Path, source: str, line: int, what: str
) -> None:
    path = tmp_path / f"broken_{line}.py"
    path.write_text(source, encoding="utf-8")
    cfg = config_mod.from_dict(
        {
            "pipeline": {"name": "x"},
            "data": {"pattern": "d/{SPAN}/*.csv", "label": "y"},
            "train": {"family": "custom", "module": str(path)},
        }
    ).train
    family = CustomFamily(path, cfg)
    featurizer = family.new_featurizer({"a": "numeric"}, cfg) if what == "NameError" else None
    with pytest.raises(ConfigError, match=rf"{path}:{line}: .*{what}"):
        if featurizer is None:
            family.module()
        else:
            family.build_model(featurizer.fit([{"a": 1.0}, {"a": 2.0}]), 2, cfg)


def test_run_reports_a_broken_module_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _churn_project(
        tmp_path / "broken",
        "import keras\n\n\ndef build_model(schema, hparams):\n    return keras.Sequential([\n",
        spans=1,
        rows=50,
    )
    with pytest.raises(SystemExit) as exited:
        main(["run", "-c", str(config)])
    assert exited.value.code == 1
    err = " ".join(capsys.readouterr().err.split())  # rich wraps long lines
    assert f"config error: {tmp_path / 'broken' / 'my_model.py'}:5: syntax error" in err, err
    assert "Traceback" not in err
