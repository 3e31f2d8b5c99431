"""``evergreen export tflite``: a registry version as LiteRT (TFLite) models, parity-checked.

Writes, into one folder (built in a temporary sibling and renamed into place, so a refused or
failed export leaves nothing behind)::

    model.tflite        builtins only, on the family's featurized inputs (text: int64 token ids)
    model_flex.tflite   the raw-input SavedModel (text strings in) with Select TF ops, for apps
                        that ship the Flex delegate; absent when it does not convert
    vocabulary.txt      text: one token per line, line index = token id (0 padding, 1 unknown)
    tokenizer.json      text: how to turn a string into ids exactly as Evergreen does
    labels.txt          class names, line index = output index
    report.json         the parity check and the file sizes

The parity check runs ``model.tflite`` through ``ai_edge_litert``'s interpreter on the eval
rows of the version's spans, featurized by our own featurizer, and compares with the registry's
SavedModel on the same raw rows: accuracy of both, their difference, the largest score
difference and the share of rows whose predicted class agrees. An export whose accuracy drop
exceeds ``max_accuracy_drop`` is refused (:class:`ExportRefused`) and nothing is written.
"""

from __future__ import annotations

import itertools
import json
import os
import re
import shutil
import sys
import tempfile
import warnings
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evergreen.components.featurize import span_rows
from evergreen.errors import EvergreenError, NotFound
from evergreen.models.adopted import load_model
from evergreen.models.registry import load_featurizer
from evergreen.models.saved_model import feed_saved_model
from evergreen.registry import CHAMPION, Registry
from evergreen.tf import tensorflow

QUANTIZATIONS = ("none", "float16", "int8")
DEFAULT_MAX_ACCURACY_DROP = 0.01  # one accuracy point on the eval rows
MAX_EVAL_ROWS = 5000  # eval rows in the parity check (the first ones of each span, in order)
REPRESENTATIVE_ROWS = 200  # training rows that calibrate int8 ranges
_BATCH = 256


class ExportRefused(EvergreenError):
    """The converted model does not match the SavedModel closely enough (nothing written)."""

    headline = "export refused"


class ExportError(EvergreenError):
    """The version cannot be converted (the message says which family and why)."""

    headline = "export error"


@dataclass(frozen=True)
class TFLiteOptions:
    """What ``export tflite`` does.

    Attributes:
        quantize: ``none`` (float32), ``float16`` (weights), or ``int8`` (weights and
            activations, calibrated on training rows; float fallback where an op has no int8).
        max_accuracy_drop: refuse when the TFLite model's accuracy is lower than the
            SavedModel's by more than this (a fraction: 0.01 is one point).
        out: the output folder; default ``<root>/exports/<name>/<version>/tflite-<quantize>``.
        flex: also write ``model_flex.tflite`` (raw inputs, Select TF ops).
        max_eval_rows: cap on the parity check's rows.
    """

    quantize: str = "none"
    max_accuracy_drop: float = DEFAULT_MAX_ACCURACY_DROP
    out: Path | None = None
    flex: bool = True
    max_eval_rows: int = MAX_EVAL_ROWS


@dataclass(frozen=True)
class Parity:
    """The TFLite model against the SavedModel on the same eval rows."""

    rows: int
    saved_model_accuracy: float
    tflite_accuracy: float
    accuracy_drop: float  # SavedModel's minus TFLite's (negative: TFLite did better)
    max_abs_score_diff: float
    agreement: float  # share of rows where both predict the same class


@dataclass(frozen=True)
class TFLiteExport:
    """What was written, and the report."""

    folder: Path
    version: int
    family: str
    quantize: str
    parity: Parity
    files: dict[str, int] = field(default_factory=dict)  # file name → bytes
    flex: dict[str, Any] = field(default_factory=dict)

    def report(self) -> dict[str, Any]:
        return {
            "version": self.version,
            "family": self.family,
            "quantize": self.quantize,
            "parity": asdict(self.parity),
            "files": self.files,
            "flex": self.flex,
        }


@dataclass(frozen=True)
class _Source:
    """A registry version resolved to what conversion needs."""

    version: int
    saved_model: Path
    keras_model: Path
    featurizer: Any
    family: str
    labels: list[str]
    examples: list[Any]  # examples artifacts of the version's spans


