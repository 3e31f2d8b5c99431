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
``fingerprint`` (of the SavedModel files), ``files`` (the SHA-256 of each file, by path relative
to the version folder; the manifest and its signature excluded), ``signatures`` (read from
``saved_model.pb``), and what the caller gave: ``metrics``, ``lineage`` (run and artifact ids,
spans, ``candidate``, ``adopted``...) and any other JSON-serialisable keys.

Integrity: :meth:`Registry.verify` recomputes the digests and refuses a version whose files
changed, went missing or were added; with a verify key it first checks ``evergreen.sig``, an
Ed25519 signature of the manifest's exact bytes (:mod:`evergreen.signing`), written by
:meth:`Registry.publish` when a signing key is given or named by ``EVERGREEN_SIGNING_KEY``.
Versions published before per-file digests existed are checked against their ``fingerprint``
and accepted with a warning; :meth:`Registry.seal` upgrades them in place.

Damage stays local: an unreadable manifest makes its own version unusable (listed with a
``problem``), never the listing of the others; an unreadable ``aliases.json`` raises
:class:`~evergreen.errors.RegistryError` naming the file, for that model only.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import json
import logging
import os
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evergreen import signing, tfserving_config
from evergreen.artifacts import TMP_PREFIX, directory_fingerprint, file_sha256
from evergreen.errors import IntegrityError, NotFound, RegistryError

log = logging.getLogger("evergreen.registry")

MANIFEST = "evergreen.json"
SIGNATURE = "evergreen.sig"  # Ed25519 signature of the manifest's bytes (evergreen.signing)
ALIASES = "aliases.json"
HISTORY = "alias_history.jsonl"
CHAMPION = "champion"

# Canonical positive numbers only: "007" would be a second name for version 7.
_VERSION = re.compile(r"[1-9][0-9]*")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")


@dataclass(frozen=True)
class ModelVersion:
    """One published version: ``path`` is the SavedModel folder TF Serving loads.

    ``problem`` says why the manifest could not be read (the version is still listed, so one
    damaged version never hides the others; :meth:`Registry.verify` refuses it).
    """

    model: str
    version: int
    path: Path
    manifest: dict[str, Any]
    problem: str | None = None


@dataclass(frozen=True)
class Verified:
    """A version whose files match its manifest (see :meth:`Registry.verify`).

    ``signed_by`` is the verify key's id when the signature was checked, else None;
    ``warnings`` says what was accepted without full proof (a version from before per-file
    digests).
    """

    version: ModelVersion
    signed_by: str | None
    warnings: list[str]


