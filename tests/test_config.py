"""Config: validated once at load, errors name key, value and fix; round trip; precedence."""

from __future__ import annotations

import copy
import datetime
import math
import os
import shutil
import subprocess
import sys
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
        (
            {"serving": {"host": "my host"}},
            "serving.host = 'my host' is not valid: use an IP address",
        ),
        (
            {"serving": {"poll_seconds": 1e30}},
            "serving.poll_seconds = 1e+30 is not valid: use at most",
        ),
        (
            {"serving": {"batch_timeout_ms": 20000}},
            "serving.batch_timeout_ms = 20000.0 is not valid: use less than serving.request_timeout_ms",
        ),
        ({"serving": {"audit_log": "."}}, "serving.audit_log = '.' is not valid: it is a folder"),
        ({"serving": {"audit_log": "a" * 300}}, "over 255 bytes"),
        ({"validation": {"schema_file": "s" * 300}}, "validation.schema_file = 'sss"),
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
        "host",
        "poll-huge",
        "batch-wait-beyond-timeout",
        "audit-log-folder",
        "audit-log-name-too-long",
        "schema-file-name-too-long",
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


# -- the corpus of bad configs: one bad thing each, every one a ConfigError naming its key --------

CORPUS = Path(__file__).parent / "bad_inputs" / "configs"


def _expected(path: Path) -> str:
    """The ``# expect: ...`` line under each corpus file's first comment."""
    for line in path.read_bytes().decode("utf-8", "replace").splitlines()[:3]:
        if line.startswith("# expect: "):
            return line.removeprefix("# expect: ")
    raise AssertionError(f"{path} has no '# expect:' line under its comment")


@pytest.mark.parametrize("path", sorted(CORPUS.glob("*.toml")), ids=lambda p: p.stem)
def test_corpus_config_is_refused_at_load_naming_the_key(
    path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("EVERGREEN_ROOT", raising=False)
    monkeypatch.delenv("EVERGREEN_METADATA_URL", raising=False)
    assert path.read_bytes().startswith(b"# "), "each corpus file starts with what is wrong"
    with pytest.raises(ConfigError) as info:
        config_mod.load(path)
    message = str(info.value)
    assert _expected(path) in message
    assert str(path) in message and "\n" not in message


def test_corpus_is_large_enough() -> None:
    assert len(list(CORPUS.glob("*.toml"))) >= 50


@pytest.mark.parametrize(
    ("args", "code", "start"),
    [
        (["status", "-c", str(CORPUS / "ratios-nan.toml")], 1, "config error: "),
        (["status", "-c", str(CORPUS / "nested-20000.toml")], 1, "config error: "),
        (["status", "-c", str(CORPUS / "invalid-utf8.toml")], 1, "config error: "),
        (["status", "-c", str(CORPUS)], 2, "Usage: "),
        (["status", "--no-such-flag"], 2, "Usage: "),
    ],
    ids=["nan", "deep", "utf8", "folder", "usage"],
)
def test_cli_prints_one_line_and_exits_without_a_traceback(
    args: list[str], code: int, start: str, tmp_path: Path
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("EVERGREEN_")}
    env["PYTHONPATH"] = str(Path(__file__).parents[1] / "src")
    done = subprocess.run(
        [sys.executable, "-m", "evergreen", *args],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == code, done.stderr
    assert "Traceback" not in done.stderr and "internal error" not in done.stderr
    assert done.stderr.startswith(start), done.stderr
    if code == 1:
        assert done.stderr.count("\n") == 1, done.stderr


# -- values that are fine, and checks that need files ----------------------------------------


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///{tmp}/m.db",
        "sqlite:///{tmp}/not/yet/m.db",
        "postgresql://user@127.0.0.1:5432/evergreen",
        "postgres://user@127.0.0.1/evergreen",
        "postgresql+psycopg://user:secret@db.example/evergreen",
    ],
    ids=["sqlite", "sqlite-new-folders", "postgresql", "postgres-alias", "psycopg"],
)
def test_supported_metadata_urls_load(url: str, tmp_path: Path) -> None:
    url = url.format(tmp=tmp_path)
    raw = {**MINIMAL, "pipeline": {"name": "reviews", "metadata_url": url}}
    assert config_mod.from_dict(raw, base_dir=tmp_path).metadata_url == url


