"""Registry integrity: per-file digests, Ed25519 signatures, and a damaged registry that only
hurts itself — in the registry, in the server's model manager, over HTTP and at the CLI.

The tampering is the hostile user's: a version's variables rewritten as a *valid* checkpoint
(the output bias changed), which TensorFlow loads and answers with without a complaint.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np
import pytest

from evergreen.config import ServingConfig
from evergreen.errors import ConfigError, IntegrityError, NotFound, RegistryError, Unavailable
from evergreen.registry import Registry
from evergreen.serving import ServerThread, build
from evergreen.serving.metrics import ServingMetrics
from evergreen.serving.models import ModelManager
from evergreen.signing import SIGNING_KEY_ENV, generate_key_pair, key_id, load_public_key
from evergreen.tf import tensorflow
from tests.serving_support import MODEL, Exports, publish, shared_exports

DATA_FILE = "variables/variables.data-00000-of-00001"
OTHER = "churn"


# --------------------------------------------------------------------------------- helpers


def _save_scaler(path: Path, weight: float) -> Path:
    """A real SavedModel: ``serving_default(x) -> {"y": x * weight}``."""
    tf = tensorflow()

    class Scaler(tf.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w = tf.Variable(weight)

        @tf.function(input_signature=[tf.TensorSpec([None], tf.float32, name="x")])
        def serve(self, x):
            return {"y": x * self.w}

    module = Scaler()
    tf.saved_model.save(module, str(path), signatures={"serving_default": module.serve})
    return path


def rewrite_checkpoint(version_dir: Path, change: Callable[[str, np.ndarray], np.ndarray]) -> int:
    """Rewrite ``variables/`` as a valid checkpoint, every tensor passed through ``change``.

    Same keys, same object graph, other values: what TensorFlow restores without a word.

    Returns:
        How many tensors changed.
    """
    tf = tensorflow()
    prefix = str(version_dir / "variables" / "variables")
    reader = tf.train.load_checkpoint(prefix)
    names = sorted(reader.get_variable_to_dtype_map())
    tensors, changed = [], 0
    for name in names:
        value = reader.get_tensor(name)
        if isinstance(value, bytes):  # the object graph: kept as it is
            tensors.append(tf.constant(value))
            continue
        value = np.asarray(value)
        new = change(name, value)
        changed += new is not value
        tensors.append(tf.constant(new, dtype=value.dtype))
    scratch = version_dir.parent / ".scratch-checkpoint"
    scratch.mkdir()
    tf.raw_ops.SaveV2(
        prefix=str(scratch / "variables"),
        tensor_names=names,
        shape_and_slices=[""] * len(names),
        tensors=tensors,
    )
    for file in scratch.iterdir():
        os.replace(file, version_dir / "variables" / file.name)
    scratch.rmdir()
    return changed


def shift_output_bias(version_dir: Path, classes: int = 2) -> int:
    """Add 10 to the first class's bias of the output layer (float32, shape ``[classes]``)."""

    def change(name: str, value: np.ndarray) -> np.ndarray:
        if value.dtype == np.float32 and value.shape == (classes,):
            return value + np.array([10.0] + [0.0] * (classes - 1), dtype=np.float32)
        return value

    return rewrite_checkpoint(version_dir, change)


