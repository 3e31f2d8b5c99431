"""The demo's support-ticket stream: hard enough and drifting enough that increments show.

The stream (:mod:`evergreen.demo`) is checked twice: as data (deterministic per seed, day 0
without the phrasings later days bring, neighbouring intents sharing words), and through the
loop: day 0's model is well below what the stream allows on the later days, and the published
increments, each trained on the new day plus a replay sample, beat it on the later days' eval
rows by far more than the noise of those rows.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen import demo
from evergreen.components.evaluate import score_saved_model
from evergreen.components.featurize import span_texts
from evergreen.loop import TrainingLoop, champion_saved_model
from evergreen.project import Project
from evergreen.registry import Registry

DAYS, DAY0_ROWS, DAILY_ROWS = 4, 600, 600


def _words(texts: list[str]) -> set[str]:
    return {w for t in texts for w in re.findall(r"[a-z0-9']+", t.lower())}


def _template_words(templates: list[str]) -> set[str]:
    return _words([t.replace("{product}", " ") for t in templates])


def test_the_same_seed_gives_the_same_tickets_and_another_seed_others() -> None:
    first = list(demo.generate_day(2, 200, seed=3))
    assert first == list(demo.generate_day(2, 200, seed=3))
    assert [r["text"] for r in first] != [r["text"] for r in demo.generate_day(2, 200, seed=4)]
    assert {r["intent"] for r in first} == set(demo.INTENTS) and len(demo.INTENTS) == 8


def test_later_days_bring_words_day_0_never_saw() -> None:
    known = _template_words([p for phrases in demo.CORE.values() for p in phrases])
    for day in range(1, 5):
        introduced = _template_words(
            [p for phrases in demo.NEW_PHRASES.values() for p in phrases[day - 1]]
        )
        unseen = introduced - known  # words no earlier day's phrasing has
        texts = _words([r["text"] for r in demo.generate_day(day, 800)])
        assert len(unseen & texts) >= 10, (day, unseen & texts)
        for earlier in range(day):
            assert not unseen & _words([r["text"] for r in demo.generate_day(earlier, 800)])
        known |= introduced
    # The share of tickets using them grows, and the shifting intent moves the most.
    assert demo.new_phrase_share(1, "billing") < demo.new_phrase_share(4, "billing")
    assert demo.new_phrase_share(4, demo.SHIFTING_INTENT) > 2 * demo.new_phrase_share(4, "billing")


def test_neighbouring_intents_share_words() -> None:
    """No single keyword decides an intent: every intent shares a content word with a neighbour."""
    stop = {"the", "my", "i", "a", "for", "to", "of", "it", "is", "and", "on", "you", "me", "in"}
    for intent, neighbours in demo.CONFUSABLE.items():
        own = _template_words(demo.CORE[intent]) - stop
        shared = own & set().union(*(_template_words(demo.CORE[n]) for n in neighbours))
        assert shared, intent
        assert all(intent in demo.CONFUSABLE[n] for n in neighbours)  # symmetric: 50/50 labels


def test_stream_files_keep_a_repeat_and_a_malformed_row_per_later_day(tmp_path: Path) -> None:
    files = demo.write_stream(tmp_path, 3, day0_rows=50, daily_rows=40)
    for day, path in enumerate(files):
        lines = path.read_text(encoding="utf-8").splitlines()
        if day:  # the malformed row: two fields instead of four
            assert lines[-1] == f"d{day}-bad,chat"
        with open(path, newline="", encoding="utf-8") as f:
            rows = [r for r in csv.DictReader(f) if r["intent"]]
        assert len(rows) == (50 if day == 0 else 41)
        if day:
            repeat = next(r for r in rows if r["ticket_id"] == f"d{day}-repeat")
            assert repeat["text"] == rows[1]["text"]


def _eval_answers(project: Project, version: int, spans: list[int]) -> tuple[np.ndarray, ...]:
    """Per-row correctness and cross-entropy of ``version`` on the eval rows of ``spans``."""
    texts, truth = [], []
    for artifact in project.store.artifacts(type="Examples"):
        if artifact.span in spans:
            day_texts, day_labels, _ = span_texts(artifact, "eval", "text")
            texts += day_texts
            truth += day_labels
    scores, labels = score_saved_model(champion_saved_model(project, version), texts)
    index = {label: i for i, label in enumerate(labels)}
    correct = np.array([labels[i] == t for i, t in zip(scores.argmax(axis=1), truth, strict=True)])
    p_true = scores[np.arange(len(truth)), [index[t] for t in truth]]
    return correct, -np.log(np.clip(p_true, 1e-7, 1.0))


@pytest.mark.slow
def test_published_increments_beat_day_0_model_on_the_new_days(tmp_path: Path) -> None:
    seed = 0  # seeds 1-3 pass too (checked by hand: docs/demo.md lists the figures)
    folder = tmp_path / "tickets"
    demo.write_stream(folder, DAYS, day0_rows=DAY0_ROWS, daily_rows=DAILY_ROWS, seed=seed)
    (folder / "evergreen.toml").write_text(demo.CONFIG, encoding="utf-8")
    with Project(config_mod.load(folder / "evergreen.toml")) as project:
        everything = TrainingLoop(project).run()
        # Each time the days since the last full retrain double its rows, the quality debt's
        # full retrain challenges that day's increment (published only with a lower loss).
        challengers = [r for r in everything if r.reason.startswith("quality debt")]
        assert challengers and all(r.mode == "full" for r in challengers), everything
        for challenger in challengers:
            increment = everything[everything.index(challenger) - 1]
            assert (increment.span, increment.mode) == (challenger.span, "incremental")
        records = [r for r in everything if r not in challengers]
        assert [r.mode for r in records] == ["full"] + ["incremental"] * (DAYS - 1)
        registry = Registry(project.config.registry_dir)
        first = registry.version_numbers(project.config.name)[0]
        champion = registry.alias(project.config.name, "champion")
        published = [r for r in records[1:] if r.blessed and r.version is not None]
        assert len(published) >= 2, [r.verdict for r in records[1:]]
        landed = [r.version for r in everything if r.blessed and r.version is not None]
        assert champion == landed[-1]  # the last increment, or a challenger that beat it

        # Incremental work: each increment read the new day plus a replay sample of the history
        # (1:1, the default), so an epoch reads at most twice the new rows where a full
        # retrain's epoch reads every day so far: half as many rows by day 4.
        train_rows = {
            a.span: len(span_texts(a, "train", "text")[0])
            for a in project.store.artifacts(type="Examples")
        }
        runs = {
            r.span: r.summary
            for r in project.store.runs(component="train")
            if r.status == "succeeded" and r.summary["mode"] == "incremental"
        }
        for record in records[1:]:
            summary, new = runs[record.span], train_rows[record.span]
            history = sum(rows for span, rows in train_rows.items() if span < record.span)
            assert summary["mode"] == "incremental"
            assert 0 < summary["replay_rows"] <= min(new, history)
            assert summary["rows_trained"] == summary["epochs"] * (new + summary["replay_rows"])
        assert summary["rows_trained"] / summary["epochs"] < 0.6 * (history + new)

        # Version 1 (day 0 only) against the final champion on the last two days' eval rows.
        last_days = [DAYS - 1, DAYS]
        first_correct, first_loss = _eval_answers(project, first, last_days)
        final_correct, final_loss = _eval_answers(project, champion, last_days)
        increment_correct, _ = _eval_answers(project, published[-1].version, last_days)
        # What `evergreen demo` prints after its table agrees with the count here.
        shown_champion, shown = demo.first_vs_champion(project)
    assert shown_champion == champion and [d.span for d in shown] == list(range(2, DAYS + 1))
    shown_last = [d for d in shown if d.span in last_days]
    assert sum(d.rows for d in shown_last) == len(first_correct)
    for attribute, correct in (("first", first_correct), ("champion", final_correct)):
        shown_mean = sum(getattr(d, attribute) * d.rows for d in shown_last) / len(correct)
        assert shown_mean == pytest.approx(correct.mean())
    gain = final_correct.mean() - first_correct.mean()
    # The noise of the paired difference on these rows (their count, not the models, sets it).
    differences = final_correct.astype(float) - first_correct.astype(float)
    noise = differences.std(ddof=1) / np.sqrt(len(differences))
    print(
        f"seed {seed}, {len(differences)} eval rows of days {last_days}: version 1 "
        f"{first_correct.mean():.3f} (loss {first_loss.mean():.3f}) -> champion v{champion} "
        f"{final_correct.mean():.3f} (loss {final_loss.mean():.3f}); noise (1 s.e.) {noise:.3f}"
    )
    assert len(differences) >= 200
    assert first_correct.mean() < 0.8  # day 0's model is far from saturating the later days
    assert gain >= 0.05 and gain > 3 * noise
    assert increment_correct.mean() - first_correct.mean() >= 0.05  # the increments alone too
    assert final_loss.mean() < 0.8 * first_loss.mean()
