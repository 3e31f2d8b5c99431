"""Run the ``evergreen`` CLI and ``kill -9`` itself at one named point: the kill matrix's victim.

Usage: ``python -m tests.killpoint POINT evergreen-args...`` where POINT is

* ``after:COMPONENT``: right after COMPONENT's run committed (its first run that did work);
* ``mid:COMPONENT``: inside COMPONENT's run, its work done and its outputs written to temporary
  folders, before anything is committed;
* ``push:published``: the new version is in the registry, the champion alias not yet moved;
* ``push:aliased``: the alias moved, the push run not yet committed.

``after:COMPONENT@N`` and ``mid:COMPONENT@N`` pick its N-th run that did work in the process
(e.g. ``mid:train@2``: inside the quality debt's challenger, the run's second training).

The points are patched in here, in the test's own process, so production code carries no hook.
"""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from evergreen import cli
from evergreen.pipeline import Runner
from evergreen.registry import Registry


def _die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def install(point: str) -> None:
    where, _, target = point.partition(":")
    target, _, nth = target.partition("@")
    real_run = Runner.run
    real_set_alias = Registry.set_alias
    worked = {"mid": 0, "after": 0}  # runs of the target that did work so far

    def reached(stage: str) -> bool:
        worked[stage] += 1
        return worked[stage] == int(nth or 1)

    def run(self: Runner, component: Any, inputs: Any = None, *, span: Any = None) -> Any:
        if where == "mid" and component.name == target:
            real_execute = component.execute

            def execute(ctx: Any) -> Any:
                done = real_execute(ctx)
                if reached("mid"):
                    _die()
                return done

            object.__setattr__(component, "execute", execute)
        result = real_run(self, component, inputs, span=span)
        if where == "after" and component.name == target and not result.cached:
            if reached("after"):
                _die()
        return result

    def set_alias(self: Registry, *args: Any, **kwargs: Any) -> None:
        if point == "push:published":
            _die()
        real_set_alias(self, *args, **kwargs)
        if point == "push:aliased":
            _die()

    Runner.run = run  # type: ignore[method-assign]
    Registry.set_alias = set_alias  # type: ignore[method-assign]


if __name__ == "__main__":
    install(sys.argv[1])
    cli.main(sys.argv[2:])
    sys.exit(f"{sys.argv[1]} was never reached")
