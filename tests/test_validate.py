"""Schema inference and validation on the churn data: blocked spans name span and column."""

from __future__ import annotations

from pathlib import Path

import pytest
from click.testing import CliRunner

from evergreen import config as config_mod
from evergreen.cli import cli
from evergreen.components.schema import Schema
from evergreen.errors import SchemaError
from evergreen.project import Project
from tests.conftest import dataset, read_csv, write_config, write_csv


@pytest.fixture
def churn(tmp_path: Path) -> dict:
    """mlc_churn.csv as three clean spans of 1,000 rows; features inferred from span 1."""
    header, rows = read_csv(dataset("mlc_churn.csv"))
    project = tmp_path / "churn"
    for n in range(3):
        write_csv(
            project / "data" / f"span-{n + 1}" / "churn.csv",
            header,
            rows[n * 1000 : (n + 1) * 1000],
        )
    config = write_config(project, label="churn")
    return {"project": project, "config": config, "header": header, "rows": rows}


def test_clean_spans_pass_and_schema_is_inferred(churn: dict) -> None:
    with Project(config_mod.load(churn["config"])) as project:
        outcomes = project.ingest()
        assert [o.status for o in outcomes] == ["validated"] * 3
        schema = project.current_schema()
    assert schema is not None
    assert schema.columns["total_day_minutes"].type == "numeric"
    assert schema.columns["state"].type == "categorical" and "KS" in (
        schema.columns["state"].domain or []
    )
    assert schema.label_domain == ["no", "yes"]
    assert Schema.from_dict(schema.to_dict()) == schema  # round trip


def test_missing_column_blocks_the_span_naming_it(churn: dict) -> None:
    header, rows = churn["header"], churn["rows"]
    drop = header.index("total_eve_calls")
    write_csv(
        churn["project"] / "data" / "span-4" / "churn.csv",
        header[:drop] + header[drop + 1 :],
        [r[:drop] + r[drop + 1 :] for r in rows[3000:4000]],
    )
    result = CliRunner().invoke(cli, ["ingest", "-c", str(churn["config"])], standalone_mode=False)
    assert result.exception is not None and "span(s) 4 blocked" in str(result.exception)
    assert "span 4: column 'total_eve_calls' is missing" in result.output
    with Project(config_mod.load(churn["config"])) as project:
        assert {r.span: r.status for r in project.store.spans()}[4] == "blocked"
        # Accepting the span on purpose relaxes the schema and unblocks it.
        accepted = project.ingest(accept=[4])
        assert accepted[-1].span == 4 and accepted[-1].status == "validated"
        assert project.current_schema().columns["total_eve_calls"].min_presence == 0.0


def test_numeric_column_turned_text_is_blocked(churn: dict) -> None:
    header, rows = churn["header"], churn["rows"]
    col = header.index("total_day_minutes")
    changed = [r[:col] + [f"about {r[col]} minutes"] + r[col + 1 :] for r in rows[3000:4000]]
    write_csv(churn["project"] / "data" / "span-4" / "churn.csv", header, changed)
    with Project(config_mod.load(churn["config"])) as project:
        outcome = project.ingest()[-1]
        assert outcome.span == 4 and outcome.status == "blocked"
        errors = [a for a in outcome.anomalies if a["severity"] == "error"]
        assert any(
            a["kind"] == "type_change" and a["column"] == "total_day_minutes" for a in errors
        )
        message = next(a["message"] for a in errors if a["kind"] == "type_change")
        assert message.startswith("span 4: column 'total_day_minutes' should be numeric")
        assert outcome.report["quarantined"]["wrong type"] == 1000
        with pytest.raises(SchemaError, match="cannot be accepted in place"):
            project.ingest(accept=[4])


def test_a_few_wrong_values_are_quarantined_not_blocking(churn: dict) -> None:
    header, rows = churn["header"], churn["rows"]
    col = header.index("account_length")
    fresh = [list(r) for r in rows[3000:4000]]
    for r in fresh[:5]:
        r[col] = "unknown"
    write_csv(churn["project"] / "data" / "span-4" / "churn.csv", header, fresh)
    with Project(config_mod.load(churn["config"])) as project:
        outcome = project.ingest()[-1]
    assert outcome.status == "validated"
    assert outcome.report["type_errors"] == {"account_length": 5}


def test_new_categorical_values_warn_and_severity_is_configurable(churn: dict) -> None:
    header, rows = churn["header"], churn["rows"]
    col = header.index("area_code")
    fresh = [r[:col] + ["area_code_999"] + r[col + 1 :] for r in rows[3000:3500]]
    write_csv(churn["project"] / "data" / "span-4" / "churn.csv", header, fresh)
    with Project(config_mod.load(churn["config"])) as project:
        outcome = project.ingest()[-1]
    assert outcome.status == "validated"
    assert [a["kind"] for a in outcome.anomalies if a["column"] == "area_code"] == ["out_of_domain"]
    assert "area_code_999" in outcome.anomalies[0]["message"]

    # The same change blocks when the team makes out-of-domain values an error.
    config = churn["config"]
    config.write_text(config.read_text() + '\n[validation.severity]\nout_of_domain = "error"\n')
    write_csv(
        churn["project"] / "data" / "span-5" / "churn.csv",
        header,
        [r[:col] + ["area_code_998"] + r[col + 1 :] for r in rows[3500:4000]],
    )
    with Project(config_mod.load(config)) as project:
        assert project.ingest()[-1].status == "blocked"


def test_empty_span_is_blocked(churn: dict) -> None:
    write_csv(churn["project"] / "data" / "span-4" / "churn.csv", churn["header"], [])
    with Project(config_mod.load(churn["config"])) as project:
        outcome = project.ingest()[-1]
    assert outcome.status == "blocked"
    assert (
        outcome.anomalies[0]["kind"] == "empty_span"
        and "span 4 has no usable rows" in outcome.anomalies[0]["message"]
    )