def _flip_first_byte(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(bytes([data[0] ^ 0xFF]) + data[1:])


def _manager(registry: Registry, **settings) -> ModelManager:
    return ModelManager(
        registry, ServingConfig(port=0, audit_log=os.devnull, **settings), ServingMetrics()
    )


def _run(manager: ModelManager, *steps: Callable[[], object]) -> None:
    """Refresh once, then after each step (a registry change) refresh again, on one loop."""

    async def main() -> None:
        await manager.refresh()
        for step in steps:
            await asyncio.to_thread(step)
            await manager.refresh()

    asyncio.run(main())


def _champion(manager: ModelManager, model: str = MODEL) -> int:
    lv = manager.acquire(model)
    manager.release(lv)
    return lv.version


def _problem_metric(manager: ModelManager) -> list[str]:
    return [
        line
        for line in manager.metrics.render().decode().splitlines()
        if line.startswith("evergreen_registry_problem{")
    ]


@pytest.fixture(scope="module")
def exports(tmp_path_factory: pytest.TempPathFactory) -> Exports:
    return shared_exports(tmp_path_factory, variants=6)


@pytest.fixture(scope="session")
def scaler(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _save_scaler(tmp_path_factory.mktemp("scaler") / "doubler", 2.0)


@pytest.fixture(scope="session")
def keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_key_pair(tmp_path_factory.mktemp("keys") / "ours")


@pytest.fixture(scope="session")
def other_keys(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return generate_key_pair(tmp_path_factory.mktemp("keys") / "theirs")


@pytest.fixture
def registry(tmp_path: Path) -> Registry:
    return Registry(tmp_path / "registry")


# ------------------------------------------------------------------------ digests (registry)


def test_publish_records_the_sha256_of_every_file(registry, scaler):
    published = registry.publish(MODEL, scaler, {})

    files = published.manifest["files"]
    on_disk = sorted(
        p.relative_to(published.path).as_posix()
        for p in published.path.rglob("*")
        if p.is_file() and p.name != "evergreen.json"
    )
    assert sorted(files) == on_disk and "saved_model.pb" in files and DATA_FILE in files
    assert (
        files["saved_model.pb"]
        == hashlib.sha256((published.path / "saved_model.pb").read_bytes()).hexdigest()
    )
    assert registry.verify(MODEL, 1).warnings == []


def test_a_rewritten_valid_checkpoint_is_refused_naming_version_and_file(registry, scaler):
    tf = tensorflow()
    published = registry.publish(MODEL, scaler, {})
    assert rewrite_checkpoint(published.path, lambda n, v: v * 0 + 5.0 if v.shape == () else v)

    # The tampering is a valid checkpoint: TensorFlow loads it and answers 5x instead of 2x.
    loaded = tf.saved_model.load(str(published.path))
    y = loaded.signatures["serving_default"](x=tf.constant([1.0]))["y"].numpy().tolist()
    assert y == [5.0]
    with pytest.raises(IntegrityError) as refused:
        registry.verify(MODEL, 1)
    message = str(refused.value)
    assert message.startswith("version 1 of model 'reviews' does not match its manifest: ")
    assert DATA_FILE in message and "changed" in message
    assert "evergreen rollback" in message


@pytest.mark.parametrize(
    "tamper, expected",
    [
        (
            lambda p: _flip_first_byte(p / DATA_FILE),
            f"{DATA_FILE} changed",
        ),
        (
            lambda p: (p / "variables" / "variables.index").unlink(),
            "variables/variables.index missing",
        ),
        (
            lambda p: (
                (p / "assets").mkdir(exist_ok=True) or (p / "assets" / "x.txt").write_text("x")
            ),
            "assets/x.txt not in the manifest",
        ),
        (lambda p: (p / "evergreen.json").write_text("{not json"), "evergreen.json is damaged"),
        (lambda p: (p / "evergreen.json").unlink(), "has no evergreen.json"),
    ],
    ids=["flipped-byte", "deleted-file", "added-file", "broken-manifest", "no-manifest"],
)
def test_every_kind_of_tampering_is_refused(registry, scaler, tamper, expected):
    published = registry.publish(MODEL, scaler, {})
    tamper(published.path)

    with pytest.raises(IntegrityError, match=expected):
        registry.verify(MODEL, 1)


def test_a_version_from_before_digests_is_checked_by_fingerprint_and_sealed(registry, scaler):
    published = registry.publish(MODEL, scaler, {})
    manifest_path = published.path / "evergreen.json"
    legacy = {k: v for k, v in published.manifest.items() if k != "files"}
    manifest_path.write_text(json.dumps(legacy))  # what a publish before this change wrote

    accepted = registry.verify(MODEL, 1)
    assert len(accepted.warnings) == 1 and "before per-file digests" in accepted.warnings[0]

    registry.seal(MODEL, 1)
    sealed = registry.verify(MODEL, 1)
    assert sealed.warnings == [] and sealed.version.manifest["files"] == published.manifest["files"]
    assert [p.name for p in (registry.root / MODEL).iterdir() if p.name.startswith(".tmp")] == []


def test_a_changed_version_from_before_digests_is_refused_and_never_sealed(registry, scaler):
    published = registry.publish(MODEL, scaler, {})
    legacy = {k: v for k, v in published.manifest.items() if k != "files"}
    (published.path / "evergreen.json").write_text(json.dumps(legacy))
    rewrite_checkpoint(published.path, lambda n, v: v * 0 + 5.0 if v.shape == () else v)

    for attempt in (registry.verify, registry.seal):
        with pytest.raises(IntegrityError, match="do not match the fingerprint"):
            attempt(MODEL, 1)
    assert "files" not in json.loads((published.path / "evergreen.json").read_text())


# ----------------------------------------------------------------------------- signatures


def test_a_signed_version_verifies_with_its_public_key_only(tmp_path, scaler, keys, other_keys):
    private, public = keys
    registry = Registry(tmp_path / "registry", signing_key=private)
    published = registry.publish(MODEL, scaler, {})

    assert (published.path / "evergreen.sig").is_file()
    assert "evergreen.sig" not in published.manifest["files"]
    verified = registry.verify(MODEL, 1, verify_key=public)
    assert verified.signed_by == key_id(load_public_key(public))

    with pytest.raises(IntegrityError) as refused:
        registry.verify(MODEL, 1, verify_key=other_keys[1])
    ours, theirs = key_id(load_public_key(public)), key_id(load_public_key(other_keys[1]))
    assert str(refused.value).startswith(
        f"version 1 of model 'reviews' has a wrong signature: it was signed by key {ours}, "
        f"not by the verify key {theirs}."
    )


def test_an_unsigned_version_is_refused_when_a_key_is_required(registry, scaler, keys):
    registry.publish(MODEL, scaler, {})

    with pytest.raises(IntegrityError, match=r"is not signed \(no evergreen.sig\)"):
        registry.verify(MODEL, 1, verify_key=keys[1])
    # Sealing with the signing key signs it (its files are checked first).
    Registry(registry.root, signing_key=keys[0]).seal(MODEL, 1)
    assert registry.verify(MODEL, 1, verify_key=keys[1]).signed_by


def test_a_manifest_rewritten_to_match_tampered_files_fails_the_signature(tmp_path, scaler, keys):
    private, public = keys
    registry = Registry(tmp_path / "registry", signing_key=private)
    published = registry.publish(MODEL, scaler, {})
    rewrite_checkpoint(published.path, lambda n, v: v * 0 + 5.0 if v.shape == () else v)
    # A careful attacker also updates the digests; digests alone then pass.
    manifest = dict(published.manifest)
    manifest["files"] = {
        **manifest["files"],
        **{
            name: hashlib.sha256((published.path / name).read_bytes()).hexdigest()
            for name in (DATA_FILE, "variables/variables.index")
        },
    }
    (published.path / "evergreen.json").write_text(json.dumps(manifest, indent=2, sort_keys=True))
    assert registry.verify(MODEL, 1).warnings == []  # no key: the rewrite goes unnoticed

    with pytest.raises(IntegrityError, match="does not match the manifest .* was changed"):
        registry.verify(MODEL, 1, verify_key=public)


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
def test_keys_made_by_openssl_sign_through_the_environment(tmp_path, scaler, monkeypatch):
    private, public = tmp_path / "key.pem", tmp_path / "pub.pem"
    subprocess.run(
        ["openssl", "genpkey", "-algorithm", "ed25519", "-out", str(private)], check=True
    )
    subprocess.run(
        ["openssl", "pkey", "-in", str(private), "-pubout", "-out", str(public)], check=True
    )
    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))

    Registry(tmp_path / "registry").publish(MODEL, scaler, {})

    assert Registry(tmp_path / "registry", verify_key=public).verify(MODEL, 1).signed_by


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda keys, tmp: keys[0], "is a private key; give its public half"),
        (lambda keys, tmp: tmp / "nope.pem", "cannot be read"),
        (lambda keys, tmp: (tmp / "x.pem").write_text("hello") and tmp / "x.pem", "not a PEM"),
    ],
    ids=["private-key", "missing-file", "not-pem"],
)
def test_a_bad_verify_key_is_a_config_error(registry, scaler, keys, tmp_path, make, expected):
    registry.publish(MODEL, scaler, {})
    with pytest.raises(ConfigError, match=expected):
        registry.verify(MODEL, 1, verify_key=make(keys, tmp_path))
    with pytest.raises(ConfigError, match=expected):
        _manager(registry, verify_key=str(make(keys, tmp_path)))


