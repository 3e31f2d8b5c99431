"""The text model family: a frozen-vocabulary featurizer, a word CNN, and a raw-string export.

Training reads token ids made once by :meth:`TextFeaturizer.transform`; the exported SavedModel
tokenizes in-graph with a layer made by :meth:`TextFeaturizer.layer` from the same settings and
vocabulary. Both paths go through one Keras ``TextVectorization`` configuration, so the ids a
model is trained on and the ids it is served are the same by construction.

Typical use::

    featurizer = TextFeaturizer(max_tokens=20000, sequence_length=200).fit(train_texts)
    model = build_model(featurizer.vocabulary_size(), len(labels), TextHParams(),
                        sequence_length=featurizer.sequence_length)
    compile_model(model, learning_rate=1e-3)            # evergreen.models.contract
    model.fit(featurizer.transform(train_texts), train_label_ids, epochs=4, batch_size=64)
    column = TextColumnFeaturizer("review", featurizer)  # the family contract, for the exporter
    export_serving_model(column, model, labels, export_dir)  # evergreen.models.serving_export
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
from evergreen.models.contract import (
    ConfigProblem,
    check_format,
    keras_module,
    read_family,
    save_family,
)
from evergreen.models.decision import decide, read_threshold
from evergreen.tf import tensorflow

__all__ = [
    "LAYER_NAMES",
    "OOV_ID",
    "PAD_ID",
    "TextFeaturizer",
    "TextHParams",
    "TextColumnFeaturizer",
    "TextFamily",
    "build_model",
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
# Keras TextVectorization's punctuation strip (keras/src/layers/preprocessing/text_vectorization.py)
STRIP_REGEX = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


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
        keras = keras_module()
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
        keras = keras_module()
        # max_tokens bounds adapt() only; a grown vocabulary (see grow) may exceed it, and
        # Keras refuses a given vocabulary larger than max_tokens.
        kwargs = {**self._layer_kwargs(), "max_tokens": None}
        return keras.layers.TextVectorization(vocabulary=list(self._fitted()), name=name, **kwargs)

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

    # -- growing -----------------------------------------------------------------------------

    def token_counts(self, texts: Iterable[str | bytes]) -> dict[str, int]:
        """How often each token occurs in ``texts``, tokenized exactly as :meth:`fit` does."""
        from collections import Counter

        tf = tensorflow()
        layer = self.layer("count_tokens") if self.vocabulary_ else None
        if layer is None:
            layer = keras_module().layers.TextVectorization(**self._layer_kwargs())
        counts: Counter[str] = Counter()
        batch: list[str | bytes] = []
        for text in [*texts, None]:
            if text is not None:
                batch.append(_as_text(text))
            if batch and (text is None or len(batch) == _BATCH):
                # The layer's own standardize + split (+ ngrams): the tokens adapt() would count.
                tokens = layer._preprocess(tf.constant(batch, tf.string))
                values = tokens.flat_values if hasattr(tokens, "flat_values") else tokens
                counts.update(t.decode("utf-8") for t in values.numpy().ravel() if t)
                batch = []
        return dict(counts)

    def grow(self, texts: Iterable[str | bytes], min_count: int, limit: int) -> list[str]:
        """Append the new span's frequent unknown tokens to the vocabulary (append-only).

        Known tokens keep their ids; a token not yet known that occurs at least ``min_count``
        times in ``texts`` gets the next free id, most frequent first (ties alphabetical), at
        most ``limit`` of them. ``max_tokens`` caps the first fit only: growth is bounded by
        ``limit`` per span instead. Returns the tokens added (empty: nothing changed).
        """
        known = set(self._fitted())
        counts = self.token_counts(texts)
        fresh = sorted(
            ((n, t) for t, n in counts.items() if n >= min_count and t not in known),
            key=lambda item: (-item[0], item[1]),
        )[:limit]
        added = [token for _, token in fresh]
        if added:
            self.vocabulary_ = [*self._fitted(), *added]
            self._tokenize = None
        return added

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
        check_format(meta, FORMAT_VERSION, f"text featurizer in {directory}")
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


def config_problem(cfg: Any, *, model: bool = True) -> ConfigProblem | None:
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
        ConfigError: vocab_size or sequence_length is too small (names the setting to change).
    """
    keras = keras_module()
    hp = hparams if hparams is not None else TextHParams()
    if num_classes < 2:
        raise DataError(
            f"a text classifier needs at least 2 classes; the training data has {num_classes}."
        )
    if vocab_size < 3:
        raise ConfigError(
            f"vocab_size={vocab_size} is too small: expected >= 3 (ids 0 and 1 are reserved); "
            "raise train.max_tokens to 3 or more."
        )
    if sequence_length is not None and sequence_length < hp.kernel_size:
        raise ConfigError(
            f"sequence_length={sequence_length} is shorter than kernel_size={hp.kernel_size}: "
            "raise the featurizer's sequence_length (train.sequence_length) or lower kernel_size."
        )
    layers = keras.layers
    inputs = keras.Input(shape=(sequence_length,), dtype="int64", name="token_ids")
    x = layers.Embedding(vocab_size, hp.embedding_dim, name=LAYER_NAMES[0])(inputs)
    x = layers.Conv1D(hp.conv_filters, hp.kernel_size, activation="relu", name=LAYER_NAMES[1])(x)
    x = layers.GlobalMaxPooling1D(name=LAYER_NAMES[2])(x)
    x = layers.Dropout(hp.dropout, name=LAYER_NAMES[3])(x)
    outputs = layers.Dense(num_classes, activation="softmax", name=LAYER_NAMES[4])(x)
    return keras.Model(inputs, outputs, name="text_cnn")


