"""An increment tokenizes its new train texts once: featurize reuses the growth pass's tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evergreen.models import kept_tokens
from evergreen.models.kept_tokens import KEPT
from evergreen.models.text import TextColumnFeaturizer
from evergreen.models.text_featurizer import TextFeaturizer
from tests.conftest import dataset, read_csv


def _rows() -> list[dict[str, str]]:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    return [dict(zip(header, row, strict=True)) for row in rows]


def _grown(tmp_path: Path, ngrams: int | None) -> tuple[TextColumnFeaturizer, list, list]:
    """A featurizer fit on 600 reviews, grown on the next 300 (kept), saved and loaded back."""
    rows = _rows()
    history, new, other = rows[:600], rows[600:900], rows[900:1000]
    inner = TextFeaturizer(max_tokens=3000, sequence_length=64, ngrams=ngrams)
    featurizer = TextColumnFeaturizer("review", inner).fit(history)
    added = featurizer.grow(new, min_count=2, limit=500)
    assert added["review"], "the new reviews bring tokens the history did not have"
    featurizer.save(tmp_path / "grown")
    return TextColumnFeaturizer.load(tmp_path / "grown"), new, other


@pytest.mark.parametrize("ngrams", [None, 2])
def test_featurize_reuses_the_growth_pass_tokens_with_the_same_ids(
    tmp_path: Path, ngrams: int | None
) -> None:
    featurizer, new, other = _grown(tmp_path, ngrams)
    rows = [*other[:50], *new, *other[50:]]  # mixed: kept and not kept, in any order
    arrays, ledger = featurizer.featurize(rows, None)

    KEPT.clear()  # the same featurizer with nothing kept tokenizes every text
    fresh = TextColumnFeaturizer.load(tmp_path / "grown")
    expected, full = fresh.featurize(rows, None)
    np.testing.assert_array_equal(arrays["ids"], expected["ids"])
    assert ledger["unknown_tokens"] == full["unknown_tokens"]
    assert ledger["tokens_untruncated"] == full["tokens_untruncated"]
    # Only the 100 texts the growth pass did not see were tokenized; the 300 were looked up.
    counts = np.count_nonzero(expected["ids"], axis=1)
    assert ledger["tokens_reused"] == counts[50:350].sum() > 0
    assert ledger["tokens_computed"] == counts[:50].sum() + counts[350:].sum() > 0
    assert full["tokens_reused"] == 0 and full["tokens_computed"] == counts.sum()


def test_a_growth_pass_over_the_limit_keeps_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(kept_tokens, "LIMIT", 1000)  # the 300 reviews hold far more tokens
    featurizer, new, _ = _grown(tmp_path, None)
    _, ledger = featurizer.featurize(new, None)
    assert ledger["tokens_reused"] == 0 and ledger["tokens_computed"] > 1000


def test_other_tokenizer_settings_do_not_reuse_kept_tokens(tmp_path: Path) -> None:
    featurizer, new, _ = _grown(tmp_path, None)  # kept with words only
    bigrams = TextColumnFeaturizer(
        "review", TextFeaturizer(max_tokens=3000, sequence_length=64, ngrams=2)
    ).fit(_rows()[:600])
    _, ledger = bigrams.featurize(new, None)
    assert ledger["tokens_reused"] == 0 and ledger["tokens_computed"] > 0
    _, ledger = featurizer.featurize(new, None)
    assert ledger["tokens_computed"] == 0 and ledger["tokens_reused"] > 0