def test_a_bad_signing_key_publishes_nothing(registry, scaler, tmp_path, monkeypatch):
    monkeypatch.setenv(SIGNING_KEY_ENV, str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match="signing key .*missing.pem: cannot be read"):
        registry.publish(MODEL, scaler, {})
    assert registry.version_numbers(MODEL) == []


def test_keygen_never_overwrites_a_key(tmp_path):
    private, public = generate_key_pair(tmp_path / "k")
    assert private.stat().st_mode & 0o777 == 0o600
    with pytest.raises(ConfigError, match="already exists"):
        generate_key_pair(tmp_path / "k")


# ------------------------------------------------------------- a damaged registry (registry)


def test_a_damaged_aliases_file_is_a_registry_error_for_its_model_only(registry, scaler):
    registry.publish(MODEL, scaler, {})
    registry.publish(OTHER, scaler, {})
    registry.set_alias(OTHER, "champion", 1)
    path = registry.root / MODEL / "aliases.json"

    for content in ("{oops", '["champion"]', '{"champion": "two"}', '{"champion": 0}'):
        path.write_text(content)
        with pytest.raises(RegistryError, match=r"aliases.json is damaged: .*evergreen rollback"):
            registry.aliases(MODEL)
    assert registry.aliases(OTHER) == {"champion": 1}


