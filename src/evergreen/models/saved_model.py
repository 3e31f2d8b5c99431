"""Feeding raw rows to an exported SavedModel, as the evaluator, the CLI and tests do.

The SavedModel's ``assets.extra/evergreen_inputs.json`` (written by
:mod:`evergreen.models.serving_export`) says which raw column feeds which signature input.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.errors import DataError, NotFound
from evergreen.models.contract import INPUTS_FILE
from evergreen.tf import tensorflow

__all__ = ["feed_saved_model", "raw_inputs_of", "serving_function", "to_tensor"]


def raw_inputs_of(saved_model: Path) -> dict[str, str]:
    """Signature input → raw column of an exported SavedModel ({} when it carries no map)."""
    path = Path(saved_model) / "assets.extra" / INPUTS_FILE
    if path.is_file():
        return json.loads(path.read_text(encoding="utf-8"))
    return {}


def feed_saved_model(
    saved_model: Path,
    rows: Sequence[Mapping[str, Any]] | Sequence[str],
    *,
    columns: Mapping[str, str] | None = None,
    batch_size: int = 1024,
) -> tuple[np.ndarray, list[str]]:
    """Class probabilities of raw ``rows`` (dicts of column → value) from ``serving_default``.

    ``rows`` may also be plain strings for a model with one input (a text model). Values are
    converted to each input's dtype: missing numbers become NaN, missing strings "".
    ``columns`` (signature input → column) is used when the SavedModel carries no
    ``evergreen_inputs.json`` (one not exported by Evergreen); default: the input's name.

    Raises:
        NotFound: ``saved_model`` holds no SavedModel.
    """
    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise NotFound(
            f"no SavedModel in {saved_model} (expected {Path(saved_model) / 'saved_model.pb'})."
        )
    serve = serving_function(Path(saved_model))
    inputs = serve.structured_input_signature[1]
    columns = raw_inputs_of(saved_model) or dict(columns or {})
    rows = list(rows)
    chunks, labels = [], None
    for start in range(0, max(len(rows), 1), batch_size):
        part = rows[start : start + batch_size]
        feed = {}
        for name, spec in inputs.items():
            if part and isinstance(part[0], str | bytes):
                values: list[Any] = list(part)
            else:
                column = columns.get(name, name)
                values = [row.get(column) for row in part]  # type: ignore[union-attr]
            try:
                feed[name] = to_tensor(values, spec.dtype)
            except (TypeError, ValueError) as e:
                raise DataError(
                    f"input {name!r} (column {columns.get(name, name)!r}) expects {spec.dtype.name} values; got {e}"
                ) from None
        out = serve(**feed)
        chunks.append(out["scores"].numpy())
        if len(part):
            labels = [c.decode() for c in out["classes"].numpy()[0]]
    if labels is None:  # no rows: the classes come from an empty call's shape only
        return np.zeros((0, 0)), []
    return np.concatenate(chunks), labels


# SavedModels loaded by this process, least recently used first: a warm ``evergreen watch``
# evaluates each candidate against a champion it loaded before (as champion, or one run earlier
# as candidate), and loading a SavedModel costs more than scoring a few hundred rows with it
# (issue 13). Three: the champion, the last candidate (the champion when it was blessed) and
# the candidate being loaded, whatever the order an evaluation scores them in.
_LOADED: OrderedDict[tuple[Any, ...], tuple[Any, Any]] = OrderedDict()
KEEP_LOADED = 3


def serving_function(saved_model: Path) -> Any:
    """``serving_default`` of a SavedModel, loaded once per process while its files are unchanged.

    The last :data:`KEEP_LOADED` SavedModels stay loaded, keyed by their folder and the identity
    (inode, size, modification time) of ``saved_model.pb`` and the variables' index, so a folder
    written anew is loaded anew.
    """
    key = (str(saved_model.resolve()), *_identity(saved_model / "saved_model.pb"))
    key += _identity(saved_model / "variables" / "variables.index")
    if key in _LOADED:
        _LOADED.move_to_end(key)
        return _LOADED[key][1]
    loaded = tensorflow().saved_model.load(str(saved_model))
    _LOADED[key] = (loaded, loaded.signatures["serving_default"])  # the root keeps variables
    while len(_LOADED) > KEEP_LOADED:
        _LOADED.popitem(last=False)
    return _LOADED[key][1]


def _identity(path: Path) -> tuple[int, int, int]:
    try:
        stat = path.stat()
    except OSError:
        return (0, 0, 0)
    return (stat.st_ino, stat.st_size, stat.st_mtime_ns)


def to_tensor(values: list[Any], dtype: Any) -> Any:
    """A 1-D tensor of ``dtype`` from raw values: missing numbers NaN (ints 0), strings ""."""
    tf = tensorflow()
    if dtype == tf.string:
        return tf.constant(
            [
                b"" if v is None else v if isinstance(v, bytes) else str(v).encode("utf-8")
                for v in values
            ],
            tf.string,
        )
    if dtype.is_floating:
        return tf.constant([np.nan if v is None else float(v) for v in values], dtype)
    return tf.constant([0 if v is None else int(v) for v in values], dtype)
