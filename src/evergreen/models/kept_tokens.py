"""The growth pass's tokens of a span's train texts, kept beside the grown featurizer.

An increment tokenizes its new span twice if nothing is kept: the growth pass
(:meth:`TextFeaturizer.grow`) tokenizes the span's train texts to count unknown tokens, then
featurize tokenizes every text of the span to give it ids under the grown vocabulary. Tokens
(standardize, split, n-grams) do not depend on the vocabulary, only the ids looked up for them
do, so the second tokenization of the train texts is work done twice — and, with a paid
tokenizer, paid twice. The growth component writes the tokens into the grown featurizer's
artifact (:func:`write`), and featurize of that span reads them back (:func:`read`) and only
looks their ids up.

They go through the artifact, not the process's memory, so what a version cost does not
depend on the process: a run killed after the growth committed resumes with the same tokens.
Each row's tokens are stored with a digest of its text, and a row whose text does not match is
tokenized again. A pass over more than :data:`LIMIT` tokens keeps nothing (a full retrain's
vocabulary fit over the whole history is not kept either: it tokenizes its train texts again
when it featurizes, as TFX Transform's analyze and transform passes do).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.tf import tensorflow

# Tokens kept at most: a new span of ~10,000 reviews (~7 MB on disk).
LIMIT = 1_000_000
FOLDER = "growth_tokens"
_TOKENS, _SPLITS, _DIGESTS = "tokens.txt", "row_splits.npy", "text_digests.npy"


def text_digests(texts: Sequence[str | bytes]) -> np.ndarray:
    """An 8-byte digest per text (what a kept row is matched against)."""
    out = np.empty(len(texts), dtype=np.uint64)
    for i, text in enumerate(texts):
        data = text.encode("utf-8") if isinstance(text, str) else text
        out[i] = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
    return out


class KeptTokens:
    """The token rows of some texts, in order, with each text's digest."""

    def __init__(self, tokens: Any, digests: np.ndarray) -> None:
        self.tokens = tokens  # a tf.RaggedTensor of strings, one row per text
        self.digests = digests

    def __len__(self) -> int:
        return len(self.digests)

    def rows(self, start: int, texts: Sequence[str | bytes]) -> tuple[Any, np.ndarray]:
        """The kept rows ``start …`` for ``texts``: (their tokens, which texts match).

        Only matching rows' tokens are returned (in order); the others must be tokenized.
        """
        end = min(start + len(texts), len(self.digests))
        matches = np.zeros(len(texts), dtype=bool)
        matches[: end - start] = self.digests[start:end] == text_digests(texts[: end - start])
        rows = start + np.flatnonzero(matches)
        return tensorflow().gather(self.tokens, rows), matches


def write(directory: Path, tokens: Any, texts: Sequence[str | bytes]) -> None:
    """Write ``tokens`` (ragged strings, a row per text of ``texts``) under ``directory``."""
    folder = directory / FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    # Tokens never contain a line break (whitespace splits them), so lines separate them.
    (folder / _TOKENS).write_bytes(b"\n".join(tokens.flat_values.numpy().tolist()))
    np.save(folder / _SPLITS, tokens.row_splits.numpy().astype(np.int64))
    np.save(folder / _DIGESTS, text_digests(texts))


def read(directory: Path) -> KeptTokens | None:
    """The tokens :func:`write` kept under ``directory`` (None: none were kept)."""
    folder = directory / FOLDER
    if not (folder / _DIGESTS).is_file():
        return None
    tf = tensorflow()
    splits = np.load(folder / _SPLITS)
    data = (folder / _TOKENS).read_bytes()
    flat = data.split(b"\n") if splits[-1] else []
    tokens = tf.RaggedTensor.from_row_splits(tf.constant(flat, tf.string), splits)
    return KeptTokens(tokens, np.load(folder / _DIGESTS))
