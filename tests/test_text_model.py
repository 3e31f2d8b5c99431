"""The text model family on real reviews: featurizer, word CNN, raw-string SavedModel export."""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.models import text
from evergreen.models.contract import compile_model, freeze_lower
from evergreen.models.serving_export import export_serving_model
from evergreen.models.text import (
    LAYER_NAMES,
    TextColumnFeaturizer,
    TextFeaturizer,
    TextHParams,
    build_model,
    predict_texts,
)
from evergreen.tf import tensorflow
from tests.conftest import dataset

tf = tensorflow()
import keras  # noqa: E402  (after evergreen.tf, which silences TensorFlow's C++ logs)

SEED = 1234
# Strings that stress standardization and splitting, checked on both tokenization paths.
AWKWARD = [
    "",
    "   ",
    "!!!???",
    "GREAT coffee, GREAT price!!!",
    "naïve café crème brûlée — déjà vu",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "<br /><br />html breaks<br />",
    "emoji 😀 and 中文 text",
    "zzzunseenword qqqneverseen",
    "word " * 500,
]


@dataclass(frozen=True)
class Split:
    texts: list[str]
    labels: list[str]


@dataclass(frozen=True)
class Trained:
    featurizer: TextFeaturizer
    model: keras.Model
    labels: list[str]
    accuracy: float