def test_a_broken_old_manifest_hurts_only_its_own_version(registry, scaler):
    for _ in range(3):
        registry.publish(MODEL, scaler, {})
    registry.set_alias(MODEL, "champion", 3)
    (registry.root / MODEL / "1" / "evergreen.json").write_text("{truncated")

    listed = registry.versions(MODEL)
    assert [v.version for v in listed] == [1, 2, 3]
    assert listed[0].problem and "evergreen.json is damaged" in listed[0].problem
    assert registry.publish(MODEL, scaler, {}).version == 4  # the dedupe scan survives it
    assert registry.rollback(MODEL, to_version=2) == 2

    with pytest.raises(IntegrityError) as refused:
        registry.rollback(MODEL, to_version=1)
    assert str(refused.value).startswith(
        "cannot roll back model 'reviews' to version 1: version 1 of model 'reviews' cannot be "
        "verified: "
    )
    assert str(refused.value).endswith("The champion stays at version 2.")
    assert registry.alias(MODEL, "champion") == 2
    assert [m["to"] for m in registry.history(MODEL)] == [3, 2]
    with pytest.raises(IntegrityError):
        registry.set_alias(MODEL, "canary", 1)


def test_rollback_to_a_tampered_version_is_refused(registry, scaler):
    registry.publish(MODEL, scaler, {})
    registry.publish(MODEL, scaler, {})
    registry.set_alias(MODEL, "champion", 1)
    registry.set_alias(MODEL, "champion", 2)
    shift = lambda n, v: v * 0 + 5.0 if v.shape == () else v  # noqa: E731
    rewrite_checkpoint(registry.root / MODEL / "1", shift)

    with pytest.raises(IntegrityError, match=f"to version 1: .*{DATA_FILE}.* changed"):
        registry.rollback(MODEL)
    assert registry.alias(MODEL, "champion") == 2


def test_deleting_a_damaged_aliases_file_then_rollback_sets_the_champion(registry, scaler):
    registry.publish(MODEL, scaler, {})
    registry.set_alias(MODEL, "champion", 1)
    (registry.root / MODEL / "aliases.json").write_text("{oops")
    with pytest.raises(RegistryError):
        registry.rollback(MODEL, to_version=1)

    (registry.root / MODEL / "aliases.json").unlink()
    assert registry.rollback(MODEL, to_version=1) == 1
    assert registry.aliases(MODEL) == {"champion": 1}
    with pytest.raises(NotFound, match="no champion before version 1"):
        registry.rollback(MODEL)


# -------------------------------------------------------- the model manager (no HTTP, exact)


def _aliases(registry: Registry, model: str, content: str) -> Callable[[], None]:
    return lambda: (registry.root / model / "aliases.json").write_text(content)


