"""TF Serving's classification and regression signatures over serialized ``tf.Example``.

TF Serving's Classify and Regress APIs (gRPC, and REST ``:classify`` / ``:regress``) only run a
signature whose ``method_name`` is ``tensorflow/serving/classify`` (``.../regress``) and whose
one input, ``inputs``, is a 1-D string tensor of serialized ``tf.Example`` protos — the
``tf.compat.v1.saved_model.classification_signature_def`` contract. Every exported serving
model gets:

- ``classification``: ``inputs`` (string ``[None]``) → ``classes`` (string ``[None, C]``, the
  label names) and ``scores`` (float32 ``[None, C]``, the class probabilities);
- ``regression`` (two classes only, as TF1 Estimators' binary heads export it): ``inputs`` →
  ``outputs`` (float32 ``[None]``, the probability of the second label).

Each ``tf.Example`` carries one feature per raw signature input (``text``, ``minutes``...),
the same names ``serving_default`` takes. A missing feature is "" for strings, NaN for floats
and 0 for integers, as :func:`evergreen.models.saved_model.feed_saved_model` fills missing values.

TF2's ``tf.saved_model.save`` (and Keras' ``ExportArchive``) writes every signature with
method ``tensorflow/serving/predict`` and has no way to choose it, so :func:`set_method_names`
rewrites the method names in ``saved_model.pb`` after the export and recomputes
``fingerprint.pb``. ``tf.saved_model.load`` ignores method names; TF Serving reads them (its
metadata API reports them, which the serving tests check).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from evergreen.tf import tensorflow

CLASSIFY_SIGNATURE = "classification"
REGRESS_SIGNATURE = "regression"
CLASSIFY_INPUTS = "inputs"  # tf.saved_model.CLASSIFY_INPUTS / REGRESS_INPUTS
CLASSIFY_METHOD = "tensorflow/serving/classify"
REGRESS_METHOD = "tensorflow/serving/regress"
PREDICT_METHOD = "tensorflow/serving/predict"
METHODS = {CLASSIFY_SIGNATURE: CLASSIFY_METHOD, REGRESS_SIGNATURE: REGRESS_METHOD}


def example_features(raw_dtypes: Mapping[str, Any]) -> dict[str, Any]:
    """``tf.io.parse_example`` features for raw inputs of these dtypes, with defaults."""
    tf = tensorflow()
    features = {}
    for name, dtype in raw_dtypes.items():
        dtype = tf.as_dtype(dtype)
        if dtype == tf.string:
            features[name] = tf.io.FixedLenFeature([], tf.string, default_value="")
        elif dtype.is_floating:
            features[name] = tf.io.FixedLenFeature([], tf.float32, default_value=float("nan"))
        else:
            features[name] = tf.io.FixedLenFeature([], tf.int64, default_value=0)
    return features


def add_example_signatures(
    archive: Any,
    raw_dtypes: Mapping[str, Any],
    probabilities: Callable[[dict[str, Any]], Any],
    labels: Sequence[str],
) -> None:
    """Add ``classification`` (and, for two labels, ``regression``) to a Keras ExportArchive.

    Args:
        archive: a ``keras.export.ExportArchive`` already tracking the model and featurizer.
        raw_dtypes: raw signature input name → TF dtype (what ``serving_default`` takes).
        probabilities: raw inputs (name → tensor ``[None]``) → float32 ``[None, C]``.
        labels: label names by class index.
    """
    tf = tensorflow()
    features = example_features(raw_dtypes)
    label_names = tf.constant(list(labels), dtype=tf.string)
    spec = [tf.TensorSpec(shape=[None], dtype=tf.string, name=CLASSIFY_INPUTS)]

    def parse(serialized: Any) -> dict[str, Any]:
        parsed = tf.io.parse_example(serialized, features)
        return {n: tf.cast(parsed[n], tf.as_dtype(d)) for n, d in raw_dtypes.items()}

    def classification(inputs: Any) -> dict[str, Any]:
        scores = probabilities(parse(inputs))
        classes = tf.tile(label_names[tf.newaxis, :], [tf.shape(scores)[0], 1])
        return {"classes": classes, "scores": scores}

    def regression(inputs: Any) -> dict[str, Any]:
        return {"outputs": probabilities(parse(inputs))[:, 1]}

    archive.add_endpoint(CLASSIFY_SIGNATURE, classification, input_signature=spec)
    if len(labels) == 2:
        archive.add_endpoint(REGRESS_SIGNATURE, regression, input_signature=spec)


def set_method_names(export_dir: str | Path) -> dict[str, str]:
    """Give the classification/regression signatures TF Serving's method names, in place.

    Rewrites ``saved_model.pb`` (through a temporary file and a rename) and recomputes
    ``fingerprint.pb`` from it. Call it right after the export, before any digest is taken.

    Returns:
        signature name → method name, for every signature of the first MetaGraph.
    """
    tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow.python.saved_model import fingerprinting_utils

    path = Path(export_dir) / "saved_model.pb"
    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString(path.read_bytes())
    for graph in saved.meta_graphs:
        for name, method in METHODS.items():
            if name in graph.signature_def:
                graph.signature_def[name].method_name = method
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(saved.SerializeToString(deterministic=True))
    os.replace(tmp, path)
    if (Path(export_dir) / "fingerprint.pb").exists():
        fingerprinting_utils.write_fingerprint(str(export_dir))
    return {name: sig.method_name for name, sig in saved.meta_graphs[0].signature_def.items()}


def signature_defs(saved_model_dir: str | Path) -> Any:
    """The ``SignatureDefMap`` proto of a SavedModel's first MetaGraph (what TF Serving reads)."""
    tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2
    from tensorflow_serving.apis import get_model_metadata_pb2

    saved = saved_model_pb2.SavedModel()
    saved.ParseFromString((Path(saved_model_dir) / "saved_model.pb").read_bytes())
    out = get_model_metadata_pb2.SignatureDefMap()
    if saved.meta_graphs:
        for name, sig in saved.meta_graphs[0].signature_def.items():
            out.signature_def[name].CopyFrom(sig)
    return out