class Registry:
    """A folder of models in TF Serving's layout, with Evergreen's manifests and aliases.

    Construction does no work; the root folder is created by the first :meth:`publish`, keys
    are read when first used.

    Args:
        root: the registry folder (``<pipeline root>/registry`` by default in the config).
        signing_key: PEM file of the Ed25519 private key :meth:`publish` signs manifests with;
            default None: the file named by ``EVERGREEN_SIGNING_KEY``, or no signature.
        verify_key: PEM file of the public key :meth:`verify`, :meth:`set_alias` and
            :meth:`rollback` require a valid signature from; default None: digests only.
    """

    def __init__(
        self,
        root: Path,
        *,
        signing_key: Path | str | None = None,
        verify_key: Path | str | None = None,
    ) -> None:
        self.root = Path(root)
        self.signing_key = signing_key
        self.verify_key = verify_key

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

    def version_numbers(self, model: str) -> list[int]:
        """The version numbers of ``model``, sorted, without reading any manifest."""
        return _version_numbers(self.root / model)

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
        """The aliases of ``model`` (``{"champion": 3}``); ``{}`` when it has none.

        Raises:
            RegistryError: ``aliases.json`` is not a JSON object of alias -> version number.
        """
        path = self.root / model / ALIASES
        if not path.exists():
            return {}
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError) as e:
            raise RegistryError(_bad_aliases(path, f"it is not valid JSON ({e})")) from None
        if not isinstance(raw, dict):
            raise RegistryError(_bad_aliases(path, f"it holds a {type(raw).__name__}"))
        aliases = {}
        for name, value in raw.items():
            if isinstance(value, str) and _VERSION.fullmatch(value):
                value = int(value)  # a hand edit with quotes still means the version
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise RegistryError(
                    _bad_aliases(path, f"alias {name!r} = {value!r} is not a version number")
                )
            aliases[name] = value
        return aliases

    def alias(self, model: str, alias: str) -> int | None:
        """The version ``alias`` points at, or None (no such alias, or no such model)."""
        return self.aliases(model).get(alias)

    def history(self, model: str, alias: str | None = None) -> list[dict[str, Any]]:
        """Alias moves of ``model``, oldest first, optionally only those of ``alias``."""
        path = self.root / model / HISTORY
        if not path.exists():
            return []
        moves = []
        for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
            if not line.strip():
                continue
            try:
                move = json.loads(line)
                if not isinstance(move, dict) or "alias" not in move:
                    raise ValueError("not an alias move")
            except ValueError as e:
                raise RegistryError(
                    f"{path} line {number} is damaged ({e}): {line[:80]!r}; remove or fix that "
                    "line (aliases.json, not the history, says where the aliases point)"
                ) from None
            moves.append(move)
        return [m for m in moves if alias is None or m["alias"] == alias]

    # ----------------------------------------------------------------------------- integrity

    def verify(
        self, model: str, version: int | str, verify_key: Path | str | Any | None = None
    ) -> Verified:
        """Check that a version's files are the ones its manifest lists (and signed, with a key).

        Args:
            model: the model name.
            version: a version number or an alias.
            verify_key: a public key (PEM path or loaded key) whose signature is required;
                default None: the registry's ``verify_key``, and without one digests only;
                False: digests only, whatever the registry's key.

        Returns:
            The verified version, with ``warnings`` when it predates per-file digests.

        Raises:
            NotFound: no such model, version or alias.
            IntegrityError: the manifest is missing or unreadable, the signature is missing or
                wrong, or a file changed, is missing or was added; the message names it.
            ConfigError: the verify key cannot be read.
        """
        mv = self.get(model, version)
        where = f"version {mv.version} of model {model!r}"
        if mv.problem is not None:
            raise IntegrityError(f"{where} cannot be verified: {mv.problem}. {_REPUBLISH}")
        if not (mv.path / MANIFEST).is_file():
            raise IntegrityError(
                f"{where} has no {MANIFEST}, so its files cannot be verified (copied in by "
                "hand?); publish the SavedModel with Registry.publish instead of copying it"
            )
        key = self.verify_key if verify_key is None else verify_key
        signed_by = None
        if key is not None and key is not False:
            public = signing.load_public_key(key) if isinstance(key, str | Path) else key
            signed_by = _check_signature(mv, public, where)
        return Verified(mv, signed_by, _check_files(mv, where))

    def seal(self, model: str, version: int) -> Verified:
        """Give an intact version per-file digests and, with a signing key, a signature.

        For versions published before digests or signing existed: their files must still match
        the manifest's ``fingerprint`` (or its digests), so a changed version is never sealed.
        Only ``evergreen.json`` and ``evergreen.sig`` are rewritten, each atomically.

        Raises:
            IntegrityError: the version does not match its manifest (see :meth:`verify`).
            ConfigError: the signing key cannot be read.
        """
        private = self._signing_key()
        mv = self.verify(model, version, verify_key=False).version  # False: digests only
        manifest = dict(mv.manifest)
        with self._locked(model):
            if "files" not in manifest:
                manifest["files"] = _file_digests(mv.path)
                _replace_file(mv.path / MANIFEST, _json_bytes(manifest))
            if private is not None:
                data = (mv.path / MANIFEST).read_bytes()
                _replace_file(mv.path / SIGNATURE, signing.sign(private, data))
        return self.verify(model, version, verify_key=private.public_key() if private else None)

    # ----------------------------------------------------------------------------- writing

    def publish(
        self,
        model: str,
        saved_model_dir: Path,
        manifest: dict[str, Any],
        add_files: Callable[[Path], Any] | None = None,
    ) -> ModelVersion:
        """Copy a SavedModel into the registry as the next version of ``model``.

        The copy is built in a hidden ``.tmp-`` folder and renamed to ``<model>/<N>``, N being
        one more than the highest version, under an exclusive lock so two publishers never
        pick the same N. Publishing again the same SavedModel (same fingerprint) with the same
        ``manifest["lineage"]["candidate"]`` returns the version already there: a run resumed
        after ``kill -9`` does not publish a duplicate. Without a candidate id nothing is
        deduplicated, since a deliberate re-publish cannot then be told from a resumed one.

        The manifest lists every file's SHA-256 (``files``); with a signing key (the
        ``signing_key`` argument of the registry, or the file named by
        ``EVERGREEN_SIGNING_KEY``) its bytes are signed into ``evergreen.sig``.

        Args:
            model: the model name, the folder TF Serving is pointed at.
            saved_model_dir: a SavedModel folder (``saved_model.pb``, ``variables/``).
            manifest: ``metrics``, ``lineage`` and any other JSON-serialisable keys; the keys
                ``model``, ``version``, ``created_at``, ``fingerprint``, ``files`` and
                ``signatures`` are set by the registry.
            add_files: called with the temporary version folder after the fingerprint is
                taken and before the per-file digests: files it writes there (TF Serving's
                warm-up requests) are covered by the digests, and a resumed publish is still
                recognised by the SavedModel's fingerprint alone.

        Returns:
            The published version, or the existing one when the publish is a repeat.

        Raises:
            NotFound: ``saved_model_dir`` holds no SavedModel.
            RegistryError: the model name or the manifest is invalid.
            ConfigError: the signing key cannot be read (nothing is published).
        """
        check_name(model, "model")
        saved_model_dir = _require_saved_model(Path(saved_model_dir))
        manifest = _checked_manifest(manifest)
        private = self._signing_key()  # before any copy: a bad key publishes nothing
        (self.root / model).mkdir(parents=True, exist_ok=True)
        # Everything happens under the lock, the copy included: versions are few and small
        # next to training, and it makes every .tmp- folder found here a dead publisher's.
        with self._locked(model):
            return self._publish_locked(model, saved_model_dir, manifest, private, add_files)

    def set_alias(self, model: str, alias: str, version: int, reason: str = "set") -> None:
        """Point ``alias`` at ``version`` and record the move in the history.

        Args:
            model: the model name.
            alias: a label such as ``champion`` or ``canary``; not all digits, since
                ``get(model, "3")`` means version 3.
            version: an existing version of ``model``, intact (see :meth:`verify`): an alias
                never points at a version that cannot serve.
            reason: why, kept in ``alias_history.jsonl``; default ``"set"``.

        Raises:
            NotFound: the model or the version does not exist.
            IntegrityError: the version does not match its manifest (or signature).
            RegistryError: ``aliases.json`` is damaged, or the alias name is invalid (or all
                digits).
        """
        check_name(alias, "alias")
        if alias.isdigit():
            raise RegistryError(
                f"alias {alias!r} is a number, which get() would read as a version; "
                "use a name such as 'champion' or 'canary'"
            )
        self._require_version(model, version)
        self._warn(self.verify(model, version))
        with self._locked(model):
            self._move_alias(model, alias, version, reason, op="set")

    def rollback(self, model: str, to_version: int | None = None, reason: str = "rollback") -> int:
        """Move ``champion`` back, to ``to_version`` or to the champion before the current one.

        The default target is the version that was champion when the current champion was
        promoted (ignoring moves made by earlier rollbacks), so rolling back twice walks back
        two promotions instead of swinging back to the version just rolled away from.

        The target must be intact (see :meth:`verify`); a damaged one is refused and the
        champion stays where it is.

        Args:
            model: the model name.
            to_version: the version to serve; default None, the previous champion. Given, it
                also sets a champion where there is none (e.g. after deleting a damaged
                ``aliases.json``).
            reason: kept in ``alias_history.jsonl``; default ``"rollback"``.

        Returns:
            The version now champion.

        Raises:
            NotFound: the model has no champion, no earlier champion, or no ``to_version``.
            IntegrityError: the target version is damaged or does not match its manifest.
            RegistryError: ``aliases.json`` or ``alias_history.jsonl`` is damaged.
        """
        self._require_model(model)
        with self._locked(model):
            current = self.alias(model, CHAMPION)
            if current is None and to_version is None:
                raise NotFound(
                    f"model {model!r} has no {CHAMPION} to roll back; "
                    f"versions: {self._describe_versions(model)}. "
                    f"Set one with Registry.set_alias(model, {CHAMPION!r}, version)"
                )
            if to_version is None:
                assert current is not None
                to_version = self._previous_champion(model, current)
            self._require_version(model, to_version)
            try:
                self._warn(self.verify(model, to_version))
            except IntegrityError as e:
                stays = f"at version {current}" if current is not None else "unset"
                raise IntegrityError(
                    f"cannot roll back model {model!r} to version {to_version}: {e} "
                    f"The champion stays {stays}."
                ) from None
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

    def _publish_locked(
        self,
        model: str,
        saved_model_dir: Path,
        manifest: dict[str, Any],
        private: Any,
        add_files: Callable[[Path], Any] | None,
    ) -> ModelVersion:
        """:meth:`publish` under the model's lock: copy, spot a repeat, number, seal, rename."""
        folder = self.root / model
        _remove_temporaries(folder)
        tmp = Path(tempfile.mkdtemp(prefix=TMP_PREFIX, suffix=f"-{os.getpid()}", dir=folder))
        try:
            # An evergreen.json in the source (a re-publish from another registry) is stale.
            shutil.copytree(saved_model_dir, tmp, dirs_exist_ok=True, ignore=_ignore_manifest)
            fingerprint = directory_fingerprint(tmp)
            existing = self._published(model, fingerprint, manifest["lineage"].get("candidate"))
            if existing is not None:
                shutil.rmtree(tmp)
                return existing
            if add_files is not None:
                add_files(tmp)
            numbers = _version_numbers(folder)
            version = (numbers[-1] if numbers else 0) + 1
            manifest.update(
                model=model,
                version=version,
                created_at=_now(),
                fingerprint=fingerprint,
                files=_file_digests(tmp),
                signatures=_read_signatures(tmp),
            )
            data = _json_bytes(manifest)
            (tmp / MANIFEST).write_bytes(data)
            if private is not None:
                (tmp / SIGNATURE).write_bytes(signing.sign(private, data))
            os.replace(tmp, folder / str(version))
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return self._load(model, version)

    def _published(self, model: str, fingerprint: str, candidate: Any) -> ModelVersion | None:
        """The version a resumed publish already made (same SavedModel, same candidate), if any.

        Without a candidate id nothing matches: a deliberate re-publish is then a new version.
        """
        if candidate is None:
            return None
        for existing in self.versions(model):
            if (
                existing.manifest.get("fingerprint") == fingerprint
                and existing.manifest.get("lineage", {}).get("candidate") == candidate
            ):
                return existing
        return None

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
        self.write_tf_serving_config()

    def write_tf_serving_config(self) -> Path | None:
        """Rewrite ``<root>/models.config`` for a real TF Serving (see :mod:`tfserving_config`).

        Called after every alias move. While some model's ``aliases.json`` is damaged the file
        is left as it was (TF Serving keeps serving what it served), and None is returned.
        """

        def collect() -> dict[str, tuple[Path, dict[str, int]]]:
            models = {}
            for model in self.models():
                numbers = set(_version_numbers(self.root / model))
                labels = {a: v for a, v in self.aliases(model).items() if v in numbers}
                models[model] = ((self.root / model).resolve(), labels)
            return models

        try:
            return tfserving_config.write(self.root, collect)
        except RegistryError:
            return None

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
        if not manifest_path.exists():
            return ModelVersion(model=model, version=version, path=path, manifest={})
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
            if not isinstance(manifest, dict):
                raise ValueError(f"it holds a {type(manifest).__name__}, not a JSON object")
        except (OSError, UnicodeDecodeError, ValueError) as e:
            problem = f"{manifest_path} is damaged ({e})"
            return ModelVersion(
                model=model, version=version, path=path, manifest={}, problem=problem
            )
        return ModelVersion(model=model, version=version, path=path, manifest=manifest)

    def _signing_key(self) -> Any:
        """The private key publishes sign with (loaded now), or None."""
        path = self.signing_key or os.environ.get(signing.SIGNING_KEY_ENV) or None
        return signing.load_private_key(path) if path else None

    @staticmethod
    def _warn(verified: Verified) -> None:
        for warning in verified.warnings:
            log.warning("%s", warning)

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


