"""``evergreen export tflite`` on a small real text model (fine foods) and a tabular one (churn).

One project is trained once per module (1,200 reviews, three epochs of the word CNN); each
quantization is exported from its registry champion and checked against the SavedModel through
the LiteRT interpreter. The vocabulary asset is checked the way an edge app would use it: a
pure-Python tokenizer built from ``tokenizer.json`` and ``vocabulary.txt`` only.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.export.tflite import (
    ExportError,
    ExportRefused,
    TFLiteOptions,
    export_tflite,
    run_tflite,
)
from evergreen.loop import TrainingLoop
from evergreen.models.saved_model import feed_saved_model
from evergreen.project import Project
from evergreen.registry import Registry
from tests.conftest import dataset, read_csv, write_config, write_csv

TRAIN = """
[train]
epochs = 3
max_tokens = 3000
sequence_length = 48
"""
# Largest |score| difference to the SavedModel each quantization may show on these rows.
MAX_SCORE_DIFF = {"none": 1e-5, "float16": 1e-2, "int8": 0.1}


@pytest.fixture(scope="module")
def project(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("tflite") / "reviews"
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    write_csv(folder / "data" / "span-1" / "reviews.csv", header, rows[:1200])
    config = write_config(
        folder, label="score", features={"product": "categorical", "review": "text"}, extra=TRAIN
    )
    with Project(config_mod.load(config)) as p:
        [record] = TrainingLoop(p).run()
    assert record.version == 1
    return config


def _export(config: Path, **options: object):  # noqa: ANN202
    with Project(config_mod.load(config)) as p:
        return export_tflite(p, None, TFLiteOptions(**options))  # type: ignore[arg-type]


@pytest.mark.parametrize("quantize", ["none", "float16", "int8"])
def test_each_quantization_passes_parity_and_writes_its_report(
    project: Path, quantize: str
) -> None:
    result = _export(project, quantize=quantize)
    cfg = config_mod.load(project)
    assert result.folder == cfg.root / "exports" / cfg.name / "1" / f"tflite-{quantize}"
    report = json.loads((result.folder / "report.json").read_text())
    assert report == json.loads(json.dumps(result.report()))
    parity = report["parity"]
    assert parity["rows"] > 100 and parity["accuracy_drop"] <= 0.01
    assert parity["max_abs_score_diff"] < MAX_SCORE_DIFF[quantize]
    assert parity["saved_model_accuracy"] > 0.6
    for name in ("model.tflite", "vocabulary.txt", "tokenizer.json", "labels.txt"):
        assert report["files"][name] == (result.folder / name).stat().st_size > 0
    # The raw-string variant converts; this interpreter has no Flex delegate to run it.
    assert report["flex"]["written"] and (result.folder / "model_flex.tflite").is_file()
    assert not report["flex"]["checked"] and "Flex" in report["flex"]["why"]
    assert not [p for p in result.folder.parent.iterdir() if p.name.startswith(".")]


def test_quantized_files_are_smaller(project: Path) -> None:
    sizes = {}
    for quantize in ("none", "float16", "int8"):
        sizes[quantize] = _export(project, quantize=quantize, flex=False).files["model.tflite"]
    assert sizes["int8"] < sizes["float16"] < sizes["none"]
    assert sizes["float16"] < 0.6 * sizes["none"] and sizes["int8"] < 0.35 * sizes["none"]


def _tokenize(text: str, spec: dict, vocabulary: dict[str, int]) -> list[int]:
    """What an edge app does with tokenizer.json and vocabulary.txt (no TensorFlow)."""
    lowered = re.sub("[A-Z]+", lambda m: m.group(0).lower(), text)
    stripped = re.sub(spec["strip_regex"], "", lowered)
    tokens = [t for t in re.split("[ \t\n\v\f\r]+", stripped) if t][: spec["sequence_length"]]
    ids = [vocabulary.get(t, spec["oov_id"]) for t in tokens]
    return ids + [spec["pad_id"]] * (spec["sequence_length"] - len(ids))


def test_vocabulary_asset_reproduces_the_model_without_tensorflow(project: Path) -> None:
    folder = _export(project, quantize="none", flex=False).folder
    spec = json.loads((folder / "tokenizer.json").read_text())
    lines = (folder / "vocabulary.txt").read_text(encoding="utf-8").split("\n")[:-1]
    assert lines[spec["pad_id"]] == "" and lines[spec["oov_id"]] == "[UNK]"
    assert len(lines) == spec["vocabulary_size"]
    vocabulary = {token: i for i, token in enumerate(lines) if i >= 2}
    header, rows = read_csv(dataset("fine_foods_test.csv"))
    texts = [r[header.index("review")] for r in rows[:300]]
    ids = np.array([_tokenize(t, spec, vocabulary) for t in texts], dtype=np.int64)

    cfg = config_mod.load(project)
    saved_model = Registry(cfg.registry_dir).get(cfg.name, 1).path
    with Project(cfg) as p:
        featurizer_dir = p.store.artifact(
            int(Registry(cfg.registry_dir).get(cfg.name, 1).manifest["lineage"]["featurizer"])
        ).uri
    from evergreen.models.text import TextFeaturizer

    assert (ids == TextFeaturizer.load(featurizer_dir).transform(texts)).all()
    lite = run_tflite((folder / "model.tflite").read_bytes(), {"token_ids": ids})
    saved, labels = feed_saved_model(saved_model, texts)
    assert labels == (folder / "labels.txt").read_text().split()
    assert np.abs(lite - saved).max() < 1e-5


def test_an_export_over_the_limit_is_refused_and_writes_nothing(
    project: Path, tmp_path: Path
) -> None:
    out = tmp_path / "refused"
    # A limit no export can meet (the CLI accepts only limits >= 0): the refusal path for real.
    with pytest.raises(
        ExportRefused, match=r"drop of .* > --max-accuracy-drop -1.0.*Nothing was written"
    ):
        _export(project, quantize="int8", max_accuracy_drop=-1.0, out=out)
    assert not out.exists() and not list(tmp_path.iterdir())


def test_an_output_folder_with_other_files_is_refused(project: Path, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds other files"):
        _export(project, out=tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


def test_cli_prints_the_report_and_refuses_unknown_versions(project: Path, tmp_path: Path) -> None:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2")
    command = [sys.executable, "-m", "evergreen", "export", "tflite", "-c", str(project)]
    done = subprocess.run(
        [*command, "--quantize", "float16", "--out", str(tmp_path / "f16"), "--json", "--no-flex"],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["folder"] == str(tmp_path / "f16") and report["quantize"] == "float16"
    assert report["flex"] == {"written": False, "why": "--no-flex"}
    missing = subprocess.run([*command, "7"], env=env, capture_output=True, text=True, timeout=600)
    assert missing.returncode == 1 and "version 7" in missing.stderr
    assert "Traceback" not in missing.stderr


def _train(config: Path) -> None:
    with Project(config_mod.load(config)) as p:
        [record] = TrainingLoop(p).run()
    assert record.version == 1


@pytest.mark.slow
def test_tabular_family_is_refused_with_the_reason(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("mlc_churn.csv"))
    write_csv(tmp_path / "data" / "span-1" / "churn.csv", header, rows[:800])
    config = write_config(
        tmp_path, label="churn", extra='[train]\nfamily = "tabular"\nepochs = 1\n'
    )
    _train(config)
    out = tmp_path / "out"
    with pytest.raises(ExportError, match=r"tabular family's model of version 1 .*SparseCross"):
        _export(config, out=out)
    assert not out.exists()


@pytest.mark.slow
def test_image_family_converts_and_passes_parity(tmp_path: Path) -> None:
    from sklearn import datasets

    from tests.test_image import CONFIG, _png, _span

    digits = datasets.load_digits()
    _span(
        tmp_path,
        1,
        [_png(i) for i in digits.images[:500]],
        [str(t) for t in digits.target[:500]],
        0,
    )
    config = write_config(
        tmp_path, label="digit", extra=CONFIG.replace("epochs = 15", "epochs = 5")
    )
    _train(config)
    result = _export(config, quantize="float16", flex=False)
    assert result.family == "image" and result.parity.accuracy_drop <= 0.01
    assert result.parity.saved_model_accuracy > 0.5 and result.parity.max_abs_score_diff < 1e-2
    assert (result.folder / "labels.txt").read_text().split() == [str(d) for d in range(10)]
    assert not (result.folder / "vocabulary.txt").exists()
