"""The image family on scikit-learn's digits: PNG bytes in the examples, decoded in-graph."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.cli import main
from evergreen.components.ingest import quarantine_rows
from evergreen.loop import TrainingLoop, champion_saved_model
from evergreen.models.image import ImageFeaturizer
from evergreen.models.registry import load_featurizer
from evergreen.project import Project
from evergreen.tf import tensorflow
from tests.conftest import write_config

tf = tensorflow()
PIL = pytest.importorskip("PIL.Image")
datasets = pytest.importorskip("sklearn.datasets")


def _png(pixels: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    PIL.fromarray(np.clip(pixels * 16, 0, 255).astype("uint8"), mode="L").save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def digits() -> tuple[list[bytes], list[str]]:
    data = datasets.load_digits()  # bundled with scikit-learn: 1,797 8×8 images, no download
    return [_png(image) for image in data.images], [str(t) for t in data.target]


def _span(folder: Path, number: int, images: list[bytes], labels: list[str], start: int) -> None:
    span = folder / "data" / f"span-{number}"
    (span / "img").mkdir(parents=True, exist_ok=True)
    with open(span / "digits.csv", "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(["image", "digit"])
        for i, (image, label) in enumerate(zip(images, labels, strict=True)):
            (span / "img" / f"{start + i:05d}.png").write_bytes(image)
            writer.writerow([f"img/{start + i:05d}.png", label])


CONFIG = '\n[train]\nfamily = "image"\nimage_size = 16\nimage_channels = 1\nepochs = 15\nlearning_rate = 0.003\nbatch_size = 32\nincremental_epochs = 5\nincremental_learning_rate = 0.001\n'
# Five equal spans double the data at span 2 and 4: the quality debt's challengers (a full
# retrain after the increment, tests/test_quality_debt.py) are off, so each span is one increment.
CONFIG += "full_after_growth = 0\n"


def test_ingest_stores_image_bytes_and_quarantines_bad_files(digits, tmp_path: Path) -> None:
    images, labels = digits
    folder = tmp_path / "digits"
    _span(folder, 1, images[:40], labels[:40], 0)
    with open(folder / "data" / "span-1" / "digits.csv", "a", encoding="utf-8") as f:
        f.write("img/missing.png,3\nimg/not-an-image.png,4\n")
    (folder / "data" / "span-1" / "img" / "not-an-image.png").write_text("hello")
    config = write_config(folder, label="digit", extra=CONFIG)
    with Project(config_mod.load(config)) as project:
        [outcome] = project.ingest()
        assert project.current_schema().types == {"image": "image"}  # inferred from the .png names
        assert sum(outcome.report["rows_written"].values()) == 40, outcome.report
        reasons = sorted(
            r["reason"].split(":")[0]
            for r in quarantine_rows(project.store.artifact(project.store.spans()[0].examples_id))
        )
        assert reasons == ["unreadable image", "wrong type"]
        from evergreen.components.featurize import span_rows

        rows = list(
            span_rows(project.store.artifact(project.store.spans()[0].examples_id), "train")
        )
        assert all(isinstance(r["image"], bytes) and r["image"] in images[:40] for r in rows)


def test_featurizer_round_trips_and_decodes_like_serving(digits, tmp_path: Path) -> None:
    images, _ = digits
    featurizer = ImageFeaturizer("image", size=16, channels=1).fit(
        {"image": b} for b in images[:10]
    )
    assert ImageFeaturizer.from_dict(featurizer.to_dict()).to_dict() == featurizer.to_dict()
    featurizer.save(tmp_path / "f")
    loaded = load_featurizer(tmp_path / "f")
    assert isinstance(loaded, ImageFeaturizer) and loaded.fingerprint() == featurizer.fingerprint()
    arrays, ledger = loaded.featurize([{"image": b} for b in images[:10]], None)
    assert ledger["rows_featurized"] == 10 and list(arrays["image"]) == images[:10]  # kept encoded
    trained = loaded.model_inputs({"image": tf.constant(images[:10])}).numpy()
    served = loaded.raw_to_model_inputs({"image_bytes": tf.constant(images[:10])}).numpy()
    assert trained.shape == (10, 16, 16, 1) and np.array_equal(trained, served)
    assert 0 < trained.max() <= 255


@pytest.mark.slow
def test_digits_in_five_spans_end_to_end(
    digits, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    images, labels = digits
    held_out = list(range(0, len(images), 5))
    pool = [i for i in range(len(images)) if i % 5]
    folder = tmp_path / "digits"
    size = len(pool) // 5
    for n in range(5):
        part = pool[n * size : (n + 1) * size]
        _span(folder, n + 1, [images[i] for i in part], [labels[i] for i in part], n * size)
    config = write_config(folder, label="digit", extra=CONFIG)
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        print(
            json.dumps(
                [
                    [
                        r.mode,
                        r.seconds.get("train"),
                        r.metrics["candidate"]["new"]["accuracy"],
                        r.blessed,
                    ]
                    for r in records
                ]
            )
        )
        assert [r.mode for r in records] == ["full"] + ["incremental"] * 4, [
            r.reason for r in records
        ]
        for record in records[1:]:
            examples = next(
                a for a in project.store.artifacts(type="Examples") if a.span == record.span
            )
            assert (
                record.ledger.rows_featurized == examples.properties["rows"]
            )  # only the new span's images
        assert sorted(
            r.span for r in project.store.runs(component="featurize") if r.status == "succeeded"
        ) == [1, 2, 3, 4, 5]
        loaded = tf.saved_model.load(str(champion_saved_model(project)))
        serve = loaded.signatures["serving_default"]
        [(name, spec)] = serve.structured_input_signature[1].items()
        assert name == "image_bytes" and spec.dtype == tf.string and spec.shape.as_list() == [None]
        out = serve(image_bytes=tf.constant([images[i] for i in held_out]))
        classes = [c.decode() for c in out["classes"].numpy()[0]]
        predicted = [classes[k] for k in out["scores"].numpy().argmax(axis=1)]
        accuracy = float(
            np.mean([p == labels[i] for p, i in zip(predicted, held_out, strict=True)])
        )
        label = (
            loaded.signatures["classify"](image_bytes=tf.constant([images[held_out[0]]]))["label"]
            .numpy()[0]
            .decode()
        )
        assert label == predicted[0]
        # `evergreen predict` takes image files for an image champion.
        png = folder / "data" / "span-1" / "img" / "00000.png"
        capsys.readouterr()
        main(["predict", "-c", str(config), str(png), "--json"])
        [prediction] = json.loads(capsys.readouterr().out)["predictions"]
        assert prediction["label"] in classes
    print(f"digits held-out accuracy: {accuracy:.4f}")
    assert accuracy >= 0.85


def test_init_image_template_loads(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from evergreen.cli import cli

    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli, ["init", "pics", "--template", "image"])
    assert result.exit_code == 0, result.output
    cfg = config_mod.load(tmp_path / "pics" / "evergreen.toml")
    assert (
        cfg.train.family == "image"
        and cfg.data.features == {"image": "image"}
        and cfg.train.image_channels == 3
    )


def test_folders_per_label_are_a_span_format(digits, tmp_path: Path) -> None:
    images, labels = digits
    folder = tmp_path / "folders"
    for i in range(30):
        path = folder / "data" / "span-1" / f"digit-{labels[i]}" / f"{i:04d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(images[i])
    config = folder / "evergreen.toml"
    config.write_text(
        '[pipeline]\nname = "folders"\n\n[data]\npattern = "data/span-{SPAN}/*/*.png"\nlabel = "label"\n'
        + CONFIG,
        encoding="utf-8",
    )
    cfg = config_mod.load(config)
    assert cfg.data.format == "images"  # from the pattern's extension
    with Project(cfg) as project:
        [outcome] = project.ingest()
        assert outcome.status == "validated" and sum(outcome.report["rows_written"].values()) == 30
        schema = project.current_schema()
        assert schema.types == {"image": "image"} and set(schema.label_domain) == {
            f"digit-{d}" for d in labels[:30]
        }
        from evergreen.components.featurize import span_rows

        examples = project.store.artifact(project.store.spans()[0].examples_id)
        rows = [r for split in ("train", "eval") for r in span_rows(examples, split)]
        assert sorted((r["label"], r["image"]) for r in rows) == sorted(
            (f"digit-{labels[i]}", images[i]) for i in range(30)
        )
