"""Featurized records: one ``tf.train.Example`` per row, as a featurizer's spec describes it.

:meth:`~evergreen.models.contract.Featurizer.feature_spec` names each featurized field with its
shape and dtype; :func:`encode_featurized` writes the fields plus the label and the row hash,
and ``tf.data`` reads them back with :func:`parse_spec`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from evergreen.examples import ROW_HASH
from evergreen.tf import tensorflow

__all__ = ["encode_featurized", "parse_spec"]


def encode_featurized(
    arrays: Mapping[str, np.ndarray],
    spec: Mapping[str, tuple[list[int], str]],
    labels: Sequence[str],
    hashes: Sequence[str],
) -> list[bytes]:
    """One serialized ``tf.train.Example`` per row: the featurized fields, label and row hash."""
    tf = tensorflow()
    out = []
    for i, (label, row_hash) in enumerate(zip(labels, hashes, strict=True)):
        feature = {}
        for name, (_, dtype) in spec.items():
            value = arrays[name][i]
            if dtype == "int64":
                feature[name] = tf.train.Feature(
                    int64_list=tf.train.Int64List(value=np.ravel(value))
                )
            elif dtype == "float32":
                feature[name] = tf.train.Feature(
                    float_list=tf.train.FloatList(value=np.ravel(value))
                )
            else:
                data = value if isinstance(value, bytes) else str(value).encode("utf-8")
                feature[name] = tf.train.Feature(bytes_list=tf.train.BytesList(value=[data]))
        feature["label"] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[label.encode("utf-8")])
        )
        feature[ROW_HASH] = tf.train.Feature(
            bytes_list=tf.train.BytesList(value=[row_hash.encode()])
        )
        out.append(
            tf.train.Example(features=tf.train.Features(feature=feature)).SerializeToString()
        )
    return out


def parse_spec(spec: Mapping[str, tuple[list[int], str]]) -> dict[str, Any]:
    """``tf.io.parse_example`` features for a featurizer's spec plus the label."""
    tf = tensorflow()
    dtypes = {"int64": tf.int64, "float32": tf.float32, "string": tf.string}
    out = {
        name: tf.io.FixedLenFeature(shape, dtypes[dtype]) for name, (shape, dtype) in spec.items()
    }
    out["label"] = tf.io.FixedLenFeature([], tf.string)
    return out
