"""The text featurizer: raw texts to fixed-length token ids, with a vocabulary learned once.

Training reads token ids made once by :meth:`TextFeaturizer.transform`; the exported SavedModel
tokenizes in-graph with a layer made by :meth:`TextFeaturizer.layer` from the same settings and
vocabulary. Both paths go through one Keras ``TextVectorization`` configuration, so the ids a
model is trained on and the ids it is served are the same by construction.

Token ids: 0 is padding, 1 is the unknown (out-of-vocabulary) token, learned tokens start at 2
in order of decreasing frequency (ties broken by Keras deterministically).
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.models import kept_tokens
from evergreen.models.contract import check_format, keras_module
from evergreen.tf import tensorflow

__all__ = ["OOV_ID", "PAD_ID", "TextFeaturizer", "as_text", "did_you_mean"]

PAD_ID = 0
OOV_ID = 1
RESERVED = ("", "[UNK]")  # what Keras puts at ids 0 and 1; never written to vocabulary.txt
STANDARDIZE = "lower_and_strip_punctuation"
SPLIT = "whitespace"
FORMAT_VERSION = 1
VOCABULARY_FILE = "vocabulary.txt"
CONFIG_FILE = "featurizer.json"
BATCH = 1024  # strings per TextVectorization call: per-call overhead dominates below this
# Keras TextVectorization's punctuation strip (keras/src/layers/preprocessing/text_vectorization.py)
STRIP_REGEX = r'[!"#$%&()\*\+,-\./:;<=>?@\[\\\]^_`{|}~\']'


def as_text(value: Any) -> str | bytes:
    """A text value as the tokenizer takes it; None (a missing value) is an empty text.

    Raises:
        TypeError: the value is neither str nor bytes.
    """
    # A missing value featurizes as an empty text (all padding) rather than failing a batch.
    if value is None:
        return ""
    if isinstance(value, str | bytes):
        return value
    raise TypeError(f"expected a text (str or bytes), got {type(value).__name__}: {value!r:.80}")


def did_you_mean(name: str, known: Iterable[str]) -> str:
    """`` Did you mean 'x'?`` for the closest of ``known``, or "" when none is close."""
    close = difflib.get_close_matches(name, list(known), n=1)
    return f" Did you mean {close[0]!r}?" if close else ""


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
        # Tokens the last fit or grow tokenized (n-grams included), for the run's ledger; not
        # saved: it is work done, not state.
        self.tokens_counted_: int = 0
        # The last grow's tokens and texts (see token_counts), for featurize; not saved here.
        self.kept_: tuple[Any, list[str | bytes]] | None = None
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
                    + did_you_mean(key, known)
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
                yield as_text(text)

        dataset = tf.data.Dataset.from_generator(
            stream, output_signature=tf.TensorSpec(shape=[], dtype=tf.string)
        ).batch(BATCH)
        layer = keras.layers.TextVectorization(**self._layer_kwargs())
        self.tokens_counted_ = _adapt_counting(layer, dataset)
        if seen == 0:
            raise DataError("text featurizer got no texts to fit: expected at least one string.")
        vocabulary = [str(token) for token in layer.get_vocabulary()]
        if tuple(vocabulary[:2]) != RESERVED:  # a Keras change we must not paper over
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
        return [*RESERVED, *self._fitted()]

    def vocabulary_size(self) -> int:
        """Number of ids, reserved ones included: the embedding's input size."""
        return len(self._fitted()) + len(RESERVED)

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

    def layer(self, name: str = "text_vectorization", *, ragged: bool = False) -> Any:
        """A new Keras ``TextVectorization`` layer with the fixed vocabulary (no adapt needed).

        This is the one place the tokenizer is built: :meth:`transform` and the exported
        SavedModel both use it. ``ragged=True``: the ids of each text uncut and unpadded
        (:meth:`transform_counted` cuts them itself, as the layer would).
        """
        keras = keras_module()
        # max_tokens bounds adapt() only; a grown vocabulary (see grow) may exceed it, and
        # Keras refuses a given vocabulary larger than max_tokens.
        kwargs = {**self._layer_kwargs(), "max_tokens": None}
        if ragged:  # Keras refuses an output_sequence_length with ragged output
            kwargs.update(ragged=True, output_sequence_length=None)
        return keras.layers.TextVectorization(vocabulary=list(self._fitted()), name=name, **kwargs)

    def transform(self, texts: Sequence[str | bytes]) -> np.ndarray:
        """Token ids of ``texts``: int64 array of shape ``(len(texts), sequence_length)``.

        Texts are tokenized in batches of 1024 in one graph call each. ``None`` counts as "".
        """
        return self.transform_counted(texts)[0]

    def transform_counted(
        self, texts: Sequence[str | bytes], kept: Any = None, matches: Any = None
    ) -> tuple[np.ndarray, int]:
        """:meth:`transform`'s ids, and how many tokens the texts held before truncation.

        The count is what :meth:`fit` (and :meth:`grow`) would count on the same texts, read
        off the tokenizer's own output: the layer returns ragged ids, which are cut and padded
        here with the very call Keras makes inside a ``TextVectorization`` with an
        ``output_sequence_length`` (``to_tensor`` with that width), so the ids are those of
        :meth:`layer`, the one the SavedModel serves with (tested).

        ``kept``, ``matches``: the tokens a growth pass already computed for the texts where
        ``matches`` is True (ragged strings, one row per such text, in order;
        :mod:`evergreen.models.kept_tokens`). Those are only looked up, not tokenized again.
        """
        tf = tensorflow()
        texts = [as_text(t) for t in texts]
        reused = np.zeros(len(texts), dtype=bool) if matches is None else np.asarray(matches)
        ids = np.zeros((len(texts), self.sequence_length), dtype=np.int64)
        untruncated = 0
        fresh = np.flatnonzero(~reused)
        for start in range(0, len(fresh), BATCH):
            part = fresh[start : start + BATCH]
            dense, count = self._tokenizer()(tf.constant([texts[i] for i in part], tf.string))
            ids[part] = dense.numpy()
            untruncated += int(count)
        if reused.any():
            # The ragged layer's own lookup on the kept tokens: the rest of what it would do.
            dense, count = self._tokenizer().python_function.look_up(kept)
            ids[reused] = dense.numpy()
            untruncated += int(count)
        return ids, untruncated

    def _tokenizer(self) -> Any:
        """The traced :class:`_CountingTokenizer` of this vocabulary (built once)."""
        tf = tensorflow()
        if self._tokenize is None:
            self._tokenize = tf.function(
                _CountingTokenizer(self.layer(ragged=True), self.sequence_length),
                input_signature=[tf.TensorSpec(shape=[None], dtype=tf.string)],
            )
        return self._tokenize

    @staticmethod
    def unknown_rate(ids: np.ndarray) -> float:
        """Fraction of non-padding ids that are the unknown id (0.0 when all are padding).

        Only the first ``sequence_length`` tokens of each text count (the rest were cut).
        """
        ids = np.asarray(ids)
        tokens = int(np.count_nonzero(ids != PAD_ID))
        return float(np.count_nonzero(ids == OOV_ID)) / tokens if tokens else 0.0

    # -- growing -----------------------------------------------------------------------------

    def token_counts(self, texts: Iterable[str | bytes], *, keep: bool = False) -> dict[str, int]:
        """How often each token occurs in ``texts``, tokenized exactly as :meth:`fit` does.

        ``keep``: keep the texts' tokens in ``kept_`` as (ragged tokens, texts), for the
        featurize pass after this one (:mod:`evergreen.models.kept_tokens`); None when there
        are more than ``kept_tokens.LIMIT``.
        """
        tf = tensorflow()
        layer = self.layer("count_tokens") if self.vocabulary_ else None
        if layer is None:
            layer = keras_module().layers.TextVectorization(**self._layer_kwargs())
        counts: Counter[str] = Counter()
        batch: list[str | bytes] = []
        kept_texts: list[str | bytes] = []
        kept: list[Any] | None = [] if keep else None
        counted = 0
        self.kept_ = None
        for text in [*texts, None]:
            if text is not None:
                batch.append(as_text(text))
            if batch and (text is None or len(batch) == BATCH):
                # The layer's own standardize + split (+ ngrams): the tokens adapt() would count.
                tokens = layer._preprocess(tf.constant(batch, tf.string))
                values = tokens.flat_values if hasattr(tokens, "flat_values") else tokens
                counts.update(t.decode("utf-8") for t in values.numpy().ravel() if t)
                counted += int(values.shape[0])
                if kept is not None and hasattr(tokens, "flat_values"):
                    kept_texts += batch
                    kept.append(tokens)
                    if counted > kept_tokens.LIMIT:  # too many to hold: keep nothing
                        kept = None
                batch = []
        if kept:
            self.kept_ = (tf.concat(kept, axis=0), kept_texts)
        return dict(counts)

    def grow(self, texts: Iterable[str | bytes], min_count: int, limit: int) -> list[str]:
        """Append the new span's frequent unknown tokens to the vocabulary (append-only).

        Known tokens keep their ids; a token not yet known that occurs at least ``min_count``
        times in ``texts`` gets the next free id, most frequent first (ties alphabetical), at
        most ``limit`` of them. ``max_tokens`` caps the first fit only: growth is bounded by
        ``limit`` per span instead. Returns the tokens added (empty: nothing changed).
        """
        known = set(self._fitted())
        counts = self.token_counts(texts, keep=True)  # featurize reuses these tokens
        self.tokens_counted_ = sum(counts.values())
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


