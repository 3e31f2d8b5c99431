"""What every command shares: the ``evergreen`` group, consoles, common options, progress.

The commands themselves live in one module per group (:mod:`~evergreen.cli.data`,
:mod:`~evergreen.cli.training`, :mod:`~evergreen.cli.registry`, :mod:`~evergreen.cli.serving`)
and register on :data:`cli` when imported.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import click  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn  # noqa: E402

from evergreen import config as config_mod  # noqa: E402
from evergreen.project import Project  # noqa: E402

# Piped output (make demo, CI logs) gets wide tables instead of rich's 80-column default.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 180)
err = Console(stderr=True, highlight=False, soft_wrap=True)

F = TypeVar("F", bound=Callable[..., Any])

config_option = click.option(
    "-c",
    "--config",
    "config_path",
    default="evergreen.toml",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="Pipeline config file.",
)
root_option = click.option(
    "--root", default=None, help="Override pipeline.root (env: EVERGREEN_ROOT)."
)
metadata_option = click.option(
    "--metadata-url",
    default=None,
    help="Override pipeline.metadata_url (env: EVERGREEN_METADATA_URL).",
)
json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON document.")


def pipeline_options(command: F) -> F:
    """``-c/--config``, ``--root`` and ``--metadata-url``: where the pipeline is."""
    return config_option(root_option(metadata_option(command)))


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Re-raise errors with their traceback.")
@click.version_option(package_name="evergreen")
@click.pass_context
def cli(ctx: click.Context, debug: bool) -> None:
    """Evergreen keeps TensorFlow models fresh: ingest new spans, validate, train, serve."""
    ctx.obj = {"debug": debug}


@contextmanager
def open_project(
    config_path: str, root: str | None = None, metadata_url: str | None = None
) -> Iterator[Project]:
    """The pipeline of ``config_path`` (with the overrides), closed when the block ends."""
    project = Project(config_mod.load(config_path, root=root, metadata_url=metadata_url))
    try:
        yield project
    finally:
        project.close()


def emit(data: Any, as_json: bool, text: Callable[[Console, Any], None]) -> None:
    """Print ``data`` as one JSON document (``--json``), else as ``text`` renders it."""
    if as_json:
        out.print_json(json.dumps(data, default=str))
    else:
        text(out, data)


@contextmanager
def progress_bars(enabled: bool) -> Iterator[Callable[[str], Callable[[int, int], None]] | None]:
    """A progress-bar factory on a terminal's standard error (None: no bars)."""
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