def test_env_tier_errors_name_the_variable(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EVERGREEN_METADATA_URL", "sqlitex:///m.db")
    with pytest.raises(ConfigError, match=r"pipeline.metadata_url \(from EVERGREEN_METADATA_URL\)"):
        config_mod.from_dict(MINIMAL, base_dir=tmp_path)
    monkeypatch.delenv("EVERGREEN_METADATA_URL")
    with pytest.raises(ConfigError, match=r"--root = '/dev/null/x' is not valid"):
        config_mod.from_dict(MINIMAL, base_dir=tmp_path, root="/dev/null/x")


def test_a_root_under_missing_folders_is_created(tmp_path: Path) -> None:
    from evergreen.project import Project

    root = tmp_path / "not" / "yet" / "there"
    raw = {**MINIMAL, "pipeline": {"name": "reviews", "root": str(root)}}
    with Project(config_mod.from_dict(raw, base_dir=tmp_path)) as project:
        assert project.store.spans() == []
    assert (root / "metadata.db").is_file()


def test_ratios_within_the_tolerance_of_one_are_kept(tmp_path: Path) -> None:
    raw = {**MINIMAL, "split": {"ratios": {"train": 0.7, "eval": 0.2, "test": 0.1}}}
    ratios = config_mod.from_dict(raw, base_dir=tmp_path).split.ratios
    assert sum([0.7, 0.2, 0.1]) != 1.0 and ratios == pytest.approx(
        {"train": 0.7, "eval": 0.2, "test": 0.1}
    )


@pytest.mark.parametrize(
    ("train", "ok"),
    [
        ({"sequence_length": 5}, True),
        ({"sequence_length": 4}, False),
        ({"family": "custom", "module": "m.py", "base_family": "text", "sequence_length": 3}, True),
        ({"family": "custom", "module": "m.py", "base_family": "text", "max_tokens": 2}, False),
        ({"family": "tabular", "sequence_length": 1}, True),
        ({"family": "image", "image_size": 4}, True),
        ({"family": "image", "image_size": 3}, False),
    ],
    ids=[
        "text-kernel",
        "text-short",
        "custom-own-model",
        "custom-text-vocab",
        "tabular",
        "image-4",
        "image-3",
    ],
)
def test_family_constraints_are_checked_at_load(train: dict, ok: bool, tmp_path: Path) -> None:
    (tmp_path / "m.py").write_text("def build_model(schema, hparams):\n    pass\n")
    raw = {**MINIMAL, "train": train}
    if ok:
        config_mod.from_dict(raw, base_dir=tmp_path)
    else:
        with pytest.raises(
            ConfigError,
            match=f"train.{next(k for k in train if k not in ('family', 'module', 'base_family'))} = ",
        ):
            config_mod.from_dict(raw, base_dir=tmp_path)


@pytest.fixture
def tls_pair(tmp_path: Path) -> tuple[Path, Path]:
    """A self-signed certificate and its key, made with openssl."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is needed to make a certificate")
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-keyout",
            str(key),
            "-out",
            str(cert),
            "-days",
            "1",
            "-subj",
            "/CN=127.0.0.1",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return cert, key


def test_tls_files_are_loaded_at_load(tls_pair: tuple[Path, Path], tmp_path: Path) -> None:
    cert, key = tls_pair
    raw = {**MINIMAL, "serving": {"tls_cert": "cert.pem", "tls_key": "key.pem"}}
    assert config_mod.from_dict(raw, base_dir=tmp_path).serving.tls_cert == "cert.pem"
    other = tmp_path / "other"
    other.mkdir()
    subprocess.run(
        ["openssl", "genrsa", "-out", str(other / "key.pem"), "2048"],
        check=True,
        capture_output=True,
        timeout=60,
    )
    raw["serving"] = {"tls_cert": "cert.pem", "tls_key": "other/key.pem"}
    with pytest.raises(
        ConfigError, match=r"serving.tls_key = 'other/key.pem' is not valid: .* does not load with"
    ):
        config_mod.from_dict(raw, base_dir=tmp_path)
    raw["serving"] = {"tls_cert": "key.pem", "tls_key": "key.pem"}
    with pytest.raises(
        ConfigError, match=r"serving.tls_cert = 'key.pem' is not valid: .* is not a PEM certificate"
    ):
        config_mod.from_dict(raw, base_dir=tmp_path)


def test_split_key_that_is_not_a_column_is_refused_at_ingest(tmp_path: Path) -> None:
    """Without the check every row hashed the same empty key and landed in one split."""
    from evergreen.project import Project
    from tests.conftest import dataset, read_csv, write_config, write_csv

    header, rows = read_csv(dataset("mlc_churn.csv"))
    project = tmp_path / "churn"
    write_csv(project / "data" / "span-1" / "churn.csv", header, rows[:500])
    config = write_config(project, label="churn", extra='\n[split]\nkey = "acount_length"\n')
    with Project(config_mod.load(config)) as p, pytest.raises(ConfigError) as info:
        p.ingest()
    message = str(info.value)
    assert "split.key = 'acount_length' is not a column of span 1" in message
    assert "did you mean 'account_length'?" in message
    config.write_text(config.read_text().replace("acount_length", "account_length"))
    with Project(config_mod.load(config)) as p:
        assert [o.status for o in p.ingest()] == ["validated"]


@pytest.mark.parametrize(
    ("folder", "name"),
    [
        ("café", "cafe"),
        ("my reviews", "my-reviews"),
        (".hidden", "hidden"),
        ("ok-name_1.2", "ok-name_1.2"),
        ("日本", "pipeline"),
    ],
    ids=["accent", "space", "dot", "valid", "nothing-left"],
)
def test_init_writes_a_name_that_loads(folder: str, name: str, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from evergreen.cli import cli

    target = tmp_path / folder
    result = CliRunner().invoke(cli, ["init", str(target)], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert config_mod.load(target / "evergreen.toml").name == name


# -- every key x hostile values: a ConfigError or a valid config, never an internal error --------

HOSTILE = {
    "nan": math.nan,
    "inf": math.inf,
    "-inf": -math.inf,
    "negative": -1,
    "zero": 0,
    "huge": 10**30,
    "string": "x",
    "empty": "",
    "long": "y" * 5000,
    "array": [1, 2],
    "table": {"a": 1},
    "true": True,
    "date": datetime.date(2020, 1, 1),
    "accent": "café",
    "dots": "../..",
    "under-a-file": "/dev/null/x",
    "nul": "a\x00b",
}


def _leaf_keys(table: dict, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    keys = []
    for key, value in table.items():
        keys.append((*prefix, key))
        if isinstance(value, dict) and value and key != "hparams":
            keys += _leaf_keys(value, (*prefix, key))
    return keys


@pytest.mark.parametrize("hostile", list(HOSTILE), ids=list(HOSTILE))
def test_no_value_anywhere_is_an_internal_error(hostile: str, tmp_path: Path) -> None:
    full = config_mod.from_dict(MINIMAL, base_dir=tmp_path).to_dict()
    del full["pipeline"]["root"], full["pipeline"]["metadata_url"]  # derived from the root
    refused = 0
    for path in _leaf_keys(full):
        raw = copy.deepcopy(full)
        table = raw
        for key in path[:-1]:
            table = table[key]
        table[path[-1]] = HOSTILE[hostile]
        try:
            config_mod.from_dict(raw, base_dir=tmp_path)
        except ConfigError as e:
            refused += 1
            assert "\n" not in str(e)
    assert refused > 0


def test_a_root_that_cannot_be_written_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Tests run as root here, where every folder is writable: stand in for a read-only one.
    monkeypatch.setattr(config_mod.os, "access", lambda path, mode: Path(path) != tmp_path)
    raw = {**MINIMAL, "pipeline": {"name": "reviews", "root": "new/root"}}
    with pytest.raises(
        ConfigError, match=rf"pipeline.root = 'new/root' is not valid: {tmp_path} is not writable"
    ):
        config_mod.from_dict(raw, base_dir=tmp_path)
