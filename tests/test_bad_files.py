"""Hostile inputs: every bad file or row is a clear error or a quarantined row, never a crash.

The corpus in ``bad_inputs/files`` (written by ``bad_inputs/make_files.py``) holds one kind of
trouble per file; :data:`EXPECTED` says what each must produce when it is the only file of
span 1 of a fresh project. Layout troubles (span folders, links, pipes) are built per test.
"""

from __future__ import annotations

import builtins
import hashlib
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from evergreen import cli as cli_mod
from evergreen import config as config_mod
from evergreen import dedupe_index, examples, readers
from evergreen.components.ingest import RowProcessor, quarantine_rows
from evergreen.errors import ConfigError, DataError, EvergreenError
from evergreen.project import Project
from tests.conftest import dataset, read_csv, write_csv

FILES = Path(__file__).resolve().parent / "bad_inputs" / "files"
GOOD_ROWS = 6  # every corpus file that can be read holds these six good rows
LABELS = {"great", "other"}


@dataclass(frozen=True)
class Error:
    """Ingest raises a DataError whose message names the file and matches ``match``."""

    match: str


@dataclass(frozen=True)
class Quarantine:
    """Ingest keeps ``kept`` rows and quarantines exactly ``rows``: where -> reason prefix."""

    rows: dict[str, str] = field(default_factory=dict)
    kept: int = GOOD_ROWS
    status: str = "validated"


EXPECTED: dict[str, Error | Quarantine] = {
    # CSV
    "dup_header.csv": Error(r"column 'review' appears twice in the header \(columns 2 and 3\)"),
    "placeholder_labels.csv": Quarantine(
        {str(line): "missing label" for line in range(8, 17)},
    ),
    "bad_utf8_header.csv": Error(
        r":1: column 2 of the header \('revi\\\\xe9w'\) is not valid UTF-8"
    ),
    "gzip_named.csv": Error(r"is a gzip-compressed file, not CSV text; decompress it"),
    "binary_named.csv": Error(r"is binary data \(NUL bytes"),
    "png_named.csv": Error(r"is a PNG image, not CSV text"),
    "utf16.csv": Error(r"is UTF-16 text, not UTF-8; save it as UTF-8"),
    "bom.csv": Quarantine(),
    "unclosed_quote.csv": Quarantine(
        {"5": "unparseable: unparseable CSV (a quoted field opened on line 5 is not closed"}
    ),
    "unclosed_quote_at_end.csv": Quarantine(
        {"8": "unparseable: unparseable CSV (a quoted field opened on line 8 is not closed"},
        kept=GOOD_ROWS + 1,
    ),
    "stray_quote.csv": Quarantine({"8": "unparseable: unparseable CSV (',' expected after '\"')"}),
    "ragged.csv": Quarantine(
        {"8": "unparseable: expected 3 fields, found 2", "9": "unparseable: expected 3 fields"}
    ),
    "empty.csv": Error(r"has no columns \(it is empty\)"),
    "header_only.csv": Quarantine(kept=0, status="blocked"),
    "semicolon.csv": Error(r"data.label='score' is not a column.*Columns: product;review;score"),
    "invalid_utf8_row.csv": Quarantine({"8": "invalid UTF-8"}),
    "oversized_field.csv": Quarantine({"8": "oversized: 2040 bytes, over data.max_field_bytes"}),
    "cr_only.csv": Quarantine(),
    "blank_header_line.csv": Error(r":1: the first line is blank"),
    # JSON Lines
    "deep_nesting.jsonl": Quarantine({"7": "unparseable: unparseable JSON (nested too deeply)"}),
    "nested_value.jsonl": Quarantine(
        {"7": "wrong type: expected text, found an object", "8": "wrong type: a label is one"},
        status="blocked",  # 2 wrong-typed rows of 8 is a type change for validation
    ),
    "duplicate_key.jsonl": Quarantine({"7": "unparseable: duplicate key 'review'"}),
    "truncated.jsonl": Quarantine({"7": "unparseable: unparseable JSON (Unterminated string"}),
    "not_object.jsonl": Quarantine(
        {"7": "unparseable: expected a JSON object, found list", "8": "unparseable: expected"}
    ),
    "bom.jsonl": Quarantine(),
    "null_labels.jsonl": Quarantine(
        {"7": "missing label", "8": "missing label: 'NA'", "9": "missing label: 'nan'"}
    ),
    "gzip.jsonl": Error(r"is a gzip-compressed file, not JSON Lines text"),
    "huge_integer.jsonl": Quarantine({"7": "unparseable: unparseable JSON (Exceeds the limit"}),
    "lone_surrogate.jsonl": Quarantine(
        {"7": "invalid UTF-8", "8": "invalid UTF-8 (in a column name)", "9": "invalid UTF-8"}
    ),
    "invalid_utf8.jsonl": Quarantine(
        {"7": "invalid UTF-8", "8": "invalid UTF-8 (in a column name)"}
    ),
    # TFRecord
    "not_example.tfrecord": Quarantine(
        {
            "#6": "unparseable: not a tf.train.Example (its bytes",
            "#7": "unparseable: not a tf.train.Example (it has fields",
        }
    ),
    "csv_named.tfrecord": Error(r"is not a TFRecord file \(corrupted record at 0"),
    "truncated.tfrecord": Quarantine(
        {"#5": "unparseable: corrupt TFRecord (truncated record"}, kept=GOOD_ROWS - 1
    ),
    "multi_value.tfrecord": Quarantine(
        {"#6": "wrong type: expected text, found a list of 2 values"}, status="blocked"
    ),
    "gzip.tfrecord": Quarantine(),  # GZIP TFRecords (what TFX writes) are read as such
    # parquet
    "csv_named.parquet": Error(r"is not a readable parquet file"),
    "truncated.parquet": Error(r"is not a readable parquet file"),
    "dup_columns.parquet": Error(r"column 'review' appears twice in the parquet schema"),
    "nested.parquet": Quarantine(
        {f"#{i}": "wrong type: expected text, found an object" for i in range(7)},
        kept=0,
        status="blocked",
    ),
    "null_labels.parquet": Quarantine({"#6": "missing label", "#7": "missing label: 'NA'"}),
    # binary columns of UTF-8 text are text; bytes that are not UTF-8 are quarantined
    "binary_text_columns.parquet": Quarantine({"#6": "invalid UTF-8", "#7": "invalid UTF-8"}),
}


