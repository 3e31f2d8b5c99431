"""The registry: TF Serving layout, atomic publish, idempotency, aliases, rollback, locking."""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing
import os
from pathlib import Path

import pytest

from evergreen.artifacts import directory_fingerprint
from evergreen.errors import EvergreenError, NotFound
from evergreen.registry import ModelVersion, Registry
from evergreen.tf import tensorflow

MODEL = "reviews"


def _save_scaler(path: Path, weight: float) -> Path:
    """A real SavedModel: ``serving_default(x) -> {"y": x * weight}``."""
    tf = tensorflow()

    class Scaler(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(weight)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * self.w}

    module = Scaler()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


@pytest.fixture(scope="session")
def saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_scaler(tmp_path_factory.mktemp("export") / "doubler", 2.0)


@pytest.fixture(scope="session")
def other_saved_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_scaler(tmp_path_factory.mktemp("export") / "tripler", 3.0)


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


def _manifest(candidate: str | None = None, **metrics: float) -> dict:
    return {"metrics": metrics, "lineage": {"candidate": candidate, "spans": [1, 2]}}


def _publish_n(registry: Registry, saved_model: Path, n: int) -> list[ModelVersion]:
    return [registry.publish(MODEL, saved_model, _manifest(f"c{i}")) for i in range(n)]


def test_publish_writes_tf_serving_layout_and_manifest(registry, saved_model):
    published = registry.publish(MODEL, saved_model, _manifest("c1", accuracy=0.9))

    folder = registry.root / MODEL / "1"
    assert published.version == 1
    assert published.path == folder
    assert (folder / "saved_model.pb").is_file()
    assert (folder / "variables").is_dir()
    manifest = json.loads((folder / "evergreen.json").read_text())
    assert manifest["model"] == MODEL
    assert manifest["version"] == 1
    assert manifest["metrics"] == {"accuracy": 0.9}
    assert manifest["lineage"] == {"candidate": "c1", "spans": [1, 2]}
    assert manifest["fingerprint"] == directory_fingerprint(saved_model)
    created = dt.datetime.fromisoformat(manifest["created_at"])
    assert created.utcoffset() == dt.timedelta(0)
    serving = manifest["signatures"]["serving_default"]
    assert serving["inputs"] == {"x": {"dtype": "float32", "shape": [None]}}
    assert serving["outputs"]["y"]["dtype"] == "float32"
    assert published.manifest == manifest
    # Nothing hidden is left beside the version but the lock.
    assert sorted(p.name for p in (registry.root / MODEL).iterdir()) == [".lock", "1"]


def test_published_version_serves_the_same_outputs(registry, saved_model):
    tf = tensorflow()
    published = registry.publish(MODEL, saved_model, _manifest("c1"))
    x = tf.constant([1.0, -2.5, 4.0])

    original = tf.saved_model.load(str(saved_model)).signatures["serving_default"](x=x)
    copy = tf.saved_model.load(str(published.path)).signatures["serving_default"](x=x)

    assert copy["y"].numpy().tolist() == original["y"].numpy().tolist() == [2.0, -5.0, 8.0]


def test_versions_increment_and_are_listed_in_order(registry, saved_model):
    published = _publish_n(registry, saved_model, 3)

    assert [v.version for v in published] == [1, 2, 3]
    assert [v.version for v in registry.versions(MODEL)] == [1, 2, 3]
    assert registry.get(MODEL, 2).manifest["lineage"]["candidate"] == "c1"
    assert registry.get(MODEL, "3").version == 3
    assert registry.models() == [MODEL]


def test_non_version_folders_are_ignored(registry, saved_model):
    registry.publish(MODEL, saved_model, _manifest("c1"))
    folder = registry.root / MODEL
    for name in ("notes", ".tmp-abc-1", "0", "007"):
        (folder / name).mkdir()
    (registry.root / ".cache").mkdir()
    (registry.root / "empty").mkdir()

    assert [v.version for v in registry.versions(MODEL)] == [1]
    assert registry.models() == [MODEL]
    assert registry.publish(MODEL, saved_model, _manifest("c2")).version == 2


