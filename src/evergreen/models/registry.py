"""The families by name: ``family(name)``, any saved featurizer, and their config checks.

The one module of ``models/`` that imports every family; nothing inside ``models/`` imports it
(families import :mod:`evergreen.models.contract`), so the package has no import cycle.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evergreen.errors import ConfigError, DataError
from evergreen.models import image, text
from evergreen.models.adopted import AdoptedFamily
from evergreen.models.contract import ConfigProblem, Featurizer, ModelFamily, read_family
from evergreen.models.custom import CustomFamily, load_module_featurizer
from evergreen.models.image import ImageFamily
from evergreen.models.tabular import TabularFamily
from evergreen.models.text import TextFamily

__all__ = ["FAMILIES", "config_problem", "family", "load_featurizer"]

FAMILIES = ("text", "tabular", "image", "custom")  # what train.family may name
# Families built without a config; custom needs one (train.module), adopted comes from adopt.
_PLAIN: dict[str, type[Any]] = {
    "text": TextFamily,
    "tabular": TabularFamily,
    "image": ImageFamily,
    "adopted": AdoptedFamily,
}


def family(name: str, cfg: Any = None, base_dir: Path | None = None) -> ModelFamily:
    """The family called ``name``; ``custom`` loads ``cfg.module`` (resolved against ``base_dir``).

    Raises:
        ConfigError: an unknown name, or ``custom`` without ``train.module``.
    """
    if name in _PLAIN:
        return _PLAIN[name]()
    if name == "custom":
        if cfg is None or not cfg.module:
            raise ConfigError("train.family = 'custom' needs train.module = 'path/to/module.py'")
        path = Path(cfg.module)
        if not path.is_absolute() and base_dir is not None:
            path = base_dir / path
        return CustomFamily(path, cfg)
    raise ConfigError(f"train.family = {name!r} is unknown; use one of {', '.join(FAMILIES)}")


def load_featurizer(directory: str | Path) -> Featurizer:
    """A saved featurizer of any family (its folder names the family in ``family.json``).

    Raises:
        NotFound: the folder is not a saved featurizer.
        DataError: ``family.json`` names a family this Evergreen does not know.
    """
    name = read_family(directory)["family"]
    if name == "custom":  # a custom module's own featurizer: read back by the module
        return load_module_featurizer(directory)
    if name not in _PLAIN:
        raise DataError(
            f"the featurizer in {directory} belongs to family {name!r}, which this Evergreen "
            f"does not know ({', '.join(_PLAIN)}); refit it with a full retrain (--full)."
        )
    return _PLAIN[name]().load_featurizer(directory)


def config_problem(cfg: Any) -> ConfigProblem | None:
    """The first ``[train]`` value the configured family would refuse only when training.

    Called by the config loader, so that e.g. a text ``sequence_length`` shorter than the CNN's
    kernel fails at load instead of after ingest. Each family states its own needs; a custom
    module is held to its base family's featurizer (its model is the module's).

    Returns:
        ``(key, value, fix)`` for the first problem, or None.
    """
    bases = {cfg.family, cfg.base_family}
    if "text" in bases:
        return text.config_problem(cfg, model=cfg.family == "text")
    if cfg.family == "image":
        return image.config_problem(cfg)
    return None
