"""Train a candidate: a full fit on every span, or a warm start from the champion with replay.

Training reads featurized shards (token ids, standardized numbers and category ids, encoded
images — whatever the family's featurizer wrote) through ``tf.data`` — interleaved, shuffled,
batched, prefetched, turned into model inputs in-graph by the featurizer — so nothing is
featurized twice and the history never sits in memory. The model comes from the family (full)
or the champion's ``model.keras`` (incremental); nothing here depends on the family. Training
policy lives in Keras callbacks: early stopping and learning-rate reduction on the new span's
eval loss, TensorBoard logs, and ``BackupAndRestore`` so a killed run resumes from its last
finished epoch. The candidate is exported as a raw-input SavedModel next to ``model.keras``.
"""

from __future__ import annotations

import shutil
import warnings
from collections.abc import Mapping
from dataclasses import asdict
from pathlib import Path
from typing import Any, ClassVar

from evergreen.components.evaluate import NO_IMPROVEMENT, pooled_eval_take
from evergreen.components.schedule import shrink_perturb
from evergreen.components.threshold import choose_threshold, objective_for, write_decision
from evergreen.models.contract import compile_model
from evergreen.models.registry import load_featurizer
from evergreen.models.serving_export import export_serving_model
from evergreen.pipeline import ExecutionContext

# Re-exported: the trainer's data helpers live in evergreen.training.data (shared with the
# multi-worker loop); tests and callers import them from here too.
from evergreen.training.data import (
    FAMILY_PATIENCE,
    SKEW,
    Start,
    TrainingData,
    TrainInputs,
    TrainJob,
    class_weights,
    early_stopping_patience,
    featurized_dataset,
    schedule_record,
)

__all__ = [
    "FAMILY_PATIENCE",
    "SKEW",
    "TrainInputs",
    "TrainJob",
    "TrainModel",
    "TrainingData",
    "class_weights",
    "early_stopping_patience",
    "featurized_dataset",
]


def _backed_up_epoch(backup: Path) -> int:
    """Epochs a killed earlier attempt finished (``BackupAndRestore`` resumes after them); 0 if none."""
    import json

    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


