"""The console-script entry point: every command registered, errors in two tiers."""

from __future__ import annotations

import atexit
import os
import sys
import threading
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


def entry() -> None:
    """The process's entry (``python -m evergreen``, the console script): :func:`main`, then exit.

    Tearing down an interpreter that imported TensorFlow costs about a second of CPU (every
    module and object freed one by one; measured in issue 13) and does nothing an exiting
    process needs. Once TensorFlow is loaded the process ends the way Python's own shutdown
    does, minus that teardown: the other non-daemon threads joined, ``atexit`` handlers run
    (logging's flush among them), the standard streams flushed, then :func:`os._exit`.
    Everything Evergreen writes is closed (or committed) before its command returns.
    """
    try:
        main()
        code: object = 0
    except SystemExit as e:
        code = e.code
    if "tensorflow" not in sys.modules or not isinstance(code, int | None):
        sys.exit(code)  # nothing to save, or Python's own message for a non-integer code
    for thread in threading.enumerate():
        if thread is not threading.current_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: nothing more can be said anyway
            pass
    os._exit(code or 0)