def test_manager_refuses_a_tampered_version_and_keeps_the_champion(exports, tmp_path):
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    v2 = publish(registry, exports, 1, champion=False)
    manager = _manager(registry)

    _run(
        manager,
        lambda: shift_output_bias(registry.root / MODEL / str(v2)),
        _aliases(registry, MODEL, json.dumps({"champion": v2})),  # by hand: set_alias refuses
    )

    assert _champion(manager) == 1
    entry = next(e for e in manager.status(MODEL) if e["version"] == "2")
    assert entry["state"] == "END" and entry["status"]["error_code"] == "DATA_LOSS"
    assert entry["status"]["error_message"].startswith(
        f"version 2 of model 'reviews' does not match its manifest: 2 files ({DATA_FILE}, "
        "variables/variables.index) changed"
    )
    assert _problem_metric(manager) == [
        'evergreen_registry_problem{kind="integrity",model="reviews",version="2"} 1.0'
    ]
    assert manager.ready


def test_manager_requires_signatures_with_a_verify_key(exports, tmp_path, keys, other_keys):
    ours = Registry(tmp_path / "registry", signing_key=keys[0])
    theirs = Registry(ours.root, signing_key=other_keys[0])
    publish(ours, exports, 0)
    v2 = publish(theirs, exports, 1, champion=False)
    v3 = publish(Registry(ours.root), exports, 2, champion=False)  # unsigned
    manager = _manager(ours, verify_key=str(keys[1]))
    messages: dict[str, str] = {}

    def seen() -> None:
        messages.update({e["version"]: e["status"]["error_message"] for e in manager.status(MODEL)})

    _run(
        manager,
        _aliases(ours, MODEL, json.dumps({"champion": v2})),
        seen,
        _aliases(ours, MODEL, json.dumps({"champion": v3})),
        seen,
    )

    assert _champion(manager) == 1
    assert messages["1"] == ""
    assert "has a wrong signature: it was signed by key" in messages["2"]
    assert "is not signed (no evergreen.sig)" in messages["3"]


def test_damaged_aliases_at_startup_stop_only_their_model(exports, tmp_path):
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    registry.publish(OTHER, exports.paths[1], {})
    registry.set_alias(OTHER, "champion", 1)
    (registry.root / MODEL / "aliases.json").write_text('{"champion": 1')
    manager = _manager(registry)

    _run(manager)

    assert _champion(manager, OTHER) == 1 and manager.ready
    with pytest.raises(Unavailable, match=r"model 'reviews' has no version loaded: .*aliases"):
        manager.acquire(MODEL)
    with pytest.raises(Unavailable, match=r"aliases.json is damaged: it is not valid JSON"):
        manager.status(MODEL)
    assert _problem_metric(manager) == [
        'evergreen_registry_problem{kind="aliases",model="reviews",version=""} 1.0'
    ]

    # Fixed by hand: the model serves, the problem clears.
    _run(manager, _aliases(registry, MODEL, '{"champion": 1}'))
    assert _champion(manager) == 1 and _problem_metric(manager) == []


def test_aliases_damaged_while_serving_freeze_only_their_model(exports, tmp_path):
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    registry.publish(OTHER, exports.paths[1], {})
    registry.set_alias(OTHER, "champion", 1)
    registry.publish(OTHER, exports.paths[2], {})
    manager = _manager(registry)

    _run(
        manager,
        _aliases(registry, MODEL, "garbage"),
        lambda: registry.set_alias(OTHER, "champion", 2),
    )

    assert _champion(manager) == 1  # routing frozen where it was
    assert _champion(manager, OTHER) == 2  # the other model still swaps
    (entry,) = manager.status(MODEL)
    assert entry["state"] == "AVAILABLE" and entry["status"]["error_code"] == "DATA_LOSS"
    assert "Routing stays champion=1" in entry["status"]["error_message"]


