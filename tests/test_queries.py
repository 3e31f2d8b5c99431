"""The read side's typed answers: ``to_dict()`` is the ``--json`` output, and it round-trips."""

from __future__ import annotations

import json

import pytest

from evergreen import config as config_mod
from evergreen.errors import NotFound
from evergreen.lineage import ArtifactLineage, RunLineage, parse_id
from evergreen.project import Project
from evergreen.span_status import Decision, SpanStatus


def test_span_status_and_lineage_round_trip_on_an_ingested_stream(
    fine_foods_project: dict,
) -> None:
    with Project(config_mod.load(fine_foods_project["config"])) as project:
        project.ingest()
        queries = project.queries
        rows = project.status()["spans"]
        assert [r["span"] for r in rows] == [1, 2, 3, 4, 5]
        for row in rows:
            typed = queries.span_status(row["span"])
            assert typed.to_dict() == row == project.span_status(row["span"])
            assert SpanStatus.from_dict(json.loads(json.dumps(row))) == typed
            assert typed.ingest is not None and typed.ingest.rows_kept == row["rows_kept"]
        # Key order is part of the JSON output.
        assert list(rows[0])[:5] == ["span", "version", "status", "files", "examples"]

        artifact = queries.lineage(rows[4]["statistics"])
        assert isinstance(artifact, ArtifactLineage)
        data = json.loads(json.dumps(artifact.to_dict()))
        assert ArtifactLineage.from_dict(data) == artifact
        assert data == project.lineage(rows[4]["statistics"])
        assert data["upstream"]["inputs"]["examples"]["upstream"]["run"]["component"] == "ingest"

        run = queries.lineage(artifact.upstream.run.id)  # type: ignore[union-attr]
        assert isinstance(run, RunLineage) and run.run.component == "statistics"
        assert RunLineage.from_dict(json.loads(json.dumps(run.to_dict()))) == run
        assert list(run.to_dict()) == ["run", "inputs", "outputs"]


def test_a_span_status_with_every_part_round_trips() -> None:
    row = {
        "span": 3,
        "version": 2,
        "status": "validated",
        "files": ["data/span-3/a.csv"],
        "examples": "a7",
        "rows_read": 10,
        "rows_kept": 8,
        "rows_written": {"train": 6, "eval": 2},
        "duplicates_within_span": 1,
        "duplicates_of_earlier_spans": 0,
        "label_conflicts": [{"source": "a.csv:4"}],
        "quarantined": {"unparseable": 1},
        "quarantined_total": 1,
        "quarantine_file": "q.jsonl",
        "statistics": "a8",
        "anomalies": [{"kind": "k", "column": None, "severity": "warning", "message": "m"}],
        "drift": {
            "artifact": "a9",
            "severity": "minor",
            "features": ["review"],
            "alarms": ["review drifted"],
            "unknown_rate": None,
        },
        "decision": {
            "mode": "incremental",
            "reason": "r",
            "blessed": True,
            "version": 2,
            "report": "span-3.html",
        },
    }
    typed = SpanStatus.from_dict(row)
    assert typed.decision == Decision("incremental", "r", True, 2, "span-3.html")
    assert typed.to_dict() == row and list(typed.to_dict()) == list(row)
    bare = SpanStatus(1, 1, "ingested", ["f.csv"])
    assert bare.to_dict() == {"span": 1, "version": 1, "status": "ingested", "files": ["f.csv"]}
    assert SpanStatus.from_dict(bare.to_dict()) == bare


@pytest.mark.parametrize("ident", ["12", "x5", "a", "r-1"])
def test_ids_that_are_not_ids_are_refused(ident: str) -> None:
    with pytest.raises(NotFound, match="is not an artifact or run id"):
        parse_id(ident)
    assert parse_id(" A12 ") == ("a", 12) and parse_id("r5") == ("r", 5)
