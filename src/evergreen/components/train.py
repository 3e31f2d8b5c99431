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
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, ClassVar

from evergreen.components.evaluate import NO_IMPROVEMENT, allocate, pooled_eval_take
from evergreen.components.schedule import rewarm_schedule, shrink_perturb
from evergreen.components.threshold import choose_threshold, objective_for, write_decision
from evergreen.config import TrainConfig
from evergreen.examples import shard_paths
from evergreen.metadata import Artifact
from evergreen.models.adopted import load_model
from evergreen.models.contract import ModelFamily, compile_model, freeze_lower
from evergreen.models.featurized import parse_spec
from evergreen.models.registry import load_featurizer
from evergreen.models.serving_export import export_serving_model
from evergreen.pipeline import ExecutionContext

# Early-stopping patience when train.patience is 0: enough epochs for each family to converge
# (tabular and image models improve in small steps; patience 1 stopped them after 2-6 epochs).
FAMILY_PATIENCE = {"text": 2, "tabular": 3, "image": 4}


def early_stopping_patience(cfg: TrainConfig, family_name: str) -> int:
    """``train.patience``, or when it is 0 the family's default (:data:`FAMILY_PATIENCE`; 2)."""
    return cfg.patience or FAMILY_PATIENCE.get(family_name, 2)


@dataclass(frozen=True)
class TrainingData:
    """One run's training input: batches, rows per epoch, and how many of them are replay."""

    train: Any
    rows_per_epoch: int
    replayed: int
    label_counts: dict[str, float]  # rows per label in an epoch (replay: expected counts)


# class_weights = "auto" weighs classes when the largest has more than SKEW x the rows of the
# smallest. Measured on churn (6:1, tests/test_tabular.py's stream): balanced weights cost AUC
# (incremental 0.881 -> 0.866, full 0.892 -> 0.880) and minority F1 (0.68 -> 0.61) for a higher
# balanced accuracy at argmax (0.78 -> 0.82), so moderate skew is left unweighted; the issue's
# loan table (5.7 % positives, 16:1), whose models never predicted the minority, is weighted.
SKEW = 10.0


def class_weights(
    counts: Mapping[str, float], labels: list[str], setting: str
) -> dict[int, float] | None:
    """Balanced class weights (rows / (classes x rows of the class)) when labels are skewed.

    Args:
        counts: training rows per label.
        labels: the model's classes, in output order.
        setting: ``train.class_weights``: ``auto`` (weights when the largest class has more
            than ``SKEW`` times the rows of the smallest), ``balanced`` (weights whenever the
            classes differ in size) or ``none``.

    Returns:
        ``{class index: weight}`` for ``Model.fit``, or None (unweighted). A class with no
        training rows gets weight 1.
    """
    present = {label: float(counts.get(label, 0)) for label in labels if counts.get(label, 0)}
    if setting == "none" or len(present) < 2:
        return None
    largest, smallest = max(present.values()), min(present.values())
    if largest == smallest or setting == "auto" and largest <= SKEW * smallest:
        return None
    total = sum(present.values())
    return {
        i: total / (len(present) * present[label]) if label in present else 1.0
        for i, label in enumerate(labels)
    }


def _train_counts(artifact: Artifact, scale: float = 1.0) -> dict[str, float]:
    counts = (artifact.properties.get("labels") or {}).get("train") or {}
    return {label: n * scale for label, n in counts.items()}


def _add(total: dict[str, float], more: Mapping[str, float]) -> dict[str, float]:
    for label, n in more.items():
        total[label] = total.get(label, 0.0) + n
    return total


