"""Early stopping whose first "best" is the champion: an epoch counts only if it beats it.

Keras 3's ``EarlyStopping(baseline=...)`` uses the baseline only to decide whether patience
restarts; its ``best`` starts empty, so the first trained epoch is always "best" and
``restore_best_weights`` restores it even when it is worse than the baseline. For an incremental
run that would publish a changed model that never beat the champion. Here the champion's
val_loss and weights are the best *before* the first epoch: an epoch becomes best only by
beating them by more than ``min_delta``; if none does, the champion's weights are restored and
``improved`` stays False.

Imported only inside training (it imports Keras).
"""

from __future__ import annotations

from typing import Any

import keras


class ChampionEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on ``val_loss`` seeded with the champion's loss and weights.

    Args:
        baseline: the champion's val_loss on the validation rows, measured before training.
        initial_weights: the champion's weights (``model.get_weights()`` before ``fit``; taken
            before ``fit`` so that a resumed run's restored weights are not mistaken for them).
        patience: epochs without beating the best (champion included) before stopping.
        min_delta: how much an epoch must beat the best by to count (default 0).
    """

    def __init__(
        self,
        baseline: float,
        initial_weights: list[Any],
        *,
        patience: int,
        min_delta: float = 0.0,
    ) -> None:
        super().__init__(
            monitor="val_loss",
            mode="min",
            patience=patience,
            min_delta=min_delta,
            baseline=baseline,
            restore_best_weights=True,
        )
        self.initial_weights = initial_weights
        self.improved = False

    def on_train_begin(self, logs: Any = None) -> None:
        super().on_train_begin(logs)
        self.best = self.baseline
        self.best_weights = self.initial_weights
        self.best_epoch = -1  # the champion, before any epoch
        self.improved = False

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        super().on_epoch_end(epoch, logs)
        self.improved = self.best_epoch >= 0