def make_project(folder: Path, files: dict[str, Path | bytes], ext: str, extra: str = "") -> Path:
    """A fresh project whose span 1 holds ``files`` (none: no span folder); returns its config."""
    span = folder / "data" / "span-1"
    if files:
        span.mkdir(parents=True)
    for name, source in files.items():
        data = source if isinstance(source, bytes) else source.read_bytes()
        (span / name).write_bytes(data)
    folder.mkdir(parents=True, exist_ok=True)
    config = folder / "evergreen.toml"
    config.write_text(
        f'[pipeline]\nname = "hostile"\n\n[data]\npattern = "data/span-{{SPAN}}/*.{ext}"\n'
        f'label = "score"\nmax_field_bytes = 1000\n{extra}\n'
        '[data.features]\nproduct = "categorical"\nreview = "text"\n',
        encoding="utf-8",
    )
    return config


def corpus_project(tmp_path: Path, name: str) -> Path:
    return make_project(tmp_path / "p", {name: FILES / name}, name.rsplit(".", 1)[1])


def test_every_corpus_file_has_an_expectation() -> None:
    assert sorted(p.name for p in FILES.iterdir()) == sorted(EXPECTED)
    assert sum(p.stat().st_size for p in FILES.iterdir()) < 1_000_000


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=sorted(EXPECTED))
def test_bad_file_is_a_clear_error_or_quarantined(tmp_path: Path, name: str) -> None:
    expected = EXPECTED[name]
    config = corpus_project(tmp_path, name)
    with Project(config_mod.load(config)) as project:
        if isinstance(expected, Error):
            # Any other exception type escapes pytest.raises and fails the test.
            with pytest.raises(DataError, match=expected.match) as caught:
                project.ingest()
            assert name in str(caught.value)
            assert project.store.spans() == []  # nothing half-ingested
            return
        (outcome,) = project.ingest()
        record = project.store.spans()[-1]
        artifact = project.store.artifact(record.examples_id)
        rows = quarantine_rows(artifact)
        found = {r["source"].rsplit(":", 1)[1]: r["reason"] for r in rows}
        assert sorted(found) == sorted(expected.rows), found
        for where, prefix in expected.rows.items():
            assert found[where].startswith(prefix), (where, found[where])
        assert all(
            r["source"].startswith(str(config.parent / "data" / "span-1" / name)) for r in rows
        )
        assert outcome.status == expected.status
        assert sum(outcome.report["rows_written"].values()) == expected.kept
        assert outcome.report["columns_seen"] == ["product", "review", "score"]  # BOM stripped
        labels = {
            examples.decode(r, artifact.properties["types"], "score")["score"]
            for split in ("train", "eval")
            for r in examples.iter_records(Path(artifact.uri) / split)
        }
        assert labels <= LABELS  # placeholders never become classes