def _adapt_counting(layer: Any, dataset: Any) -> int:
    """``layer.adapt(dataset)``, step by step, returning the tokens it counted.

    The steps are those of Keras' ``TextVectorization.adapt`` (``reset_state``, then
    ``update_state`` per batch, then ``finalize_state``; the vocabulary is the same, tested
    against ``adapt``). Between the last update and the finalize, the layer's token-count
    table holds every token it counted: its sum is the fit's tokens, read off the counts adapt
    keeps anyway (one pass over the vocabulary, not a second pass over the texts).
    """
    layer.reset_state()
    for batch in dataset:
        layer.update_state(batch)
    _, counts = layer._lookup_layer.token_counts.export()
    counted = int(np.sum(counts.numpy()))
    layer.finalize_state()
    return counted


class _CountingTokenizer:
    """A ragged ``TextVectorization``'s ids cut and padded to ``width``, and the uncut count.

    A callable object rather than a closure: TensorFlow's retracing detector keys a function by
    its code, so one closure traced once per loaded featurizer read as "retracing" and logged a
    warning in every run of more than a few spans.
    """

    def __init__(self, ragged: Any, width: int) -> None:
        self.ragged = ragged
        self.width = width

    def __call__(self, batch: Any) -> tuple[Any, Any]:
        return self._cut(self.ragged(batch))

    def look_up(self, tokens: Any) -> tuple[Any, Any]:
        """The same answer for texts already tokenized (ragged strings): the lookup only."""
        return self._cut(self.ragged._lookup_layer(tokens))

    def _cut(self, ids: Any) -> tuple[Any, Any]:
        tf = tensorflow()
        dense = ids.to_tensor(default_value=PAD_ID, shape=[None, self.width])
        return dense, tf.size(ids.flat_values, out_type=tf.int64)
