"""The evaluator's guard: a drop counts only beyond its threshold plus the eval set's noise."""

from __future__ import annotations

import json

import numpy as np
import pytest

from evergreen.components.evaluate import (
    allocate,
    auc_regression,
    balanced_accuracy,
    balanced_regression,
    loss_regression,
    macro_f1_regression,
    metrics,
    paired_regression,
    primary_metric,
    stratified_sample,
)
from evergreen.examples import ROW_HASH


def _champion(rows: int = 400, accuracy: float = 0.78) -> np.ndarray:
    return np.random.default_rng(0).random(rows) < accuracy


def _flip(correct: np.ndarray, right_to_wrong: int, wrong_to_right: int) -> np.ndarray:
    out = correct.copy()
    out[np.flatnonzero(correct)[:right_to_wrong]] = False
    out[np.flatnonzero(~correct)[:wrong_to_right]] = True
    return out


def test_the_same_model_does_not_regress() -> None:
    champion = _champion()
    guard = paired_regression(champion, champion.copy(), 0.005, 0.95)
    assert guard["drop"] == 0 and guard["noise"] == 0 and not guard["regressed"]
    assert json.loads(json.dumps(guard)) == guard  # stored in the evaluation artifact as is


def test_a_drop_of_a_few_rows_is_noise_at_95_percent_but_not_with_an_exact_guard() -> None:
    champion = _champion()
    candidate = _flip(champion, right_to_wrong=7, wrong_to_right=3)  # 1 point lower, 10 rows differ
    noisy = paired_regression(champion, candidate, 0.005, 0.95)
    assert noisy["drop"] == 4 / 400 and noisy["noise"] > 0.005 and not noisy["regressed"]
    exact = paired_regression(champion, candidate, 0.005, 0.0)
    assert exact["noise"] == 0 and exact["regressed"]


def test_real_forgetting_is_refused() -> None:
    champion = _champion()
    candidate = _flip(champion, right_to_wrong=30, wrong_to_right=2)  # 7 points lower
    guard = paired_regression(champion, candidate, 0.005, 0.95)
    assert guard["regressed"] and guard["drop"] - guard["noise"] > 0.005


def test_metrics_of_a_perfect_and_a_wrong_binary_classifier() -> None:
    labels = ["negative", "positive"]
    truth = ["positive", "negative", "positive", "negative"]
    perfect = np.array([[0.1, 0.9], [0.8, 0.2], [0.3, 0.7], [0.6, 0.4]])
    m = metrics(perfect, truth, labels)
    assert m["accuracy"] == 1.0 and m["auc"] == 1.0 and m["f1"] == 1.0 and m["macro_f1"] == 1.0
    wrong = metrics(perfect[:, ::-1], truth, labels)
    assert wrong["accuracy"] == 0.0 and wrong["auc"] == 0.0 and wrong["loss"] > m["loss"]


def test_the_noise_allowance_is_capped_so_a_small_set_cannot_excuse_a_big_drop() -> None:
    # The case: 85 new eval rows, the candidate 7 points worse.
    champion = _champion(rows=85, accuracy=0.8)
    candidate = _flip(champion, right_to_wrong=8, wrong_to_right=2)
    uncapped = paired_regression(champion, candidate, 0.02, 0.95)
    assert not uncapped["regressed"] and uncapped["noise"] > 0.05  # the old guard blessed it
    capped = paired_regression(champion, candidate, 0.02, 0.95, max_noise=0.02)
    assert capped["regressed"] and capped["noise"] == 0.02
    assert capped["noise_uncapped"] == uncapped["noise"]


def _imbalanced(rows: int = 1000, positives: float = 0.06) -> np.ndarray:
    return (np.random.default_rng(1).random(rows) < positives).astype(int)


def test_balanced_accuracy_sees_a_model_that_never_predicts_the_minority_class() -> None:
    y = _imbalanced()
    champion_correct = np.where(y == 1, np.arange(len(y)) % 3 != 0, np.arange(len(y)) % 10 != 0)
    majority_correct = y == 0  # always predicts the majority class
    accuracy = paired_regression(champion_correct, majority_correct, 0.02, 0.95, max_noise=0.02)
    assert not accuracy["regressed"]  # plain accuracy cannot see it (0.94 vs 0.86)
    assert balanced_accuracy(majority_correct, y) == 0.5
    balanced = balanced_regression(champion_correct, majority_correct, y, 0.02, 0.95, 0.02)
    assert balanced["regressed"] and balanced["drop"] > 0.2


