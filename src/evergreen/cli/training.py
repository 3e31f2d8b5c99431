"""Training commands: ``run``, ``train-worker``, ``adopt``."""

from __future__ import annotations

from pathlib import Path

import click

from evergreen import config as config_mod
from evergreen import render
from evergreen.cli.base import cli, open_project, out, pipeline_options, progress_bars
from evergreen.errors import EvergreenError, SpanBlocked


@cli.command()
@pipeline_options
@click.option(
    "--full", is_flag=True, help="Retrain from scratch (refit the featurizer) on all spans."
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON record per span.")
def run(
    config_path: str, root: str | None, metadata_url: str | None, full: bool, as_json: bool
) -> None:
    """Every new span: ingest → validate → featurize → train → evaluate → push."""
    from evergreen.loop import TrainingLoop, dumps

    with (
        open_project(config_path, root, metadata_url) as project,
        progress_bars(enabled=not as_json) as progress,
    ):
        records = [r.to_dict() for r in TrainingLoop(project).run(full=full, progress=progress)]
        reports = [r["report"] for r in records]  # the loop saves each record and its report
    if as_json:
        out.print_json(dumps(records))
    else:
        render.print_run_table(out, records)
        for path in reports:
            out.print(f"report: {path}")
    blocked = [r for r in records if r["mode"] == "block"]
    if blocked:
        reason = blocked[0]["reason"].replace(
            "evergreen ingest --accept", f"evergreen ingest -c {config_path} --accept"
        )
        raise SpanBlocked(
            f"span {blocked[0]['span']} was not trained: {reason}. Later spans wait for it"
        )


@cli.command("train-worker")
@pipeline_options
@click.option("--full", is_flag=True, help="Worker 0: one full retrain on all spans.")
@click.option("--json", "as_json", is_flag=True, help="Worker 0: print one JSON record per span.")
def train_worker(
    config_path: str, root: str | None, metadata_url: str | None, full: bool, as_json: bool
) -> None:
    """One worker of a multi-worker training (train.distribution = "multi_worker").

    Start it on every worker with that worker's TF_CONFIG. Worker 0 runs the whole loop, like
    `evergreen run`, training each candidate together with the others; the others exit 0 when
    it is done. See README "Scaling out".
    """
    from evergreen.training import worker

    cfg = config_mod.load(config_path, root=root, metadata_url=metadata_url)
    session = worker.join(cfg)  # creates the strategy before anything else uses TensorFlow
    click.echo(f"train-worker: {worker.describe(session.info)}, {session.folder}", err=True)
    if not session.info.is_chief:
        if not worker.serve_jobs(session, cfg):
            raise EvergreenError("worker 0's loop failed; see its log (this one trained its jobs)")
        click.echo(f"train-worker: done after {session.jobs} training job(s)", err=True)
        return
    with worker.chief(session):
        run.callback(config_path, root, metadata_url, full, as_json)


@cli.command()
@pipeline_options
@click.option(
    "--model",
    "model_path",
    required=True,
    type=click.Path(exists=True),
    help="A .keras file trained elsewhere (inputs named after raw columns, softmax output).",
)
@click.option(
    "--labels",
    default=None,
    help="Comma-separated labels in the model's output order (default: the sorted label classes).",
)
@click.option("--json", "as_json", is_flag=True, help="Print the adoption record as JSON.")
def adopt(
    config_path: str,
    root: str | None,
    metadata_url: str | None,
    model_path: str,
    labels: str | None,
    as_json: bool,
) -> None:
    """Adopt a model trained elsewhere: evaluate it, publish it as champion, keep it fresh.

    The model takes raw columns (inputs named after them) and returns class probabilities;
    later `evergreen run` calls fine-tune it on new spans only.
    """
    from evergreen.loop import TrainingLoop, dumps

    with open_project(config_path, root, metadata_url) as project:
        record = (
            TrainingLoop(project)
            .adopt(Path(model_path), labels.split(",") if labels else None)
            .to_dict()
        )
    if as_json:
        out.print_json(dumps([record]))
        return
    render.print_run_table(out, [record])
