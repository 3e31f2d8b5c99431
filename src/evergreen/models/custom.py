"""Custom model modules (TFX's "module file"): the user writes the model, Evergreen runs the loop.

The config names a Python file (``train.family = "custom"``, ``train.module = "model.py"``)
that defines::

    def build_model(schema, hparams) -> keras.Model

``schema`` is a :class:`ModelSchema`: ``schema.inputs()`` gives fresh ``keras.Input`` tensors
for the base family's featurized inputs (a dict for tabular, one tensor for text and image),
``schema.num_classes`` the number of labels, ``schema.features`` the raw columns the featurizer
reads and their types. The model must map those inputs to class probabilities
``[batch, num_classes]`` (softmax). ``hparams`` is the module's optional ``HPARAMS`` dict
updated with the config's ``[train.hparams]`` table.

The module may set ``BASE_FAMILY = "text" | "tabular" | "image"`` (default: the config's
``train.base_family``, else image if there is an image feature, else text if there is exactly
one text feature and nothing else, else tabular): its frozen featurizer, featurized shards and
in-graph serving preprocessing are used unchanged, so the exported SavedModel takes the same raw
inputs as that family's. Any error raised while loading the file or inside ``build_model`` is
reported as a ``ConfigError`` naming the file and line.

A module may also bring its own featurizer: ``make_featurizer(types, hparams)`` returning an
object with the :class:`~evergreen.models.contract.Featurizer` methods, and
``load_featurizer(directory)`` reading back what its ``save`` wrote. Evergreen marks the saved
folder with the module's path so later runs load it through the module.

This module imports its base families directly (not :mod:`evergreen.models.registry`, which
imports this one).
"""

from __future__ import annotations

import hashlib
import importlib.util
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

from evergreen.errors import ConfigError, DataError
from evergreen.models.contract import keras_module, read_family, save_family
from evergreen.models.image import ImageFamily
from evergreen.models.tabular import TabularFamily
from evergreen.models.text import TextFamily

__all__ = ["CustomFamily", "ModelSchema", "load_module", "load_module_featurizer"]

# The families whose featurizer a module's model may use, by the name BASE_FAMILY gives.
BASES: dict[str, type[Any]] = {"text": TextFamily, "tabular": TabularFamily, "image": ImageFamily}
BASE_FAMILIES = tuple(BASES)


@dataclass
class ModelSchema:
    """What a module's ``build_model`` is told about the data."""

    family: str  # the base family whose featurizer feeds the model
    num_classes: int
    features: dict[str, str]  # raw column -> feature type, the ones the featurizer reads
    _inputs: Callable[[], Any] = field(repr=False, default=lambda: None)

    def inputs(self) -> Any:
        """Fresh ``keras.Input`` tensors for the featurized inputs (dict, or one tensor)."""
        return self._inputs()


def _call(path: Path, function: Callable[..., Any], *args: Any) -> Any:
    """Call a module function; an exception becomes a ConfigError naming the file and line."""
    try:
        return function(*args)
    except ConfigError:
        raise
    except Exception as e:
        raise ConfigError(
            f"{_where(path, e)}: {getattr(function, '__name__', 'the module')} raised {type(e).__name__}: {e}"
        ) from None


class ModuleFeaturizer:
    """A module's own featurizer, saved with a marker naming the module that reads it back."""

    family = "custom"

    def __init__(self, inner: Any, module_path: Path) -> None:
        self.inner = inner
        self.module_path = Path(module_path)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def fit(self, rows: Any) -> ModuleFeaturizer:
        self.inner = _call(self.module_path, self.inner.fit, rows) or self.inner
        return self

    def save(self, directory: str | Path) -> Path:
        _call(self.module_path, self.inner.save, directory)
        save_family(directory, "custom", {"module": str(self.module_path.resolve())})
        return Path(directory)

    def feature_types(self) -> dict[str, str]:
        known = getattr(self.inner, "feature_types", None)
        return known() if known else {c: "?" for c in self.inner.raw_columns().values()}

    def text_vocabulary(self) -> set[str] | None:
        known = getattr(self.inner, "text_vocabulary", None)  # optional for a module's own
        return known() if known else None

    @classmethod
    def load(cls, directory: str | Path, module_path: Path) -> ModuleFeaturizer:
        module = load_module(Path(module_path))
        return cls(_call(Path(module_path), module.load_featurizer, directory), module_path)


def load_module_featurizer(directory: str | Path) -> ModuleFeaturizer:
    """A module's own featurizer, through the module its ``family.json`` names."""
    return ModuleFeaturizer.load(directory, Path(read_family(directory)["module"]))


def _where(path: Path, error: BaseException) -> str:
    """``path:line`` of the deepest frame of ``error`` inside the module file."""
    if (
        isinstance(error, SyntaxError)
        and error.filename
        and Path(error.filename).resolve() == path.resolve()
    ):
        return f"{path}:{error.lineno}"
    line = None
    for frame in traceback.extract_tb(error.__traceback__):
        if frame.filename and Path(frame.filename).resolve() == path.resolve():
            line = frame.lineno
    return f"{path}:{line}" if line is not None else str(path)


