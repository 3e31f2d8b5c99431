"""Schema inference and validation on the churn data: blocked spans name span and column."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from click.testing import CliRunner

from evergreen import config as config_mod
from evergreen.cli import cli
from evergreen.components.schema import Schema, presence_floor
from evergreen.components.validate import presence_allowance
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


def _blank(rows: list[list[str]], col: int, blank: set[int]) -> list[list[str]]:
    return [r[:col] + [""] + r[col + 1 :] if i in blank else list(r) for i, r in enumerate(rows)]


def test_accept_unblocks_a_presence_that_rounds_up(churn: dict) -> None:
    """639 of 712 rows = 0.897472: a floor rounded to nearest (0.8975) would still block it."""
    header, rows = churn["header"], churn["rows"]
    col = header.index("total_eve_calls")
    span = _blank(rows[3000:3712], col, set(range(73)))
    write_csv(churn["project"] / "data" / "span-4" / "churn.csv", header, span)
    config = churn["config"]
    config.write_text(config.read_text() + "\n[validation]\npresence_noise_sigmas = 0\n")
    with Project(config_mod.load(config)) as project:
        outcome = project.ingest()[-1]
        assert outcome.span == 4 and outcome.status == "blocked"
        message = next(a["message"] for a in outcome.anomalies if a["kind"] == "low_presence")
        # Enough digits to see the difference: never "90% of rows, below the schema's 90%".
        assert "present in 89.7% of rows (639 of 712), below the schema's floor of 90.0%" in message
        accepted = project.ingest(accept=[4])[-1]
        assert accepted.span == 4 and accepted.status == "validated"
        floor = project.current_schema().columns["total_eve_calls"].min_presence
    assert floor == 0.8974 and floor <= 639 / 712


@pytest.mark.parametrize(
    ("presence", "floor"),
    [(639 / 712, 0.8974), (0.8975, 0.8975), (0.5, 0.5), (1.0, 1.0), (0.0, 0.0), (1 / 3, 0.3333)],
    ids=["rounds-up-to-nearest", "exact", "half", "always", "never", "third"],
)
def test_presence_floor_never_exceeds_the_presence(presence: float, floor: float) -> None:
    assert presence_floor(presence) == floor
    assert presence_floor(presence) <= presence


def _recut_with_missing(churn: dict, spans: int, missing: float, seed: int) -> int:
    """Replace the fixture's spans by ``spans`` spans of 500 rows in which one column is
    blank in a random ``missing`` share of rows; returns that column's index."""
    header, rows = churn["header"], churn["rows"]
    col = header.index("total_night_calls")
    rng = random.Random(seed)
    for n in range(3):
        (churn["project"] / "data" / f"span-{n + 1}" / "churn.csv").unlink()
    for n in range(spans):
        chunk = rows[n * 500 : (n + 1) * 500]
        blank = {i for i in range(len(chunk)) if rng.random() < missing}
        path = churn["project"] / "data" / f"span-{n + 1}" / "churn.csv"
        write_csv(path, header, _blank(chunk, col, blank))
    return col


def test_sampling_noise_alone_does_not_block_but_a_real_drop_does(churn: dict) -> None:
    """A column 11 % missing at random: the floor inferred from span 1 is that span's noise,
    so comparing exactly blocks later spans by chance; the binomial allowance does not."""
    col = _recut_with_missing(churn, spans=6, missing=0.11, seed=7)
    with Project(config_mod.load(churn["config"])) as project:
        assert [o.status for o in project.ingest()] == ["validated"] * 6
    exact = churn["project"] / "exact.toml"
    exact.write_text(
        churn["config"].read_text().replace('root = ".evergreen"', 'root = ".exact"')
        + "\n[validation]\npresence_noise_sigmas = 0\n"
    )
    with Project(config_mod.load(exact)) as project:
        blocked = [o.span for o in project.ingest() if o.status == "blocked"]
    assert blocked, "comparing exactly trips on noise here: the case the allowance fixes"
    # A real drop (half the values gone) still blocks with the allowance.
    header, rows = churn["header"], churn["rows"]
    half = _blank(rows[3000:3500], col, set(range(0, 500, 2)))
    write_csv(churn["project"] / "data" / "span-7" / "churn.csv", header, half)
    with Project(config_mod.load(churn["config"])) as project:
        last = project.ingest()[-1]
    assert last.span == 7 and last.status == "blocked"
    message = next(a["message"] for a in last.anomalies if a["kind"] == "low_presence")
    assert "(250 of 500)" in message and "by more than sampling noise allows" in message


def test_presence_allowance_is_the_binomial_standard_error() -> None:
    assert presence_allowance(0.9, 900, 3.0) == pytest.approx(3 * 0.01)
    assert presence_allowance(1.0, 900, 3.0) == 0.0  # "always present" stays exact
    assert presence_allowance(0.9, 900, 0.0) == 0.0
    assert presence_allowance(0.9, 0, 3.0) == 0.0
