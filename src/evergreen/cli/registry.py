"""Commands over the model registry: ``predict``, ``history``, ``rollback``, ``verify``,
``seal``, ``keygen`` and ``export tflite``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import click
from rich.markup import escape

from evergreen import render
from evergreen.cli.base import cli, config_option, emit, err, open_project, out, root_option
from evergreen.errors import IntegrityError

_verify_key_option = click.option(
    "--verify-key",
    default=None,
    type=click.Path(dir_okay=False),
    help="Public key (PEM) the version must be signed with (default: serving.verify_key).",
)


@cli.command()
@config_option
@root_option
@click.argument("texts", nargs=-1, required=True, metavar="INPUTS...")
@click.option(
    "--version",
    "version",
    type=int,
    default=None,
    help="A registry version (default: the champion).",
)
@click.option("--json", "as_json", is_flag=True)
@_verify_key_option
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
    from evergreen.predict import classify

    with open_project(config_path, root) as project:
        path = champion_saved_model(project, version)
        # The same check as the server's: a version whose files changed is never run.
        _verified(project.config, int(path.name), verify_key)
    results = classify(path, texts)
    if as_json:
        out.print_json(json.dumps({"version": int(path.name), "predictions": results}))
        return
    render.print_predictions(out, texts, results, int(path.name))


@cli.command()
@config_option
@root_option
@click.option("--json", "as_json", is_flag=True)
def history(config_path: str, root: str | None, as_json: bool) -> None:
    """Registry versions, the champion, metrics and cost per run."""
    from evergreen import loop

    with open_project(config_path, root) as project:
        versions = loop.history(project)
    emit(versions, as_json, render.print_history)


@cli.command()
@config_option
@root_option
@click.argument("version", type=int)
def rollback(config_path: str, root: str | None, version: int) -> None:
    """Move the champion back to VERSION (recorded in the alias history)."""
    from evergreen.registry import Registry

    with open_project(config_path, root) as project, project.writing("evergreen rollback"):
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
@config_option
@root_option
@click.option(
    "--verify-key",
    default=None,
    type=click.Path(dir_okay=False),
    help="Public key (PEM) every version must be signed with (default: serving.verify_key).",
)
def verify(config_path: str, root: str | None, verify_key: str | None) -> None:
    """Check every registry version's files (and signature) against its manifest."""
    from evergreen.registry import Registry

    with open_project(config_path, root) as project:
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
@config_option
@root_option
@click.argument("versions", nargs=-1, type=int)
def seal(config_path: str, root: str | None, versions: tuple[int, ...]) -> None:
    """Record file digests for VERSIONS (default: all) and sign them with EVERGREEN_SIGNING_KEY.

    For versions published before digests or signing: a version whose files no longer match
    its manifest is refused, never sealed.
    """
    from evergreen.registry import Registry

    with open_project(config_path, root) as project, project.writing("evergreen seal"):
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


@cli.group()
def export() -> None:
    """Export a registry version for another runtime."""


@export.command("tflite")
@config_option
@root_option
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
    with open_project(config_path, root) as project:
        result = export_tflite(project, version, options)
    if as_json:
        out.print(json.dumps({"folder": str(result.folder), **result.report()}))
        return
    render.print_tflite_export(out, result, quantize)
