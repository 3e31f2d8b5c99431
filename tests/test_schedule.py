"""How an increment starts: learning-rate re-warm and re-decay, shrink and perturb."""

from __future__ import annotations

import numpy as np
import pytest

from evergreen import config as config_mod
from evergreen.components.schedule import FLOOR, auto_peak, rewarm_schedule, shrink_perturb
from evergreen.config import TrainConfig
from evergreen.errors import ConfigError
from evergreen.models.text import build_model
from evergreen.training.data import TrainingData, rewarm_multiple


def test_rewarm_climbs_to_the_peak_then_decays_to_the_floor() -> None:
    schedule = rewarm_schedule(1e-3, total_steps=100)
    rates = [float(schedule(step)) for step in range(101)]
    assert rates[0] == pytest.approx(1e-4)
    assert max(rates) == pytest.approx(1e-3) and int(np.argmax(rates)) == 10
    assert all(a <= b for a, b in zip(rates[:10], rates[1:11], strict=True))  # warm-up
    assert all(a >= b for a, b in zip(rates[10:-1], rates[11:], strict=True))  # decay
    assert rates[100] == pytest.approx(1e-3 * FLOOR, rel=1e-3)


def test_the_auto_peak_grows_with_the_new_rows_share_of_the_history_up_to_twice() -> None:
    # The drift stream's spans of 600 rows: half the history or more re-warms to the cap, ...
    assert auto_peak(600, 600) == auto_peak(600, 1200) == 2.0
    assert auto_peak(600, 1800) == pytest.approx(1 + 2 / 3)
    assert auto_peak(500, 2000) == 1.5  # ... tests/test_loop.py's first increment
    assert auto_peak(1, 100) == pytest.approx(1.02)  # a 1 % span: about the paper's peak
    assert auto_peak(5000, 100) == 2.0  # capped
    assert auto_peak(100, 0) == 2.0  # no history to weigh it against: the cap


def test_shrink_and_perturb_scales_weights_and_is_off_by_default() -> None:
    model = build_model(50, 2, sequence_length=10)
    before = [w.copy() for w in model.get_weights()]
    assert not shrink_perturb(model, 1.0, 0.0, seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(before, model.get_weights(), strict=True))
    assert shrink_perturb(model, 0.5, 0.0, seed=0)
    for a, b in zip(before, model.get_weights(), strict=True):
        np.testing.assert_allclose(b, 0.5 * a, rtol=1e-6)
    shrink_perturb(model, 1.0, 0.01, seed=0)
    moved = np.concatenate(
        [(b - 0.5 * a).ravel() for a, b in zip(before, model.get_weights(), strict=True)]
    )
    assert 0.005 < moved.std() < 0.02


def test_schedule_and_shrink_are_validated(tmp_path) -> None:
    base = {
        "pipeline": {"name": "p", "root": str(tmp_path)},
        "data": {"pattern": "d/span-{SPAN}/*.csv", "label": "y"},
    }
    for train, match in (
        ({"shrink": 0}, "train.shrink"),
        ({"shrink": 1.5}, "train.shrink"),
        ({"perturb": -1}, "train.perturb"),
        ({"incremental_schedule": "cosine"}, "train.incremental_schedule"),
        ({"rewarm_peak": 0}, "train.rewarm_peak"),
        ({"rewarm_peak": 2000}, "train.rewarm_peak"),  # a peak rate of 2: Adam diverges
        ({"rewarm_peak": "fast"}, "train.rewarm_peak"),
        ({"decision_threshold": "youden"}, "train.decision_threshold"),
    ):
        with pytest.raises(ConfigError, match=match):
            config_mod.from_dict({**base, "train": train}, base_dir=tmp_path)
    cfg = config_mod.from_dict(
        {**base, "train": {"shrink": 0.8, "perturb": 0.001}}, base_dir=tmp_path
    )
    assert (cfg.train.shrink, cfg.train.perturb, cfg.train.grow_vocabulary) == (0.8, 0.001, True)
    for peak in ("auto", 1.5):
        cfg = config_mod.from_dict({**base, "train": {"rewarm_peak": peak}}, base_dir=tmp_path)
        assert cfg.train.rewarm_peak == peak
    # "auto" is the default, so a large learning rate is not refused for it: its peak rate is
    # kept at 1 instead (a span as large as the history would otherwise re-warm to 1.2).
    cfg = config_mod.from_dict({**base, "train": {"learning_rate": 0.6}}, base_dir=tmp_path)
    assert cfg.train.rewarm_peak == "auto"
    data = TrainingData(None, 200, 100, {}, history_rows=100)
    assert rewarm_multiple(cfg.train, data) * 0.6 == pytest.approx(1.0)
    assert rewarm_multiple(TrainConfig(), data) == 2.0