def featurized_dataset(
    folders: list[Path],
    labels: list[str],
    featurizer: Any,
    batch_size: int,
    *,
    shuffle_seed: int | None = None,
    take_per_folder: int | None = None,
    only_label: str | None = None,
) -> Any:
    """A ``tf.data`` pipeline of ``(model_inputs, label_id)`` batches from featurized shards.

    Records are parsed with the featurizer's spec and turned into model inputs in-graph by
    ``featurizer.model_inputs`` (e.g. images are decoded here, in parallel).

    Args:
        take_per_folder: read only the first this many records of each folder (None: all).
        only_label: keep only the records of this label (before ``take_per_folder``).
    """
    from evergreen.tf import tensorflow

    tf = tensorflow()
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(labels), tf.range(len(labels), dtype=tf.int64)
        ),
        default_value=-1,
    )
    label_only = {"label": tf.io.FixedLenFeature([], tf.string)}

    def keep(record: Any) -> Any:
        return tf.io.parse_single_example(record, label_only)["label"] == only_label

    parts = []
    for folder in folders:
        paths = [str(p) for p in shard_paths(folder)]
        if not paths:
            continue
        part = tf.data.Dataset.from_tensor_slices(paths).interleave(
            tf.data.TFRecordDataset, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True
        )
        if only_label is not None:
            part = part.filter(keep)
        parts.append(part.take(take_per_folder) if take_per_folder is not None else part)
    if not parts:
        return None
    dataset = parts[0]
    for part in parts[1:]:
        dataset = dataset.concatenate(part)
    if shuffle_seed is not None:
        dataset = dataset.shuffle(20_000, seed=shuffle_seed, reshuffle_each_iteration=True)
    spec = parse_spec(featurizer.feature_spec())

    def parse(batch: Any) -> Any:
        parsed = tf.io.parse_example(batch, spec)
        return featurizer.model_inputs(parsed), table.lookup(parsed["label"])

    return (
        dataset.batch(batch_size)
        .map(parse, num_parallel_calls=tf.data.AUTOTUNE)
        .prefetch(tf.data.AUTOTUNE)
    )


def _grow_embeddings(model: Any, featurizer: Any) -> tuple[Any, dict[str, int]]:
    """The champion with embeddings enlarged for a grown featurizer's new ids (see growth.py)."""
    rows = getattr(featurizer, "embedding_rows", None)
    if rows is None:
        return model, {}
    from evergreen.models.growth import grow_model

    return grow_model(model, rows())


def _backed_up_epoch(backup: Path) -> int:
    """Epochs a killed earlier attempt finished (``BackupAndRestore`` resumes after them); 0 if none."""
    import json

    try:
        return int(json.loads((backup / "training_metadata.json").read_text())["epoch"])
    except (OSError, ValueError, KeyError):
        return 0


