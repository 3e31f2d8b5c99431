"""Finding spans: the files matched by a pattern with ``{SPAN}`` (an integer) or ``{DATE}``.

``data/span-{SPAN}/*.csv`` groups ``data/span-3/a.csv`` and ``data/span-3/b.csv`` into span 3;
``data/{DATE}.jsonl`` turns ``data/2026-11-25.jsonl`` into span 20261125.
"""

from __future__ import annotations

import glob
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from evergreen.artifacts import file_sha256, stable_hash
from evergreen.errors import DataError

_PLACEHOLDERS = {"{SPAN}": r"(\d+)", "{DATE}": r"(\d{4}-\d{2}-\d{2})"}


@dataclass(frozen=True)
class SpanFiles:
    """The files of one span, as found on disk now."""

    span: int
    files: tuple[Path, ...]

    def fingerprint(self, digest: Callable[[Path], str] = file_sha256) -> str:
        """A content fingerprint: changes when any file is added, removed or edited."""
        return stable_hash([(f.name, digest(f)) for f in self.files])


def _glob_to_regex(pattern: str) -> str:
    out = []
    for ch in pattern:
        if ch == "*":
            out.append(r"[^/]*")
        elif ch == "?":
            out.append(r"[^/]")
        else:
            out.append(re.escape(ch))
    return "".join(out)


def discover(pattern: Path | str) -> list[SpanFiles]:
    """All spans matching ``pattern`` (an absolute path pattern), sorted by span number.

    Raises:
        DataError: the pattern has no ``{SPAN}`` or ``{DATE}`` placeholder.
    """
    pattern = str(pattern)
    placeholder = next((p for p in _PLACEHOLDERS if p in pattern), None)
    if placeholder is None:
        raise DataError(f"data.pattern {pattern!r} has no {{SPAN}} or {{DATE}} placeholder")
    before, after = pattern.split(placeholder, 1)
    regex = re.compile(
        _glob_to_regex(before) + _PLACEHOLDERS[placeholder] + _glob_to_regex(after) + r"\Z"
    )
    grouped: dict[int, list[Path]] = {}
    for path in glob.glob(before.replace("[", "[[]") + "*" + after):
        match = regex.match(path)
        if match is None or not Path(path).is_file():
            continue
        value = match.group(1)
        if placeholder == "{DATE}":
            try:
                date.fromisoformat(value)
            except ValueError:
                raise DataError(
                    f"{path}: {value!r} is not a calendar date (YYYY-MM-DD); rename the file or move it out of data.pattern"
                ) from None
        span = int(value.replace("-", ""))
        grouped.setdefault(span, []).append(Path(path))
    return [SpanFiles(span, tuple(sorted(files))) for span, files in sorted(grouped.items())]
