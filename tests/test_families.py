"""The family contract: every family's featurizer has the whole interface the loop uses."""

from __future__ import annotations

from pathlib import Path

import pytest

from evergreen.config import TrainConfig
from evergreen.errors import ConfigError, DataError, NotFound
from evergreen.models.adopted import PassThroughFeaturizer
from evergreen.models.contract import Featurizer
from evergreen.models.registry import FAMILIES, family, load_featurizer

ROWS = [
    {"review": "great tea, will buy again", "price": 3.0, "shop": "a", "image": None},
    {"review": "stale and broken", "price": None, "shop": "b", "image": None},
]
TYPES = {"review": "text", "price": "numeric", "shop": "categorical"}


@pytest.mark.parametrize("name", ["text", "tabular", "image"])
def test_each_family_fits_saves_and_loads_a_featurizer(name: str, tmp_path: Path) -> None:
    types = {"image": "image"} if name == "image" else TYPES
    featurizer = family(name).new_featurizer(types, TrainConfig(max_tokens=100, sequence_length=8))
    assert isinstance(featurizer, Featurizer)  # every method the pipeline calls is there
    featurizer.fit(ROWS if name != "image" else [{"image": b"\x89PNG"}])
    featurizer.save(tmp_path / name)
    loaded = load_featurizer(tmp_path / name)
    assert type(loaded) is type(featurizer) and loaded.family == name
    assert (
        loaded.fingerprint() == featurizer.fingerprint()
        and loaded.to_dict() == featurizer.to_dict()
    )
    assert set(loaded.raw_columns().values()) <= set(types)


def test_pass_through_is_a_featurizer() -> None:
    assert isinstance(PassThroughFeaturizer([]), Featurizer)


def test_unknown_family_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="tabulr"):
        family("tabulr")
    assert FAMILIES == ("text", "tabular", "image", "custom")


def _evergreen_imports(path: Path) -> set[str]:
    """Every ``evergreen.*`` module a file imports, at module level or inside functions."""
    import ast

    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(alias.name for alias in node.names)
    return {name for name in found if name.startswith("evergreen")}


def test_models_package_is_layered() -> None:
    # The families import the contract; only code outside models/ imports the registry, and
    # models/ never imports the pipeline's components (a layering inversion and, before, a
    # six-module import cycle).
    import evergreen.models

    folder = Path(evergreen.models.__file__).parent
    for path in sorted(folder.glob("*.py")):
        imports = _evergreen_imports(path)
        assert "evergreen.models.registry" not in imports, path.name
        assert not any(name.startswith("evergreen.components") for name in imports), path.name


def test_a_folder_without_family_json_is_not_a_featurizer(tmp_path: Path) -> None:
    with pytest.raises(NotFound, match="family.json"):
        load_featurizer(tmp_path)


def test_user_errors_in_models_are_evergreen_errors(tmp_path: Path) -> None:
    # Once ValueErrors that ended as "internal error", exit 3: each now names what to change.
    from evergreen.models.growth import grow_model
    from evergreen.models.serving_export import export_serving_model
    from evergreen.models.text import TextColumnFeaturizer, TextFeaturizer, build_model

    with pytest.raises(ConfigError, match="train.sequence_length"):
        build_model(50, 2, sequence_length=3)
    with pytest.raises(ConfigError, match="train.max_tokens"):
        build_model(2, 2, sequence_length=8)
    model = build_model(50, 2, sequence_length=8)
    featurizer = TextColumnFeaturizer("review", TextFeaturizer(max_tokens=50, sequence_length=8))
    with pytest.raises(DataError, match="2 outputs but 3 labels"):
        export_serving_model(featurizer, model, ["a", "b", "c"], tmp_path / "x")
    with pytest.raises(DataError, match="distinct"):
        export_serving_model(featurizer, model, ["a", "a"], tmp_path / "x")
    assert not (tmp_path / "x").exists()
    with pytest.raises(DataError, match="vocabularies only grow"):
        grow_model(model, {"embedding": (10, 1)})