def run_cli(args: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = 0
    try:
        cli_mod.main(args)  # returns on success, exits otherwise
    except SystemExit as e:
        code = int(e.code or 0)
    captured = capsys.readouterr()
    return code, captured.out + captured.err


@pytest.mark.parametrize("name", sorted(EXPECTED), ids=sorted(EXPECTED))
def test_bad_file_through_the_cli_is_one_clear_line(
    tmp_path: Path, name: str, capsys: pytest.CaptureFixture[str]
) -> None:
    expected = EXPECTED[name]
    config = corpus_project(tmp_path, name)
    code, output = run_cli(["ingest", "-c", str(config)], capsys)
    assert "internal error" not in output and "Traceback" not in output
    if isinstance(expected, Error):
        assert code == 1
        (line,) = [x for x in output.splitlines() if x.startswith("data error: ")]
        assert str(config.parent / "data" / "span-1" / name) in line
    else:
        assert code == (1 if expected.status == "blocked" else 0), output


CLI_SAMPLE = ["dup_header.csv", "gzip_named.csv", "csv_named.tfrecord", "bad_utf8_header.csv"]


@pytest.mark.slow
@pytest.mark.parametrize("name", CLI_SAMPLE, ids=CLI_SAMPLE)
def test_bad_file_through_python_m_evergreen(tmp_path: Path, name: str) -> None:
    config = corpus_project(tmp_path, name)
    result = subprocess.run(
        [sys.executable, "-m", "evergreen", "ingest", "-c", str(config)],
        env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2"),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 1
    assert "internal error" not in result.stderr and "Traceback" not in result.stderr
    (line,) = [x for x in result.stderr.splitlines() if x.startswith("data error:")]
    assert name in line


# -- layouts: span folders, links, pipes, permissions ------------------------------------------


def good_csv() -> bytes:
    return (FILES / "bom.csv").read_bytes()[3:]


def _collision(root: Path, mp: pytest.MonkeyPatch) -> str:
    (root / "data" / "span-002").mkdir()
    (root / "data" / "span-002" / "b.csv").write_bytes(good_csv())
    shutil.copytree(root / "data" / "span-002", root / "data" / "span-2")
    return r"span-002/b.csv and .*span-2/b.csv both are span 2"


def _too_large(root: Path, mp: pytest.MonkeyPatch) -> str:
    big = root / "data" / "span-99999999999999999999"
    big.mkdir()
    (big / "b.csv").write_bytes(good_csv())
    return r"span-99999999999999999999/b.csv: span number 99999999999999999999 is larger"


def _folder_as_file(root: Path, mp: pytest.MonkeyPatch) -> str:
    (root / "data" / "span-1" / "more.csv").mkdir()
    return r"span-1/more.csv matches data.pattern but is a folder"


def _dangling_file_link(root: Path, mp: pytest.MonkeyPatch) -> str:
    (root / "data" / "span-1" / "more.csv").symlink_to(root / "nowhere.csv")
    return r"span-1/more.csv matches data.pattern but is a broken symbolic link"


def _fifo(root: Path, mp: pytest.MonkeyPatch) -> str:
    os.mkfifo(root / "data" / "span-1" / "more.csv")  # opening it would block forever
    return r"span-1/more.csv matches data.pattern but is not a regular file"


def _dangling_span_link(root: Path, mp: pytest.MonkeyPatch) -> str:
    (root / "data" / "span-2").symlink_to(root / "nowhere")
    return r"span-2 is named like a span folder of data.pattern but is a broken symbolic link"


def _span_is_a_file(root: Path, mp: pytest.MonkeyPatch) -> str:
    (root / "data" / "span-2").write_bytes(good_csv())
    return r"span-2 is named like a span folder of data.pattern but is a file, not a folder"


def _unreadable_span(root: Path, mp: pytest.MonkeyPatch) -> str:
    folder = root / "data" / "span-2"
    folder.mkdir()
    (folder / "b.csv").write_bytes(good_csv())
    folder.chmod(0)
    mp.setattr(os, "scandir", _refusing(os.scandir, folder))  # root ignores chmod: refuse too
    return r"cannot list .*span-2 \(Permission denied\)"


def _unreadable_file(root: Path, mp: pytest.MonkeyPatch) -> str:
    path = root / "data" / "span-1" / "more.csv"
    path.write_bytes(good_csv())
    path.chmod(0)
    mp.setattr(builtins, "open", _refusing(builtins.open, path))
    return r"cannot read .*span-1/more.csv: Permission denied"


def _refusing(real: Callable, refused: Path) -> Callable:
    def call(path, *args, **kwargs):  # type: ignore[no-untyped-def]
        if isinstance(path, str | Path) and Path(path) == refused:
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, *args, **kwargs)

    return call


def _name_not_utf8(root: Path, mp: pytest.MonkeyPatch) -> str:
    folder = os.fsencode(root / "data" / "span-1")
    with open(folder + b"/caf\xe9.csv", "wb") as f:
        f.write(good_csv())
    return r"span-1/caf\\xe9.csv: the name is not valid UTF-8; rename it"


LAYOUTS = {
    "file_name_not_utf8": _name_not_utf8,
    "span_2_and_span_002": _collision,
    "span_number_too_large": _too_large,
    "folder_named_like_a_file": _folder_as_file,
    "dangling_file_symlink": _dangling_file_link,
    "named_pipe": _fifo,
    "dangling_span_folder_symlink": _dangling_span_link,
    "file_named_like_a_span_folder": _span_is_a_file,
    "unreadable_span_folder": _unreadable_span,
    "unreadable_file": _unreadable_file,
}


@pytest.mark.parametrize("layout", sorted(LAYOUTS), ids=sorted(LAYOUTS))
def test_bad_layout_is_a_clear_error(
    tmp_path: Path, layout: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_project(tmp_path / "p", {"a.csv": good_csv()}, "csv")
    match = LAYOUTS[layout](config.parent, monkeypatch)
    with Project(config_mod.load(config)) as project:
        with pytest.raises(DataError, match=match):
            project.ingest()
        assert project.store.spans() == []


def test_a_late_span_is_refused_not_ingested_out_of_order(tmp_path: Path) -> None:
    config = make_project(tmp_path / "p", {"a.csv": good_csv()}, "csv")
    data = config.parent / "data"
    shutil.copytree(data / "span-1", data / "span-3")
    with Project(config_mod.load(config)) as project:
        assert [o.span for o in project.ingest()] == [1, 3]
        shutil.copytree(data / "span-1", data / "span-2")
        with pytest.raises(DataError, match=r"span 2 .* is new, but span 3 is already ingested"):
            project.ingest()
        assert [r.span for r in project.store.spans()] == [1, 3]


def test_digits_of_other_scripts_are_not_span_numbers(tmp_path: Path) -> None:
    config = make_project(tmp_path / "p", {"a.csv": good_csv()}, "csv")
    shutil.copytree(config.parent / "data" / "span-1", config.parent / "data" / "span-\u0663")
    with Project(config_mod.load(config)) as project:
        assert [o.span for o in project.ingest()] == [1]


# -- a bad span never touches what was ingested before ------------------------------------------


def snapshot(project: Project) -> dict:
    files = {}
    for path in sorted(project.config.artifacts_dir.rglob("*")):
        if path.is_file():
            files[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return {
        "spans": project.store.spans(include_superseded=True),
        "index": dedupe_index.size(project.store),
        "artifacts": [(a.id, a.uri, a.fingerprint) for a in project.store.artifacts()],
        "files": files,
    }


def test_a_bad_span_leaves_earlier_spans_and_their_artifacts_untouched(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    folder = tmp_path / "p"
    for number in (1, 2):
        write_csv(folder / "data" / f"span-{number}" / "a.csv", header, rows[: number * 200])
    config = make_project(folder, {}, "csv")
    with Project(config_mod.load(config)) as project:
        project.ingest()
        before = snapshot(project)
        # Span 3: a good file, whose rows go into the index inside the run's transaction,
        # then a gzip file that fails the span.
        write_csv(folder / "data" / "span-3" / "a.csv", header, rows[400:700])
        (folder / "data" / "span-3" / "b.csv").write_bytes((FILES / "gzip_named.csv").read_bytes())
        with pytest.raises(DataError, match=r"span-3/b.csv is a gzip-compressed file"):
            project.ingest()
        assert snapshot(project) == before
        # Fixed, span 3 goes in whole; spans 1 and 2 are not touched.
        write_csv(folder / "data" / "span-3" / "b.csv", header, rows[700:800])
        outcomes = {o.span: o for o in project.ingest()}
        assert [outcomes[s].status for s in (1, 2)] == ["unchanged", "unchanged"]
        assert outcomes[3].ingested and outcomes[3].report["rows_read"] == 400
        after = snapshot(project)
        assert after["spans"][:2] == before["spans"]
        assert all(after["files"][path] == digest for path, digest in before["files"].items())


# -- readers and rows, one rule at a time --------------------------------------------------------


def test_strict_csv_reads_the_real_datasets_unchanged() -> None:
    for name in ("fine_foods_train.csv", "mlc_churn.csv"):
        header, rows = read_csv(dataset(name))
        records = list(readers.read(dataset(name), "csv"))
        assert [r.error for r in records if r.values is None] == []
        assert [list(r.values.values()) for r in records] == rows


def test_unclosed_quote_keeps_the_rows_it_would_swallow() -> None:
    records = list(readers.read(FILES / "unclosed_quote.csv", "csv"))
    bad = [r for r in records if r.values is None]
    assert [r.source.rsplit(":", 1)[1] for r in bad] == ["5"]
    assert "lines 6-8 are read again as rows" in bad[0].error
    products = [r.values["product"] for r in records if r.values is not None]
    assert products == ["B001", "B002", "B003", "B004", "B005", "B006"]


@pytest.mark.parametrize(
    ("text", "bad_lines", "kept"),
    [
        # The quote opened on line 2 takes 4-byte lines until the record passes 200 bytes;
        # then line 2 is quarantined and every line it took is read again as a row.
        (b'a,b\n1,"x\n' + b"k,v\n" * 60 + b"end,z\n", ["2"], ["k"] * 60 + ["end"]),
        (b"a,b\n1,x\n" + b"y" * 300 + b"\n2,z\n", ["3"], ["1", "2"]),
        (b'a,b\n1,"x\n' + b"y" * 300 + b'\n2,z"\n3,w\n', ["2", "3"], ["2", "3"]),
    ],
    ids=["runaway_quote", "overlong_line", "overlong_line_inside_a_quote"],
)
def test_csv_records_over_the_limit_are_quarantined(
    tmp_path: Path, text: bytes, bad_lines: list[str], kept: list[str]
) -> None:
    path = tmp_path / "a.csv"
    path.write_bytes(text)
    records = list(readers.read(path, "csv", max_record_bytes=200))
    assert sorted(r.source.rsplit(":", 1)[1] for r in records if r.values is None) == bad_lines
    assert [r.values["a"] for r in records if r.values is not None] == kept


def test_jsonl_line_over_the_limit_is_quarantined(tmp_path: Path) -> None:
    path = tmp_path / "a.jsonl"
    path.write_bytes(b'{"a": "' + b"x" * 300 + b'"}\n{"a": "ok"}\n')
    records = list(readers.read(path, "jsonl", max_record_bytes=200))
    assert [r.error for r in records] == ["line longer than 200 bytes", None]
    assert records[1].values == {"a": "ok"} and records[1].source.endswith(":2")


def processor(types: dict[str, str], **kwargs: object) -> RowProcessor:
    return RowProcessor(
        span=1,
        types=types,
        label="score",
        split_ratios={"train": 0.8, "eval": 0.2},
        split_key="",
        max_field_bytes=1000,
        label_conflicts="quarantine",
        lookup=lambda hashes: {},
        remember=lambda rows: None,
        **kwargs,  # type: ignore[arg-type]
    )


def reasons(proc: RowProcessor, rows: list[dict]) -> list[str | None]:
    from evergreen.components.ingest import IngestReport, Quarantined

    records = [readers.RawRecord(f"f:{i}", row) for i, row in enumerate(rows)]
    out = proc.process(records, IngestReport(1, 1, []))
    return [item.reason if isinstance(item, Quarantined) else None for item in out]


def test_non_finite_numbers_are_wrong_types_and_nan_is_missing() -> None:
    proc = processor({"x": "numeric"})
    rows = [{"x": v, "score": "great"} for v in ("inf", "-Infinity", float("inf"), "nan", "1.5")]
    assert reasons(proc, rows) == [
        "wrong type: expected numeric, found 'inf'",
        "wrong type: expected numeric, found '-Infinity'",
        "wrong type: expected numeric, found 'inf'",
        None,
        None,
    ]


def test_missing_labels_are_configurable(tmp_path: Path) -> None:
    proc = processor({"x": "text"}, missing_labels=["unknown"])
    rows = [{"x": str(i), "score": label} for i, label in enumerate(["UNKNOWN ", "NA", "", None])]
    assert reasons(proc, rows) == [
        "missing label: 'UNKNOWN' is a placeholder (data.missing_labels)",
        None,  # NA is a class when the list says so
        "missing label",
        "missing label",
    ]
    config = make_project(tmp_path / "p", {}, "csv", 'missing_labels = ["unknown", "?"]')
    assert config_mod.load(config).data.missing_labels == ["unknown", "?"]
    config.write_text(config.read_text().replace('["unknown", "?"]', '"NA"'))
    with pytest.raises(ConfigError, match=r"data.missing_labels = 'NA' is not valid: use a list"):
        config_mod.load(config)


def test_bom_and_reserved_names_with_inferred_types(tmp_path: Path) -> None:
    config = make_project(tmp_path / "p", {"a.csv": FILES / "bom.csv"}, "csv")
    text = config.read_text().split("[data.features]")[0]
    config.write_text(text)
    with Project(config_mod.load(config)) as project:
        (outcome,) = project.ingest()
        assert outcome.status == "validated"
        assert sorted(project.current_schema().types) == ["product", "review"]
    reserved = make_project(
        tmp_path / "q", {"a.csv": b"product,__row_hash__,score\r\nB1,x,great\r\n"}, "csv"
    )
    reserved.write_text(reserved.read_text().split("[data.features]")[0])
    with Project(config_mod.load(reserved)) as project:
        with pytest.raises(EvergreenError, match=r"'__row_hash__' is reserved"):
            project.ingest()


def test_a_later_file_without_the_label_column_is_a_clear_error(tmp_path: Path) -> None:
    config = make_project(
        tmp_path / "p",
        {"a.csv": good_csv(), "b.csv": (FILES / "semicolon.csv").read_bytes()},
        "csv",
    )
    with Project(config_mod.load(config)) as project:
        with pytest.raises(DataError, match=r"b.csv: data.label='score' is not a column of this"):
            project.ingest()


def test_image_paths_that_are_not_regular_files_are_quarantined(tmp_path: Path) -> None:
    folder = tmp_path / "p"
    span = folder / "data" / "span-1"
    span.mkdir(parents=True)
    png = (FILES / "png_named.csv").read_bytes()
    for i in range(4):
        (span / f"ok{i}.png").write_bytes(png + bytes([i]))
    os.mkfifo(span / "pipe.png")  # reading it would block ingest forever
    (span / "folder.png").mkdir()
    rows = [f"ok{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(4)]
    rows += ["pipe.png,cat", "folder.png,dog", "missing.png,cat", "/dev/zero,dog"]
    (span / "images.csv").write_text("image,label\n" + "\n".join(rows) + "\n", encoding="utf-8")
    config = folder / "evergreen.toml"
    config.write_text(
        '[pipeline]\nname = "images"\n\n[data]\npattern = "data/span-{SPAN}/*.csv"\n'
        'label = "label"\n\n[data.features]\nimage = "image"\n',
        encoding="utf-8",
    )
    with Project(config_mod.load(config)) as project:
        (outcome,) = project.ingest()
        rows_out = quarantine_rows(project.store.artifact(project.store.spans()[-1].examples_id))
    found = {r["source"].rsplit(":", 1)[1]: r["reason"] for r in rows_out}
    assert found == {
        "6": "unreadable image: not a regular file: 'pipe.png'",
        "7": "unreadable image: not a regular file: 'folder.png'",
        "8": "unreadable image: No such file or directory: 'missing.png'",
        "9": "unreadable image: not a regular file: '/dev/zero'",
    }
    assert sum(outcome.report["rows_written"].values()) == 4