def _read(name: str) -> Split:
    # dataset() skips the test, saying where the folder was looked for, when it is absent.
    with dataset(name).open(newline="", encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    return Split([row["review"] for row in rows], [row["score"] for row in rows])


@pytest.fixture(scope="module")
def train() -> Split:
    return _read("fine_foods_train.csv")


@pytest.fixture(scope="module")
def test() -> Split:
    return _read("fine_foods_test.csv")


@pytest.fixture(scope="module")
def featurizer(train: Split) -> TextFeaturizer:
    # A generator, not a list: fit must stream.
    return TextFeaturizer(max_tokens=20000, sequence_length=200).fit(t for t in train.texts)


@pytest.fixture(scope="module")
def trained(featurizer: TextFeaturizer, train: Split, test: Split) -> Trained:
    keras.utils.set_random_seed(SEED)
    labels = sorted(set(train.labels))
    model = build_model(
        featurizer.vocabulary_size(),
        len(labels),
        TextHParams(),
        sequence_length=featurizer.sequence_length,
    )
    compile_model(model, learning_rate=1e-3)
    y_train = np.array([labels.index(label) for label in train.labels])
    y_test = np.array([labels.index(label) for label in test.labels])
    model.fit(featurizer.transform(train.texts), y_train, epochs=4, batch_size=64, verbose=0)
    _, accuracy = model.evaluate(featurizer.transform(test.texts), y_test, verbose=0)
    return Trained(featurizer, model, labels, float(accuracy))


@pytest.fixture(scope="module")
def exported(trained: Trained, tmp_path_factory: pytest.TempPathFactory) -> Path:
    export_dir = tmp_path_factory.mktemp("export") / "1"
    column = TextColumnFeaturizer(
        "review", trained.featurizer
    )  # the production exporter's contract
    return export_serving_model(column, trained.model, trained.labels, export_dir)


def test_public_api_is_pinned():
    assert sorted(text.__all__) == [
        "LAYER_NAMES",
        "OOV_ID",
        "PAD_ID",
        "TextColumnFeaturizer",
        "TextFamily",
        "TextFeaturizer",
        "TextHParams",
        "build_model",
        "predict_texts",
    ]


# -- featurizer ----------------------------------------------------------------------------


def test_featurizer_save_load_round_trip(featurizer: TextFeaturizer, test: Split, tmp_path: Path):
    featurizer.save(tmp_path)
    loaded = TextFeaturizer.load(tmp_path)

    assert sorted(p.name for p in tmp_path.iterdir()) == ["featurizer.json", "vocabulary.txt"]
    assert loaded.to_dict() == featurizer.to_dict()
    assert loaded.fingerprint() == featurizer.fingerprint()
    assert loaded.vocabulary() == featurizer.vocabulary()
    assert loaded.texts_seen_ == featurizer.texts_seen_ == 4000
    np.testing.assert_array_equal(loaded.transform(test.texts), featurizer.transform(test.texts))


def test_load_rejects_an_edited_vocabulary(featurizer: TextFeaturizer, tmp_path: Path):
    featurizer.save(tmp_path)
    vocabulary = tmp_path / "vocabulary.txt"
    tokens = vocabulary.read_text(encoding="utf-8").split("\n")
    tokens[0], tokens[1] = tokens[1], tokens[0]  # same tokens, shifted ids
    vocabulary.write_text("\n".join(tokens), encoding="utf-8")

    with pytest.raises(DataError, match="does not match the fingerprint"):
        TextFeaturizer.load(tmp_path)
    with pytest.raises(NotFound, match="featurizer.json"):
        TextFeaturizer.load(tmp_path / "missing")


def test_fit_is_deterministic_and_refit_on_other_text_changes_fingerprint(
    featurizer: TextFeaturizer, train: Split, test: Split
):
    again = TextFeaturizer(max_tokens=20000, sequence_length=200).fit(train.texts)
    other_text = TextFeaturizer(max_tokens=20000, sequence_length=200).fit(test.texts)
    other_length = TextFeaturizer(max_tokens=20000, sequence_length=100).fit(train.texts)

    assert again.fingerprint() == featurizer.fingerprint()
    assert other_text.fingerprint() != featurizer.fingerprint()
    assert other_length.vocabulary() == featurizer.vocabulary()
    assert other_length.fingerprint() != featurizer.fingerprint()  # settings are part of it


def test_transform_gives_padded_int64_ids_independent_of_batching(
    featurizer: TextFeaturizer, train: Split
):
    ids = featurizer.transform(train.texts[:1500])  # crosses the 1024-string batch boundary

    assert ids.shape == (1500, 200) and ids.dtype == np.int64
    assert 0 <= ids.min() and ids.max() < featurizer.vocabulary_size()
    for i in (0, 1023, 1024, 1499):
        np.testing.assert_array_equal(ids[i], featurizer.transform([train.texts[i]])[0])
    np.testing.assert_array_equal(featurizer.transform([None, ""]), np.zeros((2, 200), np.int64))
    assert featurizer.transform([]).shape == (0, 200)
    vocabulary = featurizer.vocabulary()
    assert vocabulary[:2] == ["", "[UNK]"]
    great = featurizer.transform(["Great!"])[0]
    assert vocabulary[great[0]] == "great" and great[1] == 0


@pytest.mark.parametrize("ngrams", [None, 2], ids=["words", "bigrams"])
def test_fit_counts_the_tokens_it_tokenized_and_learns_what_adapt_learns(
    train: Split, ngrams: int | None
):
    # The ledger's fit and growth passes: fit steps through adapt itself to read the token
    # count adapt keeps; the vocabulary must be adapt's, and three counts of the same texts
    # made three ways (fit, grow's token_counts, transform before the cut) must agree.
    texts = train.texts[:1500] + AWKWARD  # crosses a batch; long, empty and non-ASCII texts
    fitted = TextFeaturizer(max_tokens=3000, sequence_length=30, ngrams=ngrams).fit(iter(texts))
    layer = keras.layers.TextVectorization(**fitted._layer_kwargs())
    layer.adapt(tf.data.Dataset.from_tensor_slices(texts).batch(1024))
    assert fitted.vocabulary() == [str(t) for t in layer.get_vocabulary()]
    counted = sum(fitted.token_counts(texts).values())
    assert fitted.tokens_counted_ == counted > len(texts) * 10
    ids, untruncated = fitted.transform_counted(texts)
    assert untruncated == counted
    assert np.count_nonzero(ids) < counted  # ids were cut to 30 per text
    np.testing.assert_array_equal(ids, fitted.layer()(tf.constant(texts)).numpy())
    assert len(fitted.grow(texts[:100], min_count=1, limit=5)) == 5  # beyond max_tokens
    assert fitted.tokens_counted_ == sum(fitted.token_counts(texts[:100]).values())


def test_unknown_rate_is_higher_on_unseen_vocabulary(train: Split, test: Split):
    small = TextFeaturizer(sequence_length=200).fit(train.texts[:1000])

    seen = small.unknown_rate(small.transform(train.texts[:1000]))
    unseen = small.unknown_rate(small.transform(test.texts))
    made_up = small.unknown_rate(small.transform(["zzqx blorfing vrrmt"]))

    assert seen == 0.0  # every token of the fitting texts is in an unlimited-enough vocabulary
    assert unseen > 0.05
    assert made_up == 1.0
    assert small.unknown_rate(np.zeros((3, 200), np.int64)) == 0.0


def test_max_tokens_caps_the_vocabulary_and_raises_the_unknown_rate(train: Split):
    capped = TextFeaturizer(max_tokens=500, sequence_length=200).fit(train.texts)

    assert capped.vocabulary_size() == 500
    assert capped.unknown_rate(capped.transform(train.texts)) > 0.05


def test_featurizer_settings_round_trip_and_are_validated():
    featurizer = TextFeaturizer(max_tokens=None, sequence_length=64, ngrams=2)
    assert TextFeaturizer.from_dict(featurizer.to_dict()).to_dict() == featurizer.to_dict()
    assert repr(featurizer) == "TextFeaturizer(max_tokens=None, sequence_length=64, ngrams=2)"

    with pytest.raises(ConfigError, match="Did you mean 'max_tokens'"):
        TextFeaturizer.from_dict({"max_token": 100})
    with pytest.raises(ConfigError, match="sequence_length=0"):
        TextFeaturizer(sequence_length=0).fit(["some text"])
    with pytest.raises(DataError, match="no texts"):
        TextFeaturizer().fit(iter([]))
    with pytest.raises(DataError, match="learned no tokens"):
        TextFeaturizer().fit(["", "?!"])
    with pytest.raises(RuntimeError, match="not fitted"):
        TextFeaturizer().transform(["text"])


def test_ngram_featurizer_round_trips(train: Split, tmp_path: Path):
    bigrams = TextFeaturizer(max_tokens=5000, sequence_length=50, ngrams=2).fit(train.texts[:300])
    bigrams.save(tmp_path)
    loaded = TextFeaturizer.load(tmp_path)

    assert any(" " in token for token in loaded.vocabulary())
    assert loaded.fingerprint() == bigrams.fingerprint()
    np.testing.assert_array_equal(loaded.transform(AWKWARD), bigrams.transform(AWKWARD))


# -- model ---------------------------------------------------------------------------------


def test_hparams_round_trip_and_are_validated():
    hparams = TextHParams(embedding_dim=32, conv_filters=64, kernel_size=3, dropout=0.1)
    assert TextHParams.from_dict(hparams.to_dict()) == hparams
    assert TextHParams.from_dict({}) == TextHParams()

    with pytest.raises(ConfigError, match="Did you mean 'dropout'"):
        TextHParams.from_dict({"dropuot": 0.2})
    with pytest.raises(ConfigError, match="dropout=1.5"):
        TextHParams(dropout=1.5)
    with pytest.raises(DataError, match="at least 2 classes"):
        build_model(100, 1)


def test_model_layers_are_named_from_the_input_up():
    model = build_model(100, 3, TextHParams(), sequence_length=20)

    assert [layer.name for layer in model.layers[1:]] == list(LAYER_NAMES)
    assert model.input_shape == (None, 20)
    assert model.output_shape == (None, 3)


def test_freeze_lower_makes_those_layers_non_trainable():
    keras.utils.set_random_seed(SEED)
    model = build_model(100, 2, TextHParams(embedding_dim=8, conv_filters=8), sequence_length=20)

    assert freeze_lower(model, 2) == ["embedding", "conv"]
    assert [model.get_layer(name).trainable for name in LAYER_NAMES] == [
        False,
        False,
        True,
        True,
        True,
    ]
    compile_model(model)
    before = {name: model.get_layer(name).get_weights() for name in ("conv", "classifier")}
    ids = np.random.default_rng(SEED).integers(0, 100, size=(64, 20))
    model.fit(ids, np.arange(64) % 2, epochs=1, batch_size=16, verbose=0)

    for old, new in zip(before["conv"], model.get_layer("conv").get_weights(), strict=True):
        np.testing.assert_array_equal(old, new)
    assert not np.array_equal(
        before["classifier"][0], model.get_layer("classifier").get_weights()[0]
    )

    assert freeze_lower(model, 0) == []  # sets the whole state: unfreezes
    assert all(model.get_layer(name).trainable for name in LAYER_NAMES)
    with pytest.raises(ConfigError, match="expected 0 to 4"):
        freeze_lower(model, 5)


@pytest.mark.slow
def test_training_on_fine_foods_reaches_075_accuracy(trained: Trained):
    assert trained.accuracy >= 0.75, f"test accuracy {trained.accuracy:.3f}"


# -- export --------------------------------------------------------------------------------


@pytest.mark.slow
def test_exported_model_tokenizes_exactly_like_transform(
    exported: Path, trained: Trained, test: Split, tmp_path: Path
):
    # The acceptance test of train/serve consistency: the same strings, the same ids. The
    # featurizer goes through disk, as it does between the featurize and export stages.
    loaded = tf.saved_model.load(str(exported))
    featurizer = TextFeaturizer.load(trained.featurizer.save(tmp_path / "featurizer"))
    strings = test.texts + AWKWARD

    served = loaded.signatures["tokenize"](text=tf.constant(strings))["token_ids"].numpy()

    assert served.dtype == np.int64
    np.testing.assert_array_equal(served, featurizer.transform(strings))


@pytest.mark.slow
def test_exported_signatures_take_raw_strings(exported: Path, trained: Trained):
    loaded = tf.saved_model.load(str(exported))
    serve, classify = loaded.signatures["serving_default"], loaded.signatures["classify"]
    strings = tf.constant(["Best tea I ever had, will buy again!", "Stale and overpriced."])

    assert serve.structured_input_signature[1] == {
        "text": tf.TensorSpec(shape=(None,), dtype=tf.string, name="text")
    }
    out = serve(text=strings)
    assert out["scores"].dtype == tf.float32 and out["scores"].shape == (2, 2)
    np.testing.assert_allclose(out["scores"].numpy().sum(axis=1), 1.0, rtol=1e-5)
    assert out["classes"].numpy().tolist() == [[b"great", b"other"]] * 2

    best = classify(text=strings)
    scores = out["scores"].numpy()
    assert [label.decode() for label in best["label"].numpy()] == [
        trained.labels[i] for i in scores.argmax(axis=1)
    ]
    np.testing.assert_allclose(best["score"].numpy(), scores.max(axis=1))

    empty = serve(text=tf.constant([], dtype=tf.string))
    assert empty["scores"].shape == (0, 2) and empty["classes"].shape == (0, 2)


@pytest.mark.slow
def test_exported_predictions_equal_in_memory_predictions(
    exported: Path, trained: Trained, test: Split
):
    strings = test.texts + AWKWARD
    in_memory = trained.model.predict(trained.featurizer.transform(strings), verbose=0)

    predictions = predict_texts(exported, strings)

    served = np.array([[p["scores"][label] for label in trained.labels] for p in predictions])
    np.testing.assert_allclose(served, in_memory, atol=1e-6)
    assert [p["label"] for p in predictions] == [trained.labels[i] for i in in_memory.argmax(1)]
    assert all(p["score"] == max(p["scores"].values()) for p in predictions)


def test_predict_texts_names_a_missing_export(tmp_path: Path):
    with pytest.raises(NotFound, match="no SavedModel"):
        predict_texts(tmp_path, ["text"])