def test_auc_guard_refuses_scores_that_no_longer_rank_and_passes_the_same_model() -> None:
    rng = np.random.default_rng(2)
    positive = rng.random(600) < 0.3
    champion = np.clip(0.3 + 0.4 * positive + rng.normal(0, 0.2, 600), 0, 1)
    same = auc_regression(champion, champion.copy(), positive, 0.02, 0.95, 0.02)
    assert same["drop"] == 0 and same["noise"] == 0 and not same["regressed"]
    slightly = np.clip(champion + rng.normal(0, 0.02, 600), 0, 1)  # a near twin
    near = auc_regression(champion, slightly, positive, 0.02, 0.95, 0.02)
    assert not near["regressed"] and near["noise"] < 0.01  # correlated scores: small allowance
    random = rng.random(600)
    worse = auc_regression(champion, random, positive, 0.02, 0.95, 0.02)
    assert worse["regressed"] and worse["drop"] > 0.3


def test_hanley_mcneil_standard_error_matches_the_paper_example() -> None:
    # Hanley & McNeil (1982), table 2: AUC 0.8 with 50 positives and 50 negatives -> SE ~ 0.044.
    from evergreen.components.guards import _hanley_mcneil

    assert _hanley_mcneil(0.8, 50, 50) == pytest.approx(0.0436, abs=0.001)


def test_loss_guard_refuses_an_overconfident_candidate_with_the_same_accuracy() -> None:
    rng = np.random.default_rng(4)
    champion_loss = rng.uniform(0.1, 0.9, 500)
    # Same right/wrong answers, but the wrong ones now said with certainty: loss far higher.
    candidate_loss = champion_loss.copy()
    candidate_loss[::5] = 6.0
    guard = loss_regression(champion_loss, candidate_loss, 0.05, 0.95, 0.02)
    assert guard["regressed"] and guard["drop"] > 1.0
    assert not loss_regression(champion_loss, champion_loss.copy(), 0.05, 0.95, 0.02)["regressed"]


def test_macro_f1_guard_uses_a_bootstrap_allowance() -> None:
    rng = np.random.default_rng(5)
    y = rng.integers(0, 3, 400)
    champion = np.where(rng.random(400) < 0.8, y, (y + 1) % 3)
    same = macro_f1_regression(champion, champion.copy(), y, 3, 0.02, 0.95, 0.02)
    assert same["drop"] == 0 and not same["regressed"]
    collapsed = np.zeros(400, dtype=int)
    worse = macro_f1_regression(champion, collapsed, y, 3, 0.02, 0.95, 0.02)
    assert worse["regressed"] and 0 < worse["noise"] <= 0.02


@pytest.mark.parametrize(
    ("labels", "chosen", "expected"),
    [
        (["no", "yes"], "auto", "auc"),
        (["a", "b", "c"], "auto", "balanced_accuracy"),
        (["no", "yes"], "macro_f1", "macro_f1"),
    ],
    ids=["binary", "multiclass", "explicit"],
)
def test_the_default_primary_metric_fits_the_labels(
    labels: list[str], chosen: str, expected: str
) -> None:
    assert primary_metric(chosen, labels) == expected


@pytest.mark.parametrize(
    ("total", "sizes", "expected"),
    [
        (10, {1: 100, 2: 100}, {1: 5, 2: 5}),
        (10, {1: 300, 2: 100}, {1: 8, 2: 2}),  # 7.5 / 2.5: largest remainder, stable
        (500, {1: 30, 2: 40}, {1: 30, 2: 40}),
        (3, {1: 1, 2: 1, 3: 1, 4: 1}, {1: 1, 2: 1, 3: 1, 4: 0}),
    ],
    ids=["even", "proportional", "all-when-fewer", "ties"],
)
def test_allocate_is_proportional_and_adds_up(
    total: int, sizes: dict[int, int], expected: dict[int, int]
) -> None:
    out = allocate(total, sizes)
    assert sum(out.values()) == min(total, sum(sizes.values()))
    assert out == expected


def test_stratified_sample_is_uniform_stable_and_keeps_the_class_mix() -> None:
    # 1,000 rows in "file order" with the minority class only at the end (time-ordered data).
    rows = [{ROW_HASH: f"h{i}", "y": "rare" if i >= 900 else "common"} for i in range(1000)]
    sample = stratified_sample(rows, 100, "y", "holdout")
    assert len(sample) == 100
    assert sum(r["y"] == "rare" for r in sample) == 10  # the class mix of all rows
    positions = [int(r[ROW_HASH][1:]) for r in sample if r["y"] == "common"]
    assert min(positions) < 100 and max(positions) > 800  # spread over the file, not its head
    assert stratified_sample(list(reversed(rows)), 100, "y", "holdout") == sample  # stable
