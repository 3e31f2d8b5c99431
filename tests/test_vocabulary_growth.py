"""Featurizers that grow append-only between full retrains, and models whose embeddings follow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from evergreen.components.featurize import span_texts
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

        # The ledger counts every tokenization: the full run's fit and featurize passes; the
        # increment's growth and featurize passes. The fit and the growth count a span's train
        # texts as featurize's uncut count of them does (three code paths, one number).
        def runs(component: str) -> dict[int | None, Any]:
            return {r.span: r for r in store.runs(component=component) if r.status == "succeeded"}

        featurized = {a.span: a for a in store.artifacts("FeaturizedExamples")}
        [fit] = runs("fit-featurizer").values()
        featurize, grow = runs("featurize"), runs("grow-featurizer")
        assert fit.summary["tokens_computed"] == featurized[1].properties["fit_tokens"] > 0
        assert grow[2].summary["tokens_computed"] == featurized[2].properties["fit_tokens"] > 0
        assert records[0].ledger.tokens_computed == (
            fit.summary["tokens_computed"] + featurize[1].summary["tokens_computed"]
        )
        # ... and the policy's look at the new train rows under the champion's featurizer
        # (drift is off here, so it tokenizes them).
        span2 = next(a for a in store.artifacts(type="Examples") if a.span == 2)
        policy = np.count_nonzero(
            TextFeaturizer.load(parent.uri).transform(span_texts(span2, "train", "review")[0])
        )
        assert records[1].ledger.tokens_computed == (
            grow[2].summary["tokens_computed"] + featurize[2].summary["tokens_computed"] + policy
        )
        # The increment tokenized each new text once: featurize looked up the train texts'
        # ids from the tokens the growth pass kept, and tokenized the rest.
        assert featurize[2].summary["tokens_reused"] > 0
        assert featurize[2].summary["tokens_computed"] < featurize[2].summary["tokens_reused"]
        for record in records:  # a full retrain: its fit over every train row + its featurize
            spans = [featurized[s].properties for s in range(1, record.span + 1)]
            assert record.ledger.tokens_full_retrain == sum(
                p["tokens_computed"] + p["tokens_reused"] + p["fit_tokens"] for p in spans
            )
        assert records[0].ledger.tokens_full_retrain == records[0].ledger.tokens_computed
        if records[1].version is not None:  # published: the registry's lineage says so too
            registry = Registry(project.config.registry_dir)
            manifest = registry.get(project.config.name, records[1].version).manifest
            assert manifest["lineage"]["featurizer_growth"] == growth


def _product_span(rows: list[list[str]], review: int, product: str) -> list[list[str]]:
    """The rows with every fourth review naming ``product`` (unknown to earlier spans)."""
    span = [list(row) for row in rows]
    for row in span[::4]:
        row[review] = f"{product} " + row[review]
    return span


@pytest.mark.slow
def test_an_unpublished_growth_is_grown_from_and_its_spans_are_not_featurized_again(
    tmp_path: Path,
) -> None:
    """Span 2's increment grows the vocabulary but is not published; span 3 grows from that
    growth (not from the champion's featurizer again), so it featurizes only its own rows, and
    its model serves the words of both growths. A run killed after span 3's featurize resumes
    to the same growth (the runner's cache), not a growth of a growth."""
    import json
    import subprocess
    import sys

    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop
    from evergreen.project import Project
    from tests.conftest import write_config, write_csv

    header, rows = read_csv(dataset("fine_foods_train.csv"))
    review = header.index("review")
    project_dir = tmp_path / "grow"
    data = project_dir / "data"
    write_csv(data / "span-1" / "r.csv", header, rows[:300])
    write_csv(data / "span-2" / "r.csv", header, _product_span(rows[300:500], review, "quinoabar"))
    # No epoch can beat the champion by 100: every increment keeps the champion's weights and
    # is not published, so the champion stays span 1's model.
    extra = (
        "[train]\nepochs = 1\nincremental_epochs = 1\nsequence_length = 40\n"
        "max_unknown_rate = 0.9\nmin_delta = 100.0\nfull_after_growth = 0\n\n"
        "[drift]\nenabled = false\n"
    )  # no quality-debt challenger: its full retrain would start a new featurizer line
    config = write_config(project_dir, label="score", extra=extra)
    with Project(config_mod.load(config)) as project:
        first = TrainingLoop(project).run()
    assert [(r.mode, r.version) for r in first] == [("full", 1), ("incremental", None)]
    span2_growth = first[1].featurizer_growth
    assert "quinoabar" in span2_growth["sample"]["review"]

    write_csv(data / "span-3" / "r.csv", header, _product_span(rows[500:700], review, "zucchinix"))
    # Killed right after span 3's featurize committed (its growth done), then run again.
    killed = subprocess.run(
        [sys.executable, "-m", "tests.killpoint", "after:featurize", "run", "-c", str(config)],
        cwd=Path(__file__).resolve().parents[1],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert killed.returncode < 0, killed.stderr[-2000:]
    with Project(config_mod.load(config)) as project:
        [third] = TrainingLoop(project).run()
        store = project.store
        assert (third.span, third.mode, third.version) == (3, "incremental", None)
        growth = third.featurizer_growth
        champion_featurizer = store.artifact(span2_growth["from"])
        assert growth["from"] == span2_growth["to"]  # grown from the unpublished growth
        assert "zucchinix" in growth["sample"]["review"]
        assert growth["champion"] == champion_featurizer.id
        assert growth["added_since_champion"] == {
            "review": span2_growth["added"]["review"] + growth["added"]["review"]
        }
        grown = store.artifact(growth["to"])
        assert grown.properties["compatible"] == [
            champion_featurizer.properties["fingerprint"],
            store.artifact(span2_growth["to"]).properties["fingerprint"],
        ]
        # Span 3 featurized only its own rows, once, though the run was killed and resumed.
        assert third.ledger.rows_featurized == third.rows_new
        for span in (1, 2, 3):
            assert len(store.artifacts("FeaturizedExamples", span)) == 1, span
        grows = [r for r in store.runs(component="grow-featurizer") if r.status == "succeeded"]
        assert sorted(r.span for r in grows) == [2, 3]  # the resumed run reused span 3's growth
        # The resumed run books the work of the span's growth and featurize, though the killed
        # process did it (plus the policy's look at the rows under the champion's featurizer).
        [grow3] = [r for r in grows if r.span == 3]
        [featurize3] = [
            r for r in store.runs(component="featurize") if r.span == 3 and r.status == "succeeded"
        ]
        span3 = next(a for a in store.artifacts(type="Examples") if a.span == 3)
        policy = np.count_nonzero(
            TextFeaturizer.load(champion_featurizer.uri).transform(
                span_texts(span3, "train", "review")[0]
            )
        )
        assert third.ledger.tokens_computed == (
            grow3.summary["tokens_computed"] + featurize3.summary["tokens_computed"] + policy
        )
        # The candidate's embeddings cover both growths; it serves their words.
        candidate = next(a for a in store.artifacts(type="Model") if a.span == 3)
        assert candidate.properties["featurizer"] == grown.id
        assert candidate.properties["embedding_rows_added"] == {
            "embedding": grown.properties["vocabulary_size"]
            - champion_featurizer.properties["vocabulary_size"]
        }
        tf = tensorflow()
        saved = tf.saved_model.load(str(Path(candidate.uri) / "saved_model"))
        tokenize = saved.signatures["tokenize"]
        ids = tokenize(text=tf.constant(["quinoabar zucchinix"]))["token_ids"].numpy()[0]
        vocabulary = TextFeaturizer.load(grown.uri).vocabulary()
        assert [vocabulary[i] for i in ids[:2]] == ["quinoabar", "zucchinix"]
        assert json.loads(json.dumps(third.to_dict()))["featurizer_growth"] == growth


@pytest.mark.slow
def test_a_refused_full_retrains_featurizer_is_not_grown_from(tmp_path: Path) -> None:
    """Span 2's full retrain is refused (flipped labels, no tolerance); span 3's increment grows from
    the champion's featurizer, not from span 2's refit (its ids differ), and featurizes span 2
    again under the growth (it has no shards the growth can read), booking that work."""
    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop
    from evergreen.project import Project
    from tests.conftest import write_config, write_csv

    header, rows = read_csv(dataset("fine_foods_train.csv"))
    review = header.index("review")
    project_dir = tmp_path / "refused"
    data = project_dir / "data"
    write_csv(data / "span-1" / "r.csv", header, rows[:300])
    extra = (
        "[train]\nepochs = 1\nincremental_epochs = 1\nsequence_length = 40\n"
        "max_unknown_rate = 0.9\nmax_historic_regression = 0.0\nmax_new_regression = 0.0\n"
        "max_loss_increase = 0.0\nguard_confidence = 0.0\nmin_delta = 100.0\n\n"
        "[drift]\nenabled = false\n"
    )
    config = write_config(project_dir, label="score", extra=extra)
    with Project(config_mod.load(config)) as project:
        [first] = TrainingLoop(project).run()
    # Span 2's labels are flipped: a full retrain on it forgets span 1 (the guard refuses it).
    score = header.index("score")
    flipped = [list(row) for row in rows[300:600]]
    for row in flipped:
        row[score] = "other" if row[score] == "great" else "great"
    write_csv(data / "span-2" / "r.csv", header, flipped)
    with Project(config_mod.load(config)) as project:
        [second] = TrainingLoop(project).run(full=True)
    assert (first.mode, first.version) == ("full", 1)
    assert (second.mode, second.version) == ("full", None), second.verdict
    write_csv(data / "span-3" / "r.csv", header, _product_span(rows[600:800], review, "zucchinix"))
    with Project(config_mod.load(config)) as project:
        [third] = TrainingLoop(project).run()
        store = project.store
        fits = [r for r in store.runs(component="fit-featurizer") if r.status == "succeeded"]
        champion_fit, refused_fit = sorted(
            (store.run_outputs(r.id)["featurizer"] for r in fits), key=lambda a: a.id
        )
        assert third.mode == "incremental"
        growth = third.featurizer_growth
        assert growth["from"] == champion_fit.id != refused_fit.id
        assert "champion" not in growth  # grown straight from the champion's featurizer
        grown = store.artifact(growth["to"])
        assert grown.properties["compatible"] == [champion_fit.properties["fingerprint"]]
        under = {
            span: [a.properties["featurizer"] for a in store.artifacts("FeaturizedExamples", span)]
            for span in (1, 2, 3)
        }
        refit, fingerprint = refused_fit.properties["fingerprint"], grown.properties["fingerprint"]
        assert under[1] == [champion_fit.properties["fingerprint"], refit]  # span 1 reused
        assert under[2] == [refit, fingerprint]  # featurized again for the growth
        assert under[3] == [fingerprint]
        again = store.artifacts("FeaturizedExamples", 2)[-1].properties["rows_featurized"]
        assert third.ledger.rows_featurized == again + third.rows_new
