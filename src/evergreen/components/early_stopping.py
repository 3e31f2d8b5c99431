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

import json
from pathlib import Path
from typing import Any

import keras
import numpy as np


class ChampionEarlyStopping(keras.callbacks.EarlyStopping):
    """EarlyStopping on ``val_loss`` seeded with the champion's loss and weights.

    Args:
        baseline: the champion's val_loss on the validation rows, measured before training.
        initial_weights: the champion's weights (``model.get_weights()`` before ``fit``; taken
            before ``fit`` so that a resumed run's restored weights are not mistaken for them).
        patience: epochs without beating the best (champion included) before stopping.
        min_delta: how much an epoch must beat the best by to count (default 0).
        state_dir: where the best so far is kept after every epoch (None: nowhere). A run
            killed and resumed by ``BackupAndRestore`` starts from it again instead of from the
            champion, so it ends as the uninterrupted run would.
    """

    def __init__(
        self,
        baseline: float,
        initial_weights: list[Any],
        *,
        patience: int,
        min_delta: float = 0.0,
        state_dir: Path | None = None,
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
        self.state_dir = state_dir

    def on_train_begin(self, logs: Any = None) -> None:
        super().on_train_begin(logs)
        self.best = self.baseline
        self.best_weights = self.initial_weights
        self.best_epoch = -1  # the champion, before any epoch
        self.improved = False
        self._load_state()

    def on_epoch_end(self, epoch: int, logs: Any = None) -> None:
        before = self.best_epoch
        super().on_epoch_end(epoch, logs)
        self.improved = self.best_epoch >= 0
        self._save_state(weights_changed=self.best_epoch != before)

    def _save_state(self, *, weights_changed: bool) -> None:
        if self.state_dir is None:
            return
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if weights_changed:
            tmp = self.state_dir / "best_weights.tmp.npz"
            np.savez(tmp, *self.best_weights)
            tmp.replace(self.state_dir / "best_weights.npz")
        state = {"best": float(self.best), "best_epoch": self.best_epoch, "wait": self.wait}
        tmp = self.state_dir / "state.json.tmp"
        tmp.write_text(json.dumps(state), encoding="utf-8")
        tmp.replace(self.state_dir / "state.json")  # written last: it names the weights' epoch

    def _load_state(self) -> None:
        path = self.state_dir / "state.json" if self.state_dir is not None else None
        if path is None or not path.is_file():
            return
        state = json.loads(path.read_text(encoding="utf-8"))
        if state["best_epoch"] >= 0:
            with np.load(self.state_dir / "best_weights.npz") as saved:
                self.best_weights = [saved[f"arr_{i}"] for i in range(len(saved.files))]
        self.best, self.best_epoch, self.wait = state["best"], state["best_epoch"], state["wait"]
        self.improved = self.best_epoch >= 0
