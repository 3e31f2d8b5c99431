"""The evaluator's guard: a drop counts only beyond its threshold plus the eval set's noise."""

from __future__ import annotations

import json

import numpy as np

from evergreen.components.evaluate import metrics, paired_regression


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