class TrainModel(TrainJob):
    """Pipeline component: featurizer + featurized spans (+ champion) → a ``Model`` artifact.

    Inputs: :class:`TrainInputs`. In full mode every span's train split is used; in incremental
    mode the new span's train split plus ``replay_rows`` from earlier spans' replay samples.
    """

    name: ClassVar[str] = "train"
    version: ClassVar[str] = "3"

    def parameters(self) -> dict[str, Any]:
        return {
            "train": asdict(self.cfg),
            "family": self.family.name,
            "family_source": getattr(self.family, "source_digest", str)(),
            "mode": self.mode,
            "new_span": self.new_span,
        }

    def execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        # Scale-out hook (evergreen.training): ``multi_worker`` trains in its own loop (Keras 3's
        # fit cannot); otherwise the Keras path runs under train.distribution's strategy scope.
        from evergreen.training import multi_worker, strategy

        if self.cfg.distribution == "multi_worker":
            return multi_worker.execute(self, ctx)
        with strategy.training_scope(self.cfg):
            return self._execute(ctx)

    def _execute(self, ctx: ExecutionContext) -> dict[str, Any]:
        import keras

        cfg = self.cfg
        keras.utils.set_random_seed(cfg.seed)
        inputs: TrainInputs = ctx.declared  # type: ignore[assignment]
        labels = inputs.featurizer.properties["labels"]
        featurizer = load_featurizer(inputs.featurizer.uri)
        spans = dict(sorted(inputs.spans.items()))
        fit = self.start(inputs, spans, labels, featurizer)
        compile_model(fit.model, learning_rate=fit.learning_rate)
        # Early stopping and the champion baseline judge on the new span's eval rows, pooled
        # with the latest spans' when too few to judge: the rows the evaluator's "new" set uses.
        take = pooled_eval_take(
            self.new_span,
            {s: int(a.properties["rows"].get("eval", 0)) for s, a in spans.items()},
            cfg.min_eval_rows,
        )
        validation = self._validation(spans, take, labels, featurizer)
        writer = ctx.output("model", "Model", span=self.new_span)
        backup = ctx.output_root / "_backup"  # outside the temp folder: survives kill -9
        resumed_from_epoch = _backed_up_epoch(backup)
        stopping, champion_loss = self._early_stopping(fit.model, validation, backup / "stopping")
        weights = class_weights(fit.data.label_counts, labels, cfg.class_weights)
        perturbed = self.mode == "incremental" and shrink_perturb(
            fit.model, cfg.shrink, cfg.perturb, cfg.seed
        )  # after the champion's loss and weights were taken as early stopping's baseline
        history = self._fit(fit, validation, stopping, weights, backup, writer.path / "logs")
        decision = self._save(fit.model, featurizer, validation, labels, fit.data, writer.path)
        shutil.rmtree(backup, ignore_errors=True)
        summary = self._summary(
            history.history,
            fit.data,
            stopping,
            champion_loss,
            eval_spans=list(take),
            class_weight={labels[i]: round(w, 4) for i, w in weights.items()} if weights else None,
            resumed_from_epoch=resumed_from_epoch,
        )
        if fit.grown_rows:
            summary["embedding_rows_added"] = fit.grown_rows
        summary["decision"] = decision
        if self.mode == "incremental":
            summary.update(schedule_record(cfg, fit.data))  # the peak "auto" chose and its rows
            summary["shrink_perturb"] = [cfg.shrink, cfg.perturb] if perturbed else None
        ctx.set_properties("model", self.model_properties(summary, inputs, labels))
        return summary

    def model_properties(
        self, summary: Mapping[str, Any], inputs: TrainInputs, labels: list[str]
    ) -> dict[str, Any]:
        """The ``Model`` artifact's properties: the summary plus what it was trained from."""
        return {
            **summary,
            "labels": labels,
            "featurizer": inputs.featurizer.id,
            "family": inputs.featurizer.properties["family"],
            "spans": sorted(inputs.spans),
            "new_span": self.new_span,
        }

    def _fit(
        self,
        fit: Start,
        validation: Any,
        stopping: Any,
        weights: dict[int, float] | None,
        backup: Path,
        log_dir: Path,
    ) -> Any:
        """``model.fit`` with the training callbacks; the Keras history."""
        import keras

        callbacks = [
            # double_checkpoint: a kill during the backup write falls back to the previous one
            keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True),
            stopping,
            keras.callbacks.TensorBoard(log_dir=str(log_dir), write_graph=False),
        ]
        if not fit.schedule:  # a schedule owns the rate; ReduceLROnPlateau cannot set it
            callbacks.insert(
                2, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
            )
        with warnings.catch_warnings():
            # Keras 3 warns once per fit that a tf.data input of unknown length "ran out of
            # data" at the end of the first epoch: that is how it learns the epoch's length.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            return fit.model.fit(
                fit.data.train,
                validation_data=validation,
                epochs=fit.epochs,
                callbacks=callbacks,
                class_weight=weights,
                shuffle=False,
                verbose=0,
            )

    def _save(
        self,
        model: Any,
        featurizer: Any,
        validation: Any,
        labels: list[str],
        data: TrainingData,
        folder: Path,
    ) -> dict[str, Any]:
        """Save ``model.keras`` and the raw-input SavedModel; the decision threshold chosen."""
        model.save(folder / "model.keras")
        decision = self._decision_threshold(model, validation, labels, data.label_counts)
        export_serving_model(
            featurizer, model, labels, folder / "saved_model", decision.get("threshold")
        )
        if "threshold" in decision:
            write_decision(
                folder / "saved_model", decision["threshold"], labels, decision["objective"]
            )
        return decision

    def _summary(
        self,
        history: Mapping[str, list[float]],
        data: TrainingData,
        stopping: Any,
        champion_loss: float | None,
        *,
        eval_spans: list[int],
        class_weight: dict[str, float] | None,
        resumed_from_epoch: int,
    ) -> dict[str, Any]:
        """The run's summary: epochs and rows trained, replay, and whether it beat the champion."""
        ran = len(history.get("loss", []))
        val_losses = history.get("val_loss") or [None]
        improved = champion_loss is None or bool(getattr(stopping, "improved", True))
        summary = {
            "mode": self.mode,
            "reason": self.reason,
            "epochs": ran,
            "patience": stopping.patience,
            "replay_rows": data.replayed,
            # The work done, for tests and the ledger: examples seen over the epochs run here.
            "rows_trained": data.rows_per_epoch * ran,
            "resumed_from_epoch": resumed_from_epoch,
            "final_loss": float(history["loss"][-1]) if ran else None,
            "validation_spans": eval_spans,
            "champion_val_loss": champion_loss,
            "best_val_loss": None if val_losses[0] is None else float(min(val_losses)),
            "improved": improved,
            "class_weights": class_weight,
            # Per-epoch losses of the epochs run here, for TensorBoard (evergreen.tracking).
            "epoch_losses": {
                key: [float(x) for x in history.get(key, [])] for key in ("loss", "val_loss")
            },
        }
        if not improved:
            summary["note"] = (
                f"{NO_IMPROVEMENT}: no epoch beat its val_loss {champion_loss:.4f} on the eval "
                f"rows of spans {eval_spans}; the candidate keeps the champion's weights"
            )
        return summary

    def _decision_threshold(
        self, model: Any, validation: Any, labels: list[str], counts: Mapping[str, float]
    ) -> dict[str, Any]:
        """The binary decision threshold chosen on the validation rows (empty: argmax).

        Returns:
            ``{"objective", "threshold", "rows"}`` when a threshold is chosen, else
            ``{"objective": "argmax"}``.
        """
        import numpy as np

        objective = objective_for(self.cfg.decision_threshold, counts, labels)
        if objective == "argmax" or validation is None:
            return {"objective": "argmax"}
        scores, truth = [], []
        for inputs, label_ids in validation:
            scores.append(model(inputs, training=False).numpy()[:, 1])
            truth.append(label_ids.numpy() == 1)
        score, positive = np.concatenate(scores), np.concatenate(truth)
        cut = choose_threshold(score, positive, objective)
        return {"objective": objective, "threshold": round(cut, 6), "rows": int(len(score))}

    def _early_stopping(
        self, model: Any, validation: Any, state_dir: Path
    ) -> tuple[Any, float | None]:
        """The early-stopping callback, and the champion's val_loss when it is the baseline.

        Full runs: plain ``EarlyStopping`` restoring the best epoch. Incremental runs: the
        champion (the model as loaded, before any epoch) is measured on the validation rows and
        is the best to beat (:class:`ChampionEarlyStopping`).
        """
        import keras

        patience = early_stopping_patience(self.cfg, self.family.name)
        if self.mode == "full" or validation is None:
            callback = keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=patience,
                min_delta=self.cfg.min_delta,
                restore_best_weights=True,
            )
            return callback, None
        from evergreen.components.early_stopping import ChampionEarlyStopping

        with warnings.catch_warnings():  # the same "ran out of data" warning as in fit
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            champion_loss = float(model.evaluate(validation, verbose=0, return_dict=True)["loss"])
        callback = ChampionEarlyStopping(
            champion_loss,
            model.get_weights(),
            patience=patience,
            min_delta=self.cfg.min_delta,
            state_dir=state_dir,
        )
        return callback, champion_loss
