"""The model registry: numbered versions, aliases, atomic publish and rollback.

The on-disk layout is TF Serving's, so a real TF Serving can serve ``<root>/<model>`` as is::

    <root>/
      <model>/
        1/                      one version: a SavedModel, never modified once published
          saved_model.pb
          variables/
          evergreen.json        Evergreen's manifest; TF Serving ignores unknown files
        2/
        aliases.json            {"champion": 2, "canary": 3} (TF Serving's "version labels")
        alias_history.jsonl     one line per alias move: alias, from, to, at, reason, op
        .lock                   taken (flock) by whoever publishes or moves an alias
        .tmp-*                  a publish in progress, or the leftover of a killed one

TF Serving only loads folders whose names are all digits, and so does this module: anything
else under ``<model>/`` is ignored. A version is built in a ``.tmp-`` folder and renamed into
place with one ``os.replace``, so a reader sees a whole version or none.

The manifest (``evergreen.json``) holds ``model``, ``version``, ``created_at`` (UTC, ISO 8601),
``fingerprint`` (of the SavedModel files), ``signatures`` (read from ``saved_model.pb``), and
what the caller gave: ``metrics``, ``lineage`` (run and artifact ids, spans, ``candidate``,
``adopted``...) and any other JSON-serialisable keys.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evergreen.artifacts import TMP_PREFIX, directory_fingerprint
from evergreen.errors import EvergreenError, NotFound

MANIFEST = "evergreen.json"
ALIASES = "aliases.json"
HISTORY = "alias_history.jsonl"
CHAMPION = "champion"

# Canonical positive numbers only: "007" would be a second name for version 7.
_VERSION = re.compile(r"[1-9][0-9]*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ModelVersion:
    """One published version: ``path`` is the SavedModel folder TF Serving loads."""

    model: str
    version: int
    path: Path
    manifest: dict[str, Any]


class Registry:
    """A folder of models in TF Serving's layout, with Evergreen's manifests and aliases.

    Construction does no work; the root folder is created by the first :meth:`publish`.

    Args:
        root: the registry folder (``<pipeline root>/registry`` by default in the config).
    """

    def __init__(self, root: Path) -> None:
        self.root = Path(root)

    # ----------------------------------------------------------------------------- reading

    def models(self) -> list[str]:
        """Names of the models that have at least one version, sorted."""
        if not self.root.is_dir():
            return []
        return sorted(
            p.name
            for p in self.root.iterdir()
            if p.is_dir() and not p.name.startswith(".") and _version_numbers(p)
        )

    def versions(self, model: str) -> list[ModelVersion]:
        """Every version of ``model``, oldest first; ``[]`` for a model never published."""
        folder = self.root / model
        return [self._load(model, n) for n in _version_numbers(folder)]

    def get(self, model: str, version_or_alias: int | str) -> ModelVersion:
        """One version, by number (``3`` or ``"3"``) or by alias (``"champion"``).

        Raises:
            NotFound: the model, version or alias does not exist; the message lists what does.
        """
        self._require_model(model)
        if isinstance(version_or_alias, str) and not _VERSION.fullmatch(version_or_alias):
            version = self.alias(model, version_or_alias)
            if version is None:
                raise NotFound(
                    f"model {model!r} has no alias {version_or_alias!r}; "
                    f"aliases: {_describe_aliases(self.aliases(model))}. "
                    "Set one with Registry.set_alias"
                )
            if version not in _version_numbers(self.root / model):
                raise NotFound(
                    f"alias {version_or_alias!r} of model {model!r} points at version {version}, "
                    f"which no longer exists; versions: {self._describe_versions(model)}. "
                    "Move the alias with Registry.set_alias"
                )
            return self._load(model, version)
        version = int(version_or_alias)
        self._require_version(model, version)
        return self._load(model, version)

    def aliases(self, model: str) -> dict[str, int]:
        """The aliases of ``model`` (``{"champion": 3}``); ``{}`` when it has none."""
        path = self.root / model / ALIASES
        if not path.exists():
            return {}
        return {k: int(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}

    def alias(self, model: str, alias: str) -> int | None:
        """The version ``alias`` points at, or None (no such alias, or no such model)."""
        return self.aliases(model).get(alias)

    def history(self, model: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias moves of ``model``, oldest first, optionally only those of ``alias``."""
        path = self.root / model / HISTORY
        if not path.exists():
            return []
        lines = path.read_text(encoding="utf-8").splitlines()
        moves = [json.loads(line) for line in lines if line.strip()]
        return [m for m in moves if alias is None or m["alias"] == alias]

    # ----------------------------------------------------------------------------- writing

    def publish(self, model: str, saved_model_dir: Path, manifest: dict[str, Any]) -> ModelVersion:
        """Copy a SavedModel into the registry as the next version of ``model``.

        The copy is built in a hidden ``.tmp-`` folder and renamed to ``<model>/<N>``, N being
        one more than the highest version, under an exclusive lock so two publishers never
        pick the same N. Publishing again the same SavedModel (same fingerprint) with the same
        ``manifest["lineage"]["candidate"]`` returns the version already there: a run resumed
        after ``kill -9`` does not publish a duplicate. Without a candidate id nothing is
        deduplicated, since a deliberate re-publish cannot then be told from a resumed one.

        Args:
            model: the model name, the folder TF Serving is pointed at.
            saved_model_dir: a SavedModel folder (``saved_model.pb``, ``variables/``).
            manifest: ``metrics``, ``lineage`` and any other JSON-serialisable keys; the keys
                ``model``, ``version``, ``created_at``, ``fingerprint`` and ``signatures`` are
                set by the registry.

        Returns:
            The published version, or the existing one when the publish is a repeat.

        Raises:
            NotFound: ``saved_model_dir`` holds no SavedModel.
            EvergreenError: the model name or the manifest is invalid.
        """
        _check_name(model, "model")
        saved_model_dir = Path(saved_model_dir)
        if not (saved_model_dir / "saved_model.pb").is_file():
            raise NotFound(
                f"{saved_model_dir} holds no SavedModel (no saved_model.pb); "
                "export the model with tf.saved_model.save or Model.export first"
            )
        manifest = _checked_manifest(manifest)
        candidate = manifest["lineage"].get("candidate")
        folder = self.root / model
        folder.mkdir(parents=True, exist_ok=True)

        # Everything happens under the lock, the copy included: versions are few and small
        # next to training, and it makes every .tmp- folder found here a dead publisher's.
        with self._locked(model):
            _remove_temporaries(folder)
            tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, suffix=f"-{os.getpid()}", dir=folder))
            try:
                # An evergreen.json in the source (a re-publish from another registry) is stale.
                shutil.copytree(saved_model_dir, tmp, dirs_exist_ok=True, ignore=_ignore_manifest)
                fingerprint = directory_fingerprint(tmp)
                if candidate is not None:
                    for existing in self.versions(model):
                        if (
                            existing.manifest.get("fingerprint") == fingerprint
                            and existing.manifest.get("lineage", {}).get("candidate") == candidate
                        ):
                            shutil.rmtree(tmp)
                            return existing
                numbers = _version_numbers(folder)
                version = (numbers[-1] if numbers else 0) + 1
                manifest.update(
                    model=model,
                    version=version,
                    created_at=_now(),
                    fingerprint=fingerprint,
                    signatures=_read_signatures(tmp),
                )
                _write_json(tmp / MANIFEST, manifest)
                os.replace(tmp, folder / str(version))
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)
                raise
        return self._load(model, version)

    def set_alias(self, model: str, alias: str, version: int, reason: str = "set") -> None:
        """Point ``alias`` at ``version`` and record the move in the history.

        Args:
            model: the model name.
            alias: a label such as ``champion`` or ``canary``; not all digits, since
                ``get(model, "3")`` means version 3.
            version: an existing version of ``model``.
            reason: why, kept in ``alias_history.jsonl``; default ``"set"``.

        Raises:
            NotFound: the model or the version does not exist.
            EvergreenError: the alias name is invalid.
        """
        _check_name(alias, "alias")
        if alias.isdigit():
            raise EvergreenError(
                f"alias {alias!r} is a number, which get() would read as a version; "
                "use a name such as 'champion' or 'canary'"
            )
        self._require_version(model, version)
        with self._locked(model):
            self._move_alias(model, alias, version, reason, op="set")

    def rollback(self, model: str, to_version: int | None = None, reason: str = "rollback") -> int:
        """Move ``champion`` back, to ``to_version`` or to the champion before the current one.

        The default target is the version that was champion when the current champion was
        promoted (ignoring moves made by earlier rollbacks), so rolling back twice walks back
        two promotions instead of swinging back to the version just rolled away from.

        Args:
            model: the model name.
            to_version: the version to serve; default None, the previous champion.
            reason: kept in ``alias_history.jsonl``; default ``"rollback"``.

        Returns:
            The version now champion.

        Raises:
            NotFound: the model has no champion, no earlier champion, or no ``to_version``.
        """
        self._require_model(model)
        with self._locked(model):
            current = self.alias(model, CHAMPION)
            if current is None:
                raise NotFound(
                    f"model {model!r} has no {CHAMPION} to roll back; "
                    f"versions: {self._describe_versions(model)}. "
                    f"Set one with Registry.set_alias(model, {CHAMPION!r}, version)"
                )
            if to_version is None:
                to_version = self._previous_champion(model, current)
            self._require_version(model, to_version)
            self._move_alias(model, CHAMPION, to_version, reason, op="rollback")
        return to_version

    def sweep(self, model: str) -> None:
        """Remove what killed publishers left under ``<model>/`` (``.tmp-*`` folders)."""
        folder = self.root / model
        if not folder.is_dir():
            return
        with self._locked(model):
            _remove_temporaries(folder)

    # ----------------------------------------------------------------------------- helpers

    def _previous_champion(self, model: str, current: int) -> int:
        for move in reversed(self.history(model, CHAMPION)):
            if move["to"] == current and move.get("op") != "rollback" and move["from"] is not None:
                return int(move["from"])
        raise NotFound(
            f"model {model!r} had no {CHAMPION} before version {current}; "
            f"versions: {self._describe_versions(model)}. Pass to_version explicitly"
        )

    def _move_alias(self, model: str, alias: str, version: int, reason: str, op: str) -> None:
        """Rewrite aliases.json, then append to the history; the caller holds the lock.

        aliases.json is the truth, written first: a crash in between loses a history line,
        never makes the history claim a move that did not happen.
        """
        folder = self.root / model
        current = self.aliases(model)
        previous = current.get(alias)
        current[alias] = int(version)
        tmp = folder / f"{TMP_PREFIX}{ALIASES}"
        _write_json(tmp, current)
        os.replace(tmp, folder / ALIASES)
        move = {
            "alias": alias,
            "from": previous,
            "to": int(version),
            "at": _now(),
            "reason": reason,
            "op": op,  # "set" or "rollback": rollback() skips its own moves when looking back
        }
        with open(folder / HISTORY, "a", encoding="utf-8") as f:
            f.write(json.dumps(move, sort_keys=True) + "\n")

    @contextmanager
    def _locked(self, model: str) -> Iterator[None]:
        # flock, not a lock file created with O_EXCL: the kernel releases it when a holder is
        # killed, so a crashed publisher never blocks the next one.
        with open(self.root / model / ".lock", "a") as f:
            fcntl.flock(f.fileno(), fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(f.fileno(), fcntl.LOCK_UN)

    def _load(self, model: str, version: int) -> ModelVersion:
        path = self.root / model / str(version)
        manifest_path = path / MANIFEST
        # A version copied in by hand (plain TF Serving layout) has no manifest; still listed.
        manifest = json.loads(manifest_path.read_text("utf-8")) if manifest_path.exists() else {}
        return ModelVersion(model=model, version=version, path=path, manifest=manifest)

    def _require_model(self, model: str) -> None:
        if not _version_numbers(self.root / model):
            known = ", ".join(self.models()) or "none"
            raise NotFound(
                f"the registry {self.root} has no model {model!r}; models: {known}. "
                "Publish one first"
            )

    def _require_version(self, model: str, version: int) -> None:
        self._require_model(model)
        if int(version) not in _version_numbers(self.root / model):
            raise NotFound(
                f"model {model!r} has no version {version}; "
                f"versions: {self._describe_versions(model)}"
            )

    def _describe_versions(self, model: str) -> str:
        return ", ".join(map(str, _version_numbers(self.root / model))) or "none"


def _version_numbers(folder: Path) -> list[int]:
    """The version numbers under ``folder``, sorted; hidden and non-numeric folders ignored."""
    if not folder.is_dir():
        return []
    return sorted(int(p.name) for p in folder.iterdir() if _VERSION.fullmatch(p.name))


def _remove_temporaries(folder: Path) -> None:
    # Only called under the lock, when no publisher is alive to own a .tmp- entry.
    for p in folder.glob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _ignore_manifest(directory: str, names: list[str]) -> list[str]:
    return [MANIFEST] if MANIFEST in names else []


def _read_signatures(saved_model_dir: Path) -> dict[str, Any]:
    """Input and output names, dtypes and shapes of each signature in ``saved_model.pb``."""
    from evergreen.tf import tensorflow

    tf = tensorflow()
    from tensorflow.core.protobuf import saved_model_pb2

    proto = saved_model_pb2.SavedModel()
    proto.ParseFromString((saved_model_dir / "saved_model.pb").read_bytes())

    def tensor(info: Any) -> dict[str, Any]:
        shape = info.tensor_shape
        dims = None if shape.unknown_rank else [d.size if d.size >= 0 else None for d in shape.dim]
        return {"dtype": tf.dtypes.as_dtype(info.dtype).name, "shape": dims}

    signatures: dict[str, Any] = {}
    for graph in proto.meta_graphs:
        for key, sig in graph.signature_def.items():
            if key.startswith("__"):  # __saved_model_init_op: TF's bookkeeping, not servable
                continue
            signatures[key] = {
                "inputs": {name: tensor(t) for name, t in sorted(sig.inputs.items())},
                "outputs": {name: tensor(t) for name, t in sorted(sig.outputs.items())},
            }
    return signatures


def _checked_manifest(manifest: dict[str, Any]) -> dict[str, Any]:
    """A JSON-clean copy of ``manifest`` with dict ``metrics`` and ``lineage``."""
    for key in ("metrics", "lineage"):
        if not isinstance(manifest.get(key, {}), dict):
            raise EvergreenError(
                f"manifest[{key!r}] must be a dict, got {type(manifest[key]).__name__}"
            )
    try:
        # A round trip both copies and catches unserialisable values before any file is copied.
        clean = json.loads(json.dumps(manifest, default=_scalar))
    except (TypeError, ValueError) as e:
        raise EvergreenError(f"the manifest cannot be written as JSON: {e}") from e
    clean.setdefault("metrics", {})
    clean.setdefault("lineage", {})
    return clean


def _scalar(value: Any) -> Any:
    # Keras metrics often arrive as NumPy or TF scalars; store them as numbers, not strings.
    if hasattr(value, "item"):
        return value.item()
    if hasattr(value, "numpy"):
        return value.numpy().item()
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def _check_name(name: str, what: str) -> None:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise EvergreenError(
            f"{what} name {name!r} is invalid; use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )


def _describe_aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(aliases.items())) or "none"


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
