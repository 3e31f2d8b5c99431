"""Finding spans: the files matched by a pattern with ``{SPAN}`` (an integer) or ``{DATE}``.

``data/span-{SPAN}/*.csv`` groups ``data/span-3/a.csv`` and ``data/span-3/b.csv`` into span 3;
``data/{DATE}.jsonl`` turns ``data/2026-11-25.jsonl`` into span 20261125.

Discovery walks the pattern one path component at a time instead of calling :mod:`glob`,
because glob silently skips what it cannot list: an unreadable span folder would vanish from
one ingest and come back in a later one, out of order. Here anything that matches the pattern
but cannot be used (an unreadable folder, a broken link, a folder where a file is expected, two
names for one span number, a span number too large to store) is a :class:`DataError` naming it.
"""

from __future__ import annotations

import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

from evergreen.artifacts import file_sha256, stable_hash
from evergreen.errors import DataError
from evergreen.readers import invalid_utf8, printable

# ASCII digits only: \d would also take other scripts' digits, which int() accepts.
_PLACEHOLDERS = {"{SPAN}": r"([0-9]+)", "{DATE}": r"([0-9]{4}-[0-9]{2}-[0-9]{2})"}
# Span numbers are stored as 32-bit integers (PostgreSQL's INTEGER).
MAX_SPAN = 2**31 - 1


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


@dataclass(frozen=True)
class _Component:
    """One path component of the pattern: a literal name, or a regex over the entries."""

    text: str
    regex: re.Pattern[str] | None  # None: a literal name, no listing needed
    has_placeholder: bool


def _components(pattern: str, placeholder: str) -> tuple[Path, list[_Component]]:
    parts = Path(pattern).parts
    if Path(pattern).is_absolute():
        anchor, rest = Path(parts[0]), parts[1:]
    else:
        anchor, rest = Path("."), parts
    components = []
    for part in rest:
        has = placeholder in part
        if not has and not any(ch in part for ch in "*?["):
            components.append(_Component(part, None, False))
            continue
        before, _, after = part.partition(placeholder) if has else (part, "", "")
        regex = _glob_to_regex(before) + (_PLACEHOLDERS[placeholder] if has else "")
        regex += _glob_to_regex(after) if has else ""
        components.append(_Component(part, re.compile(regex + r"\Z"), has))
    return anchor, components


def _entries(folder: Path, component: _Component) -> Iterator[tuple[Path, str | None]]:
    """Entries of ``folder`` matching ``component``, with the placeholder's text when it has one.

    Raises:
        DataError: the folder exists but cannot be listed.
    """
    if component.regex is None:
        path = folder / component.text
        if os.path.lexists(path):
            yield path, None
        return
    try:
        with os.scandir(folder) as scan:
            names = sorted(entry.name for entry in scan)
    except FileNotFoundError:
        return
    except OSError as e:
        raise DataError(
            f"cannot list {folder} ({e.strerror or e}), which data.pattern reaches; fix its "
            "permissions. Evergreen stops rather than skip it, so spans are never ingested out of order"
        ) from None
    for name in names:
        if name.startswith(".") and not component.text.startswith("."):
            continue  # like glob: hidden files (editor swap files, .DS_Store) are not data
        match = component.regex.match(name)
        if match is None:
            continue
        if invalid_utf8(name):
            # The name could not be stored in the metadata store or written to reports.
            raise DataError(f"{folder / printable(name)}: the name is not valid UTF-8; rename it")
        yield folder / name, match.group(1) if component.has_placeholder else None


def _kind(path: Path) -> str:
    """'file', 'folder', 'broken link' or 'special' (a pipe, socket or device)."""
    try:
        mode = os.stat(path).st_mode
    except FileNotFoundError:
        return "broken link"
    except OSError as e:
        raise DataError(f"cannot read {path} ({e.strerror or e}); fix its permissions") from None
    if stat.S_ISREG(mode):
        return "file"
    return "folder" if stat.S_ISDIR(mode) else "special"


def _walk(pattern: str, placeholder: str) -> Iterator[tuple[Path, str]]:
    """Every file matching ``pattern``, with the text the placeholder matched.

    Raises:
        DataError: something matching the pattern is unreadable or not what the pattern needs.
    """
    anchor, components = _components(pattern, placeholder)
    level: list[tuple[Path, str | None]] = [(anchor, None)]
    for depth, component in enumerate(components):
        last = depth == len(components) - 1
        following: list[tuple[Path, str | None]] = []
        for folder, value in level:
            for path, found in _entries(folder, component):
                kind = _kind(path)
                if last and kind != "file":
                    raise DataError(_not_a_file(path, kind))
                if not last and kind != "folder":
                    if component.has_placeholder or kind == "broken link":
                        raise DataError(_not_a_folder(path, kind))
                    continue  # a wildcard folder component also lists stray files: not data
                following.append((path, found if found is not None else value))
        level = following
    for path, value in level:
        assert value is not None  # every full match went through the placeholder's component
        yield path, value


def _not_a_file(path: Path, kind: str) -> str:
    what = {"folder": "a folder", "broken link": "a broken symbolic link"}.get(
        kind, "not a regular file (a pipe, socket or device)"
    )
    return (
        f"{path} matches data.pattern but is {what}; every match must be a readable data file. "
        "Remove it, or narrow data.pattern"
    )


def _not_a_folder(path: Path, kind: str) -> str:
    what = "a broken symbolic link" if kind == "broken link" else f"a {kind}, not a folder"
    return (
        f"{path} is named like a span folder of data.pattern but is {what}; fix or remove it. "
        "Evergreen stops rather than skip it, so spans are never ingested out of order"
    )


def _span_number(path: Path, value: str, placeholder: str) -> int:
    if placeholder == "{DATE}":
        try:
            date.fromisoformat(value)
        except ValueError:
            raise DataError(
                f"{path}: {value!r} is not a calendar date (YYYY-MM-DD); rename the file or move it out of data.pattern"
            ) from None
    span = int(value.replace("-", ""))
    if span > MAX_SPAN:
        raise DataError(
            f"{path}: span number {value} is larger than the largest span number, {MAX_SPAN}; "
            "renumber the span (span numbers count deliveries: 1, 2, 3 ...)"
        )
    return span


def discover(pattern: Path | str) -> list[SpanFiles]:
    """All spans matching ``pattern`` (an absolute path pattern), sorted by span number.

    Raises:
        DataError: the pattern has no ``{SPAN}`` or ``{DATE}`` placeholder; a match is not a
            readable file or folder; two spellings name one span (``span-2``, ``span-002``);
            a span number is not a date or is too large.
    """
    pattern = str(pattern)
    placeholder = next((p for p in _PLACEHOLDERS if p in pattern), None)
    if placeholder is None:
        raise DataError(f"data.pattern {pattern!r} has no {{SPAN}} or {{DATE}} placeholder")
    grouped: dict[int, list[Path]] = {}
    spelled: dict[int, tuple[str, Path]] = {}
    for path, value in _walk(pattern, placeholder):
        span = _span_number(path, value, placeholder)
        first = spelled.setdefault(span, (value, path))
        if first[0] != value:
            raise DataError(
                f"{first[1]} and {path} both are span {span} ({first[0]!r} and {value!r}); "
                "rename one: each span number must be spelled one way"
            )
        grouped.setdefault(span, []).append(path)
    return [SpanFiles(span, tuple(sorted(files))) for span, files in sorted(grouped.items())]