def _require_saved_model(saved_model_dir: Path) -> Path:
    if not (saved_model_dir / "saved_model.pb").is_file():
        raise NotFound(
            f"{saved_model_dir} holds no SavedModel (no saved_model.pb); "
            "export the model with tf.saved_model.save or Model.export first"
        )
    return saved_model_dir


def _remove_temporaries(folder: Path) -> None:
    # Only called under the lock, when no publisher is alive to own a .tmp- entry.
    for p in folder.glob(f"{TMP_PREFIX}*"):
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)


def _ignore_manifest(directory: str, names: list[str]) -> list[str]:
    return [name for name in (MANIFEST, SIGNATURE) if name in names]


_REPUBLISH = (
    "Refusing it: re-publish the SavedModel (a new version), or move the champion to another "
    "version (`evergreen rollback -c CONFIG VERSION`)."
)


def _is_metadata(relative: Path) -> bool:
    """The manifest and its signature: beside the files they describe, not among them."""
    return len(relative.parts) == 1 and relative.name in (MANIFEST, SIGNATURE)


def _file_digests(folder: Path) -> dict[str, str]:
    """SHA-256 of every file under ``folder`` by POSIX relative path, manifest and signature out."""
    digests = {}
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder)
        if not _is_metadata(relative):
            digests[relative.as_posix()] = file_sha256(file)
    return digests


