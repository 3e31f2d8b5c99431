"""Ingest on real data: counts, deterministic splits, dedupe, conflicts, quarantine, versions."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from click.testing import CliRunner

from evergreen import config as config_mod
from evergreen import dedupe_index, examples
from evergreen.cli import cli
from evergreen.components.ingest import infer_types, quarantine_rows
from evergreen.errors import DataError
from evergreen.metadata import MetadataStore
from evergreen.project import Project
from evergreen.readers import read
from tests.conftest import dataset, read_csv, write_csv


def expected_counts(spans: list[list[list[str]]]) -> list[dict[str, int]]:
    """An independent count of what dedupe should do: exact rows and (product, review) inputs."""
    rows_seen: dict[tuple, int] = {}
    inputs_seen: dict[tuple, str] = {}
    out = []
    for number, span in enumerate(spans, start=1):
        counts = {"kept": 0, "dup_within": 0, "dup_earlier": 0, "conflicts": 0}
        for product, review, score in span:
            key = (product, review, score)
            if key in rows_seen:
                counts["dup_within" if rows_seen[key] == number else "dup_earlier"] += 1
            elif (product, review) in inputs_seen:
                counts["conflicts"] += 1
            else:
                rows_seen[key] = number
                inputs_seen[(product, review)] = score
                counts["kept"] += 1
        out.append(counts)
    return out


def split_hashes(project: Project) -> dict[tuple[int, str], set[str]]:
    out = {}
    for record in project.store.spans():
        art = project.store.artifact(record.examples_id)
        types, label = art.properties["types"], art.properties["label"]
        for split in ("train", "eval"):
            out[(record.span, split)] = {
                examples.decode(r, types, label)[examples.ROW_HASH]
                for r in examples.iter_records(Path(art.uri) / split)
            }
    return out


def test_fine_foods_spans_counts_dedupe_conflicts_and_quarantine(fine_foods_project: dict) -> None:
    cfg = config_mod.load(fine_foods_project["config"])
    spans = fine_foods_project["spans"][:4] + [fine_foods_project["injected_rows"]]
    expected = expected_counts(spans)
    with Project(cfg) as project:
        outcomes = project.ingest()
        assert [o.span for o in outcomes] == [1, 2, 3, 4, 5]
        assert all(o.status == "validated" and o.ingested for o in outcomes)
        for outcome, want, source_rows in zip(outcomes, expected, spans, strict=True):
            r = outcome.report
            malformed = 3 if outcome.span == 5 else 0
            assert r["rows_read"] == len(source_rows) + malformed
            assert sum(r["rows_written"].values()) == want["kept"]
            assert r["duplicates_within_span"] == want["dup_within"]
            assert r["duplicates_of_earlier_spans"] == want["dup_earlier"]
            assert len(r["label_conflicts"]) == want["conflicts"]
            assert sum(r["quarantined"].values()) == want["conflicts"] + malformed

        span5 = outcomes[-1].report
        assert span5["duplicates_within_span"] >= 3 and span5["duplicates_of_earlier_spans"] >= 2
        conflict = fine_foods_project["conflict"]
        assert any(
            c["label"] == conflict[2] and c["earlier_span"] == 2 for c in span5["label_conflicts"]
        )

        quarantined = quarantine_rows(project.store.artifact(project.store.spans()[-1].examples_id))
        reasons = [q["reason"] for q in quarantined if not q["reason"].startswith("label conflict")]
        assert len(reasons) == 3
        assert any(r.startswith("unparseable: expected 3 fields, found 2") for r in reasons)
        assert "missing label" in reasons and "invalid UTF-8" in reasons
        assert all(
            q["source"].startswith(str(fine_foods_project["project"])) and ":" in q["source"]
            for q in quarantined
        )

        # A second ingest finds nothing new.
        again = project.ingest()
        assert [o.status for o in again] == ["unchanged"] * 5
        assert not any(o.ingested for o in again)
        runs_before = len(project.store.runs())
        project.ingest()
        assert len(project.store.runs()) == runs_before
        assert dedupe_index.size(project.store) == sum(e["kept"] for e in expected)


def test_status_json_shows_counts_conflicts_and_quarantine(fine_foods_project: dict) -> None:
    runner = CliRunner()
    config = str(fine_foods_project["config"])
    result = runner.invoke(cli, ["ingest", "-c", config, "--json"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(cli, ["status", "-c", config, "--json"])
    assert result.exit_code == 0, result.output
    status = json.loads(result.output)
    assert [s["span"] for s in status["spans"]] == [1, 2, 3, 4, 5]
    span5 = status["spans"][-1]
    assert span5["quarantined"]["unparseable"] == 1
    assert span5["quarantined"]["missing label"] == 1
    assert span5["quarantined"]["invalid UTF-8"] == 1
    assert span5["duplicates_within_span"] >= 3 and span5["duplicates_of_earlier_spans"] >= 2
    assert span5["label_conflicts"]
    assert Path(span5["quarantine_file"]).is_file()
    assert status["totals"]["rows_read"] == sum(s["rows_read"] for s in status["spans"])
    assert status["totals"]["label_conflicts"] >= 1


def test_split_is_identical_across_reruns_and_roots(
    fine_foods_project: dict, tmp_path: Path
) -> None:
    project_dir = fine_foods_project["project"]
    copy = tmp_path / "copy"
    shutil.copytree(project_dir / "data", copy / "data")
    shutil.copy(fine_foods_project["config"], copy / "evergreen.toml")
    with (
        Project(config_mod.load(fine_foods_project["config"])) as a,
        Project(config_mod.load(copy / "evergreen.toml")) as b,
    ):
        a.ingest()
        b.ingest()
        first, second = split_hashes(a), split_hashes(b)
    assert first == second
    train = sum(len(v) for (s, split), v in first.items() if split == "train")
    total = sum(len(v) for v in first.values())
    assert 0.75 < train / total < 0.85  # the configured 0.8 ratio, from hashes alone


def test_changed_span_becomes_a_new_version(fine_foods_project: dict) -> None:
    cfg = config_mod.load(fine_foods_project["config"])
    with Project(cfg) as project:
        project.ingest()
        span3 = fine_foods_project["project"] / "data" / "span-3" / "reviews.csv"
        lines = span3.read_text(encoding="utf-8").splitlines(keepends=True)
        span3.write_text("".join(lines[:-100]), encoding="utf-8")  # drop the last 100 rows
        outcomes = {o.span: o for o in project.ingest()}
        assert outcomes[3].ingested and outcomes[3].version == 2
        assert all(not outcomes[s].ingested for s in (1, 2, 4, 5))
        # The new version replaces the old one's rows instead of being deduped against them.
        assert outcomes[3].report["duplicates_of_earlier_spans"] == 0
        assert outcomes[3].report["rows_read"] == len(lines) - 1 - 100
        records = project.store.spans(include_superseded=True)
        assert [(r.span, r.version, r.status) for r in records if r.span == 3] == [
            (3, 1, "superseded"),
            (3, 2, "validated"),
        ]


def test_type_inference_on_churn() -> None:
    from tests.conftest import dataset

    types = infer_types(read(dataset("mlc_churn.csv"), "csv"), label="churn")
    assert types["account_length"] == "numeric"
    assert types["total_day_minutes"] == "numeric"
    assert types["state"] == "categorical"
    assert types["international_plan"] == "categorical"
    fine = infer_types(read(dataset("fine_foods_train.csv"), "csv"), label="score")
    assert fine == {"product": "categorical", "review": "text"}


def test_bad_label_column_names_the_columns(fine_foods_project: dict) -> None:
    config = fine_foods_project["config"]
    config.write_text(config.read_text().replace('label = "score"', 'label = "scroe"'))
    result = CliRunner().invoke(cli, ["ingest", "-c", str(config)], standalone_mode=False)
    assert "scroe" in str(result.exception) and "product, review, score" in str(result.exception)


def test_metadata_store_is_inside_root(fine_foods_project: dict) -> None:
    cfg = config_mod.load(fine_foods_project["config"])
    assert cfg.metadata_url == f"sqlite:///{cfg.root / 'metadata.db'}"
    with Project(cfg) as project:
        project.ingest()
    store = MetadataStore(cfg.metadata_url, cfg.name)
    assert len(store.spans()) == 5
    store.close()


def test_date_pattern_makes_one_span_per_day_in_date_order(tmp_path: Path) -> None:
    header, rows = read_csv(dataset("fine_foods_train.csv"))
    for day, part in (
        ("2026-11-24", rows[:300]),
        ("2026-11-25", rows[300:600]),
        ("2025-12-31", rows[600:900]),
    ):
        write_csv(tmp_path / "data" / f"{day}.csv", header, part)
    config = tmp_path / "evergreen.toml"
    config.write_text(
        '[pipeline]\nname = "daily"\n\n[data]\npattern = "data/{DATE}.csv"\nlabel = "score"\n\n'
        '[data.features]\nproduct = "categorical"\nreview = "text"\n',
        encoding="utf-8",
    )
    with Project(config_mod.load(config)) as project:
        outcomes = project.ingest()
        assert [o.span for o in outcomes] == [20251231, 20261124, 20261125]
        assert all(o.status == "validated" for o in outcomes)
    (tmp_path / "data" / "2026-13-01.csv").write_text("product,review,score\n", encoding="utf-8")
    with (
        Project(config_mod.load(config)) as project,
        pytest.raises(DataError, match=r"2026-13-01.*not a calendar date"),
    ):
        project.ingest()
