"""Featurizers that grow append-only between full retrains, and models whose embeddings follow."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from evergreen.models.growth import grow_model
from evergreen.models.saved_model import feed_saved_model
from evergreen.models.serving_export import export_serving_model
from evergreen.models.tabular import TabularFamily, TabularFeaturizer
from evergreen.models.text import OOV_ID, TextColumnFeaturizer, TextFamily, TextFeaturizer
from evergreen.tf import tensorflow
from tests.conftest import dataset, read_csv


def _reviews(n: int) -> list[str]:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    return [row[header.index("review")] for row in rows[:n]]


def test_text_vocabulary_grows_append_only_and_keeps_known_ids() -> None:
    old_texts = _reviews(300)
    featurizer = TextFeaturizer(max_tokens=500, sequence_length=40).fit(old_texts)
    before = featurizer.vocabulary()
    ids_before = featurizer.transform(old_texts[:50])
    # A new span speaks of a new product 4 times and of a rare one once.
    new_texts = [f"the quinoabar is great {i}" for i in range(4)] + ["a zzrare snack"]
    added = featurizer.grow(new_texts, min_count=3, limit=100)
    assert "quinoabar" in added and "zzrare" not in added
    assert featurizer.vocabulary()[: len(before)] == before  # known ids never move
    assert len(featurizer.vocabulary()) == len(before) + len(added)  # beyond max_tokens: allowed
    np.testing.assert_array_equal(featurizer.transform(old_texts[:50]), ids_before)
    ids = featurizer.transform(["quinoabar zzrare"])[0]
    assert ids[0] == before.__len__() + added.index("quinoabar") and ids[1] == OOV_ID
    assert featurizer.grow(new_texts, min_count=3, limit=100) == []  # nothing new the second time


def test_grown_text_model_answers_as_the_champion_then_exports_the_new_vocabulary(
    tmp_path: Path,
) -> None:
    texts = _reviews(200)
    column = TextColumnFeaturizer("review", TextFeaturizer(max_tokens=400, sequence_length=30))
    column.fit({"review": t} for t in texts)
    model = TextFamily().build_model(column, 2, None)
    old_size = column.inner.vocabulary_size()
    new_rows = [{"review": "quinoabar quinoabar crunchy quinoabar tasty"}] * 3
    added = column.grow(new_rows, min_count=5, limit=50)  # 9 times; the rest 3
    assert added == {"review": ["quinoabar"]}
    grown, rows_added = grow_model(model, column.embedding_rows())
    assert rows_added == {"embedding": 1}
    table = grown.get_layer("embedding").get_weights()[0]
    assert table.shape[0] == old_size + 1
    np.testing.assert_array_equal(table[:old_size], model.get_layer("embedding").get_weights()[0])
    np.testing.assert_array_equal(table[old_size], table[OOV_ID])  # starts as the unknown row
    # Before training, the grown model answers exactly as the champion did on the new words.
    ids = column.inner.transform(["quinoabar is crunchy and tasty"])
    old_ids = np.where(ids >= old_size, OOV_ID, ids)
    np.testing.assert_allclose(grown(ids).numpy(), model(old_ids).numpy(), atol=1e-6)
    export = export_serving_model(column, grown, ["a", "b"], tmp_path / "saved_model")
    tf = tensorflow()
    tokenize = tf.saved_model.load(str(export)).signatures["tokenize"]
    served = tokenize(text=tf.constant(["quinoabar"]))["token_ids"].numpy()[0]
    assert served[0] == old_size  # the SavedModel's in-graph vocabulary followed the growth
    scores, labels = feed_saved_model(export, [{"review": "quinoabar"}])
    assert labels == ["a", "b"] and scores.shape == (1, 2)


def test_tabular_categories_grow_and_numbers_keep_their_normalization() -> None:
    header, rows = read_csv(dataset("mlc_churn.csv"))
    records = [dict(zip(header, row, strict=True)) for row in rows[:400]]
    for record in records:
        record["account_length"] = float(record["account_length"])
    featurizer = TabularFeaturizer(["account_length"], ["state"], max_categories=1000)
    featurizer.fit(r for r in records if r["state"] != "CA")
    mean, std = list(featurizer.mean_), list(featurizer.std_)
    states = list(featurizer.vocabularies_[0])
    model = TabularFamily().build_model(featurizer, 2, type("C", (), {"hidden_units": 8})())
    new = [{"account_length": 1.0, "state": "CA"}] * 3 + [{"account_length": 2.0, "state": "ZZ"}]
    assert featurizer.grow(new, min_count=2, limit=10) == {"state": ["CA"]}
    assert featurizer.vocabularies_[0] == [*states, "CA"]
    assert (featurizer.mean_, featurizer.std_) == (mean, std)
    assert featurizer.transform(new)["cat_0"][:, 0].tolist() == [len(states) + 1] * 3 + [0]
    grown, added = grow_model(model, featurizer.embedding_rows())
    assert added == {"deep_embed_0": 1, "wide_embed_0": 1}
    inputs = {k: v for k, v in featurizer.transform(new).items()}
    unknown = {**inputs, "cat_0": np.zeros_like(inputs["cat_0"])}
    np.testing.assert_allclose(grown(inputs).numpy(), model(unknown).numpy(), atol=1e-6)


def test_an_increment_grows_the_vocabulary_records_it_and_reuses_the_history(
    tmp_path: Path,
) -> None:
    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop
    from evergreen.project import Project
    from evergreen.registry import Registry
    from tests.conftest import write_config, write_csv

    header, rows = read_csv(dataset("fine_foods_train.csv"))
    review = header.index("review")
    project_dir = tmp_path / "grow"
    write_csv(project_dir / "data" / "span-1" / "r.csv", header, rows[:300])
    span2 = [list(row) for row in rows[300:500]]
    for row in span2[::4]:  # 50 reviews of span 2 name a product span 1 never saw
        row[review] = "quinoabar " + row[review]
    write_csv(project_dir / "data" / "span-2" / "r.csv", header, span2)
    # The policy must choose an increment: 300 rows leave many unknown words, and drift is off.
    extra = (
        "[train]\nepochs = 1\nincremental_epochs = 1\nsequence_length = 40\n"
        "max_unknown_rate = 0.9\n\n[drift]\nenabled = false\n"
    )
    config = write_config(project_dir, label="score", extra=extra)
    with Project(config_mod.load(config)) as project:
        records = TrainingLoop(project).run()
        assert [r.mode for r in records] == ["full", "incremental"]
        assert records[0].featurizer_growth is None
        growth = records[1].featurizer_growth
        assert "quinoabar" in growth["sample"]["review"] and growth["added"]["review"] >= 1
        store = project.store
        grown = store.artifact(growth["to"])
        assert grown.properties["grown_from"] == growth["from"]
        parent = store.artifact(growth["from"])
        assert grown.properties["compatible"] == [parent.properties["fingerprint"]]
        # Span 1 is featurized once, by the first featurizer: the history is not re-tokenized.
        assert [a.properties["featurizer"] for a in store.artifacts("FeaturizedExamples", 1)] == [
            parent.properties["fingerprint"]
        ]
        candidate = next(a for a in store.artifacts(type="Model") if a.span == 2)
        assert candidate.properties["featurizer"] == grown.id
        assert candidate.properties["embedding_rows_added"] == {
            "embedding": grown.properties["vocabulary_size"] - parent.properties["vocabulary_size"]
        }
        tf = tensorflow()
        saved = tf.saved_model.load(str(Path(candidate.uri) / "saved_model"))
        ids = saved.signatures["tokenize"](text=tf.constant(["quinoabar"]))["token_ids"].numpy()
        vocabulary = TextFeaturizer.load(grown.uri).vocabulary()
        assert vocabulary[ids[0][0]] == "quinoabar"
        if records[1].version is not None:  # published: the registry's lineage says so too
            registry = Registry(project.config.registry_dir)
            manifest = registry.get(project.config.name, records[1].version).manifest
            assert manifest["lineage"]["featurizer_growth"] == growth
