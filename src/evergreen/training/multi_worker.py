"""``train.distribution = "multi_worker"``: a training loop over ``MultiWorkerMirroredStrategy``.

Keras 3's ``fit`` fails under ``MultiWorkerMirroredStrategy`` (``Attempt to convert a value
(PerReplica…)``, keras-team/keras#20585), so each step runs the same Keras model through
``strategy.run`` over ``strategy.experimental_distribute_dataset``. Everything else keeps the
Keras path's semantics by using the same pieces: the data of :class:`TrainModel`, its early
stopping callback (the champion is the baseline in incremental runs), ``ReduceLROnPlateau``,
class weights in the loss, TensorBoard ``epoch_*`` scalars, and ``TrainModel._summary``. An
increment also starts as the Keras path's does: the champion's embeddings grown for a grown
featurizer (:mod:`evergreen.models.growth`), the re-warmed learning rate and shrink-and-perturb
(:mod:`evergreen.components.schedule`); and the chief chooses a binary task's decision
threshold on the validation rows and exports it (:mod:`evergreen.components.threshold`).

Every epoch ends with a checkpoint (``tf.train.CheckpointManager``: model, optimizer, the epoch
counter, the callbacks' state and the best weights so far) in ``<run>/_checkpoint``. A worker
killed mid-training (a preempted spot VM) and restarted with the others resumes after the last
checkpointed epoch: all workers restore the chief's checkpoint (the project root is shared
storage), the others write theirs to scratch folders (every worker must take part in a save).
Only the chief exports and registers the candidate.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evergreen.components.evaluate import pooled_eval_take
from evergreen.components.schedule import shrink_perturb
from evergreen.components.threshold import write_decision
from evergreen.errors import WorkerLost
from evergreen.models.contract import compile_model
from evergreen.models.serving_export import export_serving_model
from evergreen.training.data import (
    TrainInputs,
    class_weights,
    early_stopping_patience,
    schedule_record,
)
from evergreen.training.strategy import (
    apply_device_settings,
    multi_worker_strategy,
    precision_policy,
    task_info,
)

CHECKPOINT_DIR = "_checkpoint"  # beside the run's output folders: survives kill -9
# What each callback must get back after a restart to decide as the uninterrupted run would.
CALLBACK_STATE = {
    "stopping": ("best", "best_epoch", "wait"),
    "plateau": ("best", "wait", "cooldown_counter"),
}


@dataclass
class LoopResult:
    """What training produced: the model (best weights restored) and the epochs' logs."""

    model: Any
    history: dict[str, list[float]]
    stopping: Any
    champion_loss: float | None
    data: Any
    eval_spans: list[int]
    class_weight: dict[int, float] | None
    resumed_from_epoch: int
    optimizer_iterations: int
    weights_sha256: str
    labels: list[str] = field(default_factory=list)
    featurizer: Any = None
    validation: Any = None  # the eval rows judged on (the chief chooses the threshold on them)
    grown_rows: dict[str, int] = field(default_factory=dict)  # embedding rows added, by layer
    perturbed: bool = False  # shrink-and-perturb applies (before the first epoch, resumed or not)


@contextlib.contextmanager
def lost_workers_reported(checkpoint_dir: Path) -> Iterator[None]:
    """A collective that failed because a peer stopped becomes :class:`WorkerLost`.

    TensorFlow's coordination service notices a dead peer (missed heartbeats, seconds) and
    aborts the collectives of the survivors with ``UnavailableError``.

    Raises:
        WorkerLost: naming the failure and how to resume.
    """
    from evergreen.tf import tensorflow

    errors = tensorflow().errors
    try:
        yield
    except (errors.UnavailableError, errors.AbortedError, errors.DeadlineExceededError) as e:
        reason = str(e.message).strip().splitlines()[0][:300]
        raise WorkerLost(
            f"a worker stopped during training ({reason}); restart every worker with "
            f"`evergreen train-worker`: training resumes after the last epoch checkpointed in "
            f"{checkpoint_dir}"
        ) from None