def load_module(path: Path) -> ModuleType:
    """Import the module file at ``path`` (under a name derived from its content).

    Raises:
        ConfigError: the file is missing, or importing it raised (named with file and line).
    """
    if not path.is_file():
        raise ConfigError(
            f"train.module = {str(path)!r} does not exist; point it at a Python file defining build_model(schema, hparams)"
        )
    digest = hashlib.sha256(path.read_bytes()).hexdigest()[:16]
    name = f"evergreen_user_module_{digest}"
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise ConfigError(f"train.module = {str(path)!r} cannot be imported as a Python file")
    module = importlib.util.module_from_spec(spec)
    try:
        spec.loader.exec_module(module)
    except SyntaxError as e:
        raise ConfigError(f"{_where(path, e)}: syntax error in the model module: {e.msg}") from None
    except Exception as e:
        raise ConfigError(
            f"{_where(path, e)}: the model module raised {type(e).__name__}: {e}"
        ) from None
    if not callable(getattr(module, "build_model", None)):
        raise ConfigError(
            f"{path} defines no build_model(schema, hparams) function; define one that returns a keras.Model"
        )
    sys.modules[name] = module
    return module


class CustomFamily:
    """A family whose model comes from a user's module; featurizer from a base family."""

    name = "custom"

    def __init__(self, path: Path, cfg: Any) -> None:
        self.path = Path(path)
        self.cfg = cfg
        self._module: ModuleType | None = None

    def module(self) -> ModuleType:
        if self._module is None:
            self._module = load_module(self.path)
        return self._module

    def source_digest(self) -> str:
        """sha256 of the module file: part of the training cache key."""
        return hashlib.sha256(self.path.read_bytes()).hexdigest() if self.path.is_file() else ""

    def hparams(self) -> dict[str, Any]:
        base = getattr(self.module(), "HPARAMS", {}) or {}
        if not isinstance(base, Mapping):
            raise ConfigError(f"{self.path}: HPARAMS must be a dict, not {type(base).__name__}")
        return {**base, **dict(getattr(self.cfg, "hparams", {}) or {})}

    def base_name(self, types: Mapping[str, str]) -> str:
        name = getattr(self.cfg, "base_family", "") or getattr(self.module(), "BASE_FAMILY", "")
        if not name:
            kinds = set(types.values())
            if "image" in kinds:
                name = "image"
            elif kinds == {"text"} and len(types) == 1:
                name = "text"
            else:
                name = "tabular"
        if name not in BASE_FAMILIES:
            raise ConfigError(
                f"{self.path}: BASE_FAMILY = {name!r} is not one of {', '.join(BASE_FAMILIES)}"
            )
        return name

    def _base(self, name: str) -> Any:
        return BASES[name]()

    def new_featurizer(self, types: Mapping[str, str], cfg: Any) -> Any:
        module = self.module()
        if callable(getattr(module, "make_featurizer", None)):
            if not callable(getattr(module, "load_featurizer", None)):
                raise ConfigError(
                    f"{self.path} defines make_featurizer but no load_featurizer(directory); define both"
                )
            made = _call(self.path, module.make_featurizer, dict(types), self.hparams())
            return ModuleFeaturizer(made, self.path)
        return self._base(self.base_name(types)).new_featurizer(types, cfg)

    def load_featurizer(self, directory: str | Path) -> Any:
        """The featurizer this family saved: the module's own, or its base family's.

        Raises:
            DataError: the folder holds another family's featurizer.
        """
        name = read_family(directory)["family"]
        if name == "custom":
            return load_module_featurizer(directory)
        if name not in BASES:
            raise DataError(
                f"the featurizer in {directory} is an {name!r} featurizer, not one a custom "
                f"module uses ({', '.join(BASES)}); refit it with a full retrain (--full)."
            )
        return self._base(name).load_featurizer(directory)

    def build_model(self, featurizer: Any, num_classes: int, cfg: Any) -> Any:
        """Call the module's ``build_model`` and check what it returns.

        Raises:
            ConfigError: the module raised (file and line named), or returned something that is
                not a Keras model with ``num_classes`` outputs.
        """
        schema = ModelSchema(
            family=featurizer.family,
            num_classes=num_classes,
            features=featurizer.feature_types(),
            _inputs=featurizer.keras_inputs,
        )
        hparams = self.hparams()
        try:
            model = self.module().build_model(schema, hparams)
        except ConfigError:
            raise
        except Exception as e:
            raise ConfigError(
                f"{_where(self.path, e)}: build_model raised {type(e).__name__}: {e}"
            ) from None
        if not isinstance(model, keras_module().Model):
            raise ConfigError(
                f"{self.path}: build_model returned {type(model).__name__}; return a keras.Model"
            )
        width = model.output_shape[-1] if isinstance(model.output_shape, tuple) else None
        if width != num_classes:
            raise ConfigError(
                f"{self.path}: build_model's model outputs shape {model.output_shape}; expected [batch, {num_classes}] class probabilities (softmax), one per label"
            )
        return model