def test_an_unreadable_model_folder_freezes_only_that_model(exports, tmp_path, monkeypatch):
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    registry.publish(OTHER, exports.paths[1], {})
    registry.set_alias(OTHER, "champion", 1)
    registry.publish(OTHER, exports.paths[2], {})
    manager = _manager(registry)
    numbers = registry.version_numbers

    def unreadable(model: str) -> list[int]:
        if model == MODEL:
            raise PermissionError(13, "Permission denied", str(registry.root / model))
        return numbers(model)

    _run(
        manager,
        lambda: monkeypatch.setattr(registry, "version_numbers", unreadable),
        lambda: registry.set_alias(OTHER, "champion", 2),
    )

    assert _champion(manager) == 1 and _champion(manager, OTHER) == 2
    (problem,) = manager.model_problems(MODEL)
    assert "cannot be read" in problem.message and "routing stays champion=1" in problem.message


def test_a_broken_old_manifest_does_not_freeze_swaps(exports, tmp_path):
    registry = Registry(tmp_path / "registry")
    for k in range(3):
        publish(registry, exports, k, champion=(k == 0))
    manager = _manager(registry)

    _run(
        manager,
        lambda: (registry.root / MODEL / "1" / "evergreen.json").write_text("{"),
        lambda: registry.set_alias(MODEL, "champion", 2),
        lambda: registry.set_alias(MODEL, "champion", 3),
        _aliases(registry, MODEL, '{"champion": 1}'),  # by hand, to the broken one
    )

    assert _champion(manager) == 3
    entry = next(e for e in manager.status(MODEL) if e["version"] == "1")
    assert (
        entry["state"] == "END" and "evergreen.json is damaged" in entry["status"]["error_message"]
    )


@pytest.mark.parametrize(
    "damage",
    ["alias-to-missing-version", "served-folder-deleted", "champion-alias-removed"],
)
def test_champion_never_jumps_to_the_highest_version(exports, tmp_path, damage):
    registry = Registry(tmp_path / "registry")
    for k in range(3):
        publish(registry, exports, k, champion=(k == 1))  # versions 1..3, champion 2
    manager = _manager(registry)
    steps = {
        "alias-to-missing-version": _aliases(registry, MODEL, '{"champion": 7}'),
        "served-folder-deleted": lambda: shutil.rmtree(registry.root / MODEL / "2"),
        "champion-alias-removed": _aliases(registry, MODEL, "{}"),
    }

    _run(manager, steps[damage])

    assert _champion(manager) == 2
    problems = manager.model_problems(MODEL)
    assert len(problems) == 1, problems
    assert "keeps serving version 2" in problems[0].message or "stays champion=2" in (
        problems[0].message
    )
    assert manager.ready


def test_an_alias_to_a_missing_version_at_startup_serves_nothing_rather_than_guess(
    exports, tmp_path
):
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    publish(registry, exports, 1, champion=False)
    (registry.root / MODEL / "aliases.json").write_text('{"champion": 9}')
    manager = _manager(registry)

    _run(manager)

    with pytest.raises(Unavailable, match="points at version 9, which is not in the registry"):
        manager.acquire(MODEL)
    assert manager.status(MODEL)[0]["version"] == "9"
    assert not manager.ready  # the only model serves nothing


# ------------------------------------------------------------------------ over HTTP, end to end


def test_server_keeps_the_old_champion_when_the_new_one_was_tampered(exports, tmp_path):
    registry = Registry(tmp_path / "registry")
    publish(registry, exports, 0)
    settings = ServingConfig(port=0, poll_seconds=0.1, audit_log=os.devnull)
    with ServerThread(build(registry.root, settings), settings) as running:
        v2 = publish(registry, exports, 1, champion=False)
        shift_output_bias(registry.root / MODEL / str(v2))
        (registry.root / MODEL / "aliases.json").write_text(json.dumps({"champion": v2}))
        status: list = []
        for _ in range(400):  # bounded: at most ~20 s on a loaded machine
            status = httpx.get(f"{running.url}/v1/models/{MODEL}").json()["model_version_status"]
            if any(s["version"] == str(v2) and s["state"] == "END" for s in status):
                break
            time.sleep(0.05)
        r = httpx.post(f"{running.url}/v1/models/{MODEL}:predict", json={"instances": ["tea"]})
        metrics = httpx.get(f"{running.url}/metrics").text

    refused = next(s for s in status if s["version"] == str(v2))
    assert refused["status"]["error_code"] == "DATA_LOSS"
    assert "does not match its manifest" in refused["status"]["error_message"]
    assert r.status_code == 200 and r.headers["X-Model-Version"] == "1"
    assert r.json()["predictions"][0]["classes"] == exports.labels(0)
    assert 'evergreen_registry_problem{kind="integrity",model="reviews",version="2"} 1.0' in metrics


