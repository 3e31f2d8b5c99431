"""The model family contract: what the loop needs from a family, and nothing more.

A family (text, tabular, image, a custom module, an adopted model) supplies a **featurizer**
and a **model builder**; the pipeline does the rest the same way for every family::

    featurizer = family.new_featurizer(types, train_config).fit(rows)   # full run only, then frozen
    arrays, ledger = featurizer.featurize(rows, cache)                  # once per row → TFRecord
    model = family.build_model(featurizer, n_classes, train_config)     # takes featurizer.model_inputs(...)
    export_serving_model(featurizer, model, labels, directory)           # raw inputs in, in-graph featurizer

A featurizer's featurized record is described by :meth:`Featurizer.feature_spec` (name →
shape and dtype), written by :func:`encode_featurized` and read back by ``tf.data`` with
:func:`parse_spec`; :meth:`Featurizer.model_inputs` turns the parsed tensors into what the
Keras model eats (in-graph: an image is decoded here). The exported SavedModel takes raw inputs
(:meth:`Featurizer.raw_signature`) and runs :meth:`Featurizer.raw_to_model_inputs` in-graph, so
training and serving share one featurizer by construction.

The exported SavedModel also carries ``assets.extra/evergreen_inputs.json``: which raw column
feeds which signature input, so callers (evaluation, a server) can feed raw rows generically.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import numpy as np

from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.models.tfserving_signatures import add_example_signatures, set_method_names
from evergreen.tf import tensorflow

__all__ = [
    "FAMILIES",
    "FeatureCache",
    "Featurizer",
    "ModelFamily",
    "compile_model",
    "config_problem",
    "encode_featurized",
    "export_serving_model",
    "family",
    "feed_saved_model",
    "freeze_lower",
    "load_featurizer",
    "parse_spec",
    "raw_inputs_of",
]

FAMILIES = ("text", "tabular", "image", "custom")
FAMILY_FILE = "family.json"  # beside every saved featurizer: which family reads it back
INPUTS_FILE = "evergreen_inputs.json"  # in <saved_model>/assets.extra: signature input → column

Ledger = dict[str, int]


class FeatureCache(Protocol):
    """A content-addressed store of featurized values (the metadata store's token cache)."""

    def get(self, keys: Sequence[str]) -> dict[str, bytes]: ...

    def put(self, values: Mapping[str, bytes]) -> None: ...


@runtime_checkable
class Featurizer(Protocol):
    """A fitted, frozen featurizer. Hyperparameters via ``to_dict``; learned state in ``save``."""

    family: str

    def fit(self, rows: Iterable[Mapping[str, Any]]) -> Featurizer: ...

    def fingerprint(self) -> str: ...

    def to_dict(self) -> dict[str, Any]: ...

    def save(self, directory: str | Path) -> Path: ...

    def feature_spec(self) -> dict[str, tuple[list[int], str]]: ...

    def featurize(
        self, rows: Sequence[Mapping[str, Any]], cache: FeatureCache | None
    ) -> tuple[dict[str, np.ndarray], Ledger]: ...

    def model_inputs(self, parsed: Mapping[str, Any]) -> Any: ...

    def keras_inputs(self) -> Any: ...

    def raw_signature(self) -> dict[str, Any]: ...

    def raw_columns(self) -> dict[str, str]: ...

    def feature_types(self) -> dict[str, str]: ...

    def raw_to_model_inputs(self, raw: Mapping[str, Any]) -> Any: ...

    def unknown_rate(self, rows: Sequence[Mapping[str, Any]]) -> float: ...


class ModelFamily(Protocol):
    """A family: makes featurizers and models (see the module docstring)."""

    name: str

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> Featurizer:
        """An unfitted featurizer for the feature ``types`` (column → type) and ``[train]``."""
        ...

    def load_featurizer(self, directory: str | Path) -> Featurizer: ...

    def build_model(self, featurizer: Featurizer, num_classes: int, cfg: Any) -> Any:
        """A fresh Keras model from ``featurizer.keras_inputs()`` to class probabilities."""
        ...


def family(name: str, cfg: Any = None, base_dir: Path | None = None) -> ModelFamily:
    """The family called ``name``; ``custom`` loads ``cfg.module`` (resolved against ``base_dir``)."""
    if name == "text":
        from evergreen.models.text import TextFamily

        return TextFamily()
    if name == "tabular":
        from evergreen.models.tabular import TabularFamily

        return TabularFamily()
    if name == "image":
        from evergreen.models.image import ImageFamily

        return ImageFamily()
    if name == "custom":
        from evergreen.models.custom import CustomFamily

        if cfg is None or not cfg.module:
            raise ConfigError("train.family = 'custom' needs train.module = 'path/to/module.py'")
        path = Path(cfg.module)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return CustomFamily(path, cfg)
    if name == "adopted":
        from evergreen.models.adopted import AdoptedFamily

        return AdoptedFamily()
    raise ConfigError(f"train.family = {name!r} is unknown; use one of {', '.join(FAMILIES)}")


def config_problem(cfg: Any) -> tuple[str, Any, str] | None:
    """The first ``[train]`` value the configured family would refuse only when training.

    Called by the config loader, so that e.g. a text ``sequence_length`` shorter than the CNN's
    kernel fails at load instead of after ingest. Families state their own needs.

    Returns:
        ``(key, value, fix)`` for the first problem, or None.
    """
    bases = {cfg.family, cfg.base_family}
    if "text" in bases:
        from evergreen.models.text import config_problem as text_problem

        return text_problem(cfg, model=cfg.family == "text")
    if cfg.family == "image":
        from evergreen.models.image import config_problem as image_problem

        return image_problem(cfg)
    return None


def save_family(directory: str | Path, name: str, extra: Mapping[str, Any] | None = None) -> None:
    (Path(directory) / FAMILY_FILE).write_text(
        json.dumps({"family": name, **(extra or {})}) + "\n", encoding="utf-8"
    )


def load_featurizer(directory: str | Path) -> Featurizer:
    """A saved featurizer of any family (its folder names the family in ``family.json``)."""
    directory = Path(directory)
    marker = directory / FAMILY_FILE
    # Featurizers saved before families existed are text featurizers.
    meta = (
        json.loads(marker.read_text(encoding="utf-8")) if marker.is_file() else {"family": "text"}
    )
    if meta["family"] == "custom":  # a custom module's own featurizer: read back by the module
        from evergreen.models.custom import ModuleFeaturizer

        return ModuleFeaturizer.load(directory, Path(meta["module"]))
    return family(meta["family"]).load_featurizer(directory)


# --------------------------------------------------------------------------------------------
# Featurized records
# --------------------------------------------------------------------------------------------


def encode_featurized(
    arrays: Mapping[str, np.ndarray],
    spec: Mapping[str, tuple[list[int], str]],
    labels: Sequence[str],
    hashes: Sequence[str],
) -> list[bytes]:
    """One serialized ``tf.train.Example`` per row: the featurized fields, label and row hash."""
    from evergreen.examples import ROW_HASH

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


# --------------------------------------------------------------------------------------------
# Models: compile, freeze, export
# --------------------------------------------------------------------------------------------


def compile_model(model: Any, learning_rate: float = 1e-3) -> Any:
    """Adam, sparse categorical cross-entropy on probabilities, accuracy."""
    tensorflow()
    import keras

    model.compile(
        optimizer=keras.optimizers.Adam(learning_rate=learning_rate),
        loss="sparse_categorical_crossentropy",
        metrics=["accuracy"],
    )
    return model


def freeze_lower(model: Any, n_layers: int) -> list[str]:
    """Freeze the ``n_layers`` layers nearest the input (in topological order), train the rest."""
    from evergreen.models.text import freeze_lower as freeze

    return freeze(model, n_layers)


def export_serving_model(
    featurizer: Featurizer, model: Any, labels: Sequence[str], export_dir: str | Path
) -> Path:
    """A SavedModel on raw inputs, loadable with no Evergreen code.

    Signatures, each taking :meth:`Featurizer.raw_signature` (one tensor of shape ``[None]``
    per raw input):

    - ``serving_default`` → ``scores``: float32 ``[None, C]``, ``classes``: string ``[None, C]``.
    - ``classify`` → ``label``: string ``[None]``, ``score``: float32 ``[None]``.
    - ``classification`` / ``regression``: TF Serving's Classify and Regress signatures over
      serialized ``tf.Example`` (see :mod:`evergreen.models.tfserving_signatures`).

    ``assets.extra/evergreen_inputs.json`` maps each signature input to its raw column.
    """
    tf = tensorflow()
    import keras

    labels = [str(label) for label in labels]
    num_classes = int(model.output_shape[-1])
    if len(labels) != num_classes:
        raise ValueError(f"the model has {num_classes} outputs but {len(labels)} labels came.")
    signature = featurizer.raw_signature()
    names = list(signature)
    specs = [tf.TensorSpec(shape=[None], dtype=signature[n], name=n) for n in names]
    label_names = tf.constant(labels, dtype=tf.string)
    tracked = featurizer_layers(featurizer)

    def probabilities(*args: Any) -> Any:
        raw = dict(zip(names, args, strict=True))
        inputs = featurizer.raw_to_model_inputs(raw)
        rows = tf.shape(args[0])[0]
        return tf.cond(
            rows > 0,
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
        return {
            "label": tf.gather(label_names, tf.argmax(scores, axis=-1)),
            "score": tf.reduce_max(scores, axis=-1),
        }

    archive = keras.export.ExportArchive()
    for layer in tracked:
        archive.track(layer)
    archive.track(model)
    archive.add_endpoint("serving_default", serve, input_signature=specs)
    archive.add_endpoint("classify", classify, input_signature=specs)
    add_example_signatures(
        archive, signature, lambda raw: probabilities(*[raw[n] for n in names]), labels
    )
    extra_endpoints = getattr(featurizer, "extra_endpoints", None)
    for name, endpoint in (extra_endpoints() if extra_endpoints else {}).items():
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


def featurizer_layers(featurizer: Any) -> list[Any]:
    """Keras layers the featurizer uses in-graph (built), for ExportArchive to track."""
    layers = getattr(featurizer, "serving_layers", None)
    return list(layers()) if layers else []


def raw_inputs_of(saved_model: Path) -> dict[str, str]:
    """Signature input → raw column of an exported SavedModel (text models before families: text)."""
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
    ``evergreen_inputs.json`` (text models exported before model families).

    Raises:
        NotFound: ``saved_model`` holds no SavedModel.
    """
    tf = tensorflow()
    if not (Path(saved_model) / "saved_model.pb").is_file():
        raise NotFound(
            f"no SavedModel in {saved_model} (expected {Path(saved_model) / 'saved_model.pb'})."
        )
    serve = tf.saved_model.load(str(saved_model)).signatures["serving_default"]
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
                feed[name] = _tensor(values, spec.dtype)
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


def _tensor(values: list[Any], dtype: Any) -> Any:
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