def export_tflite(project: Any, version: int | None, options: TFLiteOptions) -> TFLiteExport:
    """Convert a registry version (default: the champion) and check it; see the module doc.

    Raises:
        NotFound: no such version, or its training artifacts are gone.
        ExportError: the family's model does not convert to builtins-only TFLite.
        ExportRefused: the accuracy drop exceeds ``options.max_accuracy_drop``.
    """
    if options.quantize not in QUANTIZATIONS:
        raise ExportError(f"--quantize {options.quantize!r}: use one of {', '.join(QUANTIZATIONS)}")
    if options.out is not None:
        _check_out(Path(options.out))
    source = _resolve(project, version)
    keras_model = _load_keras(source)
    eval_inputs, eval_rows, labels = _eval_set(source, options.max_eval_rows)
    content = _convert(keras_model, source, options.quantize)
    parity = _parity(content, source, eval_inputs, eval_rows, labels)
    if parity.accuracy_drop > options.max_accuracy_drop:
        raise ExportRefused(
            f"version {source.version} as {options.quantize} TFLite: accuracy "
            f"{parity.tflite_accuracy:.4f} vs the SavedModel's {parity.saved_model_accuracy:.4f} "
            f"on {parity.rows} eval rows, a drop of {parity.accuracy_drop:.4f} > "
            f"--max-accuracy-drop {options.max_accuracy_drop}; try --quantize none or float16, "
            "or raise the limit. Nothing was written."
        )
    cfg = project.config
    out = options.out or (
        cfg.root / "exports" / cfg.name / str(source.version) / f"tflite-{options.quantize}"
    )
    return _write(Path(out), source, options, content, parity)


def _check_out(out: Path) -> None:
    """Refuse an output folder that holds anything but an earlier export (it is replaced)."""
    if out.exists() and not out.is_dir():
        raise ExportError(
            f"--out {out} is a file; give a folder (new, empty, or an earlier export)"
        )
    if out.is_dir() and any(out.iterdir()) and not (out / "report.json").is_file():
        raise ExportError(
            f"--out {out} holds other files and is not an earlier export (no report.json); "
            "give a new or empty folder — an export replaces its folder"
        )


def _resolve(project: Any, version: int | None) -> _Source:
    cfg = project.config
    registry = Registry(cfg.registry_dir)
    if version is None:
        version = registry.alias(cfg.name, CHAMPION)
        if version is None:
            raise NotFound(f"pipeline {cfg.name!r} has no champion yet; run `evergreen run` first")
    mv = registry.get(cfg.name, version)
    lineage = mv.manifest.get("lineage", {})
    if "candidate" not in lineage or "family" not in lineage:
        raise NotFound(f"version {version} has no training lineage in its manifest; cannot export")
    candidate = project.store.artifact(int(lineage["candidate"]))
    featurizer = project.store.artifact(int(lineage["featurizer"]))
    keras_path = Path(candidate.uri) / "model.keras"
    if not keras_path.is_file():
        raise NotFound(f"version {version}'s trained model {keras_path} is gone; cannot export")
    spans = set(lineage.get("spans") or [])
    examples = [
        project.store.artifact(r.examples_id)
        for r in project.store.spans()
        if r.span in spans and r.examples_id is not None
    ]
    return _Source(
        version=int(version),
        saved_model=mv.path,
        keras_model=keras_path,
        featurizer=load_featurizer(featurizer.uri),
        family=str(lineage["family"]),
        labels=[str(x) for x in candidate.properties["labels"]],
        examples=examples,
    )


def _load_keras(source: _Source) -> Any:
    return load_model(source.keras_model, own_artifact=True)


