"""The ``evergreen`` command line: a thin shell over :mod:`evergreen.project`.

Errors come in two tiers: an :class:`~evergreen.errors.EvergreenError` prints one line and exits
with its code (1); click's usage errors exit 2; anything else is a bug, printed as "internal
error" with its traceback. ``--debug`` re-raises everything.
"""

from __future__ import annotations

import json
import os
import sys
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import resources
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.markup import escape  # noqa: E402
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: E402
from rich.table import Table  # noqa: E402

from evergreen import config as config_mod  # noqa: E402
from evergreen.errors import ConfigError, DataError, EvergreenError, SpanBlocked  # noqa: E402
from evergreen.project import Project  # noqa: E402

# Piped output (make demo, CI logs) gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True, highlight=False, soft_wrap=True)

_config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default="evergreen.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Pipeline config file.",
)
_root_option = click.option(
    "--root", default=None, help="Override pipeline.root (env: EVERGREEN_ROOT)."
)
_metadata_option = click.option(
    "--metadata-url",
    default=None,
    help="Override pipeline.metadata_url (env: EVERGREEN_METADATA_URL).",
)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Re-raise errors with their traceback.")
@click.version_option(package_name="evergreen")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Evergreen keeps TensorFlow models fresh: ingest new spans, validate, train, serve."""
    ctx.obj = {"debug": debug}


@contextmanager
def _project(
    config_path: str, root: str | None = None, metadata_url: str | None = None
) -> Iterator[Project]:
    project = Project(config_mod.load(config_path, root=root, metadata_url=metadata_url))
    try:
        yield project
    finally:
        project.close()


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
@_config_option
@_root_option
@_metadata_option
@click.option(
    "--accept",
    "accept",
    type=int,
    multiple=True,
    metavar="SPAN",
    help="Accept a blocked span's anomalies into the schema.",
)
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def ingest(
    config_path: str,
    root: str | None,
    metadata_url: str | None,
    accept: tuple[int, ...],
    as_json: bool,
) -> None:
    """Ingest every span not ingested yet: dedupe, split, quarantine, statistics, validation."""
    with (
        _project(config_path, root, metadata_url) as project,
        _progress(enabled=not as_json) as progress,
    ):
        outcomes = project.ingest(accept=list(accept), progress=progress)
    if as_json:
        out.print_json(json.dumps([vars(o) for o in outcomes], default=str))
    else:
        _print_outcomes(outcomes)
    blocked = sorted(
        {o.span for o in outcomes if o.status == "blocked" and (o.ingested or o.span in accept)}
    )
    if blocked:
        raise SpanBlocked(
            f"span(s) {', '.join(map(str, blocked))} blocked by validation; fix the data, "
            f"or run `evergreen ingest -c {config_path} --accept SPAN` to update the schema"
        )


@cli.command()
@_config_option
@_root_option
@_metadata_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def status(config_path: str, root: str | None, metadata_url: str | None, as_json: bool) -> None:
    """Spans, rows, duplicates, conflicts, quarantine, anomalies, drift and decisions at a glance."""
    with _project(config_path, root, metadata_url) as project:
        data = project.status()
    if as_json:
        out.print_json(json.dumps(data, default=str))
        return
    out.print(
        f"pipeline [bold]{data['pipeline']}[/] · root {data['root']} · metadata {data['metadata']}"
    )
    table = Table(
        "span",
        "v",
        "status",
        "read",
        "kept",
        "train/eval",
        "dups",
        "conflicts",
        "quarant.",
        "anomalies",
        "drift",
        "decision",
    )
    for s in data["spans"]:
        splits = s.get("rows_written", {})
        decision = s.get("decision") or {}
        table.add_row(
            str(s["span"]),
            str(s["version"]),
            s["status"],
            str(s.get("rows_read", "")),
            str(s.get("rows_kept", "")),
            f"{splits.get('train', 0)}/{splits.get('eval', 0)}",
            str(s.get("duplicates_within_span", 0) + s.get("duplicates_of_earlier_spans", 0)),
            str(len(s.get("label_conflicts", []))),
            str(s.get("quarantined_total", 0)),
            _count_anomalies(s.get("anomalies", [])),
            _drift_cell(s.get("drift")),
            escape(str(decision.get("mode") or "-")),
        )
    out.print(table)
    _print_latest(data)
    t = data["totals"]
    out.print(
        f"{t['spans']} spans, {t['blocked']} blocked · {t['rows_kept']} rows kept of {t['rows_read']} read · "
        f"{t['duplicates']} duplicates · {t['label_conflicts']} label conflicts · {t['quarantined']} quarantined"
    )


@cli.command()
@_config_option
@_root_option
@_metadata_option
@click.argument("ident", metavar="ID")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")
def lineage(
    config_path: str, root: str | None, metadata_url: str | None, ident: str, as_json: bool
) -> None:
    """Where artifact aN or run rN came from, and what used it."""
    with _project(config_path, root, metadata_url) as project:
        data = project.lineage(ident)
    if as_json:
        out.print_json(json.dumps(data, default=str))
        return
    if "run" in data and "artifact" not in data:
        r = data["run"]
        out.print(
            f"run {r['id']} {r['component']} span={r['span']} {r['status']} ({r['seconds'] or 0:.2f}s)"
        )
        for label, group in (("in ", data["inputs"]), ("out", data["outputs"])):
            for name, a in group.items():
                out.print(f"  {label} {name}: {_describe_artifact(a)}")
        return
    out.print(_describe_artifact(data["artifact"]))
    _print_upstream(data["upstream"], indent=1)
    for r in data["consumers"]:
        out.print(f"  used by run {r['id']} {r['component']} span={r['span']} {r['status']}")


@cli.command()
@_config_option
@_root_option
@_metadata_option
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
        _project(config_path, root, metadata_url) as project,
        _progress(enabled=not as_json) as progress,
    ):
        records = [r.to_dict() for r in TrainingLoop(project).run(full=full, progress=progress)]
        reports = [r["report"] for r in records]  # the loop saves each record and its report
    if as_json:
        out.print_json(dumps(records))
    else:
        print_run_table(records)
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
@_config_option
@_root_option
@_metadata_option
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
@_config_option
@_root_option
@_metadata_option
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

    with _project(config_path, root, metadata_url) as project:
        record = (
            TrainingLoop(project)
            .adopt(Path(model_path), labels.split(",") if labels else None)
            .to_dict()
        )
    if as_json:
        out.print_json(dumps([record]))
        return
    print_run_table([record])


def print_run_table(records: list[dict[str, Any]]) -> None:
    if not records:
        out.print("nothing new to train on")
        return
    table = Table(
        "span",
        "mode",
        "rows new/total",
        "rows featurized/reused",
        "tokens computed/reused",
        "seconds",
        "cand. acc new/hist",
        "champ. acc new/hist",
        "blessed",
        "version",
    )
    for r in records:
        cand, champ = r["metrics"]["candidate"], r["metrics"]["champion"]
        table.add_row(
            str(r["span"]),
            r["mode"],
            f"{r['rows_new']}/{r['rows_total']}",
            f"{r['rows_featurized']}/{r['rows_reused']}",
            f"{r['tokens_computed']}/{r['tokens_reused']}",
            f"{sum(r['seconds'].values()):.1f}",
            _acc(cand),
            _acc(champ),
            "yes" if r["blessed"] else "no",
            str(r["version"] or "-"),
        )
    out.print(table)
    for r in records:
        out.print(
            f"span {r['span']}: {r['mode']} ({escape(r['reason'])}); "
            + escape("; ".join(r["verdict"]))
        )


def _acc(side: dict[str, Any]) -> str:
    if not side:
        return "-"
    return "/".join(f"{side[k]['accuracy']:.3f}" if k in side else "-" for k in ("new", "historic"))


@cli.command()
@_config_option
@_root_option
@_metadata_option
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

    with _project(config_path, root, metadata_url) as project:
        path = report_for(project, span, Path(output) if output else None)
    out.print(f"report: {path}")


@cli.command()
@_config_option
@_root_option
@click.argument("texts", nargs=-1, required=True, metavar="INPUTS...")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="A registry version (default: the champion).",
)
@click.option("--json", "as_json", is_flag=True)
@click.option(
    "--verify-key",
    default=None,
    type=click.Path(dir_okay=False),
    help="Public key (PEM) the version must be signed with (default: serving.verify_key).",
)
def predict(
    config_path: str,
    root: str | None,
    texts: tuple[str, ...],
    version: int | None,
    as_json: bool,
    verify_key: str | None,
) -> None:
    """Classify raw inputs with the champion (or --version) SavedModel.

    Each argument is a text (text models), an image file (image models), or a JSON object of
    raw columns such as '{"state": "KS", "account_length": 128}' (tabular and adopted models).
    """
    from evergreen.loop import champion_saved_model
    from evergreen.models.family import feed_saved_model, raw_inputs_of
    from evergreen.models.text import predict_texts

    with _project(config_path, root) as project:
        path = champion_saved_model(project, version)
        # The same check as the server's: a version whose files changed is never run.
        _verified(project.config, int(path.name), verify_key)
    inputs = list(raw_inputs_of(path))
    if inputs in ([], ["text"]):
        results = predict_texts(path, list(texts))
    else:
        rows: list[Any] = []
        for arg in texts:
            if inputs == ["image_bytes"]:
                if not Path(arg).is_file():
                    raise DataError(
                        f"{arg!r} is not an image file; this model takes image files (PNG, JPEG, GIF, BMP)"
                    )
                rows.append(Path(arg).read_bytes())
                continue
            try:
                row = json.loads(arg)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{arg[:80]!r} is not a JSON object of raw columns ({e}); this model takes e.g. '{{\"{inputs[0]}\": ...}}'"
                ) from None
            if not isinstance(row, dict):
                raise DataError(
                    f"{arg[:80]!r} is not a JSON object; this model takes columns {', '.join(inputs)}"
                )
            rows.append(row)
        scores, labels = feed_saved_model(path, rows)
        from evergreen.components.threshold import decide, read_threshold

        chosen = decide(scores, labels, read_threshold(path))  # the exported threshold, if any
        results = [
            {
                "label": labels[best],
                "score": float(s[best]),
                "scores": dict(zip(labels, map(float, s), strict=True)),
            }
            for s, best in zip(scores, chosen, strict=True)
        ]
    if as_json:
        out.print_json(json.dumps({"version": int(path.name), "predictions": results}))
        return
    for text, r in zip(texts, results, strict=True):
        out.print(f"{r['label']}\t{r['score']:.3f}\t{escape(text)}  (version {path.name})")


@cli.command()
@_config_option
@_root_option
@click.option("--json", "as_json", is_flag=True)
def history(config_path: str, root: str | None, as_json: bool) -> None:
    """Registry versions, the champion, metrics and cost per run."""
    from evergreen import loop

    with _project(config_path, root) as project:
        versions = loop.history(project)
    if as_json:
        out.print_json(json.dumps(versions, default=str))
        return
    table = Table(
        "version",
        "champion",
        "mode",
        "spans",
        "acc new",
        "acc historic",
        "tokens computed/reused",
        "created",
    )
    for v in versions:
        metrics = v["metrics"] or {}
        cost = v["cost"] or {}
        table.add_row(
            str(v["version"]),
            "★" if v["champion"] else "",
            str(v["mode"]),
            ",".join(map(str, v["spans"] or [])),
            f"{metrics['new']['accuracy']:.3f}" if "new" in metrics else "-",
            f"{metrics['historic']['accuracy']:.3f}" if "historic" in metrics else "-",
            f"{cost.get('tokens_computed', 0)}/{cost.get('tokens_reused', 0)}",
            str(v["created_at"])[:19],
        )
    out.print(table)
    for v in versions:
        if v.get("reason"):
            out.print(f"version {v['version']}: {v['mode']} because {escape(str(v['reason']))}")


@cli.command()
@_config_option
@_root_option
@click.argument("version", type=int)
def rollback(config_path: str, root: str | None, version: int) -> None:
    """Move the champion back to VERSION (recorded in the alias history)."""
    from evergreen.registry import Registry

    with _project(config_path, root) as project, project.writing("evergreen rollback"):
        key = _verify_key(project.config, None)
        moved = Registry(project.config.registry_dir, verify_key=key).rollback(
            project.config.name, version, reason="evergreen rollback"
        )
        from evergreen.tracking import aliases_moved

        aliases_moved(project.config)  # MLflow's champion alias follows (when configured)
    out.print(f"champion is now version {moved}")


def _verify_key(config: Any, flag: str | None) -> Path | None:
    """--verify-key, else serving.verify_key (relative to the config file), else None."""
    if flag:
        return Path(flag)
    return config.resolve(config.serving.verify_key) if config.serving.verify_key else None


def _verified(config: Any, version: int, flag: str | None) -> Any:
    """Verify one version of the pipeline's model, printing what was accepted with a warning."""
    from evergreen.registry import Registry

    key = _verify_key(config, flag)
    verified = Registry(config.registry_dir, verify_key=key).verify(config.name, version)
    for warning in verified.warnings:
        err.print(f"[yellow]warning:[/] {escape(warning)}")
    return verified


