"""The text model family: a frozen-vocabulary featurizer, a word CNN, and a raw-string export.

Training reads token ids made once by :meth:`TextFeaturizer.transform`; the exported SavedModel
tokenizes in-graph with a layer made by :meth:`TextFeaturizer.layer` from the same settings and
vocabulary. Both paths go through one Keras ``TextVectorization`` configuration, so the ids a
model is trained on and the ids it is served are the same by construction.

Typical use::

    featurizer = TextFeaturizer(max_tokens=20000, sequence_length=200).fit(train_texts)
    model = build_model(featurizer.vocabulary_size(), len(labels), TextHParams(),
                        sequence_length=featurizer.sequence_length)
    compile_model(model, learning_rate=1e-3)
    model.fit(featurizer.transform(train_texts), train_label_ids, epochs=4, batch_size=64)
    export_serving_model(featurizer, model, labels, export_dir)
    predict_texts(export_dir, ["Great coffee, will buy again."])

Token ids: 0 is padding, 1 is the unknown (out-of-vocabulary) token, learned tokens start at 2
in order of decreasing frequency (ties broken by Keras deterministically).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.tf import tensorflow

__all__ = [
    "LAYER_NAMES",
    "OOV_ID",
    "PAD_ID",
    "TextFeaturizer",
    "TextHParams",
    "build_model",
    "compile_model",
    "export_serving_model",
    "freeze_lower",
    "predict_texts",
]

PAD_ID = 0
OOV_ID = 1
_RESERVED = ("", "[UNK]")  # what Keras puts at ids 0 and 1; never written to vocabulary.txt
STANDARDIZE = "lower_and_strip_punctuation"
SPLIT = "whitespace"
FORMAT_VERSION = 1
VOCABULARY_FILE = "vocabulary.txt"
CONFIG_FILE = "featurizer.json"
_BATCH = 1024  # strings per TextVectorization call: per-call overhead dominates below this

# The model's layers from input to output; freeze_lower(model, n) freezes the first n.
LAYER_NAMES = ("embedding", "conv", "pool", "dropout", "classifier")


def _keras() -> Any:
    tensorflow()  # quiet C++ logs before Keras pulls TensorFlow in
    import keras

    return keras


def _as_text(value: Any) -> str | bytes:
    # A missing value featurizes as an empty text (all padding) rather than failing a batch.
    if value is None:
        return ""
    if isinstance(value, str | bytes):
        return value
    raise TypeError(f"expected a text (str or bytes), got {type(value).__name__}: {value!r:.80}")


def _suggest(name: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


# --------------------------------------------------------------------------------------------
# Featurizer
# --------------------------------------------------------------------------------------------


class TextFeaturizer:
    """Turns raw texts into fixed-length int64 token ids with a vocabulary learned once.

    Estimator-style: the constructor stores hyperparameters as given and does no work; ``fit``
    learns the vocabulary (learned state ends in ``_``); after that the vocabulary is frozen, so
    token ids never shift for a given :meth:`fingerprint`. Refit only on a full retrain.

    Args:
        max_tokens: Vocabulary size limit including the 2 reserved ids (padding, unknown), or
            None for no limit. Default 20000.
        sequence_length: Ids per text; longer texts are truncated, shorter ones padded with 0.
            Default 200.
        ngrams: If set to n, also index all 2..n-grams of words. Default None (words only).
    """

    def __init__(
        self, max_tokens: int | None = 20000, sequence_length: int = 200, ngrams: int | None = None
    ) -> None:
        self.max_tokens = max_tokens
        self.sequence_length = sequence_length
        self.ngrams = ngrams
        self.vocabulary_: list[str] | None = None  # learned tokens, ids 2.. in order
        self.texts_seen_: int = 0
        self._tokenize: Any = None  # cached tf.function over a layer built from vocabulary_

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.to_dict().items())
        return f"TextFeaturizer({args})"

    # -- hyperparameters ---------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """The hyperparameters, as given to the constructor."""
        return {
            "max_tokens": self.max_tokens,
            "sequence_length": self.sequence_length,
            "ngrams": self.ngrams,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextFeaturizer:
        """An unfitted featurizer from :meth:`to_dict` output (e.g. a config table).

        Raises:
            ConfigError: a key is unknown or a value is out of range.
        """
        known = ("max_tokens", "sequence_length", "ngrams")
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"text featurizer option {key!r} is unknown. Options: {', '.join(known)}."
                    + _suggest(key, known)
                )
        featurizer = cls(**data)
        featurizer._check_params()
        return featurizer

    def _check_params(self) -> None:
        def is_int(value: Any) -> bool:
            return isinstance(value, int) and not isinstance(value, bool)

        if self.max_tokens is not None and not (is_int(self.max_tokens) and self.max_tokens >= 3):
            raise ConfigError(
                f"text featurizer max_tokens={self.max_tokens!r} is not allowed: expected an "
                "integer >= 3 (ids 0 and 1 are reserved for padding and unknown), or none for "
                "no limit."
            )
        if not (is_int(self.sequence_length) and self.sequence_length >= 1):
            raise ConfigError(
                f"text featurizer sequence_length={self.sequence_length!r} is not allowed: "
                "expected an integer >= 1 (ids per text, e.g. 200)."
            )
        if self.ngrams is not None and not (is_int(self.ngrams) and self.ngrams >= 1):
            raise ConfigError(
                f"text featurizer ngrams={self.ngrams!r} is not allowed: expected an integer "
                ">= 1, or none for single words."
            )

    def _layer_kwargs(self) -> dict[str, Any]:
        return {
            "max_tokens": self.max_tokens,
            "standardize": STANDARDIZE,
            "split": SPLIT,
            "ngrams": self.ngrams,
            "output_mode": "int",
            "output_sequence_length": self.sequence_length,
        }

    # -- learning ----------------------------------------------------------------------------

    def fit(self, texts: Iterable[str | bytes]) -> TextFeaturizer:
        """Learn the vocabulary from ``texts``, streamed once (any iterable, e.g. a generator).

        Returns:
            self.

        Raises:
            ConfigError: a hyperparameter is out of range.
            DataError: ``texts`` is empty, or holds no tokens at all.
        """
        self._check_params()
        tf = tensorflow()
        keras = _keras()
        self.vocabulary_, self.texts_seen_, self._tokenize = None, 0, None
        seen = 0

        def stream() -> Iterable[str | bytes]:
            nonlocal seen
            for text in texts:
                seen += 1
                yield _as_text(text)

        dataset = tf.data.Dataset.from_generator(
            stream, output_signature=tf.TensorSpec(shape=[], dtype=tf.string)
        ).batch(_BATCH)
        layer = keras.layers.TextVectorization(**self._layer_kwargs())
        layer.adapt(dataset)
        if seen == 0:
            raise DataError("text featurizer got no texts to fit: expected at least one string.")
        vocabulary = [str(token) for token in layer.get_vocabulary()]
        if tuple(vocabulary[:2]) != _RESERVED:  # a Keras change we must not paper over
            raise RuntimeError(f"unexpected reserved tokens from Keras: {vocabulary[:2]!r}")
        if len(vocabulary) == 2:
            raise DataError(
                f"text featurizer learned no tokens from {seen} texts: are they all empty or "
                "punctuation? Check the text column."
            )
        self.vocabulary_ = vocabulary[2:]
        self.texts_seen_ = seen
        return self

    def _fitted(self) -> list[str]:
        if self.vocabulary_ is None:
            raise RuntimeError("this TextFeaturizer is not fitted: call fit() or load() first.")
        return self.vocabulary_

    def vocabulary(self) -> list[str]:
        """All tokens by id, including ``""`` (id 0, padding) and ``"[UNK]"`` (id 1)."""
        return [*_RESERVED, *self._fitted()]

    def vocabulary_size(self) -> int:
        """Number of ids, reserved ones included: the embedding's input size."""
        return len(self._fitted()) + len(_RESERVED)

    def fingerprint(self) -> str:
        """sha256 of the settings and vocabulary: equal fingerprints mean equal token ids."""
        settings = {
            "format_version": FORMAT_VERSION,
            "standardize": STANDARDIZE,
            "split": SPLIT,
            **self.to_dict(),
        }
        digest = hashlib.sha256(json.dumps(settings, sort_keys=True).encode())
        # Tokens never contain "\n" (whitespace splits them), so joining is unambiguous.
        digest.update(b"\n" + "\n".join(self._fitted()).encode("utf-8"))
        return digest.hexdigest()

    # -- applying ----------------------------------------------------------------------------

    def layer(self, name: str = "text_vectorization") -> Any:
        """A new Keras ``TextVectorization`` layer with the fixed vocabulary (no adapt needed).

        This is the one place the tokenizer is built: :meth:`transform` and the exported
        SavedModel both use it.
        """
        keras = _keras()
        return keras.layers.TextVectorization(
            vocabulary=list(self._fitted()), name=name, **self._layer_kwargs()
        )

    def transform(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """Token ids of ``texts``: int64 array of shape ``(len(texts), sequence_length)``.

        Texts are tokenized in batches of 1024 in one graph call each. ``None`` counts as "".
        """
        tf = tensorflow()
        if self._tokenize is None:
            layer = self.layer()
            self._tokenize = tf.function(
                layer, input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string)]
            )
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.sequence_length), dtype=np.int64)
        chunks = [
            self._tokenize(tf.constant([_as_text(t) for t in texts[i : i + _BATCH]], tf.string))
            for i in range(0, len(texts), _BATCH)
        ]
        return np.concatenate([chunk.numpy() for chunk in chunks]).astype(np.int64, copy=False)

    @staticmethod
    def unknown_rate(ids: np.ndarray) -> float:
        """Fraction of non-padding ids that are the unknown id (0.0 when all are padding).

        Only the first ``sequence_length`` tokens of each text count (the rest were cut).
        """
        ids = np.asarray(ids)
        tokens = int(np.count_nonzero(ids != PAD_ID))
        return float(np.count_nonzero(ids == OOV_ID)) / tokens if tokens else 0.0

    # -- storage -----------------------------------------------------------------------------

    def save(self, directory: str | Path) -> Path:
        """Write ``vocabulary.txt`` (learned tokens, one a line, id 2 first) and ``featurizer.json``.

        The caller makes the directory atomic (write into a temporary one, then rename).
        """
        vocabulary = self._fitted()
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / VOCABULARY_FILE).write_text(
            "".join(token + "\n" for token in vocabulary), encoding="utf-8"
        )
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.to_dict(),
            "standardize": STANDARDIZE,
            "split": SPLIT,
            "vocabulary_size": self.vocabulary_size(),
            "texts_seen": self.texts_seen_,
            "fingerprint": self.fingerprint(),
        }
        (directory / CONFIG_FILE).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        return directory

    @classmethod
    def load(cls, directory: str | Path) -> TextFeaturizer:
        """A fitted featurizer from a folder written by :meth:`save`.

        Raises:
            NotFound: a file is missing.
            DataError: the files disagree with each other or with this version of Evergreen.
        """
        directory = Path(directory)
        for name in (CONFIG_FILE, VOCABULARY_FILE):
            if not (directory / name).is_file():
                raise NotFound(f"text featurizer file {directory / name} does not exist.")
        meta = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(
                f"text featurizer in {directory} has format_version "
                f"{meta.get('format_version')!r}; this Evergreen reads {FORMAT_VERSION}. "
                "Refit it with a full retrain (--full)."
            )
        for key, ours in (("standardize", STANDARDIZE), ("split", SPLIT)):
            if meta.get(key) != ours:
                raise DataError(
                    f"text featurizer in {directory} was fit with {key}={meta.get(key)!r}; this "
                    f"Evergreen uses {ours!r}. Refit it with a full retrain (--full)."
                )
        featurizer = cls.from_dict(meta["config"])
        # split("\n"), not splitlines(): tokens may hold other Unicode line separators.
        text = (directory / VOCABULARY_FILE).read_text(encoding="utf-8")
        featurizer.vocabulary_ = text.split("\n")[:-1] if text else []
        featurizer.texts_seen_ = int(meta.get("texts_seen", 0))
        if featurizer.fingerprint() != meta.get("fingerprint"):
            raise DataError(
                f"text featurizer in {directory}: {VOCABULARY_FILE} does not match the "
                f"fingerprint in {CONFIG_FILE} ({featurizer.vocabulary_size()} ids, expected "
                f"{meta.get('vocabulary_size')}). The artifact was edited or damaged; refit it."
            )
        return featurizer