class TrainModel:
    """Pipeline component: featurizer + featurized spans (+ champion) → a ``Model`` artifact.

    Inputs: ``featurizer``; ``span-<N>`` for every featurized span used; ``champion`` (a Model
    artifact) in incremental mode. In full mode every span's train split is used; in incremental
    mode the new span's train split plus ``replay_rows`` from earlier spans' replay samples.
    """

    name: ClassVar[str] = "train"
    version: ClassVar[str] = "3"

    def __init__(
        self,
        cfg: TrainConfig,
        family: ModelFamily,
        *,
        mode: str,
        reason: str,
        new_span: int,
    ) -> None:
        self.cfg = cfg
        self.family = family
        self.mode = mode
        self.reason = reason
        self.new_span = new_span

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

        from evergreen.training.strategy import float32_outputs

        cfg = self.cfg
        keras.utils.set_random_seed(cfg.seed)
        fitted = ctx.inputs["featurizer"]
        labels = fitted.properties["labels"]
        featurizer = load_featurizer(fitted.uri)
        spans = dict(
            sorted(
                (int(k.split("-")[1]), a) for k, a in ctx.inputs.items() if k.startswith("span-")
            )
        )
        grown_rows: dict[str, int] = {}
        if self.mode == "full":
            model = self.family.build_model(featurizer, len(labels), cfg)
            model = float32_outputs(model, cfg)  # train.mixed_precision: float32 probabilities
            data = self._full_data(spans, labels, featurizer)
            epochs, lr = cfg.epochs, cfg.learning_rate
        else:
            if hasattr(self.family, "module"):  # a custom module may register its own layers
                self.family.module()
            model = load_model(Path(ctx.inputs["champion"].uri) / "model.keras", own_artifact=True)
            model, grown_rows = _grow_embeddings(model, featurizer)
            freeze_lower(model, cfg.freeze_lower_layers)
            data = self._incremental_data(spans, labels, featurizer)
            epochs, lr = cfg.incremental_epochs, cfg.incremental_learning_rate
        schedule = self.mode == "incremental" and cfg.incremental_schedule == "rewarm"
        if schedule:  # re-warm to the full retrain's rate, decay over the increment (schedule.py)
            lr = rewarm_schedule(
                cfg.learning_rate, epochs * -(-data.rows_per_epoch // cfg.batch_size)
            )
        compile_model(model, learning_rate=lr)
        # Early stopping and the champion baseline judge on the new span's eval rows, pooled
        # with the latest spans' when too few to judge: the rows the evaluator's "new" set uses.
        take = pooled_eval_take(
            self.new_span,
            {s: int(a.properties["rows"].get("eval", 0)) for s, a in spans.items()},
            cfg.min_eval_rows,
        )
        eval_spans = list(take)
        validation = self._validation(spans, take, labels, featurizer)
        writer = ctx.output("model", "Model", span=self.new_span)
        backup = ctx.output_root / "_backup"  # outside the temp folder: survives kill -9
        resumed_from_epoch = _backed_up_epoch(backup)
        stopping, champion_loss = self._early_stopping(model, validation, backup / "stopping")
        weights = class_weights(data.label_counts, labels, cfg.class_weights)
        perturbed = self.mode == "incremental" and shrink_perturb(
            model, cfg.shrink, cfg.perturb, cfg.seed
        )  # after the champion's loss and weights were taken as early stopping's baseline
        callbacks = [
            # double_checkpoint: a kill during the backup write falls back to the previous one
            keras.callbacks.BackupAndRestore(str(backup), double_checkpoint=True),
            stopping,
            keras.callbacks.TensorBoard(log_dir=str(writer.path / "logs"), write_graph=False),
        ]
        if not schedule:  # a schedule owns the rate; ReduceLROnPlateau cannot set it
            callbacks.insert(
                2, keras.callbacks.ReduceLROnPlateau(monitor="val_loss", factor=0.5, patience=1)
            )
        with warnings.catch_warnings():
            # Keras 3 warns once per fit that a tf.data input of unknown length "ran out of
            # data" at the end of the first epoch: that is how it learns the epoch's length.
            warnings.filterwarnings("ignore", message="Your input ran out of data")
            history = model.fit(
                data.train,
                validation_data=validation,
                epochs=epochs,
                callbacks=callbacks,
                class_weight=weights,
                shuffle=False,
                verbose=0,
            )
        model.save(writer.path / "model.keras")
        decision = self._decision_threshold(model, validation, labels, data.label_counts)
        export_serving_model(
            featurizer, model, labels, writer.path / "saved_model", decision.get("threshold")
        )
        if "threshold" in decision:
            write_decision(
                writer.path / "saved_model", decision["threshold"], labels, decision["objective"]
            )
        shutil.rmtree(backup, ignore_errors=True)
        summary = self._summary(
            history.history,
            data,
            stopping,
            champion_loss,
            eval_spans=eval_spans,
            class_weight={labels[i]: round(w, 4) for i, w in weights.items()} if weights else None,
            resumed_from_epoch=resumed_from_epoch,
        )
        if grown_rows:
            summary["embedding_rows_added"] = grown_rows
        summary["decision"] = decision
        if self.mode == "incremental":
            summary["schedule"] = cfg.incremental_schedule
            summary["shrink_perturb"] = [cfg.shrink, cfg.perturb] if perturbed else None
        ctx.set_properties(
            "model",
            {
                **summary,
                "labels": labels,
                "featurizer": fitted.id,
                "family": fitted.properties.get("family", "text"),
                "spans": sorted(spans),
                "new_span": self.new_span,
            },
        )
        return summary

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

    def _validation(
        self,
        spans: Mapping[int, Artifact],
        take: Mapping[int, int],
        labels: list[str],
        featurizer: Any,
    ) -> Any:
        """The eval rows early stopping judges on: :func:`pooled_eval_take`'s, as batches."""
        parts = [
            featurized_dataset(
                [Path(spans[s].uri) / "eval"],
                labels,
                featurizer,
                self.cfg.batch_size,
                take_per_folder=None if s == self.new_span else n,
            )
            for s, n in take.items()
        ]
        parts = [part for part in parts if part is not None]
        if not parts:
            return None
        validation = parts[0]
        for part in parts[1:]:
            validation = validation.concatenate(part)
        return validation

    def _full_data(self, spans: Mapping[int, Artifact], labels: list[str], featurizer: Any) -> Any:
        """Every span's train split, shuffled."""
        cfg = self.cfg
        train = featurized_dataset(
            [Path(a.uri) / "train" for a in spans.values()],
            labels,
            featurizer,
            cfg.batch_size,
            shuffle_seed=cfg.seed,
        )
        rows = sum(int(a.properties["rows"]["train"]) for a in spans.values())
        counts: dict[str, float] = {}
        for artifact in spans.values():
            _add(counts, _train_counts(artifact))
        return TrainingData(train, rows, 0, counts)

    def _incremental_data(
        self, spans: Mapping[int, Artifact], labels: list[str], featurizer: Any
    ) -> Any:
        """The new span's train split plus a uniform replay sample of all earlier spans."""
        cfg = self.cfg
        new = Path(spans[self.new_span].uri)
        new_rows = int(spans[self.new_span].properties["rows"]["train"])
        quotas = self.replay_quotas(spans, new_rows)
        parts = []
        replayed = 0
        counts = _train_counts(spans[self.new_span])
        for span, quota in quotas.items():
            if not quota:
                continue
            folder = Path(spans[span].uri) / "replay"
            rows = int(spans[span].properties["rows"].get("train", 0)) or 1
            if cfg.replay_class_balanced:
                _add(counts, {label: quota / len(labels) for label in labels})
                # The same share of the span's quota for every class (fewer if it has fewer).
                per_class = allocate(quota, dict.fromkeys(labels, quota))
                for label, k in per_class.items():
                    parts.append(
                        featurized_dataset(
                            [folder],
                            labels,
                            featurizer,
                            cfg.batch_size,
                            take_per_folder=k,
                            only_label=label,
                        )
                    )
            else:
                available = int(spans[span].properties["rows"].get("replay", quota))
                replayed += min(quota, available)
                # A prefix of the replay folder is uniform: its expected class mix is the span's.
                _add(counts, _train_counts(spans[span], min(quota, available) / rows))
                parts.append(
                    featurized_dataset(
                        [folder], labels, featurizer, cfg.batch_size, take_per_folder=quota
                    )
                )
        parts = [part for part in parts if part is not None]
        if cfg.replay_class_balanced:
            replayed = sum(1 for part in parts for _ in part.unbatch())
        train = featurized_dataset([new / "train"], labels, featurizer, cfg.batch_size).unbatch()
        for part in parts:
            train = train.concatenate(part.unbatch())
        train = train.shuffle(20_000, seed=cfg.seed).batch(cfg.batch_size)
        return TrainingData(train, new_rows + replayed, replayed, counts)

    def replay_quotas(self, spans: Mapping[int, Artifact], new_rows: int) -> dict[int, int]:
        """Rows to replay from each earlier span: ``replay_ratio`` × the new rows in all.

        Replay at most replay_ratio old rows per new one: the cost stays proportional to the
        new data, and old and new weigh in the update as the ratio says. Spread over the
        earlier spans in proportion to their train rows, so the replay is a uniform sample of
        the whole history, stratified by span (each span's replay folder is in random order).
        """
        budget = int(self.cfg.replay_ratio * new_rows)
        if self.cfg.replay_rows:  # an optional cap (0: none)
            budget = min(budget, self.cfg.replay_rows)
        sizes = {
            s: int(a.properties["rows"].get("train", 0))
            for s, a in spans.items()
            if s != self.new_span
        }
        return allocate(budget, sizes)

    def registered(self, ctx: ExecutionContext, outputs: Mapping[str, Artifact]) -> None:
        pass