@cli.command()
@_config_option
@_root_option
@click.option(
    "--verify-key",
    default=None,
    type=click.Path(dir_okay=False),
    help="Public key (PEM) every version must be signed with (default: serving.verify_key).",
)
def verify(config_path: str, root: str | None, verify_key: str | None) -> None:
    """Check every registry version's files (and signature) against its manifest."""
    from evergreen.errors import IntegrityError
    from evergreen.registry import Registry

    with _project(config_path, root) as project:
        config = project.config
        numbers = Registry(config.registry_dir).version_numbers(config.name)
        refused = []
        for number in numbers:
            try:
                verified = _verified(config, number, verify_key)
            except IntegrityError as e:
                refused.append(number)
                out.print(f"version {number}: [red]refused[/]: {escape(str(e))}")
                continue
            signed = f", signed by key {verified.signed_by}" if verified.signed_by else ""
            out.print(f"version {number}: ok{signed}")
    if refused:
        raise IntegrityError(
            f"{len(refused)} of {len(numbers)} versions of model {config.name!r} are refused: "
            f"{', '.join(map(str, refused))}"
        )


@cli.command()
@_config_option
@_root_option
@click.argument("versions", nargs=-1, type=int)
def seal(config_path: str, root: str | None, versions: tuple[int, ...]) -> None:
    """Record file digests for VERSIONS (default: all) and sign them with EVERGREEN_SIGNING_KEY.

    For versions published before digests or signing: a version whose files no longer match
    its manifest is refused, never sealed.
    """
    from evergreen.registry import Registry

    with _project(config_path, root) as project, project.writing("evergreen seal"):
        registry = Registry(project.config.registry_dir)
        for number in versions or registry.version_numbers(project.config.name):
            verified = registry.seal(project.config.name, number)
            signed = f", signed by key {verified.signed_by}" if verified.signed_by else ", unsigned"
            out.print(f"version {number}: sealed{signed}")