# --------------------------------------------------------------------------------------------
# Model
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TextHParams:
    """Hyperparameters of the word CNN built by :func:`build_model`.

    Args:
        embedding_dim: Width of the token embedding. Default 64.
        conv_filters: Conv1D filters. Default 128.
        kernel_size: Conv1D window in tokens. Default 5.
        dropout: Dropout rate before the classifier. Default 0.3.
    """

    embedding_dim: int = 64
    conv_filters: int = 128
    kernel_size: int = 5
    dropout: float = 0.3

    def __post_init__(self) -> None:
        for name in ("embedding_dim", "conv_filters", "kernel_size"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise ConfigError(
                    f"text model {name}={value!r} is not allowed: expected an integer >= 1."
                )
        if not (isinstance(self.dropout, int | float) and 0.0 <= self.dropout < 1.0):
            raise ConfigError(
                f"text model dropout={self.dropout!r} is not allowed: expected a number in "
                "[0, 1), e.g. 0.3."
            )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextHParams:
        """Hyperparameters from :meth:`to_dict` output; missing keys take their defaults.

        Raises:
            ConfigError: a key is unknown or a value is out of range.
        """
        known = [f.name for f in fields(cls)]
        for key in data:
            if key not in known:
                raise ConfigError(
                    f"text model option {key!r} is unknown. Options: {', '.join(known)}."
                    + _suggest(key, known)
                )
        return cls(**data)


def config_problem(cfg: Any, *, model: bool = True) -> tuple[str, Any, str] | None:
    """What the text featurizer (and, with ``model``, the word CNN) needs of ``[train]``.

    Returns:
        ``(key, value, fix)`` for the first problem, or None.
    """
    if cfg.max_tokens < 3:
        return "train.max_tokens", cfg.max_tokens, "use 3 or more (ids 0 and 1 are reserved)"
    kernel = TextHParams().kernel_size
    if model and cfg.sequence_length < kernel:
        return (
            "train.sequence_length",
            cfg.sequence_length,
            f"use {kernel} or more: the text model's Conv1D reads windows of {kernel} tokens",
        )
    return None


def build_model(
    vocab_size: int,
    num_classes: int,
    hparams: TextHParams | None = None,
    *,
    sequence_length: int | None = None,
) -> Any:
    """A word CNN from int64 token ids ``(batch, sequence_length)`` to class probabilities.

    Layers, from the input: ``embedding``, ``conv`` (Conv1D, relu), ``pool`` (global max),
    ``dropout``, ``classifier`` (Dense, softmax) — see :data:`LAYER_NAMES`.

    Args:
        vocab_size: Number of token ids, reserved ones included
            (:meth:`TextFeaturizer.vocabulary_size`).
        num_classes: Number of labels, at least 2.
        hparams: Architecture; default ``TextHParams()``.
        sequence_length: Fixed input length, or None (default) to accept any length
            >= ``kernel_size``.

    Raises:
        DataError: fewer than 2 classes.
        ValueError: vocab_size or sequence_length is too small.
    """
    keras = _keras()
    hp = hparams if hparams is not None else TextHParams()
    if num_classes < 2:
        raise DataError(
            f"a text classifier needs at least 2 classes; the training data has {num_classes}."
        )
    if vocab_size < 3:
        raise ValueError(f"vocab_size={vocab_size} is too small: expected >= 3 (2 are reserved).")
    if sequence_length is not None and sequence_length < hp.kernel_size:
        raise ValueError(
            f"sequence_length={sequence_length} is shorter than kernel_size={hp.kernel_size}: "
            "raise the featurizer's sequence_length or lower kernel_size."
        )
    layers = keras.layers
    inputs = keras.Input(shape=(sequence_length,), dtype="int64", name="token_ids")
    x = layers.Embedding(vocab_size, hp.embedding_dim, name=LAYER_NAMES[0])(inputs)
    x = layers.Conv1D(hp.conv_filters, hp.kernel_size, activation="relu", name=LAYER_NAMES[1])(x)
    x = layers.GlobalMaxPooling1D(name=LAYER_NAMES[2])(x)
    x = layers.Dropout(hp.dropout, name=LAYER_NAMES[3])(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=LAYER_NAMES[4])(x)
    return keras.Model(inputs, outputs, name="text_cnn")


def compile_model(model: Any, learning_rate: float = 1e-3) -> Any:
    """Compile for integer label ids: Adam, sparse categorical cross-entropy, accuracy.

    Call it again after :func:`freeze_lower` for the change to take effect.
    """
    keras = _keras()
    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def freeze_lower(model: Any, n_layers: int) -> list[str]:
    """Make the ``n_layers`` layers nearest the input non-trainable and all others trainable.

    It sets the whole state, so ``freeze_lower(model, 0)`` unfreezes a model whose layers were
    frozen when it was saved. Recompile afterwards (:func:`compile_model`).

    Returns:
        The names of the frozen layers, from the input up.

    Raises:
        ConfigError: ``n_layers`` is negative or would freeze the classifier.
    """
    keras = _keras()
    layers = [layer for layer in model.layers if not isinstance(layer, keras.layers.InputLayer)]
    if not (isinstance(n_layers, int) and 0 <= n_layers < len(layers)):
        raise ConfigError(
            f"freeze_lower_layers={n_layers!r} is not allowed: expected 0 to {len(layers) - 1}. "
            f"The layers from the input are {', '.join(layer.name for layer in layers)}; "
            "the last one always trains."
        )
    for index, layer in enumerate(layers):
        layer.trainable = index >= n_layers
    return [layer.name for layer in layers[:n_layers]]


# --------------------------------------------------------------------------------------------
# Export and prediction
# --------------------------------------------------------------------------------------------


def export_serving_model(
    featurizer: TextFeaturizer, model: Any, labels: Sequence[str], export_dir: str | Path
) -> Path:
    """Write a SavedModel that classifies raw strings, loadable with no Evergreen code.

    Signatures, each taking ``text``: string ``[None]``:

    - ``serving_default`` → ``scores``: float32 ``[None, C]``, ``classes``: string
      ``[None, C]`` (the label names, TF Serving classify style).
    - ``classify`` → ``label``: string ``[None]``, ``score``: float32 ``[None]``.
    - ``tokenize`` → ``token_ids``: int64 ``[None, sequence_length]``, the in-graph ids.

    Args:
        featurizer: The fitted featurizer the model was trained on.
        model: A Keras model from token ids to C class probabilities.
        labels: Label names by class index (C of them).
        export_dir: Where to write; the caller makes it atomic (temporary folder, rename).

    Returns:
        ``export_dir`` as a Path.
    """
    tf = tensorflow()
    keras = _keras()
    labels = [str(label) for label in labels]
    num_classes = int(model.output_shape[-1])
    if len(labels) != num_classes:
        raise ValueError(f"the model has {num_classes} outputs but {len(labels)} labels came.")
    if len(set(labels)) != len(labels):
        raise ValueError(f"labels must be distinct, got {labels!r}.")
    vectorize = featurizer.layer()
    vectorize(tf.constant([""], dtype=tf.string))  # ExportArchive only tracks built layers
    label_names = tf.constant(labels, dtype=tf.string)
    text_spec = [tf.TensorSpec(shape=[None], dtype=tf.string, name="text")]

    def probabilities(text: Any) -> Any:
        ids = vectorize(text)
        # An empty batch would fail inside Conv1D/Dense (shape error), so answer it directly.
        return tf.cond(
            tf.shape(ids)[0] > 0,
            lambda: tf.cast(model(ids, training=False), tf.float32),
            lambda: tf.zeros([0, num_classes], dtype=tf.float32),
        )

    def serve(text: Any) -> dict[str, Any]:
        scores = probabilities(text)
        classes = tf.tile(label_names[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {"scores": scores, "classes": classes}

    def classify(text: Any) -> dict[str, Any]:
        scores = probabilities(text)
        best = tf.argmax(scores, axis=-1)
        return {"label": tf.gather(label_names, best), "score": tf.reduce_max(scores, axis=-1)}

    def tokenize(text: Any) -> dict[str, Any]:
        return {"token_ids": vectorize(text)}

    archive = keras.export.ExportArchive()
    archive.track(vectorize)
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=text_spec)
    archive.add_endpoint("classify", classify, input_signature=text_spec)
    archive.add_endpoint("tokenize", tokenize, input_signature=text_spec)
    # TF Serving's Classify/Regress signatures over tf.Example, as family.py exports them.
    from evergreen.models.tfserving_signatures import add_example_signatures, set_method_names

    add_example_signatures(
        archive, {"text": tf.string}, lambda raw: probabilities(raw["text"]), labels
    )
    export_dir = Path(export_dir)
    archive.write_out(str(export_dir), verbose=False)
    set_method_names(export_dir)
    return export_dir


def predict_texts(
    export_dir: str | Path, texts: Sequence[str], *, batch_size: int = _BATCH
) -> list[dict[str, Any]]:
    """Classify ``texts`` with an exported SavedModel.

    Returns:
        One ``{"label": str, "score": float, "scores": {label: float}}`` per text, in order.

    Raises:
        NotFound: ``export_dir`` holds no SavedModel.
    """
    tf = tensorflow()
    export_dir = Path(export_dir)
    if not (export_dir / "saved_model.pb").is_file():
        raise NotFound(f"no SavedModel in {export_dir} (expected {export_dir / 'saved_model.pb'}).")
    serve = tf.saved_model.load(str(export_dir)).signatures["serving_default"]
    texts = [_as_text(text) for text in texts]
    results: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        out = serve(text=tf.constant(texts[start : start + batch_size], dtype=tf.string))
        for scores, classes in zip(out["scores"].numpy(), out["classes"].numpy(), strict=True):
            names = [name.decode("utf-8") for name in classes]
            best = int(np.argmax(scores))
            results.append(
                {
                    "label": names[best],
                    "score": float(scores[best]),
                    "scores": {name: float(s) for name, s in zip(names, scores, strict=True)},
                }
            )
    return results


# --------------------------------------------------------------------------------------------
# The family adapter: the text featurizer and word CNN behind the pipeline's family contract
# --------------------------------------------------------------------------------------------


def pick_text_feature(types: Mapping[str, str], configured: str) -> str:
    """The text column the model reads: ``configured`` if set, else the only text feature.

    Raises:
        ConfigError: ``configured`` is not a text feature, or there is not exactly one.
    """
    texts = [c for c, t in types.items() if t == "text"]
    if configured:
        if types.get(configured) != "text":
            raise ConfigError(
                f"train.text_feature = {configured!r} is not a text feature; text features: {texts}"
            )
        return configured
    if len(texts) != 1:
        raise ConfigError(
            f"the text model needs one text feature; found {texts or 'none'}. Set train.text_feature"
        )
    return texts[0]


class TextColumnFeaturizer:
    """A :class:`TextFeaturizer` bound to one column: the family contract for text.

    Featurized rows are ``ids`` (int64, ``sequence_length``); every text goes through the
    content-addressed cache (text hash + featurizer fingerprint) so it is tokenized once.
    """

    family = "text"

    def __init__(self, text_feature: str, inner: TextFeaturizer) -> None:
        self.text_feature = text_feature
        self.inner = inner
        self._layer: Any = None

    def to_dict(self) -> dict[str, Any]:
        return {"text_feature": self.text_feature, **self.inner.to_dict()}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> TextColumnFeaturizer:
        data = dict(data)
        column = data.pop("text_feature")
        return cls(column, TextFeaturizer.from_dict(data))

    def fit(self, rows: Iterable[Mapping[str, Any]]) -> TextColumnFeaturizer:
        self.inner.fit(row.get(self.text_feature) or "" for row in rows)
        self._layer = None
        return self

    def fingerprint(self) -> str:
        return self.inner.fingerprint()

    def properties(self) -> dict[str, Any]:
        return {
            "text_feature": self.text_feature,
            "vocabulary_size": self.inner.vocabulary_size(),
            "sequence_length": self.inner.sequence_length,
        }

    def save(self, directory: str | Path) -> Path:
        from evergreen.models.family import save_family

        self.inner.save(directory)
        save_family(directory, "text", {"text_feature": self.text_feature})
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> TextColumnFeaturizer:
        from evergreen.models.family import FAMILY_FILE

        meta = json.loads((Path(directory) / FAMILY_FILE).read_text(encoding="utf-8"))
        return cls(meta["text_feature"], TextFeaturizer.load(directory))

    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        return {"ids": ([self.inner.sequence_length], "int64")}

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: Any
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Token ids of the rows' texts: from ``cache`` where known, computed (and cached) otherwise."""
        from evergreen.components.ingest import short_hash

        ledger = {"rows_featurized": 0, "rows_reused": 0, "tokens_computed": 0, "tokens_reused": 0}
        texts = [row.get(self.text_feature) or "" for row in rows]
        length = self.inner.sequence_length
        keys = [short_hash(t) for t in texts]
        cached = cache.get(keys) if cache is not None else {}
        missing = {k: t for k, t in zip(keys, texts, strict=True) if k not in cached}
        computed: dict[str, bytes] = {}
        if missing:
            ids = self.inner.transform(list(missing.values()))
            for key, row in zip(missing, ids, strict=True):
                computed[key] = np.trim_zeros(row.astype("<i4"), "b").tobytes()
            if cache is not None:
                cache.put(computed)
        out = np.zeros((len(texts), length), dtype=np.int64)
        for i, key in enumerate(keys):
            stored = np.frombuffer(cached.get(key) or computed[key], dtype="<i4")
            out[i, : len(stored)] = stored
            if key in computed:
                ledger["rows_featurized"] += 1
                ledger["tokens_computed"] += len(stored)
                cached[key] = computed.pop(key)  # a repeat inside the chunk counts as reuse
            else:
                ledger["rows_reused"] += 1
                ledger["tokens_reused"] += len(stored)
        ledger["unknown_tokens"] = int(np.sum(out == OOV_ID))
        return {"ids": out}, ledger

    def model_inputs(self, parsed: Mapping[str, Any]) -> Any:
        return parsed["ids"]

    def keras_inputs(self) -> Any:
        keras = _keras()
        return keras.Input(shape=(self.inner.sequence_length,), dtype="int64", name="token_ids")

    def raw_signature(self) -> dict[str, Any]:
        return {"text": tensorflow().string}

    def feature_types(self) -> dict[str, str]:
        return {self.text_feature: "text"}

    def raw_columns(self) -> dict[str, str]:
        return {"text": self.text_feature}

    def serving_layers(self) -> list[Any]:
        if self._layer is None:
            self._layer = self.inner.layer()
            self._layer(tensorflow().constant([""], dtype=tensorflow().string))
        return [self._layer]

    def raw_to_model_inputs(self, raw: Mapping[str, Any]) -> Any:
        return self.serving_layers()[0](raw["text"])

    def extra_endpoints(self) -> dict[str, Any]:
        return {"tokenize": lambda text: {"token_ids": self.serving_layers()[0](text)}}

    def unknown_rate(self, rows: Sequence[Mapping[str, Any]]) -> float:
        texts = [row.get(self.text_feature) or "" for row in rows]
        return TextFeaturizer.unknown_rate(self.inner.transform(texts)) if texts else 0.0


class TextFamily:
    """The text family: a frozen vocabulary on one text column and the word CNN."""

    name = "text"

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> TextColumnFeaturizer:
        column = pick_text_feature(types, cfg.text_feature)
        return TextColumnFeaturizer(
            column, TextFeaturizer(max_tokens=cfg.max_tokens, sequence_length=cfg.sequence_length)
        )

    def load_featurizer(self, directory: str | Path) -> TextColumnFeaturizer:
        return TextColumnFeaturizer.load(directory)

    def build_model(self, featurizer: TextColumnFeaturizer, num_classes: int, cfg: Any) -> Any:
        return build_model(
            featurizer.inner.vocabulary_size(),
            num_classes,
            sequence_length=featurizer.inner.sequence_length,
        )