def _rows(source: _Source, split: str, limit: int) -> list[dict[str, Any]]:
    per_span = max(1, limit // max(len(source.examples), 1))
    rows: list[dict[str, Any]] = []
    for examples in source.examples:
        label = examples.properties["label"]
        for row in itertools.islice(span_rows(examples, split), per_span):
            rows.append({**row, "__label__": row[label]})
    return rows[:limit]


def _featurized(source: _Source, rows: Sequence[Mapping[str, Any]]) -> dict[str, np.ndarray]:
    """The Keras model's inputs for ``rows``, by input name, from our own featurizer."""
    tf = tensorflow()
    arrays, _ = source.featurizer.featurize(rows, None)
    inputs = source.featurizer.model_inputs(arrays)
    if not isinstance(inputs, Mapping):
        inputs = {_single_input_name(source.featurizer): inputs}
    return {
        name: value.numpy() if isinstance(value, tf.Tensor) else np.asarray(value)
        for name, value in inputs.items()
    }


def _single_input_name(featurizer: Any) -> str:
    keras_input = featurizer.keras_inputs()
    return str(keras_input.name).split(":")[0]


def _eval_set(
    source: _Source, limit: int
) -> tuple[dict[str, np.ndarray], list[dict[str, Any]], np.ndarray]:
    rows = _rows(source, "eval", limit)
    if not rows:
        raise NotFound(f"version {source.version}'s spans have no eval rows to check parity on")
    labels = np.array([source.labels.index(str(r["__label__"])) for r in rows])
    return _featurized(source, rows), rows, labels


def _convert(keras_model: Any, source: _Source, quantize: str) -> bytes:
    """Builtins-only TFLite bytes of the Keras model (on featurized inputs)."""
    tf = tensorflow()
    if isinstance(keras_model.input, Mapping):
        # from_keras_model falls back to tf.keras internals for dict inputs (tabular) and
        # fails; a concrete function with one named input per feature converts.
        converter = tf.lite.TFLiteConverter.from_concrete_functions(
            [_dict_input_function(keras_model)], keras_model
        )
    else:
        converter = tf.lite.TFLiteConverter.from_keras_model(keras_model)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS]
    if quantize == "float16":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.target_spec.supported_types = [tf.float16]
    elif quantize == "int8":
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = _representative(source)
    try:
        with _quiet():
            return converter.convert()
    except Exception as e:  # the converter raises ConverterError, RuntimeError, ValueError…
        raise ExportError(
            f"the {source.family} family's model of version {source.version} does not convert to "
            f"builtins-only TFLite: {_conversion_problem(str(e))}"
        ) from None


def _conversion_problem(message: str) -> str:
    """The converter's reason in one line: the TF ops with no TFLite builtin, when it names them."""
    found = re.search(r"TF Select ops: ([^\n]+)", message)
    if found:
        ops = found.group(1).strip()
        return (
            f"it uses TensorFlow ops that LiteRT has no builtin for ({ops}"
            + (
                "; the tabular family's feature crosses, Keras HashedCrossing"
                if "SparseCross" in ops
                else ""
            )
            + "). Such a model runs only with the Select TF ops (Flex) delegate."
        )
    return message.strip().splitlines()[0][:300] if message.strip() else "unknown converter error"


def _dict_input_function(keras_model: Any) -> Any:
    """A concrete function over a dict-input Keras model, one named tensor per input."""
    tf = tensorflow()
    names = list(keras_model.input)
    specs = [
        tf.TensorSpec([None, *keras_model.input[n].shape[1:]], keras_model.input[n].dtype, name=n)
        for n in names
    ]

    @tf.function(input_signature=specs)
    def serve(*args: Any) -> dict[str, Any]:
        return {"scores": keras_model(dict(zip(names, args, strict=True)), training=False)}

    return serve.get_concrete_function()


@contextmanager
def _quiet() -> Iterator[None]:
    """Keras prints an export summary to stdout while converting: keep stdout for our output
    (``--json``); TF's own deprecation warning about tf.lite.Interpreter (used inside int8
    calibration) says nothing the user can act on."""
    with redirect_stdout(sys.stderr), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*tf.lite.Interpreter is deprecated.*")
        # int8: token ids are int64 inputs and are never quantized; the converter warns anyway.
        warnings.filterwarnings("ignore", message="Statistics for quantized inputs were expected")
        yield


def _representative(source: _Source) -> Callable[[], Iterator[dict[str, np.ndarray]]]:
    """int8 calibration: featurized training rows of the version's spans, one at a time."""
    inputs = _featurized(source, _rows(source, "train", REPRESENTATIVE_ROWS))

    def dataset() -> Iterator[dict[str, np.ndarray]]:
        count = len(next(iter(inputs.values())))
        for i in range(count):
            yield {name: value[i : i + 1] for name, value in inputs.items()}

    return dataset


