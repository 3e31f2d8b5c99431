"""The tabular family on churn: frozen statistics and vocabularies, wide & deep, raw-column export."""

from __future__ import annotations

import csv
import json
import math
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from evergreen import config as config_mod
from evergreen.cli import cli, main
from evergreen.components.evaluate import score_saved_model
from evergreen.loop import champion_saved_model
from evergreen.models.contract import compile_model
from evergreen.models.registry import load_featurizer
from evergreen.models.serving_export import export_serving_model
from evergreen.models.tabular import TabularFeaturizer, build_model
from evergreen.project import Project
from evergreen.tf import tensorflow
from tests.conftest import dataset

tf = tensorflow()

CATEGORICAL = ["state", "area_code", "international_plan", "voice_mail_plan"]
LABEL = "churn"


def _churn() -> tuple[list[str], list[dict[str, str]]]:
    with open(dataset("mlc_churn.csv"), newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        return list(reader.fieldnames or []), list(reader)


def _typed(rows: list[dict[str, str]]) -> list[dict[str, object]]:
    return [
        {k: (v if k in CATEGORICAL or k == LABEL else float(v)) for k, v in r.items()} for r in rows
    ]


def _numeric(header: list[str]) -> list[str]:
    return [c for c in header if c not in CATEGORICAL and c != LABEL]


@pytest.fixture(scope="module")
def fitted() -> tuple[TabularFeaturizer, list[dict[str, object]]]:
    header, rows = _churn()
    typed = _typed(rows[:1000])
    return TabularFeaturizer(_numeric(header), CATEGORICAL, max_categories=20).fit(typed), typed


def test_featurizer_round_trips_and_is_frozen(fitted, tmp_path: Path) -> None:
    featurizer, rows = fitted
    assert TabularFeaturizer.from_dict(featurizer.to_dict()).to_dict() == featurizer.to_dict()
    featurizer.save(tmp_path / "f")
    loaded = load_featurizer(tmp_path / "f")  # the folder names its family
    assert (
        isinstance(loaded, TabularFeaturizer) and loaded.fingerprint() == featurizer.fingerprint()
    )
    for name, array in featurizer.transform(rows[:50]).items():
        assert np.array_equal(array, loaded.transform(rows[:50])[name]), name
    # max_categories caps the state vocabulary (51 states in churn) at the 20 most frequent.
    assert len(loaded.vocabularies_[0]) == 20
    # Editing the saved statistics is detected.
    state = json.loads((tmp_path / "f" / "tabular.json").read_text())
    state["mean"][0] += 1
    (tmp_path / "f" / "tabular.json").write_text(json.dumps(state))
    with pytest.raises(Exception, match="fingerprint"):
        TabularFeaturizer.load(tmp_path / "f")


def test_unseen_and_missing_values_go_to_oov_and_zero(fitted) -> None:
    featurizer, rows = fitted
    numeric = featurizer.numeric
    common = dict(rows[0], state=featurizer.vocabularies_[0][0])
    odd = dict(rows[0], state="ZZ", international_plan=None, **{numeric[0]: None})
    out = featurizer.transform([common, odd])
    assert out["cat_0"][1, 0] == 0 and out["cat_0"][0, 0] > 0  # unseen state: OOV id 0
    assert out["cat_2"][1, 0] == 0  # missing category: OOV
    assert (
        out["numeric"][1, 0] == 0.0 and out["missing"][1, 0] == 1.0 and out["missing"][0, 0] == 0.0
    )
    z = (rows[0][numeric[1]] - featurizer.mean_[1]) / featurizer.std_[1]
    assert math.isclose(out["numeric"][0, 1], z, rel_tol=1e-5)
    known = [r for r in rows if r["state"] in featurizer.vocabularies_[0]][:200]
    assert featurizer.unknown_rate(known) == 0.0
    assert featurizer.unknown_rate([dict(r, state="ZZ") for r in known]) == pytest.approx(0.25)
    # The states cut by max_categories=20 count as unknown too.
    assert 0.0 < featurizer.unknown_rate(rows[:200]) < 0.25


def test_export_takes_one_raw_tensor_per_column(fitted, tmp_path: Path) -> None:
    featurizer, rows = fitted
    labels = ["no", "yes"]
    model = compile_model(build_model(featurizer, 2, hidden_units=16))
    arrays = featurizer.transform(rows)
    model.fit(
        arrays,
        np.array([labels.index(r[LABEL]) for r in rows]),
        epochs=1,
        batch_size=128,
        verbose=0,
    )
    export = export_serving_model(featurizer, model, labels, tmp_path / "sm")
    loaded = tf.saved_model.load(str(export))
    serve = loaded.signatures["serving_default"]
    specs = serve.structured_input_signature[1]
    assert set(specs) == set(featurizer.numeric) | set(CATEGORICAL)
    assert all(
        specs[c].dtype == tf.float32 and specs[c].shape.as_list() == [None]
        for c in featurizer.numeric
    )
    assert all(
        specs[c].dtype == tf.string and specs[c].shape.as_list() == [None] for c in CATEGORICAL
    )
    # A TF-Serving-style JSON row, mapped column by column onto the signature (null → NaN / "").
    row = json.loads(json.dumps(rows[3]))
    row[featurizer.numeric[0]] = None
    feed = {
        c: tf.constant([np.nan if row[c] is None else row[c]], tf.float32)
        for c in featurizer.numeric
    }
    feed.update({c: tf.constant([row[c] or ""]) for c in CATEGORICAL})
    served = serve(**feed)["scores"].numpy()
    expected = model.predict(featurizer.transform([row]), verbose=0)
    assert np.allclose(served, expected, atol=1e-5)
    classified = loaded.signatures["classify"](**feed)
    assert classified["label"].numpy()[0].decode() == labels[int(expected.argmax())]
    # TF Serving's Classify/Regress signatures: the same row as a serialized tf.Example (the
    # missing number simply absent), with TF Serving's method names in saved_model.pb.
    from evergreen.models.tfserving_signatures import signature_defs
    from evergreen.serving.classify import examples_to_serialized

    example = examples_to_serialized(
        [{c: v for c, v in row.items() if c in specs and v is not None}]
    )
    by_example = loaded.signatures["classification"](inputs=tf.constant(list(example)))
    assert np.allclose(by_example["scores"].numpy(), expected, atol=1e-5)
    assert [c.decode() for c in by_example["classes"].numpy()[0]] == labels
    regressed = loaded.signatures["regression"](inputs=tf.constant(list(example)))
    assert np.allclose(regressed["outputs"].numpy(), expected[:, 1], atol=1e-5)
    methods = {k: v.method_name for k, v in signature_defs(export).signature_def.items()}
    assert methods["classification"] == "tensorflow/serving/classify"
    assert methods["regression"] == "tensorflow/serving/regress"
    assert methods["serving_default"] == "tensorflow/serving/predict"
    # The generic feeder used by evaluation gives the same scores for whole rows.
    scores, names = score_saved_model(export, rows[:64])
    assert names == labels and np.allclose(
        scores, model.predict(featurizer.transform(rows[:64]), verbose=0), atol=1e-5
    )


def _write_span(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def _project(
    folder: Path,
    header: list[str],
    spans: list[list[dict[str, str]]],
    monkeypatch: pytest.MonkeyPatch,
) -> Path:
    monkeypatch.chdir(folder.parent)
    result = CliRunner().invoke(cli, ["init", folder.name, "--template", "tabular"])
    assert result.exit_code == 0, result.output
    for number, rows in enumerate(spans, start=1):
        _write_span(folder / "data" / f"span-{number}" / "churn.csv", header, rows)
    return folder / "evergreen.toml"


def _accuracy(saved_model: Path, rows: list[dict[str, str]]) -> float:
    scores, labels = score_saved_model(saved_model, _typed(rows))
    return float(
        np.mean([labels[i] == r[LABEL] for i, r in zip(scores.argmax(axis=1), rows, strict=True)])
    )


@pytest.mark.slow
def test_churn_in_five_spans_matches_a_full_retrain(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    header, rows = _churn()
    held_out = rows[::5]  # 1,000 rows no model sees
    pool = [r for i, r in enumerate(rows) if i % 5]
    spans = [pool[i * 800 : (i + 1) * 800] for i in range(5)]
    config = _project(tmp_path / "churn", header, spans, monkeypatch)
    # The increments themselves are under test: the quality debt's challenger (a full retrain
    # after the increments of spans 2 and 4, tests/test_quality_debt.py) is off.
    text = config.read_text(encoding="utf-8")
    config.write_text(text.replace("[train]\n", "[train]\nfull_after_growth = 0\n", 1), "utf-8")
    result = CliRunner().invoke(cli, ["run", "-c", str(config), "--json"])
    assert result.exit_code == 0, result.output
    records = json.loads(result.stdout)
    print(
        json.dumps(
            [
                [
                    r["mode"],
                    r["seconds"],
                    r["metrics"]["candidate"].get("historic", {}).get("accuracy"),
                    r["blessed"],
                ]
                for r in records
            ]
        )
    )
    assert [r["mode"] for r in records] == ["full"] + ["incremental"] * 4, [
        r["reason"] for r in records
    ]
    with Project(config_mod.load(config)) as project:
        store = project.store
        [fit] = store.runs(component="fit-featurizer")  # fit once, frozen for every increment
        featurizers = store.artifacts(type="Featurizer")
        assert {a.properties["family"] for a in featurizers} == {"tabular"}
        # Every other featurizer grew append-only from the fitted one (new categories only).
        assert [a.id for a in featurizers if "grown_from" not in a.properties] == [
            fit_output.id for fit_output in store.run_outputs(fit.id).values()
        ]
        for record in records[1:]:
            examples = next(a for a in store.artifacts(type="Examples") if a.span == record["span"])
            # Only the new span is featurized; the history's featurized shards are reused.
            assert record["rows_featurized"] == examples.properties["rows"]
            # Reused: the replay rows read back from earlier spans' featurized shards.
            assert (
                0
                < record["rows_reused"]
                <= sum(r["rows_new"] for r in records if r["span"] < record["span"])
            )
            assert record["tokens_computed"] == 0
        assert sum(1 for r in store.runs(component="featurize") if r.status == "succeeded") == 5
        incremental = _accuracy(champion_saved_model(project), held_out)
    # `evergreen predict` takes a JSON object of raw columns for a tabular champion.
    row = dict(_typed(held_out[:1])[0])
    del row[LABEL], row["state"]  # a missing column is a missing value (OOV)
    capsys.readouterr()
    main(["predict", "-c", str(config), json.dumps(row), "--json"])
    [prediction] = json.loads(capsys.readouterr().out)["predictions"]
    assert prediction["label"] in ("no", "yes") and set(prediction["scores"]) == {"no", "yes"}
    # The full retrain: one run on the same 4,000 rows delivered as one span.
    full_config = _project(tmp_path / "full", header, [pool], monkeypatch)
    result = CliRunner().invoke(cli, ["run", "-c", str(full_config), "--full", "--json"])
    assert result.exit_code == 0, result.output
    assert [r["mode"] for r in json.loads(result.stdout)] == ["full"]
    with Project(config_mod.load(full_config)) as project:
        full = _accuracy(champion_saved_model(project), held_out)
    print(
        f"churn held-out accuracy: incremental champion {incremental:.4f}, full retrain {full:.4f}"
    )
    assert incremental >= 0.88  # the majority class alone scores about 0.86
    assert abs(full - incremental) <= 0.01
