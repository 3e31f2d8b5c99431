"""Atomic artifact directories and content fingerprints.

An artifact is an immutable directory. It is written under a hidden temporary name in the same
parent folder and renamed into place in one ``os.replace`` — so a reader, or a run that resumes
after ``kill -9``, sees either the whole artifact or nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path
from typing import Any

TMP_PREFIX = ".tmp-"


def stable_hash(*parts: Any) -> str:
    """A hex SHA-256 of JSON-serialisable parts, identical across runs and machines."""
    payload = json.dumps(
        parts, sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")
    )
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def file_sha256(path: Path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def directory_fingerprint(path: Path) -> str:
    """SHA-256 over every file's relative path and content, in sorted order."""
    digest = hashlib.sha256()
    for file in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(file.relative_to(path)).encode())
        digest.update(file_sha256(file).encode())
    return digest.hexdigest()


class ArtifactWriter:
    """Builds one artifact directory in a temporary place; :meth:`commit` moves it into place.

    Use as a context manager: leaving the block by an exception removes the temporary folder.
    """

    def __init__(self, final_path: Path) -> None:
        self.final_path = final_path
        final_path.parent.mkdir(parents=True, exist_ok=True)
        self.path = final_path.parent / f"{TMP_PREFIX}{final_path.name}-{os.getpid()}"
        if self.path.exists():
            shutil.rmtree(self.path)
        self.path.mkdir()
        self.committed = False

    def __enter__(self) -> ArtifactWriter:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if not self.committed:
            self.abort()

    def write_json(self, name: str, data: Any) -> Path:
        target = self.path / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(
            json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n", encoding="utf-8"
        )
        return target

    def commit(self) -> str:
        """Fsync-free rename into place; returns the artifact's fingerprint.

        A folder already at the final path can only be the leftover of a run killed between
        rename and registration: it was never registered, so it is replaced.
        """
        fingerprint = directory_fingerprint(self.path)
        if self.final_path.exists():
            shutil.rmtree(self.final_path)
        os.replace(self.path, self.final_path)
        self.committed = True
        return fingerprint

    def abort(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def remove_stale_temporaries(root: Path) -> list[Path]:
    """Delete temporary artifact folders left by killed runs under ``root``; return them.

    A folder whose writer process is still alive belongs to a concurrent run and is kept.
    """
    if not root.exists():
        return []
    stale = [p for p in root.rglob(f"{TMP_PREFIX}*") if p.is_dir() and not _writer_alive(p)]
    for p in stale:
        shutil.rmtree(p, ignore_errors=True)
    return stale


def _writer_alive(tmp: Path) -> bool:
    pid = tmp.name.rsplit("-", 1)[-1]
    if not pid.isdigit() or int(pid) == os.getpid():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