# ----------------------------------------------------------------------------------- the CLI


@pytest.fixture
def project(tmp_path: Path, exports: Exports) -> tuple[Path, Registry]:
    """A pipeline config whose registry holds export 0 as champion (no training run)."""
    config = tmp_path / "evergreen.toml"
    config.write_text(
        f'[pipeline]\nname = "{MODEL}"\nroot = "{tmp_path / "root"}"\n\n'
        '[data]\npattern = "data/span-{SPAN}/*.csv"\nlabel = "score"\n'
    )
    registry = Registry(tmp_path / "root" / "registry")
    publish(registry, exports, 0)
    return config, registry


def _cli(*args: str) -> tuple[int, str, str]:
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2", "COLUMNS": "200"}
    done = subprocess.run(
        [sys.executable, "-m", "evergreen", *args],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    return done.returncode, done.stdout, done.stderr


@pytest.mark.slow  # two interpreters importing TensorFlow
def test_cli_predict_refuses_a_tampered_version(project):
    config, registry = project
    rc, out, _ = _cli("predict", "-c", str(config), "great tea")
    assert rc == 0 and "(version 1)" in out

    shift_output_bias(registry.root / MODEL / "1")
    rc, out, err = _cli("predict", "-c", str(config), "great tea")

    assert rc == 1 and out == ""
    assert " ".join(err.split()).startswith(
        "integrity error: version 1 of model 'reviews' does not match its manifest: 2 files "
        f"({DATA_FILE}, variables/variables.index) changed"
    )


def _main(*args: str) -> int:
    from evergreen.cli import main

    try:
        main(list(args))
    except SystemExit as e:
        return int(e.code or 0)
    return 0


def test_cli_keygen_seal_and_verify(project, tmp_path, capsys, monkeypatch):
    config, registry = project
    assert _main("keygen", str(tmp_path / "keys")) == 0
    private, public = tmp_path / "keys" / "signing_key.pem", tmp_path / "keys" / "verify_key.pem"
    assert "export EVERGREEN_SIGNING_KEY=" in capsys.readouterr().out
    ours = key_id(load_public_key(public))

    assert _main("verify", "-c", str(config), "--verify-key", str(public)) == 1
    out, err = capsys.readouterr()
    assert out.startswith("version 1: refused: version 1 of model 'reviews' is not signed")
    assert "integrity error: 1 of 1 versions of model 'reviews' are refused: 1" in err
    assert _main("predict", "-c", str(config), "--verify-key", str(public), "tea") == 1
    assert "is not signed" in capsys.readouterr().err

    monkeypatch.setenv(SIGNING_KEY_ENV, str(private))
    assert _main("seal", "-c", str(config)) == 0
    assert capsys.readouterr().out == f"version 1: sealed, signed by key {ours}\n"
    assert _main("verify", "-c", str(config), "--verify-key", str(public)) == 0
    assert capsys.readouterr().out == f"version 1: ok, signed by key {ours}\n"
    assert _main("predict", "-c", str(config), "--verify-key", str(public), "tea") == 0
    assert "(version 1)" in capsys.readouterr().out


def test_cli_rollback_to_a_tampered_version_is_refused(project, exports, capsys):
    config, registry = project
    publish(registry, exports, 1)
    shift_output_bias(registry.root / MODEL / "1")

    assert _main("rollback", "-c", str(config), "1") == 1

    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(
        "integrity error: cannot roll back model 'reviews' to version 1: version 1 of model "
        "'reviews' does not match its manifest: 2 files"
    )
    assert err.endswith("The champion stays at version 2.")
    assert registry.alias(MODEL, "champion") == 2


def test_serving_verify_key_resolves_against_the_config_folder(project, keys, capsys):
    config, _ = project
    shutil.copy(keys[0], config.parent / "oops.pem")  # the private key, by mistake
    config.write_text(config.read_text() + '\n[serving]\nverify_key = "oops.pem"\n')

    assert _main("serve", "-c", str(config), "--port", "0") == 1

    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith(f"config error: verify key {config.parent / 'oops.pem'} is a private key")
