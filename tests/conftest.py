"""Shared fixtures: real datasets cut into spans, configs, and metadata stores on both engines."""

from __future__ import annotations

import csv
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

DATASETS = Path(__file__).resolve().parents[1].parent / "shared" / "datasets"
POSTGRES_ADMIN_URL = os.environ.get(
    "EVERGREEN_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def dataset(name: str) -> Path:
    path = DATASETS / name
    if not path.is_file():
        pytest.skip(f"{path} is absent: the shared datasets folder must sit beside the repository")
    return path


def read_csv(path: Path) -> tuple[list[str], list[list[str]]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.reader(f)
        header = next(reader)
        return header, list(reader)


def write_csv(path: Path, header: list[str], rows: list[list[str]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def float_differences(got: Any, expected: Any, tolerance: float, path: str = "") -> list[str]:
    """Where ``got`` and ``expected`` (JSON-like) differ: in structure, in a non-float value, or
    in a float by more than ``tolerance``; [] when they agree.

    For comparisons that must hold on any CPU: a model's scores depend in their last bits on the
    machine's vector instructions and on the batch's shape (an AMD EPYC with AVX2 scored the same
    rows 3e-8 apart in a batch of 2 and one of 8), and training amplifies those bits into a few
    flipped predictions. Exact equality holds only on the machine that produced the expected side.
    """
    if isinstance(expected, dict) and isinstance(got, dict):
        if set(got) != set(expected):
            return [f"{path}: keys {sorted(set(got) ^ set(expected))} on one side only"]
        return [
            d
            for k in expected
            for d in float_differences(got[k], expected[k], tolerance, f"{path}.{k}")
        ]
    if isinstance(expected, list | tuple) and isinstance(got, list | tuple):
        if len(got) != len(expected):
            return [f"{path}: {len(got)} items, expected {len(expected)}"]
        pairs = zip(got, expected, strict=True)
        return [
            d
            for i, (g, e) in enumerate(pairs)
            for d in float_differences(g, e, tolerance, f"{path}[{i}]")
        ]
    if isinstance(expected, float) and isinstance(got, int | float):
        return [] if abs(got - expected) <= tolerance else [f"{path}: {got} vs {expected}"]
    return [] if got == expected else [f"{path}: {got!r} vs {expected!r}"]


def write_config(
    folder: Path,
    *,
    label: str,
    features: dict[str, str] | None = None,
    extra: str = "",
    metadata_url: str = "",
) -> Path:
    lines = [
        "[pipeline]",
        f'name = "{folder.name.replace(".", "-")[:40] or "test"}"',
        'root = ".evergreen"',
    ]
    if metadata_url:
        lines.append(f'metadata_url = "{metadata_url}"')
    lines += ["", "[data]", 'pattern = "data/span-{SPAN}/*.csv"', f'label = "{label}"']
    if features:
        lines += ["", "[data.features]"] + [f'{k} = "{v}"' for k, v in features.items()]
    config = folder / "evergreen.toml"
    config.write_text("\n".join(lines) + "\n" + extra, encoding="utf-8")
    return config


@pytest.fixture(autouse=True)
def _fixed_seeds() -> None:
    import random

    random.seed(0)


@pytest.fixture(params=["sqlite", "postgresql"])
def metadata_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty metadata database on each engine; PostgreSQL's is dropped afterwards."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'metadata.db'}"
        return
    yield from _postgres_database()


def _postgres_database() -> Iterator[str]:
    import sqlalchemy as sa

    name = f"evergreen_test_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(
        POSTGRES_ADMIN_URL.replace("postgresql://", "postgresql+psycopg://"),
        isolation_level="AUTOCOMMIT",
    )
    try:
        with admin.connect() as conn:
            conn.execute(sa.text(f'CREATE DATABASE "{name}"'))
    except sa.exc.OperationalError as e:
        if os.environ.get("CI"):
            raise  # CI's machine runs PostgreSQL: its absence there is a failure, not a skip
        pytest.skip(f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {e.orig}")
    try:
        yield POSTGRES_ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"
    finally:
        with admin.connect() as conn:
            conn.execute(sa.text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.fixture
def postgres_url() -> Iterator[str]:
    yield from _postgres_database()


# -- fine foods cut into five spans, with injected problems in span 5 -------------------------
FINE_FOODS_SPAN_ROWS = 800
INJECTED_MALFORMED = 3


@pytest.fixture
def fine_foods_project(tmp_path: Path) -> dict:
    """``fine_foods_train.csv`` cut into 5 span folders of 800 rows each.

    Span 5 also gets: 3 verbatim copies of its own rows, 2 of span 1's rows, one row of span 2
    with the opposite label (a label conflict), and 3 malformed rows (ragged, missing label,
    invalid UTF-8). Returns the config path and what was injected.
    """
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    project = tmp_path / "reviews"
    spans = [rows[i * FINE_FOODS_SPAN_ROWS : (i + 1) * FINE_FOODS_SPAN_ROWS] for i in range(5)]
    conflict = list(spans[1][7])
    conflict[2] = "other" if conflict[2] == "great" else "great"
    injected = spans[4] + [
        spans[4][0],
        spans[4][1],
        spans[4][2],
        spans[0][0],
        spans[0][1],
        conflict,
    ]
    for number, span_rows in enumerate(spans[:4] + [injected], start=1):
        write_csv(project / "data" / f"span-{number}" / "reviews.csv", header, span_rows)
    span5 = project / "data" / "span-5" / "reviews.csv"
    with open(span5, "ab") as f:
        f.write(b'"B000BAD1","only two fields"\n')  # ragged: 2 fields instead of 3
        f.write(b'"B000BAD2","a review without its score",""\n')  # missing label
        f.write(b'"B000BAD3","caf\xe9 latte, latin-1 bytes","great"\n')  # invalid UTF-8
    config = write_config(
        project, label="score", features={"product": "categorical", "review": "text"}
    )
    return {
        "config": config,
        "project": project,
        "spans": spans,
        "injected_rows": injected,
        "conflict": conflict,
        "header": header,
    }
