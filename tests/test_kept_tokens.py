"""An increment tokenizes its new train texts once: featurize reuses the growth pass's tokens."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from evergreen.models import kept_tokens
from evergreen.models.text import TextColumnFeaturizer
from evergreen.models.text_featurizer import TextFeaturizer
from tests.conftest import dataset, read_csv


def _rows() -> list[dict[str, str]]:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    return [dict(zip(header, row, strict=True)) for row in rows]


def _grown(tmp_path: Path, ngrams: int | None) -> tuple[TextColumnFeaturizer, list, Path]:
    """A featurizer fit on 600 reviews, grown on the next 300, saved with the growth's tokens."""
    rows = _rows()
    inner = TextFeaturizer(max_tokens=3000, sequence_length=64, ngrams=ngrams)
    featurizer = TextColumnFeaturizer("review", inner).fit(rows[:600])
    new = rows[600:900]
    assert featurizer.grow(new, min_count=2, limit=500)["review"], "new reviews bring new words"
    assert featurizer.kept_tokens is not None
    featurizer.save(tmp_path / "grown")
    kept_tokens.write(tmp_path / "grown", *featurizer.kept_tokens)
    return TextColumnFeaturizer.load(tmp_path / "grown"), new, tmp_path / "grown"


@pytest.mark.parametrize("ngrams", [None, 2])
def test_featurize_looks_up_the_growth_pass_tokens_and_gets_the_same_ids(
    tmp_path: Path, ngrams: int | None
) -> None:
    featurizer, new, folder = _grown(tmp_path, ngrams)
    kept = kept_tokens.read(folder)
    assert kept is not None and len(kept) == 300
    # In chunks, as FeaturizeSpan reads the span: each chunk says where it starts.
    parts = [
        featurizer.featurize(new[i : i + 128], None, kept=kept, start=i) for i in (0, 128, 256)
    ]
    ids = np.concatenate([arrays["ids"] for arrays, _ in parts])
    expected, fresh = featurizer.featurize(new, None)  # nothing kept: every text tokenized
    np.testing.assert_array_equal(ids, expected["ids"])
    for key in ("unknown_tokens", "tokens_untruncated", "rows_featurized"):
        assert sum(ledger[key] for _, ledger in parts) == fresh[key]
    # Nothing was tokenized again; the same tokens were booked as reused.
    assert sum(ledger["tokens_computed"] for _, ledger in parts) == 0
    assert sum(ledger["tokens_reused"] for _, ledger in parts) == fresh["tokens_computed"] > 0
    assert fresh["tokens_reused"] == 0


def test_rows_whose_text_does_not_match_the_kept_row_are_tokenized(tmp_path: Path) -> None:
    featurizer, new, folder = _grown(tmp_path, None)
    kept = kept_tokens.read(folder)
    rows = [*new[:100], *_rows()[950:1000], *new[150:]]  # rows 100-149 are other reviews
    arrays, ledger = featurizer.featurize(rows, None, kept=kept, start=0)
    expected, fresh = featurizer.featurize(rows, None)
    np.testing.assert_array_equal(arrays["ids"], expected["ids"])
    counts = np.count_nonzero(expected["ids"], axis=1)
    assert ledger["tokens_computed"] == counts[100:150].sum() > 0
    assert ledger["tokens_reused"] == counts[:100].sum() + counts[150:].sum()


def test_a_growth_pass_over_the_limit_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(kept_tokens, "LIMIT", 1000)  # the 300 reviews hold far more tokens
    rows = _rows()
    featurizer = TextColumnFeaturizer("review", TextFeaturizer(max_tokens=3000)).fit(rows[:600])
    featurizer.grow(rows[600:900], min_count=2, limit=500)
    assert featurizer.kept_tokens is None


def test_an_increment_whose_growth_adds_nothing_still_tokenizes_its_texts_once(
    tmp_path: Path,
) -> None:
    """Span 2 repeats span 1's reviews under other products: every word is known, the growth
    adds nothing and the champion's featurizer featurizes the span — from the growth's tokens."""
    from evergreen import config as config_mod
    from evergreen.loop import TrainingLoop
    from evergreen.project import Project
    from tests.conftest import write_config, write_csv

    header, rows = read_csv(dataset("fine_foods_train.csv"))
    product = header.index("product")
    project = tmp_path / "known"
    write_csv(project / "data" / "span-1" / "r.csv", header, rows[:600])
    again = [list(row) for row in rows[:200]]
    for row in again:
        row[product] = "B000REPEAT"
    write_csv(project / "data" / "span-2" / "r.csv", header, again)
    extra = "[train]\nepochs = 1\nincremental_epochs = 1\nfull_after_growth = 0\n\n"
    extra += '[drift]\nfull_retrain_on = "never"\n'
    config = write_config(project, label="score", extra=extra)
    with Project(config_mod.load(config)) as opened:
        records = TrainingLoop(opened).run()
        assert [r.mode for r in records] == ["full", "incremental"]
        assert records[1].featurizer_growth is None  # the growth added nothing
        [grow] = opened.store.runs(component="grow-featurizer")
        featurize = [r for r in opened.store.runs(component="featurize") if r.span == 2]
        [ledger] = [r.summary for r in featurize]
    assert ledger["tokens_reused"] > 0  # the train texts: looked up, not tokenized again
    # Span 2's texts were tokenized once: its train texts by the growth pass, the rest here.
    assert records[1].ledger.tokens_computed == (
        grow.summary["tokens_computed"] + ledger["tokens_computed"]
    )