def _legacy_fingerprint(folder: Path) -> str:
    """:func:`directory_fingerprint` of a version as it was before its manifest was written."""
    import hashlib

    digest = hashlib.sha256()
    for file in sorted(p for p in folder.rglob("*") if p.is_file()):
        relative = file.relative_to(folder)
        if not _is_metadata(relative):
            digest.update(str(relative).encode())
            digest.update(file_sha256(file).encode())
    return digest.hexdigest()


def _check_files(mv: ModelVersion, where: str) -> list[str]:
    """Compare a version's files with its manifest; the warnings of an accepted legacy version.

    Raises:
        IntegrityError: a file changed, is missing or was added, or the manifest lists none.
    """
    recorded = mv.manifest.get("files")
    if recorded is None:
        fingerprint = mv.manifest.get("fingerprint")
        if not isinstance(fingerprint, str):
            raise IntegrityError(
                f"{where}: its {MANIFEST} has neither file digests nor a fingerprint. {_REPUBLISH}"
            )
        if _legacy_fingerprint(mv.path) != fingerprint:
            raise IntegrityError(
                f"{where}: its files do not match the fingerprint in its {MANIFEST} (a version "
                "published before per-file digests, so the changed file cannot be named). "
                + _REPUBLISH
            )
        return [
            f"{where} was published before per-file digests; its files match its fingerprint, "
            "so it is accepted. Seal it (`evergreen seal -c CONFIG VERSION`) to record digests "
            "and a signature"
        ]
    if not isinstance(recorded, dict) or not all(isinstance(v, str) for v in recorded.values()):
        raise IntegrityError(f"{where}: 'files' in its {MANIFEST} is damaged. {_REPUBLISH}")
    actual = _file_digests(mv.path)
    changed = sorted(p for p in recorded if p in actual and actual[p] != recorded[p])
    missing = sorted(set(recorded) - set(actual))
    added = sorted(set(actual) - set(recorded))
    if not (changed or missing or added):
        return []
    parts = []
    if changed:
        first = changed[0]
        parts.append(
            f"{_some(changed)} changed (sha256 {recorded[first][:12]}… in the manifest, "
            f"{actual[first][:12]}… on disk" + (f" for {first}" if len(changed) > 1 else "") + ")"
        )
    if missing:
        parts.append(f"{_some(missing)} missing")
    if added:
        parts.append(f"{_some(added)} not in the manifest")
    raise IntegrityError(f"{where} does not match its manifest: {'; '.join(parts)}. {_REPUBLISH}")