# --------------------------------------------------------------------------------------------
# Prediction
# --------------------------------------------------------------------------------------------


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
    threshold = read_threshold(export_dir)  # a binary model's exported decision threshold
    texts = [_as_text(text) for text in texts]
    results: list[dict[str, Any]] = []
    for start in range(0, len(texts), batch_size):
        out = serve(text=tf.constant(texts[start : start + batch_size], dtype=tf.string))
        for scores, classes in zip(out["scores"].numpy(), out["classes"].numpy(), strict=True):
            names = [name.decode("utf-8") for name in classes]
            best = decide(scores[np.newaxis, :], names, threshold)[0]
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

    @property
    def sequence_length(self) -> int:
        """Ids per text (:class:`~evergreen.models.contract.SequenceSized`)."""
        return self.inner.sequence_length

    @sequence_length.setter
    def sequence_length(self, value: int) -> None:
        self.inner.sequence_length = value
        self._layer = None

    @property
    def min_sequence_length(self) -> int:
        """The shortest sequence the word CNN accepts: its Conv1D kernel."""
        return TextHParams().kernel_size

    def vocabulary(self) -> list[str]:
        """All tokens by id, reserved ones included (:meth:`TextFeaturizer.vocabulary`)."""
        return self.inner.vocabulary()

    def text_vocabulary(self) -> set[str]:
        """The learned tokens (reserved ids left out), for drift's unknown-word rate."""
        return set(self.inner.vocabulary()[len(_RESERVED) :])

    def tokenizer_spec(self) -> dict[str, Any]:
        """How a text becomes token ids, for an app that tokenizes without TensorFlow."""
        inner = self.inner
        return {
            "input": "token_ids",
            "dtype": "int64",
            "sequence_length": inner.sequence_length,
            "pad_id": PAD_ID,
            "oov_id": OOV_ID,
            "vocabulary_file": "vocabulary.txt",
            "vocabulary_size": inner.vocabulary_size(),
            "standardize": STANDARDIZE,
            # What Keras's TextVectorization does, step by step (tf.strings.lower without an
            # encoding lowercases ASCII only; the split is on runs of ASCII whitespace).
            "lowercase": "ASCII A-Z only; other characters are left as they are",
            "strip_regex": STRIP_REGEX,
            "strip": "delete every match of strip_regex (after lowercasing)",
            "split": SPLIT,
            "split_on": "runs of ASCII whitespace (space, \\t, \\n, \\v, \\f, \\r)",
            "ngrams": inner.ngrams,
            "ngrams_rule": "when ngrams = n is set: the split tokens, then every 2-gram, …, n-gram "
            "of consecutive tokens joined by one space, before truncation",
            "truncate": "keep the first sequence_length tokens",
            "pad": "append pad_id up to sequence_length",
            "unknown": "a token not in vocabulary.txt becomes oov_id",
            "text_column": self.text_feature,
            "fingerprint": inner.fingerprint(),
        }

    def properties(self) -> dict[str, Any]:
        return {
            "text_feature": self.text_feature,
            "vocabulary_size": self.inner.vocabulary_size(),
            "sequence_length": self.inner.sequence_length,
        }

    def save(self, directory: str | Path) -> Path:
        self.inner.save(directory)
        save_family(directory, "text", {"text_feature": self.text_feature})
        return Path(directory)

    @classmethod
    def load(cls, directory: str | Path) -> TextColumnFeaturizer:
        return cls(read_family(directory)["text_feature"], TextFeaturizer.load(directory))

    def grow(
        self, rows: Iterable[Mapping[str, Any]], min_count: int, limit: int
    ) -> dict[str, list[str]]:
        """Append the rows' frequent unknown tokens (:meth:`TextFeaturizer.grow`).

        Returns:
            ``{text column: tokens added}``, empty when nothing was added.
        """
        added = self.inner.grow(
            (row.get(self.text_feature) or "" for row in rows), min_count, limit
        )
        self._layer = None
        return {self.text_feature: added} if added else {}

    def embedding_rows(self) -> dict[str, tuple[int, int]]:
        """Embedding layer → (rows it needs, the unknown id whose row new ids start from)."""
        return {LAYER_NAMES[0]: (self.inner.vocabulary_size(), OOV_ID)}

    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        return {"ids": ([self.inner.sequence_length], "int64")}

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: Any = None
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Token ids of the rows' texts, every one tokenized here (``cache`` is ignored).

        There is no token cache: dedupe leaves about 1 % of texts repeated, and a lookup cost
        more than tokenizing. The ledger counts the tokens computed (padding excluded).
        """
        texts = [row.get(self.text_feature) or "" for row in rows]
        out = np.asarray(self.inner.transform(texts), dtype=np.int64)
        tokens = int(np.count_nonzero(out != PAD_ID))
        ledger = {
            "rows_featurized": len(texts),
            "rows_reused": 0,
            "tokens_computed": tokens,
            "tokens_reused": 0,
            "unknown_tokens": int(np.sum(out == OOV_ID)),
        }
        return {"ids": out}, ledger

    def model_inputs(self, parsed: Mapping[str, Any]) -> Any:
        return parsed["ids"]

    def keras_inputs(self) -> Any:
        keras = keras_module()
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