@cli.command()
@click.argument("directory", type=click.Path(file_okay=False))
def keygen(directory: str) -> None:
    """Write a new Ed25519 key pair into DIRECTORY for signing registry versions."""
    from evergreen.signing import SIGNING_KEY_ENV, generate_key_pair

    private, public = generate_key_pair(Path(directory))
    out.print(f"wrote {private} (private: keep it where versions are published) and {public}")
    out.print(f"publish signed: export {SIGNING_KEY_ENV}={private.resolve()}")
    out.print(f'serve only signed versions: serving.verify_key = "{public.resolve()}"')


@cli.command()
@_config_option
@_root_option
@click.option(
    "--registry",
    "registry_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="Serve this registry folder instead of the config's (no config needed).",
)
@click.option("--host", default=None, help="Address to bind (serving.host; default 127.0.0.1).")
@click.option("--port", default=None, type=int, help="Port (serving.port; default 8501).")
@click.option(
    "--grpc-port",
    default=None,
    type=int,
    help="gRPC port: TF Serving's and KServe V2's gRPC APIs (serving.grpc_port; default 8500, "
    "0: any free port, -1: off).",
)
@click.option(
    "--api-key-file",
    default=None,
    type=click.Path(dir_okay=False),
    help="File of API keys, one KEY or NAME:KEY a line (also: env serving.api_key_env).",
)
@click.option("--tls-cert", default=None, help="PEM certificate for HTTPS (serving.tls_cert).")
@click.option("--tls-key", default=None, help="PEM private key for HTTPS (serving.tls_key).")
@click.option(
    "--max-batch-size", default=None, type=int, help="Rows per model call; 1: batching off."
)
@click.option(
    "--batch-timeout-ms", default=None, type=float, help="Longest wait for a batch to fill."
)
@click.option("--batch-threads", default=None, type=int, help="Model calls in flight per version.")
@click.option(
    "--canary-percent", default=None, type=float, help="Share of traffic for the 'canary' label."
)
@click.option(
    "--request-log",
    "request_log",
    default=None,
    type=click.Path(file_okay=False),
    help="Folder for sampled request rows (default with a config: ROOT/serving/requests).",
)
@click.option(
    "--request-log-sample-rate", default=None, type=float, help="Fraction of rows logged."
)
@click.option("--audit-log", default=None, help="Audit log file (default: standard error).")
@click.option(
    "--max-rows-per-request",
    default=None,
    type=int,
    help="Most rows per request (serving.max_rows_per_request; default 4096); more: 413.",
)
@click.option(
    "--verify-key",
    default=None,
    type=click.Path(dir_okay=False),
    help="Serve only versions signed by this Ed25519 public key, PEM (serving.verify_key).",
)
@click.pass_context
def serve(
    ctx: click.Context, config_path: str, root: str | None, registry_dir: str | None, **flags: Any
) -> None:
    """Serve the registry's models: TF Serving REST (/v1), Open Inference Protocol (/v2), /metrics;
    TF Serving's and the Open Inference Protocol's gRPC APIs on --grpc-port."""
    from evergreen.registry import Registry
    from evergreen.serving import ApiKeys, build
    from evergreen.serving import serve as run_server

    explicit_config = ctx.get_parameter_source("config_path") != click.core.ParameterSource.DEFAULT
    config = None
    if registry_dir is None or explicit_config:
        config = config_mod.load(config_path, root=root)
    base = config.to_dict()["serving"] if config is not None else {}
    for key in ("tls_cert", "tls_key", "audit_log", "verify_key"):  # relative to the config
        if base.get(key):
            base[key] = str(config.resolve(base[key]))  # type: ignore[union-attr]
    overrides = {
        key: value
        for key, value in flags.items()
        if value is not None and key not in ("api_key_file", "request_log")
    }
    settings = config_mod.serving_from_dict({**base, **overrides}, source="evergreen serve")
    registry = Path(registry_dir) if registry_dir else config.registry_dir  # type: ignore[union-attr]
    request_log = flags["request_log"] or (
        str(config.root / "serving" / "requests") if config else None
    )
    keys = ApiKeys.load(settings.api_key_env, flags["api_key_file"])
    app = build(
        registry,
        settings,
        api_keys=keys,
        request_log_dir=Path(request_log) if request_log else None,
    )
    scheme = "https" if settings.tls_cert else "http"
    models = ", ".join(Registry(registry).models()) or "none yet"
    out.print(
        f"serving {models} from {registry} on {scheme}://{settings.host}:{settings.port} "
        + (f"and gRPC {settings.grpc_port} " if settings.grpc_port >= 0 else "")
        + f"(batching: {settings.max_batch_size} rows / {settings.batch_timeout_ms:g} ms; "
        f"auth: {'API keys' if keys else 'off, loopback only'})"
    )
    run_server(app, settings)