def execute(component: Any, ctx: Any) -> dict[str, Any]:
    """``TrainModel.execute`` for ``multi_worker``: post the job, train, export on the chief.

    Args:
        component: the :class:`~evergreen.components.train.TrainModel` being run.
        ctx: its execution context (the chief's pipeline run).

    Returns:
        The run summary (``TrainModel._summary`` plus what the Keras path adds, ``workers``
        and ``optimizer_iterations``).
    """
    from evergreen.training import session

    info = task_info()
    checkpoint_dir = ctx.output_root / CHECKPOINT_DIR
    writer = ctx.output("model", "Model", span=component.new_span)
    inputs = ctx.declared
    session.post_job(component, inputs, checkpoint_dir, info)
    with lost_workers_reported(checkpoint_dir):
        result = train(component, inputs, checkpoint_dir, log_dir=writer.path / "logs")
    decision = export(component, result, writer.path)
    shutil.rmtree(checkpoint_dir, ignore_errors=True)
    summary = _summary(component, result, decision)
    summary.update(
        workers=info.workers,
        optimizer_iterations=result.optimizer_iterations,
        weights_sha256=result.weights_sha256,  # every worker logs its own: they must agree
    )
    ctx.set_properties("model", component.model_properties(summary, inputs, result.labels))
    return summary


def export(component: Any, result: LoopResult, folder: Path) -> dict[str, Any]:
    """Save the trained model and its SavedModel (with the decision threshold, chosen here).

    Returns:
        The decision, as ``TrainModel._decision_threshold`` gives it.
    """
    labels = result.labels
    result.model.save(folder / "model.keras")
    decision = component._decision_threshold(
        result.model, result.validation, labels, result.data.label_counts
    )
    saved_model = folder / "saved_model"
    export_serving_model(
        result.featurizer, result.model, labels, saved_model, decision.get("threshold")
    )
    if "threshold" in decision:
        write_decision(saved_model, decision["threshold"], labels, decision["objective"])
    return decision


def _summary(component: Any, result: LoopResult, decision: dict[str, Any]) -> dict[str, Any]:
    """``TrainModel._summary`` and the keys the Keras path adds (growth, decision, schedule)."""
    labels, cfg = result.labels, component.cfg
    summary = component._summary(
        result.history,
        result.data,
        result.stopping,
        result.champion_loss,
        eval_spans=result.eval_spans,
        class_weight={labels[i]: round(w, 4) for i, w in result.class_weight.items()}
        if result.class_weight
        else None,
        resumed_from_epoch=result.resumed_from_epoch,
    )
    if result.grown_rows:
        summary["embedding_rows_added"] = result.grown_rows
    summary["decision"] = decision
    if component.mode == "incremental":
        summary.update(schedule_record(cfg, result.data))  # the peak "auto" chose and its rows
        summary["shrink_perturb"] = [cfg.shrink, cfg.perturb] if result.perturbed else None
    return summary


def train(
    component: Any, inputs: TrainInputs, checkpoint_dir: Path, *, log_dir: Path | None
) -> LoopResult:
    """Train ``component``'s candidate on this worker's share, in step with the other workers.

    Args:
        component: the TrainModel (its config, family, mode and new span).
        inputs: its input artifacts (featurizer, featurized spans, champion).
        checkpoint_dir: the chief's checkpoint folder (read by all, written by the chief).
        log_dir: TensorBoard folder (chief only; None on the other workers).

    Returns:
        The trained model with the best epoch's weights (the champion's if none beat it).
    """
    import keras

    cfg = component.cfg
    apply_device_settings(cfg)
    strategy = multi_worker_strategy()
    keras.utils.set_random_seed(cfg.seed)
    labels, featurizer, spans = _read_inputs(inputs)
    with precision_policy(cfg), strategy.scope():
        start = component.start(inputs, spans, labels, featurizer)
        model, data = start.model, start.data
        compile_model(model, learning_rate=start.learning_rate)  # loss-scaled for mixed_float16
        model.optimizer.build(model.trainable_variables)
    take = _eval_take(component, spans)
    validation = component._validation(spans, take, labels, featurizer)
    weights = class_weights(data.label_counts, labels, cfg.class_weights)
    steps = DistributedSteps(strategy, model, cfg.batch_size, weights, len(labels))
    loop = EpochLoop(component, model, steps, checkpoint_dir, log_dir)
    champion_loss = None
    if component.mode != "full" and validation is not None:
        champion_loss = steps.evaluate(validation)["loss"]
    loop.start(champion_loss)
    # As in the Keras path: after early stopping took the champion as its baseline, and only
    # before the first epoch (a resumed run's weights were perturbed and trained already).
    perturbed = component.mode == "incremental" and (cfg.shrink, cfg.perturb) != (1.0, 0.0)
    if perturbed and loop.resumed_from_epoch == 0:
        shrink_perturb(model, cfg.shrink, cfg.perturb, cfg.seed)
    history = loop.run(data.train, validation, start.epochs)
    return LoopResult(
        model=model,
        history=history,
        stopping=loop.stopping,
        champion_loss=champion_loss,
        data=data,
        eval_spans=list(take),
        class_weight=weights,
        resumed_from_epoch=loop.resumed_from_epoch,
        optimizer_iterations=int(model.optimizer.iterations.numpy()),
        weights_sha256=weights_digest(model),
        labels=labels,
        featurizer=featurizer,
        validation=validation,
        grown_rows=start.grown_rows,
        perturbed=perturbed,
    )


