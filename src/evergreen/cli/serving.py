"""Long-running commands: ``serve``, ``watch``, and the ``demo``."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import click

from evergreen import config as config_mod
from evergreen.cli.base import cli, config_option, out, pipeline_options, root_option

# `evergreen serve`'s flags after -c and --root: the registry to serve, then the overrides of
# the [serving] settings. (flags, click.option keywords), in the order --help lists them.
_SERVE_FLAGS: list[tuple[tuple[str, ...], dict[str, Any]]] = [
    (
        ("--registry", "registry_dir"),
        dict(
            type=click.Path(file_okay=False),
            help="Serve this registry folder instead of the config's (no config needed).",
        ),
    ),
    (("--host",), dict(help="Address to bind (serving.host; default 127.0.0.1).")),
    (("--port",), dict(type=int, help="Port (serving.port; default 8501).")),
    (
        ("--grpc-port",),
        dict(
            type=int,
            help="gRPC port: TF Serving's and KServe V2's gRPC APIs (serving.grpc_port; "
            "default 8500, 0: any free port, -1: off).",
        ),
    ),
    (
        ("--api-key-file",),
        dict(
            type=click.Path(dir_okay=False),
            help="File of API keys, one KEY or NAME:KEY a line (also: env serving.api_key_env).",
        ),
    ),
    (("--tls-cert",), dict(help="PEM certificate for HTTPS (serving.tls_cert).")),
    (("--tls-key",), dict(help="PEM private key for HTTPS (serving.tls_key).")),
    (("--max-batch-size",), dict(type=int, help="Rows per model call; 1: batching off.")),
    (("--batch-timeout-ms",), dict(type=float, help="Longest wait for a batch to fill.")),
    (("--batch-threads",), dict(type=int, help="Model calls in flight per version.")),
    (("--canary-percent",), dict(type=float, help="Share of traffic for the 'canary' label.")),
    (
        ("--request-log", "request_log"),
        dict(
            type=click.Path(file_okay=False),
            help="Folder for sampled request rows (default with a config: ROOT/serving/requests).",
        ),
    ),
    (("--request-log-sample-rate",), dict(type=float, help="Fraction of rows logged.")),
    (("--audit-log",), dict(help="Audit log file (default: standard error).")),
    (
        ("--max-rows-per-request",),
        dict(
            type=int,
            help="Most rows per request (serving.max_rows_per_request; default 4096); more: 413.",
        ),
    ),
    (
        ("--verify-key",),
        dict(
            type=click.Path(dir_okay=False),
            help="Serve only versions signed by this Ed25519 public key, PEM (serving.verify_key).",
        ),
    ),
]


def _serve_flags(command: Any) -> Any:
    """Apply :data:`_SERVE_FLAGS` (last first, so that --help lists them in table order)."""
    for flags, options in reversed(_SERVE_FLAGS):
        command = click.option(*flags, default=None, **options)(command)
    return command


@cli.command()
@config_option
@root_option
@_serve_flags
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
    settings = config_mod.serving_from_dict(
        {**_configured_serving(config), **_overrides(flags)}, source="evergreen serve"
    )
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


def _configured_serving(config: config_mod.Config | None) -> dict[str, Any]:
    """The config's [serving] settings, file paths made relative to the config file's folder."""
    if config is None:
        return {}
    base = config.to_dict()["serving"]
    for key in ("tls_cert", "tls_key", "audit_log", "verify_key"):
        if base.get(key):
            base[key] = str(config.resolve(base[key]))
    return base


def _overrides(flags: dict[str, Any]) -> dict[str, Any]:
    """The serving settings given as flags (the two that are not settings left out)."""
    return {
        key: value
        for key, value in flags.items()
        if value is not None and key not in ("api_key_file", "request_log")
    }


@cli.command()
@pipeline_options
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