def run_tflite(content: bytes, inputs: Mapping[str, np.ndarray]) -> np.ndarray:
    """Class scores of ``inputs`` from a TFLite model, through the LiteRT interpreter."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_content=content)
    runner = interpreter.get_signature_runner()
    details = runner.get_input_details()
    names = list(details)
    if len(names) == 1 and len(inputs) == 1:
        inputs = {names[0]: next(iter(inputs.values()))}
    count = len(next(iter(inputs.values())))
    chunks = []
    for start in range(0, count, _BATCH):
        feed = {n: inputs[n][start : start + _BATCH].astype(details[n]["dtype"]) for n in names}
        chunks.append(next(iter(runner(**feed).values())))
    return np.concatenate(chunks).astype(np.float32)


def _parity(
    content: bytes,
    source: _Source,
    inputs: Mapping[str, np.ndarray],
    rows: list[dict[str, Any]],
    labels: np.ndarray,
) -> Parity:
    try:
        lite = run_tflite(content, inputs)
    except (RuntimeError, ValueError, KeyError) as e:
        raise ExportError(
            f"the converted {source.family} model of version {source.version} does not run in "
            f"the LiteRT interpreter: {e}"
        ) from None
    raw = [{k: v for k, v in row.items() if k != "__label__"} for row in rows]
    saved, classes = feed_saved_model(source.saved_model, raw)
    if classes != source.labels:  # the SavedModel's class order is the contract
        raise ExportError(
            f"version {source.version}: SavedModel classes {classes} != {source.labels}"
        )
    saved_acc = float(np.mean(saved.argmax(-1) == labels))
    lite_acc = float(np.mean(lite.argmax(-1) == labels))
    return Parity(
        rows=len(rows),
        saved_model_accuracy=round(saved_acc, 6),
        tflite_accuracy=round(lite_acc, 6),
        accuracy_drop=round(saved_acc - lite_acc, 6),
        max_abs_score_diff=float(np.max(np.abs(saved - lite))),
        agreement=round(float(np.mean(saved.argmax(-1) == lite.argmax(-1))), 6),
    )


def _write(
    out: Path, source: _Source, options: TFLiteOptions, content: bytes, parity: Parity
) -> TFLiteExport:
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}-", dir=out.parent))
    try:
        (tmp / "model.tflite").write_bytes(content)
        (tmp / "labels.txt").write_text("".join(f"{x}\n" for x in source.labels), "utf-8")
        _write_tokenizer(tmp, source)
        flex = _write_flex(tmp, source) if options.flex else {"written": False, "why": "--no-flex"}
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir())}
        result = TFLiteExport(
            out, source.version, source.family, options.quantize, parity, files, flex
        )
        (tmp / "report.json").write_text(json.dumps(result.report(), indent=2) + "\n", "utf-8")
        _check_out(out)
        old = out.with_name(f".{out.name}-old-{os.getpid()}")
        if out.exists():  # the earlier export leaves only once the new one is complete
            os.replace(out, old)
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return result


def _write_tokenizer(folder: Path, source: _Source) -> None:
    """Text: ``vocabulary.txt`` and ``tokenizer.json``, for apps that tokenize themselves."""
    if source.family != "text" or not hasattr(source.featurizer, "tokenizer_spec"):
        return
    vocabulary = source.featurizer.vocabulary()
    (folder / "vocabulary.txt").write_text("".join(f"{t}\n" for t in vocabulary), "utf-8")
    spec = source.featurizer.tokenizer_spec()
    (folder / "tokenizer.json").write_text(json.dumps(spec, indent=2) + "\n", "utf-8")


def _write_flex(folder: Path, source: _Source) -> dict[str, Any]:
    """``model_flex.tflite``: ``serving_default`` on raw inputs with Select TF ops."""
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(
        str(source.saved_model), signature_keys=["serving_default"]
    )
    converter.target_spec.supported_ops = [
        tf.lite.OpsSet.TFLITE_BUILTINS,
        tf.lite.OpsSet.SELECT_TF_OPS,
    ]
    try:
        with _quiet():
            content = converter.convert()
    except Exception as e:  # noqa: BLE001  (the Flex variant is optional: say why)
        return {"written": False, "why": str(e).strip().splitlines()[0][:300]}
    (folder / "model_flex.tflite").write_bytes(content)
    return {"written": True, **_flex_check(content)}


def _flex_check(content: bytes) -> dict[str, Any]:
    """Whether this machine's LiteRT interpreter can run the Flex model (it needs the delegate)."""
    from ai_edge_litert.interpreter import Interpreter

    try:
        runner = Interpreter(model_content=content).get_signature_runner()
        runner(**{name: np.array([b""]) for name in runner.get_input_details()})
    except (RuntimeError, ValueError) as e:
        return {"checked": False, "why": f"not runnable here: {str(e).splitlines()[0][:200]}"}
    return {"checked": True}
