"""Config: validated once at load, errors name key, value and fix; round trip; precedence."""

from __future__ import annotations

from pathlib import Path

import pytest

from evergreen import config as config_mod
from evergreen.errors import ConfigError

MINIMAL = {
    "pipeline": {"name": "reviews"},
    "data": {"pattern": "data/span-{SPAN}/*.csv", "label": "score"},
}


def test_defaults_and_round_trip(tmp_path: Path) -> None:
    cfg = config_mod.from_dict(MINIMAL, base_dir=tmp_path)
    assert cfg.data.format == "csv"
    assert cfg.split.ratios == {"train": 0.8, "eval": 0.2}
    assert cfg.root == tmp_path / ".evergreen"
    assert cfg.metadata_url == f"sqlite:///{tmp_path / '.evergreen' / 'metadata.db'}"
    again = config_mod.from_dict(cfg.to_dict(), base_dir=tmp_path)
    assert again == cfg


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            {"data": {"pattern": "data/*.csv", "label": "score"}},
            "data.pattern = 'data/*.csv' is not valid: put {SPAN}",
        ),
        (
            {
                "data": {
                    "pattern": "d/{SPAN}/*.csv",
                    "label": "score",
                    "features": {"review": "txt"},
                }
            },
            "data.features.review = 'txt' is not valid: use one of text",
        ),
        (
            {"data": {"pattern": "d/{SPAN}/*.csv", "label": "score", "formt": "csv"}},
            "unknown key 'data.formt'; did you mean 'format'?",
        ),
        (
            {"data": {"pattern": "d/{SPAN}/*.xlsx", "label": "score"}},
            "set data.format to one of csv",
        ),
        ({"split": {"ratios": {"train": 0.8}}}, "name at least a 'train' and an 'eval' split"),
        ({"split": {"key": "score"}}, "split.key = 'score' is not valid: splitting by the label"),
        (
            {"validation": {"min_presence": 2}},
            "validation.min_presence = 2 is not valid: use a number between 0 and 1",
        ),
        (
            {"validation": {"severity": {"new_column": "fatal"}}},
            "validation.severity.new_column = 'fatal'",
        ),
        (
            {"dedupe": {"label_conflicts": "drop"}},
            "dedupe.label_conflicts = 'drop' is not valid: use one of quarantine, keep",
        ),
        ({"pipeline": {"name": "my reviews"}}, "pipeline.name = 'my reviews' is not valid"),
    ],
    ids=[
        "no-placeholder",
        "bad-type",
        "typo",
        "unknown-ext",
        "no-eval",
        "split-by-label",
        "presence",
        "severity",
        "policy",
        "name",
    ],
)
def test_errors_name_key_value_and_fix(change: dict, message: str) -> None:
    raw = {**MINIMAL, **change}
    with pytest.raises(ConfigError) as info:
        config_mod.from_dict(raw)
    assert message in str(info.value)


def test_precedence_flag_then_env_then_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "evergreen.toml"
    path.write_text(
        '[pipeline]\nname = "r"\nroot = "from-file"\n[data]\npattern = "d/{SPAN}/*.csv"\nlabel = "y"\n'
    )
    assert config_mod.load(path).root == tmp_path / "from-file"
    monkeypatch.setenv("EVERGREEN_ROOT", str(tmp_path / "from-env"))
    assert config_mod.load(path).root == tmp_path / "from-env"
    assert config_mod.load(path, root=str(tmp_path / "from-flag")).root == tmp_path / "from-flag"


def test_missing_file_and_bad_toml(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist; create one with `evergreen init NAME`"):
        config_mod.load(tmp_path / "nope.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("[pipeline\nname=")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        config_mod.load(bad)


def test_drift_defaults_overrides_and_round_trip(tmp_path: Path) -> None:
    cfg = config_mod.from_dict(MINIMAL, base_dir=tmp_path)
    assert cfg.drift.enabled and cfg.drift.full_retrain_on == "major"
    assert cfg.drift.threshold("anything", "psi") == (0.1, 0.25)
    assert cfg.drift.threshold("anything", "js_distance") == (0.1, 0.3)
    raw = {
        **MINIMAL,
        "drift": {
            "full_retrain_on": "minor",
            "thresholds": {"ks": {"minor": 0.05}},
            "features": {
                "review": {"js_distance": {"minor": 0.2, "major": 0.4}},
                "id": {"enabled": False},
            },
        },
    }
    cfg = config_mod.from_dict(raw, base_dir=tmp_path)
    assert cfg.drift.threshold("x", "ks") == (0.05, 0.2)  # the default major stays
    assert cfg.drift.threshold("review", "js_distance") == (0.2, 0.4)
    assert cfg.drift.threshold("x", "js_distance") == (0.1, 0.3)
    assert not cfg.drift.feature_enabled("id") and cfg.drift.feature_enabled("review")
    assert config_mod.from_dict(cfg.to_dict(), base_dir=tmp_path) == cfg


@pytest.mark.parametrize(
    ("drift", "message"),
    [
        ({"enabled": "yes"}, "drift.enabled = 'yes' is not valid: use true or false"),
        (
            {"full_retrain_on": "huge"},
            "drift.full_retrain_on = 'huge' is not valid: use one of minor, major, never",
        ),
        (
            {"thresholds": {"js_distanse": {"minor": 0.1}}},
            "unknown key 'drift.thresholds.js_distanse'; did you mean 'js_distance'?",
        ),
        (
            {"thresholds": {"psi": 0.1}},
            "drift.thresholds.psi = 0.1 is not valid: use a table such as { minor = 0.1, major = 0.25 }",
        ),
        (
            {"thresholds": {"psi": {"minor": 0.3, "major": 0.2}}},
            "major (0.2) must be at least minor (0.3)",
        ),
        (
            {"thresholds": {"ks": {"minor": -1}}},
            "drift.thresholds.ks.minor = -1 is not valid: use a number ≥ 0",
        ),
        (
            {"features": {"age": {"enable": False}}},
            "unknown key 'drift.features.age.enable'; did you mean 'enabled'?",
        ),
        (
            {"min_item_share": 2},
            "drift.min_item_share = 2 is not valid: use a number between 0 and 1",
        ),
    ],
    ids=[
        "enabled",
        "level",
        "metric-typo",
        "not-a-table",
        "major-below-minor",
        "negative",
        "feature-typo",
        "share",
    ],
)
def test_drift_errors_name_key_value_and_fix(drift: dict, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        config_mod.from_dict({**MINIMAL, "drift": drift})
    assert message in str(info.value)


@pytest.mark.parametrize("template", ["text", "tabular"])
def test_templates_document_the_drift_defaults(template: str) -> None:
    """The commented [drift.thresholds] in `evergreen init`'s templates are the real defaults."""
    import tomllib
    from importlib import resources

    text = resources.files("evergreen").joinpath(f"templates/{template}.toml").read_text()
    documented = {}
    for line in text.splitlines():
        body = line.removeprefix("# ")
        if body != line and "= { minor" in body:
            documented |= tomllib.loads(body)
    assert {m: (t["minor"], t["major"]) for m, t in documented.items()} == config_mod.DRIFT_METRICS
