"""The ``evergreen`` command line: a thin shell over the library, one module per group.

Errors come in two tiers: an :class:`~evergreen.errors.EvergreenError` prints one line and exits
with its code (1); click's usage errors exit 2; anything else is a bug, printed as "internal
error" with its traceback. ``--debug`` re-raises everything.

Layout: :mod:`~evergreen.cli.base` (the group, consoles, shared options),
:mod:`~evergreen.cli.data` (init, ingest, status, lineage, report),
:mod:`~evergreen.cli.training` (run, train-worker, adopt), :mod:`~evergreen.cli.registry`
(predict, history, rollback, verify, seal, keygen, export), :mod:`~evergreen.cli.serving`
(serve, watch, demo) and :mod:`~evergreen.cli.main` (the entry point). What the commands print
is rendered by :mod:`evergreen.render` from the same data ``--json`` prints.
"""

from evergreen.cli.main import cli, entry, main

__all__ = ["cli", "entry", "main"]
