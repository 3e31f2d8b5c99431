"""The text model family: a word CNN on a frozen vocabulary, bound to one text column.

The featurizer is :class:`~evergreen.models.text_featurizer.TextFeaturizer`;
:class:`TextColumnFeaturizer` binds it to a column for the family contract, and
:class:`TextFamily` builds the word CNN on it. Typical use outside the pipeline::

    featurizer = TextFeaturizer(max_tokens=20000, sequence_length=200).fit(train_texts)
    model = build_model(featurizer.vocabulary_size(), len(labels), TextHParams(),
                        sequence_length=featurizer.sequence_length)
    compile_model(model, learning_rate=1e-3)            # evergreen.models.contract
    model.fit(featurizer.transform(train_texts), train_label_ids, epochs=4, batch_size=64)
    column = TextColumnFeaturizer("review", featurizer)  # the family contract, for the exporter
    export_serving_model(column, model, labels, export_dir)  # evergreen.models.serving_export
    predict_texts(export_dir, ["Great coffee, will buy again."])
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.models.contract import ConfigProblem, keras_module, read_family, save_family
from evergreen.models.decision import decide, read_threshold
from evergreen.models.kept_tokens import KeptTokens
from evergreen.models.text_featurizer import (
    BATCH,
    OOV_ID,
    PAD_ID,
    RESERVED,
    SPLIT,
    STANDARDIZE,
    STRIP_REGEX,
    TextFeaturizer,
    as_text,
    did_you_mean,
)
from evergreen.tf import tensorflow

__all__ = [
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

# The model's layers from input to output; freeze_lower(model, n) freezes the first n.
LAYER_NAMES = ("embedding", "conv", "pool", "dropout", "classifier")


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
                    + did_you_mean(key, known)
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
    export_dir: str | Path, texts: Sequence[str], *, batch_size: int = BATCH
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
    texts = [as_text(text) for text in texts]
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

    Featurized rows are ``ids`` (int64, ``sequence_length``), tokenized once per row when the
    span is featurized. ``sequence_length`` is set before :meth:`fit` (see
    :class:`~evergreen.models.contract.SequenceSized`); after it the featurizer is frozen.
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
        return set(self.inner.vocabulary()[len(RESERVED) :])

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

    @property
    def tokens_counted(self) -> int:
        """Tokens the last :meth:`fit` or :meth:`grow` tokenized (the fit and growth passes'
        work, booked in the run's ledger)."""
        return self.inner.tokens_counted_

    def feature_spec(self) -> dict[str, tuple[list[int], str]]:
        return {"ids": ([self.inner.sequence_length], "int64")}

    def featurize(
        self,
        rows: Sequence[Mapping[str, Any]],
        cache: Any = None,
        *,
        kept: KeptTokens | None = None,
        start: int = 0,
    ) -> tuple[dict[str, np.ndarray], dict[str, int]]:
        """Token ids of the rows' texts (``cache`` is ignored).

        There is no token cache across runs: dedupe leaves about 1 % of texts repeated, and a
        lookup cost more than tokenizing. ``kept``: the tokens the growth pass computed for the
        span's train texts, ``start`` the first row's index among them; the texts that match
        are only looked up, not tokenized again (:mod:`evergreen.models.kept_tokens`). The
        ledger counts the tokens computed here and those reused (padding excluded), and
        ``tokens_untruncated``, the texts' tokens before the cut to ``sequence_length``: what a
        fit on the same texts counts (see :func:`evergreen.loop.span_run.full_retrain_cost`).
        """
        texts = [row.get(self.text_feature) or "" for row in rows]
        tokens, matches = kept.rows(start, texts) if kept is not None else (None, None)
        ids, untruncated = self.inner.transform_counted(texts, tokens, matches)
        out = np.asarray(ids, dtype=np.int64)
        counts = np.count_nonzero(out != PAD_ID, axis=1)
        reused = matches if matches is not None else np.zeros(len(texts), dtype=bool)
        ledger = {
            "rows_featurized": len(texts),
            "rows_reused": 0,
            "tokens_computed": int(counts[~reused].sum()),
            "tokens_reused": int(counts[reused].sum()),
            "unknown_tokens": int(np.sum(out == OOV_ID)),
            "tokens_untruncated": untruncated,
        }
        return {"ids": out}, ledger

    @property
    def kept_tokens(self) -> tuple[Any, list[str | bytes]] | None:
        """The last :meth:`grow`'s tokens and texts (None: none kept), to write beside it."""
        return self.inner.kept_

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