def test_crash_before_rename_leaves_no_version(registry, saved_model, monkeypatch):
    registry.publish(MODEL, saved_model, _manifest("c1"))
    seen: list[Path] = []

    def crash(src, dst):
        seen.append(Path(src))
        assert (Path(src) / "saved_model.pb").is_file()  # the copy was complete
        raise OSError("simulated crash before rename")

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        registry.publish(MODEL, saved_model, _manifest("c2"))
    monkeypatch.undo()

    assert seen and seen[0].name.startswith(".tmp-")
    assert [v.version for v in registry.versions(MODEL)] == [1]
    assert registry.publish(MODEL, saved_model, _manifest("c2")).version == 2


def test_leftover_of_a_killed_publish_is_invisible_and_cleaned(registry, saved_model):
    registry.publish(MODEL, saved_model, _manifest("c1"))
    # What kill -9 during a publish leaves: a whole copy under a hidden name, never renamed.
    leftover = registry.root / MODEL / ".tmp-k1ll3d-999999999"
    leftover.mkdir()
    (leftover / "saved_model.pb").write_bytes(b"half")

    assert [v.version for v in registry.versions(MODEL)] == [1]
    assert registry.publish(MODEL, saved_model, _manifest("c2")).version == 2
    assert not leftover.exists()


def test_republishing_the_same_candidate_returns_the_existing_version(
    registry, saved_model, other_saved_model
):
    first = registry.publish(MODEL, saved_model, _manifest("c1"))
    registry.publish(MODEL, other_saved_model, _manifest("c2"))

    again = registry.publish(MODEL, saved_model, _manifest("c1", accuracy=0.5))

    assert again.version == first.version == 1
    assert "accuracy" not in again.manifest["metrics"]  # the original manifest is kept
    assert [v.version for v in registry.versions(MODEL)] == [1, 2]


@pytest.mark.parametrize(
    "candidate, model_fixture",
    [("c2", "saved_model"), ("c1", "other_saved_model"), (None, "saved_model")],
    ids=["other-candidate", "other-savedmodel", "no-candidate"],
)
def test_publish_is_deduplicated_only_on_same_savedmodel_and_candidate(
    registry, saved_model, candidate, model_fixture, request
):
    registry.publish(MODEL, saved_model, _manifest("c1" if candidate else None))

    second = registry.publish(MODEL, request.getfixturevalue(model_fixture), _manifest(candidate))

    assert second.version == 2


def test_publish_refuses_a_folder_without_savedmodel(registry, tmp_path):
    with pytest.raises(NotFound, match="no SavedModel"):
        registry.publish(MODEL, tmp_path, _manifest("c1"))
    assert registry.models() == []


def test_publish_stores_numpy_metrics_as_numbers(registry, saved_model):
    import numpy as np

    published = registry.publish(MODEL, saved_model, _manifest("c1", auc=np.float32(0.75)))

    assert published.manifest["metrics"] == {"auc": 0.75}


def test_aliases_round_trip(registry, saved_model):
    _publish_n(registry, saved_model, 2)
    assert registry.aliases(MODEL) == {}
    assert registry.alias(MODEL, "champion") is None

    registry.set_alias(MODEL, "champion", 1)
    registry.set_alias(MODEL, "canary", 2)
    registry.set_alias(MODEL, "champion", 2, reason="blessed")

    assert registry.aliases(MODEL) == {"champion": 2, "canary": 2}
    assert Registry(registry.root).alias(MODEL, "canary") == 2  # read back from disk
    assert registry.get(MODEL, "champion").version == 2
    moves = [(m["alias"], m["from"], m["to"], m["reason"]) for m in registry.history(MODEL)]
    assert moves == [
        ("champion", None, 1, "set"),
        ("canary", None, 2, "set"),
        ("champion", 1, 2, "blessed"),
    ]
    lines = (registry.root / MODEL / "alias_history.jsonl").read_text().splitlines()
    assert len(lines) == 3


def test_alias_errors_name_what_exists(registry, saved_model):
    _publish_n(registry, saved_model, 2)
    registry.set_alias(MODEL, "champion", 1)

    with pytest.raises(NotFound, match=r"has no version 5; versions: 1, 2"):
        registry.set_alias(MODEL, "champion", 5)
    with pytest.raises(NotFound, match=r"no alias 'canary'; aliases: champion=1"):
        registry.get(MODEL, "canary")
    with pytest.raises(NotFound, match=r"no model 'ratings'; models: reviews"):
        registry.get("ratings", 1)
    with pytest.raises(EvergreenError, match="is a number"):
        registry.set_alias(MODEL, "2", 1)
    assert registry.aliases(MODEL) == {"champion": 1}


