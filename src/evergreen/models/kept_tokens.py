"""The growth pass's tokens, kept for the featurize pass that follows it in the same process.

An increment tokenizes its new span twice if nothing is kept: the growth pass
(:meth:`TextFeaturizer.grow`) tokenizes the span's train texts to count unknown tokens, then
featurize tokenizes every text of the span to give it ids under the grown vocabulary. Tokens
(standardize, split, n-grams) do not depend on the vocabulary, only on the ids looked up for
them, so the second tokenization of the train texts is work done twice — and, with a paid
tokenizer, paid twice. The growth pass keeps its tokens here; featurize looks the ids of the
texts it finds here up with the grown vocabulary's own lookup layer and tokenizes only the rest.

What is kept is a pure function of the text and the tokenizer settings, so a stale entry is
never wrong, only memory: each growth pass replaces what the last one kept, and a pass over
more than :data:`LIMIT` tokens keeps nothing (a full retrain's vocabulary fit over the whole
history is not kept: its tokens would not fit in memory at scale, and it tokenizes its train
texts again when it featurizes, as TFX Transform's analyze and transform passes do).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evergreen.tf import tensorflow

# Tokens kept at most (~30 bytes each in a string tensor): a new span of ~10,000 reviews.
LIMIT = 1_000_000


class KeptTokens:
    """Token rows of the texts one growth pass tokenized, by text, for one tokenizer setting."""

    def __init__(self) -> None:
        self.settings: Any = None
        self.rows: dict[str | bytes, int] = {}
        self.tokens: Any = None  # a tf.RaggedTensor of strings, one row per kept text

    def keep(self, settings: Any, texts: Sequence[str | bytes], batches: list[Any]) -> None:
        """Keep ``batches`` (ragged string tokens, in order) as the tokens of ``texts``."""
        self.clear()
        if not batches or sum(int(b.flat_values.shape[0]) for b in batches) > LIMIT:
            return
        self.settings = settings
        self.tokens = tensorflow().concat(batches, axis=0)
        self.rows = {text: i for i, text in enumerate(texts)}

    def clear(self) -> None:
        self.settings, self.rows, self.tokens = None, {}, None

    def find(self, settings: Any, texts: Sequence[str | bytes]) -> list[int]:
        """For each text, the row of its kept tokens, or -1 when it has none."""
        if settings != self.settings or not self.rows:
            return [-1] * len(texts)
        return [self.rows.get(text, -1) for text in texts]

    def gather(self, rows: Sequence[int]) -> Any:
        """The kept token rows ``rows`` (all found by :meth:`find`), as one ragged tensor."""
        return tensorflow().gather(self.tokens, list(rows))


KEPT = KeptTokens()
