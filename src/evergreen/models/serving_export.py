"""The one exporter: a trained model and its featurizer as a SavedModel on raw inputs.

Every family, the adopted models, the multi-worker trainer and the tests export through
:func:`export_serving_model`. The SavedModel runs the featurizer in-graph
(:meth:`~evergreen.models.contract.Featurizer.raw_to_model_inputs`), so it loads with no
Evergreen code and answers exactly what training measured.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from evergreen.errors import DataError
from evergreen.models.contract import INPUTS_FILE, Featurizer, keras_module
from evergreen.models.tfserving_signatures import add_example_signatures, set_method_names
from evergreen.tf import tensorflow

__all__ = ["export_serving_model"]

Endpoint = Callable[..., Any]


def export_serving_model(
    featurizer: Featurizer,
    model: Any,
    labels: Sequence[str],
    export_dir: str | Path,
    threshold: float | None = None,
) -> Path:
    """A SavedModel on raw inputs, loadable with no Evergreen code.

    Signatures, each taking :meth:`Featurizer.raw_signature` (one tensor of shape ``[None]``
    per raw input):

    - ``serving_default`` → ``scores``: float32 ``[None, C]``, ``classes``: string ``[None, C]``.
    - ``classify`` → ``label``: string ``[None]``, ``score``: float32 ``[None]``.
    - ``classification`` / ``regression``: TF Serving's Classify and Regress signatures over
      serialized ``tf.Example`` (see :mod:`evergreen.models.tfserving_signatures`).
    - the featurizer's ``extra_endpoints()`` if it has them (text: ``tokenize``).

    Args:
        featurizer: the fitted featurizer the model was trained on.
        model: a Keras model from ``featurizer.model_inputs`` to C class probabilities.
        labels: label names by class index (C distinct names).
        export_dir: where to write; the caller makes it atomic (temporary folder, rename).
        threshold: two classes only: ``classify`` answers ``labels[1]`` when its score is at
            least this, instead of argmax (see :mod:`evergreen.components.threshold`).

    Returns:
        ``export_dir`` as a Path; ``assets.extra/evergreen_inputs.json`` in it maps each
        signature input to its raw column.

    Raises:
        DataError: the labels are not one distinct name per model output.
    """
    labels = _checked_labels(model, labels)
    signature = featurizer.raw_signature()
    probabilities, endpoints = _endpoints(featurizer, model, labels, threshold)
    archive = keras_module().export.ExportArchive()
    for layer in featurizer_layers(featurizer):
        archive.track(layer)
    archive.track(model)
    tf = tensorflow()
    specs = [tf.TensorSpec(shape=[None], dtype=dtype, name=n) for n, dtype in signature.items()]
    for name in ("serving_default", "classify"):
        archive.add_endpoint(name, endpoints[name], input_signature=specs)
    add_example_signatures(
        archive, signature, lambda raw: probabilities(*[raw[n] for n in signature]), labels
    )
    more = getattr(featurizer, "extra_endpoints", None)  # e.g. text's tokenize
    for name, endpoint in (more() if more else {}).items():
        archive.add_endpoint(name, endpoint, input_signature=specs)
    export_dir = Path(export_dir)
    archive.write_out(str(export_dir), verbose=False)
    set_method_names(export_dir)
    extra = export_dir / "assets.extra"
    extra.mkdir(exist_ok=True)
    (extra / INPUTS_FILE).write_text(
        json.dumps(featurizer.raw_columns(), indent=2) + "\n", encoding="utf-8"
    )
    return export_dir


def _checked_labels(model: Any, labels: Sequence[str]) -> list[str]:
    labels = [str(label) for label in labels]
    outputs = int(model.output_shape[-1])
    if len(labels) != outputs:
        raise DataError(
            f"the model has {outputs} outputs but {len(labels)} labels came ({labels!r:.200}): "
            "give one label per output, in the model's output order (adopt: --labels)."
        )
    if len(set(labels)) != len(labels):
        raise DataError(f"labels must be distinct, got {labels!r:.200}: name each class once.")
    return labels


def _endpoints(
    featurizer: Featurizer, model: Any, labels: list[str], threshold: float | None
) -> tuple[Endpoint, dict[str, Endpoint]]:
    """``probabilities`` and the two raw-input signatures built on it, over the raw inputs in
    signature order (``probabilities`` also feeds the tf.Example signatures)."""
    tf = tensorflow()
    names = list(featurizer.raw_signature())
    num_classes = len(labels)
    label_names = tf.constant(labels, dtype=tf.string)

    # Traced once, as a function of its own that every endpoint calls: each endpoint tracing
    # the featurizer and the model anew cost most of an export's CPU (issue 13).
    @tf.function(
        input_signature=[
            tf.TensorSpec(shape=[None], dtype=dtype)
            for dtype in featurizer.raw_signature().values()
        ],
        autograph=False,
    )
    def probabilities(*args: Any) -> Any:
        inputs = featurizer.raw_to_model_inputs(dict(zip(names, args, strict=True)))
        # An empty batch would fail inside the model's layers (shape errors): answer it here.
        return tf.cond(
            tf.shape(args[0])[0] > 0,
            lambda: tf.cast(model(inputs, training=False), tf.float32),
            lambda: tf.zeros([0, num_classes], tf.float32),
        )

    def serve(*args: Any) -> dict[str, Any]:
        scores = probabilities(*args)
        return {
            "scores": scores,
            "classes": tf.tile(label_names[tf.newaxis, :], [tf.shape(scores)[0], 1]),
        }

    def classify(*args: Any) -> dict[str, Any]:
        scores = probabilities(*args)
        best = tf.argmax(scores, axis=-1)
        if threshold is not None and num_classes == 2:  # the decision threshold, in-graph
            best = tf.cast(scores[:, 1] >= tf.constant(threshold, tf.float32), tf.int64)
        return {
            "label": tf.gather(label_names, best),
            "score": tf.gather(scores, best, batch_dims=1),
        }

    return probabilities, {"serving_default": serve, "classify": classify}


def featurizer_layers(featurizer: Any) -> list[Any]:
    """Keras layers the featurizer uses in-graph (built), for ExportArchive to track."""
    layers = getattr(featurizer, "serving_layers", None)
    return list(layers()) if layers else []
