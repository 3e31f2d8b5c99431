"""Commands over the data: ``init``, ``ingest``, ``status``, ``lineage``, ``report``."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path

import click

from evergreen import config as config_mod
from evergreen import render
from evergreen.cli.base import (
    cli,
    emit,
    json_option,
    open_project,
    out,
    pipeline_options,
    progress_bars,
)
from evergreen.errors import ConfigError, SpanBlocked


@cli.command()
@click.argument("name")
@click.option(
    "--template", type=click.Choice(["text", "tabular", "image"]), default="text", show_default=True
)
@click.option("--force", is_flag=True, help="Overwrite an existing config.")
def init(name: str, template: str, force: bool) -> None:
    """Create NAME/evergreen.toml, a commented config to edit."""
    folder = Path(name)
    target = folder / "evergreen.toml"
    if target.exists() and not force:
        raise ConfigError(f"{target} already exists; edit it, or pass --force to overwrite it")
    text = (
        resources.files("evergreen")
        .joinpath(f"templates/{template}.toml")
        .read_text(encoding="utf-8")
    )
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "data").mkdir(exist_ok=True)
    target.write_text(
        text.replace("{name}", config_mod.safe_name(folder.resolve().name)), encoding="utf-8"
    )
    out.print(
        f"wrote {target}; put each span's files in {folder / 'data' / 'span-N'}/ and run `evergreen ingest -c {target}`"
    )


@cli.command()
@pipeline_options
@click.option(
    "--accept",
    "accept",
    type=int,
    multiple=True,
    metavar="SPAN",
    help="Accept a blocked span's anomalies into the schema.",
)
@json_option
def ingest(
    config_path: str,
    root: str | None,
    metadata_url: str | None,
    accept: tuple[int, ...],
    as_json: bool,
) -> None:
    """Ingest every span not ingested yet: dedupe, split, quarantine, statistics, validation."""
    with (
        open_project(config_path, root, metadata_url) as project,
        progress_bars(enabled=not as_json) as progress,
    ):
        outcomes = project.ingest(accept=list(accept), progress=progress)
    if as_json:
        out.print_json(json.dumps([vars(o) for o in outcomes], default=str))
    else:
        render.print_outcomes(out, outcomes)
    blocked = sorted(
        {o.span for o in outcomes if o.status == "blocked" and (o.ingested or o.span in accept)}
    )
    if blocked:
        raise SpanBlocked(
            f"span(s) {', '.join(map(str, blocked))} blocked by validation; fix the data, "
            f"or run `evergreen ingest -c {config_path} --accept SPAN` to update the schema"
        )


@cli.command()
@pipeline_options
@json_option
def status(config_path: str, root: str | None, metadata_url: str | None, as_json: bool) -> None:
    """Spans, rows, duplicates, conflicts, quarantine, anomalies, drift and decisions at a glance."""
    with open_project(config_path, root, metadata_url) as project:
        data = project.queries.status()
    emit(data, as_json, render.print_status)


@cli.command()
@pipeline_options
@click.argument("ident", metavar="ID")
@json_option
def lineage(
    config_path: str, root: str | None, metadata_url: str | None, ident: str, as_json: bool
) -> None:
    """Where artifact aN or run rN came from, and what used it."""
    with open_project(config_path, root, metadata_url) as project:
        data = project.queries.lineage(ident).to_dict()
    emit(data, as_json, render.print_lineage)


@cli.command()
@pipeline_options
@click.argument("span", type=int)
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False),
    default=None,
    help="The HTML file to write (default: <root>/reports/span-SPAN.html).",
)
def report(
    config_path: str, root: str | None, metadata_url: str | None, span: int, output: str | None
) -> None:
    """Write SPAN's HTML report: drift charts, anomalies, cost, metrics, the decision and why."""
    from evergreen.report import report_for

    with open_project(config_path, root, metadata_url) as project:
        path = report_for(project, span, Path(output) if output else None)
    out.print(f"report: {path}")