def _check_signature(mv: ModelVersion, public_key: Any, where: str) -> str:
    """The verify key's id when ``evergreen.sig`` signs the manifest's bytes.

    Raises:
        IntegrityError: the signature is missing, unreadable, or not by ``public_key``.
    """
    expected = signing.key_id(public_key)
    sig_path = mv.path / SIGNATURE
    if not sig_path.is_file():
        raise IntegrityError(
            f"{where} is not signed (no {SIGNATURE}) and signatures by key {expected} are "
            f"required; publish it with {signing.SIGNING_KEY_ENV} set to the signing key, or sign "
            f"it in place: `{signing.SIGNING_KEY_ENV}=KEY.pem evergreen seal -c CONFIG VERSION`"
        )
    why = signing.check(public_key, (mv.path / MANIFEST).read_bytes(), sig_path.read_bytes())
    if why is not None:
        raise IntegrityError(f"{where} has a wrong signature: {why}. {_REPUBLISH}")
    return expected


def _some(paths: list[str]) -> str:
    shown = ", ".join(paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return f"{shown}{more}" if len(paths) == 1 else f"{len(paths)} files ({shown}{more})"


def _bad_aliases(path: Path, why: str) -> str:
    return (
        f"{path} is damaged: {why}. It maps alias names to versions, e.g. "
        '{"champion": 3}; fix it by hand (alias_history.jsonl records every move), or delete '
        "it and set the champion with `evergreen rollback -c CONFIG VERSION`"
    )


def _replace_file(path: Path, data: bytes) -> None:
    # Written beside the version, not in it: a crash leaves a .tmp- file the next publish
    # sweeps, never an extra file that would make the version fail its own digests.
    tmp = path.parent.parent / f"{TMP_PREFIX}{path.parent.name}-{path.name}"
    tmp.write_bytes(data)
    os.replace(tmp, path)


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
            raise RegistryError(
                f"manifest[{key!r}] must be a dict, got {type(manifest[key]).__name__}; "
                f"pass {key} as a dict of JSON values (nothing was published)"
            )
    try:
        # A round trip both copies and catches unserialisable values before any file is copied.
        clean = json.loads(json.dumps(manifest, default=_scalar))
    except (TypeError, ValueError) as e:
        raise RegistryError(
            f"the manifest cannot be written as JSON: {e}; pass plain numbers, strings, lists "
            "and dicts (nothing was published)"
        ) from e
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


def check_name(name: str, what: str) -> None:
    """A model or alias name the registry accepts (a folder name, a key of aliases.json).

    Raises:
        RegistryError: ``name`` is not letters, digits, '_', '-' and '.' starting with a
            letter or digit; the message says so.
    """
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise RegistryError(
            f"{what} name {name!r} is invalid; use letters, digits, '_', '-' and '.', "
            "starting with a letter or digit"
        )


def _describe_aliases(aliases: dict[str, int]) -> str:
    return ", ".join(f"{k}={v}" for k, v in sorted(aliases.items())) or "none"


def _write_json(path: Path, data: Any) -> None:
    path.write_bytes(_json_bytes(data))


def _json_bytes(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode("utf-8")


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat()