@cli.command()
@_config_option
@_root_option
@_metadata_option
@click.option(
    "--metrics-port",
    default=None,
    type=int,
    help="Prometheus /metrics port (watch.metrics_port; default 9464, 0: any free port).",
)
@click.option(
    "--metrics-host",
    default=None,
    help="Address the metrics endpoint binds (watch.metrics_host; default 127.0.0.1).",
)
def watch(
    config_path: str,
    root: str | None,
    metadata_url: str | None,
    metrics_port: int | None,
    metrics_host: str | None,
) -> None:
    """Run the loop whenever enough new data has arrived; SIGTERM finishes the current run."""
    import dataclasses

    from evergreen.watch import Watcher

    cfg = config_mod.load(config_path, root=root, metadata_url=metadata_url)
    overrides = {"metrics_port": metrics_port, "metrics_host": metrics_host}
    given = {k: v for k, v in overrides.items() if v is not None}
    if given:
        cfg = dataclasses.replace(cfg, watch=dataclasses.replace(cfg.watch, **given))
    Watcher(cfg).serve_forever()


@cli.command()
@click.argument("directory", default=".demo", type=click.Path(file_okay=False))
@click.option(
    "--days", default=5, show_default=True, help="Day 0 plus this many minus one incremental days."
)
def demo(directory: str, days: int) -> None:
    """Generate a synthetic support-ticket stream in DIRECTORY and run the pipeline over it."""
    from evergreen import demo as demo_mod

    demo_mod.run(Path(directory), days=days, console=out)


