"""Ed25519 keys for signing registry manifests, and the signature files themselves.

A publisher holding the private key signs the exact bytes of a version's ``evergreen.json``
(which lists a SHA-256 digest per file), so one signature covers every file of the version. The
signature sits beside the manifest in ``evergreen.sig``::

    {"algorithm": "ed25519", "key_id": "3f1c0a9b2d4e5f60", "signature": "<base64>"}

``key_id`` is the first 16 hex digits of the SHA-256 of the raw public key; it only helps the
error messages say which key signed a version, it is never trusted.

Keys are PEM files, as OpenSSL writes them::

    openssl genpkey -algorithm ed25519 -out signing_key.pem
    openssl pkey -in signing_key.pem -pubout -out verify_key.pem

or as :func:`generate_key_pair` (``evergreen keygen DIR``) writes them.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evergreen.errors import ConfigError

ALGORITHM = "ed25519"
SIGNING_KEY_ENV = "EVERGREEN_SIGNING_KEY"  # path of the private key the registry signs with
PRIVATE_NAME = "signing_key.pem"
PUBLIC_NAME = "verify_key.pem"


def generate_key_pair(directory: Path) -> tuple[Path, Path]:
    """Write a new Ed25519 key pair into ``directory``: the private key readable by its owner only.

    Args:
        directory: created if missing; must not hold a key pair already.

    Returns:
        ``(private key path, public key path)``.

    Raises:
        ConfigError: a key file is already there (never overwritten: that would orphan every
            version signed with it).
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    directory = Path(directory)
    private_path, public_path = directory / PRIVATE_NAME, directory / PUBLIC_NAME
    for path in (private_path, public_path):
        if path.exists():
            raise ConfigError(
                f"{path} already exists; keep it (versions signed with it verify only against "
                "its public key) or choose another folder"
            )
    directory.mkdir(parents=True, exist_ok=True)
    key = Ed25519PrivateKey.generate()
    private_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # O_EXCL with mode 0600: the private key is never readable by others, not even briefly.
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(private_pem)
    public_path.write_bytes(
        key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    return private_path, public_path


_MAKE_PRIVATE = "`evergreen keygen DIR` or `openssl genpkey -algorithm ed25519 -out KEY.pem`"
_MAKE_PUBLIC = "`openssl pkey -in KEY.pem -pubout -out verify_key.pem`"


def load_private_key(path: Path | str) -> Any:
    """The Ed25519 private key in a PEM file (unencrypted PKCS#8, as openssl genpkey writes).

    Raises:
        ConfigError: no such file, not a PEM private key, or not an Ed25519 key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    def parse(data: bytes) -> Any:
        return serialization.load_pem_private_key(data, password=None)

    data = _read_key_file(path, "signing key")
    return _parse_key(
        path, "signing key", data, parse, "an unencrypted PEM private key", Ed25519PrivateKey
    )


def load_public_key(path: Path | str) -> Any:
    """The Ed25519 public key in a PEM file (SubjectPublicKeyInfo, as openssl pkey -pubout writes).

    Raises:
        ConfigError: no such file, a private key given instead, or not an Ed25519 key.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    data = _read_key_file(path, "verify key")
    if b"PRIVATE KEY" in data:
        raise ConfigError(
            f"verify key {path} is a private key; give its public half instead "
            f"(`openssl pkey -in {path} -pubout -out verify_key.pem`), and keep the private key "
            "off the serving machines"
        )
    return _parse_key(
        path,
        "verify key",
        data,
        serialization.load_pem_public_key,
        "a PEM public key",
        Ed25519PublicKey,
    )


def _parse_key(
    path: Path | str,
    what: str,
    data: bytes,
    parse: Callable[[bytes], Any],
    expected: str,
    kind: type,
) -> Any:
    """The key ``parse`` finds in ``data``, or a ConfigError saying how to make the right one."""
    fix = _MAKE_PRIVATE if what == "signing key" else _MAKE_PUBLIC
    try:
        key = parse(data)
    except (ValueError, TypeError) as e:
        raise ConfigError(f"{what} {path}: not {expected} ({e}); make one with {fix}") from None
    if not isinstance(key, kind):
        raise ConfigError(
            f"{what} {path}: a {type(key).__name__}, not an Ed25519 key; make one with {fix}"
        )
    return key


def key_id(public_key: Any) -> str:
    """A short name for a public key: 16 hex digits of the SHA-256 of its raw bytes."""
    from cryptography.hazmat.primitives import serialization

    raw = public_key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def sign(private_key: Any, data: bytes) -> bytes:
    """The ``evergreen.sig`` document (JSON bytes) signing ``data`` with ``private_key``."""
    document = {
        "algorithm": ALGORITHM,
        "key_id": key_id(private_key.public_key()),
        "signature": base64.b64encode(private_key.sign(data)).decode("ascii"),
    }
    return (json.dumps(document, indent=2, sort_keys=True) + "\n").encode("utf-8")


def check(public_key: Any, data: bytes, document: bytes) -> str | None:
    """Why ``document`` (an ``evergreen.sig``) is not a valid signature of ``data``; None if it is.

    Never raises on a malformed document: a damaged signature is a refusal, not a crash.
    """
    from cryptography.exceptions import InvalidSignature

    try:
        parsed = json.loads(document)
        if not isinstance(parsed, dict):
            raise ValueError("not a JSON object")
        algorithm, signature = parsed.get("algorithm"), parsed.get("signature")
        if algorithm != ALGORITHM:
            return f"its algorithm is {algorithm!r}, expected {ALGORITHM!r}"
        raw = base64.b64decode(str(signature), validate=True)
    except (ValueError, binascii.Error, UnicodeDecodeError) as e:
        return f"the signature file is unreadable ({e})"
    try:
        public_key.verify(raw, data)
    except InvalidSignature:
        signer = parsed.get("key_id")
        expected = key_id(public_key)
        if signer != expected:
            return f"it was signed by key {signer}, not by the verify key {expected}"
        return f"it does not match the manifest (key {expected}): the manifest was changed"
    return None


def _read_key_file(path: Path | str, what: str) -> bytes:
    try:
        return Path(path).expanduser().read_bytes()
    except OSError as e:
        raise ConfigError(
            f"{what} {path}: cannot be read ({e.strerror}); give the path of a PEM file"
        ) from None
