"""The console-script entry point: every command registered, errors in two tiers."""

from __future__ import annotations

import sys
import traceback

import click
from rich.markup import escape

# Importing the command modules registers their commands on the group.
from evergreen.cli import data, registry, serving, training  # noqa: F401
from evergreen.cli.base import cli, err
from evergreen.errors import EvergreenError


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