def test_rollback_walks_back_through_promotions(registry, saved_model):
    _publish_n(registry, saved_model, 3)
    for version in (1, 2, 3):
        registry.set_alias(MODEL, "champion", version)

    assert registry.rollback(MODEL) == 2
    assert registry.alias(MODEL, "champion") == 2
    last = registry.history(MODEL, "champion")[-1]
    assert (last["from"], last["to"], last["reason"]) == (3, 2, "rollback")

    # A second rollback goes to the champion before 2, not back to the 3 just rolled away from.
    assert registry.rollback(MODEL, reason="still bad") == 1
    assert registry.history(MODEL)[-1]["reason"] == "still bad"

    with pytest.raises(NotFound, match=r"no champion before version 1; versions: 1, 2, 3"):
        registry.rollback(MODEL)


def test_rollback_to_an_explicit_version(registry, saved_model):
    _publish_n(registry, saved_model, 3)
    registry.set_alias(MODEL, "champion", 3)

    assert registry.rollback(MODEL, to_version=1) == 1
    assert registry.alias(MODEL, "champion") == 1


def test_rollback_to_a_missing_version_is_refused(registry, saved_model):
    _publish_n(registry, saved_model, 3)
    registry.set_alias(MODEL, "champion", 3)

    with pytest.raises(NotFound, match=r"model 'reviews' has no version 7; versions: 1, 2, 3"):
        registry.rollback(MODEL, to_version=7)

    assert registry.alias(MODEL, "champion") == 3
    assert len(registry.history(MODEL)) == 1


def test_rollback_without_champion_is_refused(registry, saved_model):
    _publish_n(registry, saved_model, 1)
    with pytest.raises(NotFound, match="has no champion to roll back"):
        registry.rollback(MODEL)


def _publish_many(root: str, saved_model: str, worker: int, count: int, barrier) -> None:
    tensorflow()  # import before the barrier, so the publishes really overlap
    registry = Registry(Path(root))
    barrier.wait(timeout=120)
    for i in range(count):
        registry.publish(MODEL, Path(saved_model), _manifest(f"w{worker}-{i}"))


@pytest.mark.slow  # two spawned interpreters each import TensorFlow: ~10 s on 2 cores
def test_concurrent_publishers_get_distinct_versions(registry, saved_model):
    workers, count = 2, 4
    ctx = multiprocessing.get_context("spawn")
    barrier = ctx.Barrier(workers)
    processes = [
        ctx.Process(
            target=_publish_many, args=(str(registry.root), str(saved_model), w, count, barrier)
        )
        for w in range(workers)
    ]
    for p in processes:
        p.start()
    for p in processes:
        p.join(timeout=300)

    assert [p.exitcode for p in processes] == [0] * workers
    versions = registry.versions(MODEL)
    assert [v.version for v in versions] == list(range(1, workers * count + 1))
    candidates = {v.manifest["lineage"]["candidate"] for v in versions}
    assert candidates == {f"w{w}-{i}" for w in range(workers) for i in range(count)}


def test_models_config_follows_champion_and_rollback_for_tf_serving(registry, saved_model):
    """TF Serving's own parser reads the models.config we write, labels on the right versions."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    def served() -> dict[str, tuple[list[int], dict[str, int]]]:
        text = (registry.root / "models.config").read_text(encoding="utf-8")
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        return {
            c.name: (list(c.model_version_policy.specific.versions), dict(c.version_labels))
            for c in config.model_config_list.config
        }

    _publish_n(registry, saved_model, 3)
    registry.publish("other", saved_model, _manifest())
    registry.set_alias("reviews", "champion", 2)
    registry.set_alias("other", "champion", 1)
    assert served() == {"other": ([1], {"champion": 1}), "reviews": ([2], {"champion": 2})}
    registry.set_alias("reviews", "champion", 3)
    registry.set_alias("reviews", "canary", 1)
    assert served()["reviews"] == ([1, 3], {"canary": 1, "champion": 3})
    registry.rollback("reviews")
    assert served()["reviews"] == ([1, 2], {"canary": 1, "champion": 2})
    text = (registry.root / "models.config").read_text(encoding="utf-8")
    assert f'base_path: "{(registry.root / "reviews").resolve()}"' in text
