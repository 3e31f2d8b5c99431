"""TF Serving warm-up records: ``assets.extra/tf_serving_warmup_requests`` in every version.

TF Serving replays the ``tensorflow.serving.PredictionLog`` records of this TFRecord file when
it loads a version, before the version serves (SavedModel warmup), so the first real requests
do not pay for graph tracing and kernel selection. Evergreen writes one into each published
version, built from real rows:

- the model's request log (``<root>/serving/requests/<model>/*.jsonl``, newest lines first)
  when one exists: the rows clients really sent, already in the signature's input names;
- else the span's eval rows, mapped to signature inputs with the SavedModel's
  ``assets.extra/evergreen_inputs.json``.

Each record is a ``PredictLog`` whose ``PredictRequest`` names the model and
``serving_default`` and carries one row (:data:`MAX_ROWS` records at most), plus one record
with all of them as a batch. The file is written inside the registry's temporary version
folder, after the SavedModel's fingerprint (so a resumed publish is still recognised) and
before the per-file digests (so ``evergreen verify`` covers it). ``evergreen serve`` warms up
with these requests too, when a version has them.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.tf import tensorflow

WARMUP_FILE = Path("assets.extra") / "tf_serving_warmup_requests"
MAX_ROWS = 8
SIGNATURE = "serving_default"


def signature_inputs(saved_model_dir: Path) -> dict[str, str]:
    """``serving_default``'s input names → TF dtype names, read from ``saved_model.pb``."""
    from tensorflow.python.framework import dtypes

    from evergreen.models.tfserving_signatures import signature_defs

    defs = signature_defs(saved_model_dir).signature_def
    if SIGNATURE not in defs:
        return {}
    return {name: dtypes.as_dtype(info.dtype).name for name, info in defs[SIGNATURE].inputs.items()}


def logged_rows(request_dir: Path, inputs: Iterable[str], limit: int = MAX_ROWS) -> list[dict]:
    """The newest ``limit`` logged ``serving_default`` rows having exactly these inputs."""
    wanted = set(inputs)
    rows: list[dict] = []
    for path in sorted(Path(request_dir).glob("*.jsonl"), reverse=True):
        try:
            lines = path.read_text(encoding="utf-8").splitlines()
        except OSError:
            continue
        for line in reversed(lines):
            try:
                record = json.loads(line)
            except ValueError:  # a line cut by a crash: skip it
                continue
            values = record.get("inputs") if isinstance(record, dict) else None
            if (
                record.get("signature", SIGNATURE) == SIGNATURE
                and isinstance(values, dict)
                and set(values) == wanted
            ):
                rows.append(values)
                if len(rows) == limit:
                    return rows
    return rows


def eval_rows(
    rows: Iterable[Mapping[str, Any]], columns: Mapping[str, str], limit: int = MAX_ROWS
) -> list[dict]:
    """Raw data rows (column → value) as signature inputs, via ``evergreen_inputs.json``."""
    out = []
    for row in rows:
        out.append({name: row.get(column) for name, column in columns.items()})
        if len(out) == limit:
            break
    return out


def write_warmup_requests(
    version_dir: Path, model: str, rows: Sequence[Mapping[str, Any]]
) -> Path | None:
    """Write the warm-up TFRecord into a SavedModel folder; None when there is nothing to write.

    Args:
        version_dir: the SavedModel folder (the registry's temporary version folder).
        model: the model name the requests carry.
        rows: signature inputs (name → JSON value: text, number, or ``{"b64": ...}``).
    """
    tensorflow()
    from tensorflow_serving.apis import predict_pb2, prediction_log_pb2

    dtypes = signature_inputs(version_dir)
    rows = [r for r in rows if set(r) == set(dtypes)][:MAX_ROWS]
    if not dtypes or not rows:
        return None
    batches = [[row] for row in rows] + ([list(rows)] if len(rows) > 1 else [])
    path = Path(version_dir) / WARMUP_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tf = tensorflow()
    with tf.io.TFRecordWriter(str(path)) as writer:
        for batch in batches:
            request = predict_pb2.PredictRequest()
            request.model_spec.name = model
            request.model_spec.signature_name = SIGNATURE
            for name, dtype in dtypes.items():
                values = _column([row[name] for row in batch], dtype)
                request.inputs[name].CopyFrom(tf.make_tensor_proto(values, dtype=dtype))
            log = prediction_log_pb2.PredictionLog(
                predict_log=prediction_log_pb2.PredictLog(request=request)
            )
            writer.write(log.SerializeToString())
    return path


def read_warmup_requests(version_dir: Path) -> list[Any]:
    """The ``PredictRequest`` protos of a version's warm-up file ([] when it has none)."""
    path = Path(version_dir) / WARMUP_FILE
    if not path.is_file():
        return []
    tf = tensorflow()
    from tensorflow_serving.apis import prediction_log_pb2

    requests = []
    for record in tf.data.TFRecordDataset(str(path)).as_numpy_iterator():
        log = prediction_log_pb2.PredictionLog.FromString(record)
        if log.WhichOneof("log_type") == "predict_log":
            requests.append(log.predict_log.request)
    return requests


def request_arrays(request: Any) -> dict[str, np.ndarray]:
    """A ``PredictRequest``'s inputs as NumPy arrays."""
    tf = tensorflow()
    return {name: tf.make_ndarray(proto) for name, proto in request.inputs.items()}


def _column(values: list[Any], dtype: str) -> np.ndarray:
    import base64

    if dtype == "string":
        out = np.empty(len(values), dtype=object)
        for i, v in enumerate(values):
            if isinstance(v, dict) and "b64" in v:
                out[i] = base64.b64decode(v["b64"])
            elif isinstance(v, bytes):  # image bytes from the examples
                out[i] = v
            else:
                out[i] = b"" if v is None else str(v).encode("utf-8")
        return out
    numbers = [np.nan if v is None else v for v in values]
    if dtype.startswith(("int", "uint")):
        numbers = [0 if isinstance(v, float) and np.isnan(v) else int(v) for v in numbers]
    return np.asarray(numbers, dtype=dtype)
