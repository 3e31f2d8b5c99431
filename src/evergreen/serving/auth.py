"""API keys: ``Authorization: Bearer KEY`` or ``X-API-Key: KEY``.

Keys come from the environment variable named by ``serving.api_key_env`` and/or a key file
(``--api-key-file``), never from the config file. Either holds entries separated by commas or
newlines, each ``KEY`` or ``NAME:KEY``; the audit log records ``NAME`` (or ``key-`` and 8 hex
digits of the key's SHA-256), never the key. Lines starting with ``#`` are comments.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from evergreen.errors import ConfigError, Unauthorized

MIN_KEY_LENGTH = 16


@dataclass(frozen=True)
class ApiKeys:
    """Accepted keys and who each one is."""

    owners: dict[str, str]  # key -> name for the audit log

    @classmethod
    def parse(cls, text: str, source: str) -> ApiKeys:
        """Keys from ``text`` (see the module docstring); ``source`` names it in errors.

        Raises:
            ConfigError: a key is shorter than 16 characters.
        """
        owners: dict[str, str] = {}
        # Comments first, then commas: a comment may contain a comma.
        lines = (line for line in text.splitlines() if not line.strip().startswith("#"))
        for raw in "\n".join(lines).replace(",", "\n").splitlines():
            entry = raw.strip()
            if not entry:
                continue
            name, _, key = entry.rpartition(":")
            key = key.strip()
            if len(key) < MIN_KEY_LENGTH:
                raise ConfigError(
                    f"{source}: an API key{f' (for {name!r})' if name else ''} has "
                    f"{len(key)} characters; use at least {MIN_KEY_LENGTH} random ones, e.g. "
                    "`python -c 'import secrets; print(secrets.token_urlsafe(32))'`"
                )
            owners[key] = name.strip() or "key-" + hashlib.sha256(key.encode()).hexdigest()[:8]
        return cls(owners)

    @classmethod
    def load(cls, env_var: str = "", key_file: str | os.PathLike[str] | None = None) -> ApiKeys:
        """Keys from the environment variable ``env_var`` and the file ``key_file``, merged.

        Raises:
            ConfigError: the key file is missing, or a key is too short.
        """
        owners: dict[str, str] = {}
        if env_var and os.environ.get(env_var):
            owners.update(cls.parse(os.environ[env_var], f"environment variable {env_var}").owners)
        if key_file:
            path = Path(key_file)
            if not path.is_file():
                raise ConfigError(f"API key file {path} does not exist; write one key per line")
            owners.update(cls.parse(path.read_text(encoding="utf-8"), str(path)).owners)
        return cls(owners)

    def __bool__(self) -> bool:
        return bool(self.owners)

    def check(self, headers: Mapping[str, str]) -> str:
        """Who sent the request.

        Raises:
            Unauthorized: no key, or a key that is not accepted.
        """
        key = headers.get("x-api-key")
        authorization = headers.get("authorization")
        if key is None and authorization:
            scheme, _, value = authorization.partition(" ")
            if scheme.lower() != "bearer" or not value.strip():
                raise Unauthorized(
                    "the Authorization header must be 'Bearer <API key>'; "
                    f"got the scheme {scheme!r}"
                )
            key = value.strip()
        if not key:
            raise Unauthorized(
                "this server requires an API key: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'"
            )
        for accepted, owner in self.owners.items():
            # Compare with every key in constant time: no early exit reveals a prefix.
            if hmac.compare_digest(accepted.encode(), key.encode()):
                return owner
        raise Unauthorized("the API key is not valid; check it with the server's operator")