def _drift_cell(drift: dict[str, Any] | None) -> str:
    if drift is None:
        return "-"
    style = {"none": "green", "minor": "yellow", "major": "red"}[drift["severity"]]
    features = f" ({escape(', '.join(drift['features']))})" if drift["features"] else ""
    return f"[{style}]{drift['severity']}[/]{features}"


def _print_latest(data: dict[str, Any]) -> None:
    """The latest span's drift alarms and decision, under the table."""
    if not data.get("drift_enabled", True):
        out.print("drift detection is off (drift.enabled = false)")
    latest = data.get("latest_drift")
    if latest is not None:
        head = f"latest drift (span {latest['span']}): {_drift_cell(latest)}"
        if latest.get("unknown_rate") is not None:
            head += f" · unknown-token rate {latest['unknown_rate']:.1%}"
        out.print(head)
        for alarm in latest["alarms"][:8]:
            out.print(f"  {escape(alarm)}")
    decided = [s for s in data["spans"] if s.get("decision")]
    if decided:
        s = decided[-1]
        d = s["decision"]
        out.print(
            f"latest decision (span {s['span']}): {escape(str(d['mode']))} ({escape(str(d['reason']))})"
            f" · report {escape(d['report'])}"
        )
    skew = data.get("skew")
    if skew:
        out.print(f"serving skew: {_drift_cell(skew)} over {skew['rows']} sampled requests")
        for alarm in skew["alarms"][:8]:
            out.print(f"  {escape(alarm)}")


