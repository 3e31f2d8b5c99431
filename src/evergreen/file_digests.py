"""Content digests of span files, reused while a file's size and mtime are unchanged.

Checking for changed spans would otherwise re-read the whole history on every run; like git,
Evergreen trusts (size, mtime) and re-hashes only a file whose stat changed. The cache shares
the metadata store's database but not its lineage schema: it is a table of its own.
"""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from evergreen.artifacts import file_sha256
from evergreen.errors import DataError

_meta = sa.MetaData()

file_digests_table = sa.Table(
    "file_digests",
    _meta,
    sa.Column("path", sa.Text, primary_key=True),
    sa.Column("size", sa.BigInteger, nullable=False),
    sa.Column("mtime_ns", sa.BigInteger, nullable=False),
    sa.Column("sha256", sa.String(64), nullable=False),
)


class FileDigests:
    """The digest cache over one database engine (created on first use)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        _meta.create_all(engine)

    def digest(self, path: Path) -> str:
        """``path``'s SHA-256, from the cache while its size and mtime are unchanged.

        Raises:
            DataError: the file cannot be read.
        """
        try:
            stat = path.stat()
            key = str(path.resolve())
            cached = self.cached(key, stat.st_size, stat.st_mtime_ns)
            if cached is None:
                cached = file_sha256(path)
                self.store(key, stat.st_size, stat.st_mtime_ns, cached)
        except OSError as e:
            raise DataError(f"cannot read {path}: {e.strerror or e}; check the file") from None
        return cached

    def cached(self, path: str, size: int, mtime_ns: int) -> str | None:
        """The stored digest of ``path`` if it was taken at this size and mtime, else None."""
        t = file_digests_table
        with self.engine.connect() as conn:
            row = conn.execute(sa.select(t).where(t.c.path == path)).first()
        if row is not None and row.size == size and row.mtime_ns == mtime_ns:
            return str(row.sha256)
        return None

    def store(self, path: str, size: int, mtime_ns: int, sha256: str) -> None:
        t = file_digests_table
        with self.engine.begin() as conn:
            conn.execute(t.delete().where(t.c.path == path))
            conn.execute(t.insert().values(path=path, size=size, mtime_ns=mtime_ns, sha256=sha256))
