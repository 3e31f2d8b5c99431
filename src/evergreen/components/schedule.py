"""How an increment starts from the champion: the learning-rate schedule and shrink-and-perturb.

**Re-warm and re-decay** (Ibrahim et al., TMLR 2024: with replay, re-warming the learning rate
and decaying it again matches a full retrain at a fraction of its compute): an increment's
learning rate climbs linearly from a tenth of its peak, ``rewarm_peak`` x the full retrain's
``learning_rate`` (the paper re-warms to the original peak, 1 x, not to a smaller fine-tuning
rate; the default ``"auto"`` re-warms between 1 and 2 x with the increment's size against the
history, :func:`auto_peak`: twice everywhere closed the drifting text stream's gap at the same
cost but did worse on the fine foods stream of tests/test_loop.py, see docs/quality.md), to the
peak over the first :data:`WARMUP_FRACTION` of its steps, then follows
a cosine down to :data:`FLOOR` of it at the last step of ``incremental_epochs``;
``incremental_learning_rate`` is then unused. ``train.incremental_schedule = "constant"`` keeps the flat
rate with halving on a plateau instead.

**Shrink and perturb** (Ash & Adams, NeurIPS 2020: warm-started networks generalize worse than
fresh ones; scaling the weights down and adding a little noise closes the gap): every trainable
weight becomes ``shrink * w + perturb * N(0, 1)`` before the first epoch. ``shrink = 1`` and
``perturb = 0`` (the defaults) leave the champion's weights as they are. Early stopping's
baseline is still the champion itself, measured before the change, so a shrunk model that never
recovers is not published.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from evergreen.config import REWARM_AUTO_CAP

WARMUP_FRACTION = 0.1
FLOOR = 0.1
SCHEDULES = ("rewarm", "constant")
AUTO_GAIN = 2.0  # "auto": the peak's rise per unit of new rows / earlier rows (capped at 1)


def auto_peak(new_rows: int, history_rows: int) -> float:
    """``train.rewarm_peak = "auto"``: ``1 + min(1, AUTO_GAIN x new_rows / history_rows)``.

    The more the increment brings relative to what the champion stands for (the earlier spans'
    train rows), the further it may move: a span half the size of the history or more re-warms
    to twice ``learning_rate`` (which closed the vocabulary-drift stream's gap), a 1 % span to
    about the paper's 1 x (2 x everywhere cost the fine foods stream of tests/test_loop.py,
    whose spans bring 14-25 % of the history, beyond its check). docs/quality.md measured a
    gain of 1 (−0.7 on the drift stream) and of 2 (−0.4). No history: the cap.
    """
    if history_rows <= 0:
        return REWARM_AUTO_CAP
    return 1.0 + min(REWARM_AUTO_CAP - 1.0, AUTO_GAIN * new_rows / history_rows)


def rewarm_schedule(peak: float, total_steps: int) -> Any:
    """A Keras schedule: linear warm-up to ``peak``, then cosine decay over ``total_steps``."""
    import keras

    total_steps = max(int(total_steps), 2)
    warmup = max(1, int(WARMUP_FRACTION * total_steps))
    return keras.optimizers.schedules.CosineDecay(
        initial_learning_rate=peak / 10,
        decay_steps=max(total_steps - warmup, 1),
        alpha=FLOOR,
        warmup_target=peak,
        warmup_steps=warmup,
    )


def shrink_perturb(model: Any, shrink: float, perturb: float, seed: int) -> bool:
    """Scale every trainable weight by ``shrink`` and add ``perturb`` x N(0, 1) noise.

    Returns:
        Whether anything changed (False for ``shrink = 1, perturb = 0``).
    """
    if shrink == 1.0 and perturb == 0.0:
        return False
    rng = np.random.default_rng(seed)
    for variable in model.trainable_weights:
        value = np.asarray(variable.numpy())
        noise = rng.standard_normal(value.shape) * perturb if perturb else 0.0
        variable.assign((shrink * value + noise).astype(value.dtype))
    return True