def _count_anomalies(anomalies: list[dict[str, Any]]) -> str:
    errors = sum(1 for a in anomalies if a["severity"] == "error")
    return f"{errors} errors, {len(anomalies) - errors} warnings" if anomalies else "-"


def _describe_artifact(a: dict[str, Any]) -> str:
    span = f" span {a['span']} v{a['version']}" if a["span"] is not None else ""
    return f"{a['id']} {a['type']}{span} {a['uri']}"


def _print_upstream(node: dict[str, Any] | None, indent: int) -> None:
    if node is None:
        return
    pad = "  " * indent
    r = node["run"]
    out.print(f"{pad}← produced by run {r['id']} {r['component']} ({r['status']})")
    for name, child in node["inputs"].items():
        out.print(f"{pad}  {name}: {_describe_artifact(child['artifact'])}")
        _print_upstream(child["upstream"], indent + 2)


def _print_outcomes(outcomes: list[Any]) -> None:
    table = Table(
        "span", "v", "status", "read", "kept", "dups", "conflicts", "quarantined", "anomalies"
    )
    for o in outcomes:
        if not o.ingested and o.status == "unchanged":
            table.add_row(
                str(o.span), str(o.version), "unchanged (skipped)", "", "", "", "", "", ""
            )
            continue
        r = o.report
        table.add_row(
            str(o.span),
            str(o.version),
            o.status,
            str(r.get("rows_read", "")),
            str(sum(r.get("rows_written", {}).values())),
            str(r.get("duplicates_within_span", 0) + r.get("duplicates_of_earlier_spans", 0)),
            str(len(r.get("label_conflicts", []))),
            str(sum(r.get("quarantined", {}).values())),
            str(len(o.anomalies)),
        )
    out.print(table)
    for o in outcomes:
        for a in o.anomalies:
            style = "red" if a["severity"] == "error" else "yellow"
            out.print(f"[{style}]{a['severity']}[/]: {escape(a['message'])}")


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str], Callable[[int, int], None]] | None]:
    if not enabled or not err.is_terminal:
        yield None
        return
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(),
        TimeRemainingColumn(),
        console=err,
        transient=True,
    ) as bar:

        def factory(description: str) -> Callable[[int, int], None]:
            task = bar.add_task(description, total=None)
            return lambda done, total: bar.update(task, completed=done, total=total)

        yield factory


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point with the two error tiers."""
    args = sys.argv[1:] if argv is None else argv
    debug = "--debug" in args
    try:
        cli.main(args=args, prog_name="evergreen", standalone_mode=False)
    except click.exceptions.Abort:
        err.print("aborted")
        sys.exit(130)
    except click.ClickException as e:
        e.show()
        sys.exit(e.exit_code)
    except EvergreenError as e:
        if debug:
            raise
        err.print(f"[red]{e.headline}:[/] {escape(str(e))}")
        sys.exit(e.exit_code)
    except Exception:
        if debug:
            raise
        err.print("internal error (a bug in Evergreen; please report it with this traceback):")
        err.print(traceback.format_exc(), markup=False)
        sys.exit(3)


@cli.group()
def export() -> None:
    """Export a registry version for another runtime."""


@export.command("tflite")
@_config_option
@_root_option
@click.argument("version", type=int, required=False)
@click.option(
    "--quantize",
    type=click.Choice(["none", "float16", "int8"]),
    default="none",
    show_default=True,
    help="Weights (float16) or weights and activations (int8, calibrated on training rows).",
)
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="Output folder.")
@click.option(
    "--max-accuracy-drop",
    type=click.FloatRange(min=0.0),
    default=0.01,
    show_default=True,
    help="Refuse when the TFLite accuracy on the eval rows is lower by more than this.",
)
@click.option("--no-flex", is_flag=True, help="Skip the raw-input Select TF ops variant.")
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def export_tflite_command(
    config_path: str,
    root: str | None,
    version: int | None,
    quantize: str,
    out_dir: str | None,
    max_accuracy_drop: float,
    no_flex: bool,
    as_json: bool,
) -> None:
    """VERSION (default: the champion) as LiteRT models, checked against the SavedModel."""
    from evergreen.export.tflite import TFLiteOptions, export_tflite

    options = TFLiteOptions(
        quantize=quantize,
        max_accuracy_drop=max_accuracy_drop,
        out=Path(out_dir) if out_dir else None,
        flex=not no_flex,
    )
    with _project(config_path, root) as project:
        result = export_tflite(project, version, options)
    if as_json:
        out.print(json.dumps({"folder": str(result.folder), **result.report()}))
        return
    p = result.parity
    out.print(f"wrote {result.folder} (version {result.version}, {result.family}, {quantize})")
    out.print(
        f"parity on {p.rows} eval rows: accuracy {p.tflite_accuracy:.4f} (TFLite) vs "
        f"{p.saved_model_accuracy:.4f} (SavedModel), drop {p.accuracy_drop:+.4f}, max |score| "
        f"difference {p.max_abs_score_diff:.2e}, same class on {p.agreement:.1%}"
    )
    for name, size in result.files.items():
        out.print(f"  {name}: {size:,} bytes")
    if not result.flex.get("written"):
        out.print(f"  model_flex.tflite not written: {escape(str(result.flex.get('why')))}")