def _read_inputs(inputs: TrainInputs) -> tuple[list[str], Any, dict[int, Any]]:
    """The labels, the fitted featurizer and the featurized spans (by span number)."""
    from evergreen.models.registry import load_featurizer

    fitted = inputs.featurizer
    spans = dict(sorted(inputs.spans.items()))
    return list(fitted.properties["labels"]), load_featurizer(fitted.uri), spans


def _eval_take(component: Any, spans: dict[int, Any]) -> dict[int, int]:
    """Eval rows to judge on per span: the new span's, pooled with the latest when too few
    (the rows the single-process trainer and the evaluator use: ``pooled_eval_take``)."""
    return pooled_eval_take(
        component.new_span,
        {s: int(a.properties["rows"].get("eval", 0)) for s, a in spans.items()},
        component.cfg.min_eval_rows,
    )


def weights_digest(model: Any) -> str:
    """SHA-256 of the model's weights, in order: equal on workers that stayed in step."""
    import hashlib

    digest = hashlib.sha256()
    for weight in model.get_weights():
        digest.update(weight.tobytes())
    return digest.hexdigest()


class DistributedSteps:
    """One training epoch and one evaluation pass, each a loop of ``strategy.run`` steps.

    Losses are averaged over the *global* batch (``tf.nn.compute_average_loss``), so two
    workers with half a batch each take the same step a single process takes with the whole.
    Metrics come back as sums reduced across workers: every worker sees the same numbers and
    takes the same early-stopping decision.
    """

    def __init__(
        self,
        strategy: Any,
        model: Any,
        global_batch: int,
        weights: dict[int, float] | None,
        num_classes: int,
    ) -> None:
        from evergreen.tf import tensorflow

        tf = self.tf = tensorflow()
        self.strategy = strategy
        self.model = model
        self.global_batch = global_batch
        per_class = [weights.get(i, 1.0) if weights else 1.0 for i in range(num_classes)]
        self.class_weight = tf.constant(per_class, tf.float32)
        self._train_step = tf.function(self._train_replica_step_all)
        self._eval_step = tf.function(self._eval_replica_step_all)

    def distribute(self, dataset: Any) -> Any:
        """``dataset`` (global batches) split across workers and replicas, element by element."""
        tf = self.tf
        options = tf.data.Options()
        # Shards are concatenated and shuffled datasets, not one file per worker: shard by data.
        options.experimental_distribute.auto_shard_policy = (
            tf.data.experimental.AutoShardPolicy.DATA
        )
        return self.strategy.experimental_distribute_dataset(dataset.with_options(options))

    def _losses(self, x: Any, y: Any, *, training: bool) -> tuple[Any, Any, Any]:
        import keras

        tf = self.tf
        probabilities = tf.cast(self.model(x, training=training), tf.float32)
        per_example = keras.losses.sparse_categorical_crossentropy(y, probabilities)
        correct = tf.cast(tf.equal(tf.argmax(probabilities, -1), y), tf.float32)
        return per_example, correct, probabilities

    def _train_replica_step(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        tf = self.tf
        model, optimizer = self.model, self.model.optimizer
        with tf.GradientTape() as tape:
            per_example, correct, _ = self._losses(x, y, training=True)
            weighted = per_example * tf.gather(self.class_weight, y)
            loss = tf.nn.compute_average_loss(weighted, global_batch_size=self.global_batch)
            if model.losses:  # regularization: once per global step, split over replicas
                loss += tf.nn.scale_regularization_loss(tf.add_n(model.losses))
            scaled = optimizer.scale_loss(loss)  # LossScaleOptimizer under mixed_float16
        gradients = tape.gradient(scaled, model.trainable_variables)
        optimizer.apply_gradients(zip(gradients, model.trainable_variables, strict=True))
        count = tf.cast(tf.size(y), tf.float32)
        return tf.reduce_sum(weighted), tf.reduce_sum(correct), count

    def _train_replica_step_all(self, batch: Any) -> Any:
        results = self.strategy.run(self._train_replica_step, args=batch)
        return [self.strategy.reduce("SUM", r, axis=None) for r in results]

    def _eval_replica_step(self, x: Any, y: Any) -> tuple[Any, Any, Any]:
        tf = self.tf
        per_example, correct, _ = self._losses(x, y, training=False)
        return tf.reduce_sum(per_example), tf.reduce_sum(correct), tf.cast(tf.size(y), tf.float32)

    def _eval_replica_step_all(self, batch: Any) -> Any:
        results = self.strategy.run(self._eval_replica_step, args=batch)
        return [self.strategy.reduce("SUM", r, axis=None) for r in results]

    def _sums(self, dataset: Any, step: Any) -> dict[str, float]:
        totals = [0.0, 0.0, 0.0]
        for batch in self.distribute(dataset):
            totals = [t + float(v) for t, v in zip(totals, step(batch), strict=True)]
        loss, correct, rows = totals
        return {"loss": loss / max(rows, 1.0), "accuracy": correct / max(rows, 1.0), "rows": rows}

    def train_epoch(self, dataset: Any) -> dict[str, float]:
        """One pass over ``dataset``: mean (class-weighted) loss, accuracy, rows, all workers."""
        return self._sums(dataset, self._train_step)

    def evaluate(self, dataset: Any) -> dict[str, float]:
        """Mean cross-entropy and accuracy over ``dataset``, reduced across workers."""
        return self._sums(dataset, self._eval_step)


class EpochLoop:
    """Epochs with Keras's callbacks driven by hand, and a checkpoint after each epoch."""

    def __init__(
        self,
        component: Any,
        model: Any,
        steps: DistributedSteps,
        checkpoint_dir: Path,
        log_dir: Any,
    ) -> None:
        self.component = component
        self.model = model
        self.steps = steps
        self.tf = steps.tf
        self.log_dir = log_dir
        self.checkpoint_dir = checkpoint_dir
        self.resumed_from_epoch = 0
        self.stopping: Any = None
        self.plateau: Any = None
        self.callbacks: dict[str, Any] = {}
        self.history: dict[str, list[float]] = {}

    def start(self, champion_loss: float | None) -> None:
        """The callbacks (as the Keras path makes them), then the last checkpoint if any."""
        import keras

        from evergreen.components.early_stopping import ChampionEarlyStopping

        cfg, model = self.component.cfg, self.model
        patience = early_stopping_patience(cfg, self.component.family.name)
        if champion_loss is None:
            self.stopping = keras.callbacks.EarlyStopping(
                monitor="val_loss",
                patience=patience,
                min_delta=cfg.min_delta,
                restore_best_weights=True,
            )
        else:
            self.stopping = ChampionEarlyStopping(
                champion_loss, model.get_weights(), patience=patience, min_delta=cfg.min_delta
            )
        self.callbacks = {"stopping": self.stopping}
        schedule = keras.optimizers.schedules.LearningRateSchedule
        optimizer = getattr(model.optimizer, "inner_optimizer", model.optimizer)  # loss scaling
        if not isinstance(getattr(optimizer, "_learning_rate", None), schedule):
            # As in the fit path: a schedule owns the rate, ReduceLROnPlateau could not set it.
            self.plateau = keras.callbacks.ReduceLROnPlateau(
                monitor="val_loss", factor=0.5, patience=1
            )
            self.callbacks["plateau"] = self.plateau
        model.stop_training = False
        for callback in self.callbacks.values():
            callback.set_model(model)
            callback.on_train_begin()
        self._make_checkpoint()
        self._restore()

    def _make_checkpoint(self) -> None:
        tf = self.tf
        # Plain (not mirrored) variables: the same values on every worker, saved with the model.
        self.epoch = tf.Variable(0, dtype=tf.int64, trainable=False)
        self.state = tf.Variable("{}", dtype=tf.string, trainable=False)
        self.best = [tf.Variable(w, trainable=False) for w in self.model.get_weights()]
        checkpoint = tf.train.Checkpoint(
            model=self.model,
            optimizer=self.model.optimizer,
            epoch=self.epoch,
            state=self.state,
            best=self.best,
        )
        info = task_info()
        folder = self.checkpoint_dir
        if not info.is_chief:  # every worker saves (collectives); only the chief's is kept
            folder = self.checkpoint_dir.parent / f"{CHECKPOINT_DIR}-worker-{info.index}"
        self.checkpoint = checkpoint
        self.manager = tf.train.CheckpointManager(checkpoint, str(folder), max_to_keep=2)
        self.scratch = None if info.is_chief else folder

    def _restore(self) -> None:
        latest = self.tf.train.latest_checkpoint(str(self.checkpoint_dir))
        if latest is None:
            return
        self.checkpoint.restore(latest).expect_partial()
        state = json.loads(self.state.numpy().decode("utf-8"))
        self.resumed_from_epoch = int(self.epoch.numpy())
        for name, callback in self.callbacks.items():
            for key, value in state.get(name, {}).items():
                setattr(callback, key, value)
        if state["stopping_has_best"]:
            self.stopping.best_weights = [v.numpy() for v in self.best]
        if hasattr(self.stopping, "improved"):
            self.stopping.improved = self.stopping.best_epoch >= 0

    def _save(self) -> None:
        state: dict[str, Any] = {
            name: {k: _plain(getattr(callback, k)) for k in CALLBACK_STATE[name]}
            for name, callback in self.callbacks.items()
        }
        has_best = self.stopping.best_weights is not None
        if has_best:
            for variable, value in zip(self.best, self.stopping.best_weights, strict=True):
                variable.assign(value)
        self.state.assign(json.dumps({**state, "stopping_has_best": has_best}))
        self.manager.save(checkpoint_number=int(self.epoch.numpy()))

    def run(self, train: Any, validation: Any, epochs: int) -> dict[str, list[float]]:
        """Epochs from the restored one up to ``epochs``; the best weights restored at the end."""
        writers = self._summary_writers()
        for epoch in range(int(self.epoch.numpy()), epochs):
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message=".*eagerly has significant overhead")
                trained = self.steps.train_epoch(train)
                logs = {"loss": trained["loss"], "accuracy": trained["accuracy"]}
                if validation is not None:
                    checked = self.steps.evaluate(validation)
                    logs.update(val_loss=checked["loss"], val_accuracy=checked["accuracy"])
            for callback in self.callbacks.values():  # the plateau adds logs["learning_rate"]
                callback.on_epoch_end(epoch, logs)
            for key, value in logs.items():
                self.history.setdefault(key, []).append(float(value))
            self._write_scalars(writers, epoch, logs)
            self.epoch.assign(epoch + 1)
            self._save()
            if self.model.stop_training:
                break
        self.stopping.on_train_end()  # restores the best weights (the champion's if none beat it)
        if self.scratch is not None:
            shutil.rmtree(self.scratch, ignore_errors=True)
        return self.history

    def _summary_writers(self) -> dict[str, Any] | None:
        if self.log_dir is None:
            return None
        create = self.tf.summary.create_file_writer
        return {
            "train": create(str(Path(self.log_dir) / "train")),
            "validation": create(str(Path(self.log_dir) / "validation")),
        }

    def _write_scalars(self, writers: dict[str, Any] | None, epoch: int, logs: dict) -> None:
        """Keras's TensorBoard names: ``epoch_loss`` in train/ and validation/, and so on."""
        if writers is None:
            return
        for key, value in logs.items():
            split = "validation" if key.startswith("val_") else "train"
            with writers[split].as_default():
                self.tf.summary.scalar(f"epoch_{key.removeprefix('val_')}", value, step=epoch)
        for writer in writers.values():
            writer.flush()


def _plain(value: Any) -> Any:
    """A callback's number as a JSON value (numpy scalars become Python ones; inf stays inf)."""
    return value.item() if hasattr(value, "item") else value
