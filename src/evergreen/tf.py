"""Importing TensorFlow quietly, and only when needed.

TensorFlow 2.21 writes several lines of C++ start-up logs (oneDNN, CUDA probing) straight to
file descriptor 2 before ``TF_CPP_MIN_LOG_LEVEL`` takes effect. We hide them while importing,
and print them after all if the import fails. Set ``EVERGREEN_TF_LOGS=1`` to see them anyway.
"""

from __future__ import annotations

import os
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
_module: Any = None
import_seconds = 0.0  # what importing TensorFlow and Keras cost this process (0: not yet)


@contextmanager
def _without_sklearn() -> Iterator[None]:
    """Import TensorFlow without scikit-learn (and what it pulls in).

    ``import tensorflow`` imports Keras, whose ``keras.wrappers`` imports scikit-learn when it
    is installed (0.7 s measured in an update's profile, issue 13); Evergreen never uses those
    wrappers, and Keras falls back to stubs on ImportError. The block lasts only for this
    import: a later ``import sklearn`` (a custom model module's) works as usual.
    """
    if "sklearn" in sys.modules:
        yield
        return
    sys.modules["sklearn"] = None  # type: ignore[assignment]  # makes `import sklearn` fail
    try:
        yield
    finally:
        if "sklearn" in sys.modules and sys.modules["sklearn"] is None:
            del sys.modules["sklearn"]


# train.gpu_memory_growth: applied to every GPU when TensorFlow is imported (it cannot change
# once a GPU is initialized); evergreen.training.strategy sets it from the config first.
gpu_memory_growth = True


def tensorflow() -> Any:
    """The ``tensorflow`` module, imported once (seconds: commands that don't need it skip it)."""
    global _module, import_seconds
    if _module is not None:
        return _module
    started = time.perf_counter()
    with _without_sklearn():
        _module = _import_quietly()
        import keras  # noqa: F401  # inside the block too (TensorFlow imports it lazily)
    import_seconds = time.perf_counter() - started
    return _module


def _import_quietly() -> Any:
    if os.environ.get("EVERGREEN_TF_LOGS"):
        import tensorflow as tf

        _grow_gpu_memory(tf)
        return tf
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as captured:
        os.dup2(captured.fileno(), 2)
        try:
            import tensorflow as tf

            tf.config.list_physical_devices()  # device probing logs happen here, not at first use
            _grow_gpu_memory(tf)
        except BaseException:
            os.dup2(saved, 2)
            captured.seek(0)
            sys.stderr.write(captured.read().decode("utf-8", errors="replace"))
            raise
        finally:
            os.dup2(saved, 2)
            os.close(saved)
    return tf


def _grow_gpu_memory(tf: Any) -> None:
    """Memory growth on every GPU (``gpu_memory_growth``): TF otherwise takes all at start."""
    for gpu in tf.config.list_physical_devices("GPU"):
        try:
            tf.config.experimental.set_memory_growth(gpu, gpu_memory_growth)
        except (RuntimeError, ValueError):  # already initialized: the setting it has stays
            pass
