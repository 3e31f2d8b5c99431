"""``[train]``'s scale-out keys as a ``tf.distribute`` strategy and a Keras dtype policy.

``distribution = "none"`` keeps TensorFlow's default strategy; ``"mirrored"`` builds and fits the
model under ``MirroredStrategy`` (every local GPU, one replica on a CPU-only host; Keras 3's
``fit`` supports it); ``"multi_worker"`` uses ``MultiWorkerMirroredStrategy`` from ``TF_CONFIG``,
which TensorFlow only accepts before it initializes its runtime: ``evergreen train-worker``
creates it first thing (:func:`multi_worker_strategy`).

Mixed precision computes in float16/bfloat16 and keeps variables in float32; the model's last
layer is rebuilt in float32 (:func:`float32_outputs`) so probabilities, the loss and the
exported ``scores`` stay float32.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from evergreen.config import TrainConfig
from evergreen.errors import ConfigError

_multi_worker: Any = None  # the process's MultiWorkerMirroredStrategy, created once


@dataclass(frozen=True)
class TaskInfo:
    """This process's place in the cluster, from ``TF_CONFIG`` (one worker when unset)."""

    workers: int
    index: int
    task_type: str

    @property
    def is_chief(self) -> bool:
        """Worker 0 (or the ``chief`` task): it exports, registers and runs the loop."""
        return self.task_type == "chief" or (self.task_type == "worker" and self.index == 0)


def task_info(environ: Any = None) -> TaskInfo:
    """Parse ``TF_CONFIG`` (``{"cluster": {"worker": [...]}, "task": {"type", "index"}}``).

    Raises:
        ConfigError: TF_CONFIG is not JSON or names a task outside its cluster.
    """
    raw = (environ if environ is not None else os.environ).get("TF_CONFIG", "")
    if not raw.strip():
        return TaskInfo(1, 0, "worker")
    try:
        spec = json.loads(raw)
        cluster, task = spec.get("cluster", {}), spec.get("task", {})
        task_type, index = str(task.get("type", "worker")), int(task.get("index", 0))
        workers = sum(len(cluster.get(t, [])) for t in ("chief", "worker"))
    except (ValueError, AttributeError, TypeError) as e:
        raise ConfigError(
            f"TF_CONFIG is not valid: {e}; set it to JSON like "
            '{"cluster": {"worker": ["host0:port", "host1:port"]}, "task": {"type": "worker", "index": 0}}'
        ) from None
    if task_type not in ("chief", "worker") or not 0 <= index < len(cluster.get(task_type, [])):
        raise ConfigError(
            f"TF_CONFIG task {task_type}:{index} is not in its cluster {sorted(cluster)}; "
            "give each process its own task index, 0 .. workers - 1"
        )
    return TaskInfo(max(workers, 1), index, task_type)


def local_tf_configs(workers: int) -> list[str]:
    """One ``TF_CONFIG`` per worker of a cluster on this machine (free loopback ports).

    For trying multi-worker training on one host, tests and benchmarks. The ports are free when
    chosen; another program could take one before the workers bind it (then start again).
    """
    import socket

    sockets = [socket.socket() for _ in range(workers)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        cluster = {"worker": [f"127.0.0.1:{s.getsockname()[1]}" for s in sockets]}
    finally:
        for s in sockets:
            s.close()
    return [
        json.dumps({"cluster": cluster, "task": {"type": "worker", "index": i}})
        for i in range(workers)
    ]


def multi_worker_strategy() -> Any:
    """The process's ``MultiWorkerMirroredStrategy`` (from TF_CONFIG), created on first use.

    Create it before anything else touches TensorFlow (``evergreen train-worker`` does):
    TensorFlow refuses to configure collective ops once its runtime has started.
    """
    global _multi_worker
    if _multi_worker is None:
        from evergreen.tf import tensorflow

        if not os.environ.get("TF_CONFIG", "x").strip():  # blank: one worker, as task_info says
            del os.environ["TF_CONFIG"]  # (TensorFlow's resolver fails to parse it)
        _multi_worker = tensorflow().distribute.MultiWorkerMirroredStrategy()
    return _multi_worker


def apply_device_settings(cfg: TrainConfig) -> None:
    """``train.gpu_memory_growth`` for TensorFlow, before it is imported when possible."""
    import evergreen.tf as tf_mod

    tf_mod.gpu_memory_growth = cfg.gpu_memory_growth
    if tf_mod._module is not None:
        tf_mod._grow_gpu_memory(tf_mod._module)


def strategy_for(cfg: TrainConfig) -> Any:
    """The strategy ``train.distribution`` asks for (TensorFlow's default one for ``none``)."""
    from evergreen.tf import tensorflow

    tf = tensorflow()
    if cfg.distribution == "mirrored":
        return tf.distribute.MirroredStrategy()
    if cfg.distribution == "multi_worker":
        return multi_worker_strategy()
    return tf.distribute.get_strategy()


@contextlib.contextmanager
def precision_policy(cfg: TrainConfig) -> Iterator[None]:
    """Keras's global dtype policy set to ``train.mixed_precision`` inside; restored after."""
    import keras

    if cfg.mixed_precision == "none":
        yield
        return
    previous = keras.config.dtype_policy()
    keras.config.set_dtype_policy(cfg.mixed_precision)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(previous)


@contextlib.contextmanager
def training_scope(cfg: TrainConfig) -> Iterator[Any]:
    """Device settings, the dtype policy and the strategy's scope; yields the strategy."""
    apply_device_settings(cfg)
    strategy = strategy_for(cfg)
    with precision_policy(cfg), strategy.scope():
        yield strategy


def float32_outputs(model: Any, cfg: TrainConfig) -> Any:
    """``model`` with its output layer computing in float32 under mixed precision.

    Softmax and cross-entropy lose too much in float16; Keras's mixed-precision guide keeps the
    last layer in float32. A functional model is cloned with that layer's dtype set to float32
    (a fresh model: only called on models just built); any other model gets a float32 linear
    activation on top.

    Returns:
        ``model`` itself when ``train.mixed_precision`` is ``none`` or its output is float32.
    """
    import keras

    if cfg.mixed_precision == "none" or str(model.outputs[0].dtype) == "float32":
        return model
    last = model.layers[-1]

    def clone(layer: Any) -> Any:
        config = layer.get_config()
        if layer is last:
            config = {**config, "dtype": "float32"}
        return layer.__class__.from_config(config)

    try:
        rebuilt = keras.models.clone_model(model, clone_function=clone)
    except (ValueError, TypeError, NotImplementedError):
        rebuilt = None
    if rebuilt is not None and str(rebuilt.outputs[0].dtype) == "float32":
        return rebuilt
    outputs = keras.layers.Activation("linear", dtype="float32", name="float32_output")(
        model.outputs[0]
    )
    return keras.Model(model.inputs, outputs, name=model.name)
